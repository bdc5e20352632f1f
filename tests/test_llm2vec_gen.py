"""LLM2Vec-Gen (SPEC 2): the losses on hand examples, inputs, the model on the tiny random
backbone, the response cache, training (frozen backbone, resume, overfit-and-decode), the
encoder and its evaluation. All offline and in-process (one thread)."""

import copy
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sample_data import TEXTS
from safetensors.torch import load_file

from grace.errors import GraceInputError
from grace.llm2vec_gen.checkpoint import SPEC_FILE, WEIGHTS, LLM2VecGenSpec, resolve_folder
from grace.llm2vec_gen.inputs import build_encoder_inputs, build_response_targets, input_text
from grace.llm2vec_gen.losses import (
    alignment_loss,
    mean_embedding,
    reconstruction_loss,
    token_accuracy,
)
from grace.llm2vec_gen.model import LLM2VecGenModel
from grace.llm2vec_gen.responses import Response, ResponseCache, ensure_responses

# tiny-random answers every query with newlines only, so its responses are empty texts, which a
# grace teacher encodes with a warning
pytestmark = pytest.mark.filterwarnings("ignore:.*texts are empty or whitespace-only:UserWarning")

TRAINABLE = {"soft_tokens", "reconstruction_head.weight", "reconstruction_head.bias",
             "alignment_head.weight", "alignment_head.bias"}
SAVED = TRAINABLE | {"alignment_input.mean", "alignment_input.scale"}  # + the fixed standardisation


# --------------------------------------------------------------------------- losses (pure)


def test_alignment_loss_by_hand():
    z = torch.tensor([[[1.0, 2.0], [3.0, 4.0]],   # text 0: K=2 aligned vectors -> e = (2, 3)
                      [[0.0, 0.0], [2.0, -2.0]]])  # text 1: e = (1, -1)
    e = mean_embedding(z)
    assert torch.equal(e, torch.tensor([[2.0, 3.0], [1.0, -1.0]]))
    t = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    # squared errors (1, 4) and (0, 4): mean over 4 numbers = 9 / 4
    assert alignment_loss(e, t).item() == pytest.approx(2.25)
    with pytest.raises(ValueError, match="differ in shape"):
        alignment_loss(e, t[:, :1])


def test_reconstruction_loss_and_accuracy_by_hand():
    logits = torch.zeros(2, 2, 3)  # (B, T, V)
    logits[0, 0] = torch.tensor([0.0, math.log(2.0), 0.0])  # p(target 1) = 2/4
    logits[0, 1] = torch.tensor([5.0, 5.0, 5.0])  # masked: must not count
    logits[1, 0] = torch.tensor([0.0, 0.0, 0.0])  # p(target 2) = 1/3
    logits[1, 1] = torch.tensor([math.log(3.0), 0.0, 0.0])  # p(target 0) = 3/5
    ids = torch.tensor([[1, 0], [2, 0]])
    mask = torch.tensor([[1, 0], [1, 1]])
    expected = (-math.log(0.5) - math.log(1 / 3) - math.log(0.6)) / 3  # token mean
    assert reconstruction_loss(logits, ids, mask).item() == pytest.approx(expected, rel=1e-6)
    # argmax: row 0 token 0 -> 1 (hit), row 1 token 0 -> 0 (ties pick 0: miss), token 1 -> 0 (hit)
    assert token_accuracy(logits, ids, mask).item() == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="at least one"):
        reconstruction_loss(logits, ids, torch.zeros_like(mask))


# --------------------------------------------------------------------------- inputs


def test_encoder_inputs_join_instruction_left_pad_and_truncate(tiny):
    _, tok = tiny
    assert input_text("", "a text") == "a text"
    assert input_text("Summarize:", "a text") == "Summarize: a text"
    enc = build_encoder_inputs(tok, ["short", "a somewhat longer text here"], "Do:", 64, 4)
    plain = tok("Do: short")["input_ids"]
    assert enc.input_ids[0, -len(plain):].tolist() == plain
    assert enc.attention_mask[0].tolist() == [0] * (enc.input_ids.shape[1] - len(plain)) + [1] * len(plain)
    assert enc.num_truncated == 0
    with pytest.warns(UserWarning, match="1 of 2 texts were truncated"):
        cut = build_encoder_inputs(tok, ["one two three four five six seven", "x"], "", 7, 4)
    assert cut.input_ids.shape[1] == 3 and cut.num_truncated == 1
    with pytest.raises(ValueError, match="no room"):
        build_encoder_inputs(tok, ["x"], "", 4, 4)


def test_response_targets_get_eos_only_when_finished(tiny):
    _, tok = tiny
    ids, mask = build_response_targets(tok, ["Paris.", "An apple is red and sweet"], [True, False])
    paris = tok("Paris.", add_special_tokens=False)["input_ids"]
    apple = tok("An apple is red and sweet", add_special_tokens=False)["input_ids"]
    assert ids[0, : len(paris) + 1].tolist() == paris + [tok.eos_token_id]
    assert mask[0].sum() == len(paris) + 1 and mask[1].sum() == len(apple)  # right-padded
    assert ids[1, : len(apple)].tolist() == apple
    ids, mask = build_response_targets(tok, ["An apple is red and sweet"], [True], max_tokens=3)
    assert ids[0].tolist() == apple[:2] + [tok.eos_token_id]


# --------------------------------------------------------------------------- model


def _spec(d: int = 64, teacher_dim: int = 8, k: int = 4) -> LLM2VecGenSpec:
    return LLM2VecGenSpec(backbone="tiny-random", hidden_size=d, teacher_dim=teacher_dim, num_tokens=k)


@pytest.fixture(scope="module")
def backbone(tiny):
    """A copy of the session's tiny model: LLM2VecGenModel freezes its backbone in place."""
    return copy.deepcopy(tiny[0])


@pytest.fixture
def model(backbone):
    torch.manual_seed(0)
    return LLM2VecGenModel(backbone, _spec())


def test_model_shapes_and_only_tokens_and_heads_train(model, tiny):
    _, tok = tiny
    enc = build_encoder_inputs(tok, ["a text", "another, longer text"], "", 64, 4)
    rid, rmask = build_response_targets(tok, ["one two", "three"], [True, False])
    out = model(enc.input_ids, enc.attention_mask, rid, rmask)
    assert out["soft_prompts"].shape == (2, 4, 64) and out["aligned"].shape == (2, 4, 8)
    assert out["embedding"].shape == (2, 8)
    assert out["recon_logits"].shape == (2, rid.shape[1], len(tok))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == TRAINABLE
    counts = model.parameter_counts()
    assert counts["trainable"] == 4 * 64 + (64 * 64 + 64) + (64 * 8 + 8)
    assert counts["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    model.train()
    assert not model.backbone.training  # frozen: always eval mode


def test_reconstruction_logits_are_the_shifted_full_forward(model, backbone, tiny):
    """logits[:, t] must be the LM's prediction after p_1..p_K, r_1..r_{t-1}."""
    tok = tiny[1]
    rid, rmask = build_response_targets(tok, ["one two three"], [True])
    p = torch.randn(1, 4, 64) * 0.1
    logits = model.reconstruction_logits(p, rid, rmask)  # (1, T, V)
    full = torch.cat([p, backbone.get_input_embeddings()(rid)], dim=1)  # (1, K+T, d)
    ref = backbone(inputs_embeds=full).logits[:, 3 : 3 + rid.shape[1]]  # positions K-1 .. K+T-2
    torch.testing.assert_close(logits, ref, rtol=1e-4, atol=1e-5)


def test_embedding_does_not_depend_on_the_batch(model, tiny):
    """Left padding and position ids: a text alone and next to a longer one embed the same."""
    _, tok = tiny
    alone = build_encoder_inputs(tok, ["a short text"], "", 64, 4)
    batch = build_encoder_inputs(tok, ["a short text", "a much longer text that needs padding"], "", 64, 4)
    with torch.no_grad():
        e1 = model(alone.input_ids, alone.attention_mask)["embedding"]
        e2 = model(batch.input_ids, batch.attention_mask)["embedding"]
    torch.testing.assert_close(e1[0], e2[0], rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- response cache


SETTINGS = {"backbone": "tiny-random", "backbone_fingerprint": "fp", "max_new_tokens": 4,
            "temperature": 0.0}


def test_responses_live_in_the_generation_cache_and_survive_a_restart(tiny, tmp_path):
    from grace.rollout.generation_cache import RationaleCache

    _, tok = tiny
    store = tmp_path / "gen.sqlite"
    cache = ResponseCache(tok, SETTINGS, store)
    finished = tok("an answer", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    cut = tok("cut short", add_special_tokens=False)["input_ids"]
    cache.add(["q1", "q2"], [finished, cut])
    assert cache["q1"] == Response("an answer", True, len(finished))
    assert cache["q2"] == Response("cut short", False, len(cut))
    again = ResponseCache(tok, SETTINGS, store)  # a new run: read back from SQLite
    assert len(again) == 2 and again["q1"] == cache["q1"] and again["q2"] == cache["q2"]
    # other settings (or another backbone) see none of them; rationales share the file
    assert len(ResponseCache(tok, {**SETTINGS, "max_new_tokens": 8}, store)) == 0
    assert len(ResponseCache(tok, {**SETTINGS, "backbone_fingerprint": "other"}, store)) == 0
    RationaleCache(store).put_many("fp", "{}", ["q1"], [[1, 2]])
    assert len(ResponseCache(tok, SETTINGS, store)) == 2 and len(RationaleCache(store)) == 3


def test_a_responses_file_is_read_over_the_cache_and_never_written(tiny, tmp_path):
    _, tok = tiny
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"settings": SETTINGS}) + "\n"
                    + json.dumps({"text": "q", "response": "hand-written", "finished": False}) + "\n")
    before = path.read_text()
    cache = ResponseCache(tok, SETTINGS, tmp_path / "gen.sqlite", responses_file=path)
    assert cache["q"] == Response("hand-written", False, 0) and len(cache) == 1
    cache.add(["q2"], [[tok.eos_token_id]])
    assert path.read_text() == before and "q2" in ResponseCache(tok, SETTINGS, tmp_path / "gen.sqlite")


def test_responses_file_errors_name_the_file_and_line(tiny, tmp_path):
    _, tok = tiny
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"settings": SETTINGS}) + "\n")
    with pytest.raises(GraceInputError, match="r.jsonl:1: these responses were generated with other"):
        ResponseCache(tok, {**SETTINGS, "max_new_tokens": 8}, tmp_path / "g.sqlite", path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "q", "response": "a"}\n{"text": "q2"}\n')
    with pytest.raises(GraceInputError, match="bad.jsonl:2: field 'response'"):
        ResponseCache(tok, SETTINGS, tmp_path / "g.sqlite", bad)
    bad.write_text('{"text": "q", "response": "a"}\nnot json\n')
    with pytest.raises(GraceInputError, match="bad.jsonl:2: invalid JSON"):
        ResponseCache(tok, SETTINGS, tmp_path / "g.sqlite", bad)
    with pytest.raises(GraceInputError, match="missing.jsonl: not found .*read, not written"):
        ResponseCache(tok, SETTINGS, tmp_path / "g.sqlite", tmp_path / "missing.jsonl")


def test_an_old_json_lines_cache_is_imported_once(tiny, tmp_path, monkeypatch):
    from grace.llm2vec_gen.responses import legacy_responses_file

    monkeypatch.setenv("GRACE_CACHE", str(tmp_path / "cache"))
    _, tok = tiny
    legacy = legacy_responses_file(SETTINGS)  # where runs before the SQLite cache kept them
    legacy.parent.mkdir(parents=True)
    legacy.write_text(json.dumps({"settings": SETTINGS}, sort_keys=True) + "\n"
                      + json.dumps({"text": "q1", "response": "Paris is the capital.", "finished": True,
                                    "num_tokens": 6}) + "\n"
                      + json.dumps({"text": "q2", "response": "cut", "finished": False}) + "\n")
    cache = ResponseCache(tok, SETTINGS)  # default: $GRACE_CACHE/rationales.sqlite
    assert cache.imported == 2 and cache.where == tmp_path / "cache" / "rationales.sqlite"
    assert cache["q1"].text == "Paris is the capital." and cache["q1"].finished
    assert cache["q2"] == Response("cut", False, len(tok("cut", add_special_tokens=False)["input_ids"]))
    assert not legacy.exists() and legacy.with_name(legacy.name + ".imported").is_file()
    again = ResponseCache(tok, SETTINGS)
    assert again.imported == 0 and again["q1"] == cache["q1"]


def test_responses_are_generated_once(tiny, tmp_path, one_thread):
    backbone, tok = tiny  # generation only: the shared model is not changed
    store = tmp_path / "gen.sqlite"
    kw = dict(max_new_tokens=3, temperature=0.0, batch_size=2, show_progress=False)
    assert ensure_responses(backbone, tok, ["q1", "q2", "q3", "q1"], ResponseCache(tok, SETTINGS, store), **kw) == 3
    assert ensure_responses(backbone, tok, ["q1", "q2", "q3", "q4"], ResponseCache(tok, SETTINGS, store), **kw) == 1
    entry = ResponseCache(tok, SETTINGS, store)["q1"]
    assert not entry.finished and entry.num_tokens == 3  # the random model never says EOS


def test_engine_responses_equal_hf_generate(tiny, one_thread):
    """Responses come from grace.rollout.engine (shared template prefix once, early exit): greedy, they
    are the tokens HF generate picks, for prompts of different lengths batched together."""
    from grace.llm2vec_gen.inputs import chat_prompt
    from grace.llm2vec_gen.responses import chat_prompt_batch, generate_batch

    backbone, tok = tiny
    texts = ["a short one", "a somewhat longer question about several unrelated things", "x"]
    batch = chat_prompt_batch(tok, texts)
    assert int((batch.pool_start - (batch.attention_mask == 0).sum(1)).min()) > 0  # a shared prefix
    ours = generate_batch(backbone, tok, texts, max_new_tokens=6, temperature=0.0)
    for text, ids in zip(texts, ours):  # the answers' token ids (what the cache stores)
        enc = tok(chat_prompt(tok, text), add_special_tokens=False, return_tensors="pt")
        ref = backbone.generate(**enc, max_new_tokens=6, do_sample=False,
                                pad_token_id=tok.pad_token_id)[0, enc["input_ids"].shape[1]:]
        assert ids == ref.tolist() and len(ids) == 6


# --------------------------------------------------------------------------- training

TEACHER = "tiny-random"  # a grace teacher (mean pooling), 64-d and fast; the CLI test uses MiniLM


def _config(tmp_path, data: Path, **overrides):
    from grace.config.schema import load_config

    values = {
        "method": "llm2vec-gen", "model.name": "tiny-random", "data.path": str(data),
        "output_dir": str(tmp_path / "OUT"), "batch_size": 4, "max_steps": 2, "sample_every": 0,
        "llm2vec_gen.num_tokens": 4, "llm2vec_gen.teacher": TEACHER,
        "llm2vec_gen.micro_batch_size": 3, "llm2vec_gen.response_max_new_tokens": 4,
        "llm2vec_gen.cache": str(tmp_path / "generations.sqlite"),
        "llm2vec_gen.learning_rate": 1e-2, "optim.weight_decay": 0.0,
        # tiny-random answers every query with an empty text, so the teacher's targets are one
        # vector, which a ridge start fits exactly: every text would get that one embedding (the
        # ridge start has its own tests, on varied targets, in test_llm2vec_gen_head_fit.py)
        "llm2vec_gen.align_init": "none",
        "llm2vec_gen.align_head_learning_rate": None,  # the head at the test's lr too (1e-2)
        # 8 texts give no usable statistics (the Lee documents fall far outside them and every
        # embedding points one way): the plain head (standardisation has its own tests)
        "llm2vec_gen.standardize": False,
    }
    values.update(overrides)
    return load_config(None, values)


@pytest.fixture
def texts(tmp_path) -> Path:
    path = tmp_path / "texts.txt"
    path.write_text("".join(t + "\n" for t in TEXTS))
    return path


def test_training_moves_every_trainable_part_and_not_one_backbone_bit(tmp_path, texts, tiny, one_thread):
    from grace.llm2vec_gen.trainer import LLM2VecGenTrainer

    trainer = LLM2VecGenTrainer(_config(tmp_path, texts))
    backbone = trainer.policy.backbone
    before = {name: t.clone() for name, t in backbone.state_dict().items()}
    checkpoint = trainer.train()
    assert checkpoint == tmp_path / "OUT" / "checkpoint-2"
    # the backbone the run trained through: bit for bit what it was, and what is on disk
    for name, tensor in backbone.state_dict().items():
        assert torch.equal(tensor, before[name]) and torch.equal(tensor, tiny[0].state_dict()[name]), name
    # the checkpoint: the trainable parts and a reference to the backbone, no backbone weights
    saved = load_file(checkpoint / WEIGHTS)
    assert set(saved) == SAVED
    assert not list(checkpoint.glob("model*.safetensors")) and not (checkpoint / "config.json").exists()
    spec = json.loads((checkpoint / SPEC_FILE).read_text())
    assert spec["backbone"] == "tiny-random" and spec["num_tokens"] == 4 and spec["teacher_dim"] == 64
    n_trainable = sum(t.numel() for t in saved.values())
    assert (checkpoint / WEIGHTS).stat().st_size < 4 * n_trainable + 4096  # float32 + header
    # the checkpoint, reloaded: the trained parts, around the backbone it names
    from grace.encoders.llm2vec_gen import load_model

    trained, _, _ = load_model(tmp_path / "OUT")
    for name, tensor in trained.trainable_state_dict().items():
        assert torch.equal(tensor, trainer.policy.trainable_state_dict()[name]), name
    initial = tiny[0].get_input_embeddings().weight.mean(dim=0)  # where every soft token starts
    assert not torch.allclose(trained.soft_tokens, initial.expand(4, -1))
    rows = [json.loads(line) for line in (tmp_path / "OUT" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("loss/total", "loss/recon", "loss/align", "align/cosine", "recon/token_accuracy", "grad_norm"):
        assert all(math.isfinite(r[key]) for r in rows), key


def test_one_step_changes_every_trainable_tensor_and_no_frozen_one(tmp_path, texts, one_thread):
    from grace.llm2vec_gen.trainer import LLM2VecGenTrainer

    trainer = LLM2VecGenTrainer(_config(tmp_path, texts))
    params = dict(trainer.policy.named_parameters())
    before = {name: p.detach().clone() for name, p in params.items()}
    metrics, _ = trainer.step(1)
    assert metrics["grad_norm"] > 0 and math.isfinite(metrics["loss/total"])
    changed = {name for name, p in params.items() if not torch.equal(p.detach(), before[name])}
    assert changed == TRAINABLE


def test_resume_after_interruption_continues_exactly(tmp_path, texts, one_thread, monkeypatch):
    from grace.llm2vec_gen.trainer import LLM2VecGenTrainer
    from grace.train import train

    config = _config(tmp_path, texts, max_steps=4, save_every=2)
    original = LLM2VecGenTrainer.step

    def crash_at_3(self, step):
        if step == 3:
            raise KeyboardInterrupt
        return original(self, step)

    monkeypatch.setattr(LLM2VecGenTrainer, "step", crash_at_3)
    with pytest.raises(KeyboardInterrupt):
        train(config)
    monkeypatch.setattr(LLM2VecGenTrainer, "step", original)
    assert (tmp_path / "OUT" / "checkpoint-2").is_dir() and not (tmp_path / "OUT" / "checkpoint-4").exists()
    resumed = LLM2VecGenTrainer(config)
    assert resumed.start_step == 2
    resumed.train()
    straight = _config(tmp_path, texts, max_steps=4, save_every=2, output_dir=str(tmp_path / "STRAIGHT"))
    train(straight)
    rows = [json.loads(x) for x in (tmp_path / "OUT" / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(x) for x in (tmp_path / "STRAIGHT" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for row, expected in zip(rows, ref):
        assert row["loss/total"] == pytest.approx(expected["loss/total"], rel=1e-5)
    a = load_file(tmp_path / "OUT" / "checkpoint-4" / WEIGHTS)
    b = load_file(tmp_path / "STRAIGHT" / "checkpoint-4" / WEIGHTS)
    for name in SAVED:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-7)


QUERIES = ["What is the capital of France?", "Name a red fruit.", "How many legs has a spider?"]
ANSWERS = ["Paris is the capital.", "An apple is red.", "A spider has eight legs."]


@pytest.fixture(scope="module")
def steerable_backbone(tmp_path_factory, tiny):
    """A tiny LM that soft prompts can steer. tiny-random (init std 0.02, tied embeddings) has
    near-uniform attention and near-flat logits dominated by the current token, so no prefix
    can make it say a given sentence; with init std 0.3 and an untied head it can."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny[1]
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False,
                         initializer_range=0.3, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("steerable")
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_overfit_a_few_responses_then_decode_them_back(tmp_path, steerable_backbone, one_thread):
    """The reconstruction objective works end to end: trained on three fixed (query, response)
    pairs (hand-written into the response cache, so nothing is generated), the model's soft
    prompts decode greedily back into exactly those responses."""
    from grace.encoders.llm2vec_gen import LLM2VecGenEncoder
    from grace.train import train

    data = tmp_path / "queries.txt"
    data.write_text("".join(q + "\n" for q in QUERIES))
    responses = tmp_path / "responses.jsonl"  # no settings line: taken as it is
    responses.write_text("".join(json.dumps({"text": q, "response": a, "finished": True}) + "\n"
                                 for q, a in zip(QUERIES, ANSWERS)))
    config = _config(tmp_path, data, **{
        "model.name": str(steerable_backbone), "batch_size": 3, "max_steps": 100, "save_every": 1000,
        "llm2vec_gen.num_tokens": 10, "llm2vec_gen.responses_file": str(responses),
        "optim.max_grad_norm": 1e6, "llm2vec_gen.standardize": False})  # the plain heads
    train(config)
    rows = [json.loads(x) for x in (tmp_path / "OUT" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["recon/token_accuracy"] == 1.0 and rows[-1]["loss/recon"] < rows[0]["loss/recon"] / 3
    encoder = LLM2VecGenEncoder.from_pretrained(tmp_path / "OUT")
    assert encoder.decode(QUERIES, instruction="", max_new_tokens=12) == ANSWERS


# --------------------------------------------------------------------------- encoder and evaluation


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory, tiny):
    """A 1-step run on tiny-random (module scope: shared by the encoder tests)."""
    from grace.train import train

    root = tmp_path_factory.mktemp("l2vgen")
    data = root / "texts.txt"
    data.write_text("".join(t + "\n" for t in TEXTS))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(_config(root, data, max_steps=1))
    finally:
        torch.set_num_threads(threads)
    return root / "OUT"


def test_grace_encoder_dispatches_to_llm2vec_gen(trained_dir):
    from grace import GraceEncoder
    from grace.encoders.llm2vec_gen import LLM2VecGenEncoder

    assert resolve_folder(trained_dir) == trained_dir / "checkpoint-1"
    encoder = GraceEncoder.from_pretrained(trained_dir, rationale="greedy", max_new_tokens=5, cache=True)
    assert isinstance(encoder, LLM2VecGenEncoder) and encoder.uses_instructions
    assert encoder.options.rationale == "none" and encoder.options.max_new_tokens == 5
    texts = ["A man plays a guitar.", "Dogs run in the snow.", "Markets fell."]
    emb = encoder.encode(texts)
    assert emb.shape == (3, encoder.embedding_dim) == (3, 64) and emb.dtype == np.float32
    np.testing.assert_allclose(encoder.encode(texts[1]), emb[1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(encoder.encode_query(texts), emb, rtol=1e-5, atol=1e-6)
    docs = encoder.encode_document(texts)
    assert not np.allclose(docs, emb)  # the two SPEC 2 instructions
    unit = encoder.encode(texts, normalize_embeddings=True, convert_to_tensor=True)
    torch.testing.assert_close(unit.norm(dim=-1), torch.ones(3))
    emb2, decoded = encoder.encode(texts, return_rationales=True)
    assert len(decoded) == 3 and all(isinstance(d, str) for d in decoded)
    assert isinstance(encoder.decode("A text."), str)
    with pytest.raises(TypeError, match="not a string"):
        encoder.encode(["ok", 3])
    with pytest.raises(TypeError, match="unknown encoding option"):
        GraceEncoder.from_pretrained(trained_dir, bogus=1)


def test_save_pretrained_round_trip(trained_dir, tmp_path):
    from grace import GraceEncoder

    encoder = GraceEncoder.from_pretrained(trained_dir, query_instruction="Q:")
    encoder.save_pretrained(tmp_path / "copy")
    from grace.models.st_files import FILES as ST_FILES  # sentence-transformers' view

    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == sorted([SPEC_FILE, WEIGHTS, *ST_FILES])
    copy = GraceEncoder.from_pretrained(tmp_path / "copy")
    assert copy.query_instruction == "Q:"
    np.testing.assert_allclose(copy.encode(["some text"]), encoder.encode(["some text"]), rtol=1e-6)


def test_a_changed_backbone_is_refused(trained_dir, tmp_path):
    import shutil

    from grace.encoders.llm2vec_gen import LLM2VecGenEncoder

    folder = tmp_path / "ckpt"
    shutil.copytree(trained_dir / "checkpoint-1", folder)
    spec = json.loads((folder / SPEC_FILE).read_text())
    (folder / SPEC_FILE).write_text(json.dumps({**spec, "backbone_fingerprint": "0" * 24}))
    with pytest.raises(GraceInputError, match="not the one this checkpoint was trained on"):
        LLM2VecGenEncoder.from_pretrained(folder)
    with pytest.raises(GraceInputError, match="not an LLM2Vec-Gen checkpoint"):
        LLM2VecGenEncoder.from_pretrained(tmp_path)


def test_mteb_adapter_encodes_queries_and_documents_with_their_instructions(trained_dir):
    from grace import GraceEncoder

    mteb_types = pytest.importorskip("mteb.types")
    from datasets import Dataset
    from mteb._create_dataloaders import create_dataloader

    from grace.evaluation.tasks import make_lee_task
    from grace.evaluation.mteb_adapter import GraceMTEBModel

    encoder = GraceEncoder.from_pretrained(trained_dir)
    model = GraceMTEBModel(encoder)
    assert model.mteb_model_meta.use_instructions and model.mteb_model_meta.embed_dim == 64
    task = make_lee_task("Lee")
    texts = ["first text", "second text"]
    loader = create_dataloader(Dataset.from_dict({"text": texts}), task_metadata=task.metadata, batch_size=2)
    kwargs = dict(task_metadata=task.metadata, hf_split="test", hf_subset="default")
    q = model.encode(loader, prompt_type=mteb_types.PromptType.query, **kwargs)
    d = model.encode(loader, prompt_type=mteb_types.PromptType.document, **kwargs)
    sym = model.encode(loader, prompt_type=None, **kwargs)
    np.testing.assert_allclose(q, encoder.encode_query(texts), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d, encoder.encode_document(texts), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sym, q)
    assert model.texts_encoded == 4


def test_eval_suite_scores_an_llm2vec_gen_checkpoint(trained_dir, tmp_path):
    from grace.evaluation.suite import run_suite

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = run_suite(str(trained_dir), output=tmp_path / "R.json", show=False)
    assert list(results["tasks"]) == ["LeeDocSim"]
    assert math.isfinite(results["tasks"]["LeeDocSim"]["main_score"])
    assert results["texts_encoded"] == 50


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("overrides, message", [
    ({"llm2vec_gen.num_tokens": 0}, "num_tokens must be >= 1"),
    ({"llm2vec_gen.recon_weight": 0, "llm2vec_gen.align_weight": 0}, "not both 0"),
    ({"llm2vec_gen.teacher_rationale": "sampled"}, "teacher_rationale 'sampled'"),
    ({"llm2vec_gen.max_input_tokens": 4}, "must exceed llm2vec_gen.num_tokens"),
], ids=["tokens", "weights", "rationale", "input-room"])
def test_bad_config_values_are_user_errors(tmp_path, texts, overrides, message):
    with pytest.raises(GraceInputError, match=message):
        _config(tmp_path, texts, **overrides)


def test_cli_bad_inputs_are_one_line_errors(tmp_path, texts, capsys):
    from grace.cli import main

    base = ["train", "--method", "llm2vec-gen", "--model", "tiny-random", "--data", str(texts),
            "--max-steps", "1", "--batch-size", "2", "--output-dir", str(tmp_path / "OUT"),
            "--llm2vec_gen.teacher", TEACHER]
    cases = [
        (["--mode", "supervised"], "needs mode unsupervised"),
        (["--lora"], "--lora does not apply"),
        (["--llm2vec_gen.teacher", str(tmp_path / "no-such-teacher")],
         "llm2vec_gen.teacher: folder not found"),
    ]
    bad = tmp_path / "responses.jsonl"
    bad.write_text('{"text": "x", "response": "y"}\n{"text": 1, "response": "y"}\n')
    cases.append((["--llm2vec_gen.responses_file", str(bad)], "responses.jsonl:2: field 'text'"))
    for extra, message in cases:
        assert main(base + extra) == 2, extra
        err = capsys.readouterr().err  # progress bars of models loaded before the error, then it
        assert "Traceback" not in err and message in err.strip().splitlines()[-1], (extra, err)
    assert main(["decode", "--model", str(tmp_path), "some text"]) == 2
    assert "not an LLM2Vec-Gen checkpoint" in capsys.readouterr().err


def test_teachers_load_from_the_package_a_folder_or_grace(tmp_path):
    from grace.llm2vec_gen.teacher import load_teacher
    from grace.encoders.sentence_transformer import minilm_folder as _minilm_folder

    folder = load_teacher(str(_minilm_folder()))  # a sentence-transformers folder
    assert folder.dim == 384
    emb = folder.encode(["a cat", "a dog"])
    assert emb.shape == (2, 384) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))  # MiniLM ends with Normalize
    grace = load_teacher("tiny-random")  # mean pooling of a grace model
    assert grace.dim == 64 and grace.encode(["a cat"]).shape == (1, 64)
    with pytest.raises(GraceInputError, match="teacher rationale 'sampled'"):
        load_teacher("tiny-random", rationale="sampled")


def test_explain_splits_the_cosine_over_the_soft_tokens_and_decodes(trained_dir):
    from grace import GraceEncoder
    from grace.explain.pair import explain_pair

    encoder = GraceEncoder.from_pretrained(trained_dir)
    ex = explain_pair(encoder, "a cat on a mat", "a dog in the park", decode_tokens=4)
    emb = encoder.encode(["a cat on a mat", "a dog in the park"], normalize_embeddings=True)
    assert ex.kind == "llm2vec-gen" and ex.cosine == pytest.approx(float(emb[0] @ emb[1]), abs=1e-5)
    K = encoder.model.spec.num_tokens
    for side in (ex.a, ex.b):
        assert [t.token for t in side.tokens] == [f"<soft{k + 1}>" for k in range(K)]
        assert abs(side.total - ex.cosine) < 1e-5 and isinstance(side.decoded, str)
    assert ex.a.decoded == encoder.decode("a cat on a mat", max_new_tokens=4)
