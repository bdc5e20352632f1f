"""Official llm2vec-gen checkpoints (McGill-NLP/LLM2Vec-Gen-* on the Hub) in grace's LLM2Vec-Gen
encoder (grace.llm2vec_gen.official). The real ones name their backbone by hub id (the network);
here a tiny folder is written in exactly their layout around the tiny random backbone: the
adapter by peft itself (TRAINABLE_TOKENS on the resized ``embed_tokens``, token_indices in
reverse order so that the row order matters), the heads as bfloat16 torch.save pickles,
run_config.yml as ``key: str(value)`` lines (one that yaml refuses), the tokenizer with the K
special tokens. The reference embedding is their mechanism, computed here without grace:
``tokenizer(instruction + " " + text + specials)``, left padding, the resized backbone with the
adapter (peft), HF's default positions, last K states, two F.linear, the mean."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from grace.errors import GraceInputError
from grace.llm2vec_gen.official import END_TEXT, read_official, read_run_config
from grace.models.backbones import prepare_tiny_random

K = 10
SPECIALS = [f"<question{i}>" for i in range(1, K + 1)]
TEACHER_DIM = 8
TEXTS = ["a cat sat on the mat", "Photosynthesis turns light into sugar in the leaves.", "hi"]
DOC = "Summarize the following passage:"


def _run_config(backbone: str, **changes) -> str:
    """run_config.yml as their code writes it: ``key: str(value)`` per line."""
    values = {"model_name_or_path": backbone, "torch_dtype": "bfloat16", "special_tokens": SPECIALS,
              "encoding_mode": "last_10_tokens", "tokenizer_padding_side": "left",
              "max_input_length": 512, "teacher_model_name_or_path": None, "learning_rate": 0.0003,
              "output_dir": "output/run: 1"}  # yaml refuses this line ("a: b: c")
    values.update(changes)
    return "".join(f"{k}: {v}\n" for k, v in values.items())


def _head(weight, bias, **config) -> dict:
    return {"state_dict": {"projection.weight": weight.bfloat16(), "projection.bias": bias.bfloat16()},
            "config": {"input_dim": weight.shape[1], "output_dim": weight.shape[0],
                       "dtype": "torch.bfloat16", "size": 1, "pooling_mode": "linear", **config}}


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """(folder in the official layout, the backbone's folder that run_config.yml names)."""
    from peft import TrainableTokensConfig, get_peft_model
    from transformers import AutoModel, AutoTokenizer

    root = tmp_path_factory.mktemp("official")
    backbone = root / "backbone"  # stands for the hub id: the folder never holds the backbone
    shutil.copytree(prepare_tiny_random(), backbone)
    folder = root / "LLM2Vec-Gen-tiny"
    tok = AutoTokenizer.from_pretrained(backbone)
    tok.add_special_tokens({"additional_special_tokens": SPECIALS})
    ids = tok.convert_tokens_to_ids(SPECIALS)
    base = AutoModel.from_pretrained(backbone)
    base.resize_token_embeddings(len(tok), mean_resizing=False)
    model = get_peft_model(base, TrainableTokensConfig(token_indices=ids[::-1], target_modules="embed_tokens"))
    torch.manual_seed(0)
    delta = next(p for n, p in model.named_parameters() if "trainable_tokens_delta" in n)
    with torch.no_grad():
        delta.copy_(torch.randn_like(delta) * 0.05)  # trained rows, unlike any token's
    model.save_pretrained(folder / "encoder")
    config = {**base.config.to_dict(), "special_tokens_ids": ids}
    (folder / "encoder" / "config.json").write_text(json.dumps(config, indent=2))
    tok.save_pretrained(folder)
    d = base.config.hidden_size
    torch.save(_head(torch.randn(d, d) * 0.2, torch.randn(d) * 0.1), folder / "reconstruction_mlp")
    torch.save(_head(torch.randn(TEACHER_DIM, d) * 0.2, torch.randn(TEACHER_DIM) * 0.1),
               folder / "alignment_mlp")
    (folder / "run_config.yml").write_text(_run_config(str(backbone)))
    (folder / "encoder_decoder_config.json").write_text(
        json.dumps({"encoding_mode": "last_10_tokens", "save_decoder": False}))
    return folder, backbone


def _official_embeddings(folder, backbone, texts, instruction, max_length=512):
    """(embeddings (B, d_t), soft prompts (B, K, d)) by their mechanism, without grace: a row
    that truncation cut gets its last K ids overwritten by the special tokens."""
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    tok.padding_side = "left"
    base = AutoModel.from_pretrained(backbone)
    base.resize_token_embeddings(len(tok), mean_resizing=False)
    model = PeftModel.from_pretrained(base, folder / "encoder").eval()
    inputs = [f"{instruction.strip()} {t.strip()}" + "".join(SPECIALS) for t in texts]
    enc = tok(inputs, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    enc["input_ids"][:, -K:] = torch.tensor(tok.convert_tokens_to_ids(SPECIALS))  # (B, K)
    heads = {n: torch.load(folder / n, weights_only=True)["state_dict"]
             for n in ("reconstruction_mlp", "alignment_mlp")}
    with torch.no_grad():
        h = model(**enc).last_hidden_state[:, -K:]  # (B, K, d): positions count the left pads
        p = F.linear(h, heads["reconstruction_mlp"]["projection.weight"].float(),
                     heads["reconstruction_mlp"]["projection.bias"].float())  # (B, K, d)
        z = F.linear(p, heads["alignment_mlp"]["projection.weight"].float(),
                     heads["alignment_mlp"]["projection.bias"].float())  # (B, K, d_t)
    return z.mean(dim=1), p


@pytest.fixture(scope="module")
def encoder(official):
    from grace import GraceEncoder

    return GraceEncoder.from_pretrained(official[0])


def test_run_config_lines_read_back_as_python_values(tmp_path):
    path = tmp_path / "run_config.yml"
    for text in (_run_config("Qwen/Qwen3-8B"), _run_config("Qwen/Qwen3-8B", output_dir="out")):
        path.write_text(text)  # line by line (yaml refuses the first), then through yaml
        run = read_run_config(path)
        assert run["model_name_or_path"] == "Qwen/Qwen3-8B" and run["special_tokens"] == SPECIALS
        assert run["max_input_length"] == 512 and run["teacher_model_name_or_path"] is None
        assert run["torch_dtype"] == "bfloat16" and run["encoding_mode"] == "last_10_tokens"


def test_the_folder_converts_to_our_spec_in_memory(official):
    folder, backbone = official
    spec, tensors = read_official(folder)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    assert (spec.backbone, spec.num_tokens, spec.hidden_size, spec.teacher_dim) == (str(backbone), K, 64, TEACHER_DIM)
    assert (spec.backbone_dtype, spec.max_input_tokens, spec.end_text) == ("bfloat16", 512, END_TEXT)
    assert {k: tuple(v.shape) for k, v in tensors.items()} == {
        "soft_tokens": (K, 64), "reconstruction_head.weight": (64, 64), "reconstruction_head.bias": (64,),
        "alignment_head.weight": (TEACHER_DIM, 64), "alignment_head.bias": (TEACHER_DIM,),
        "alignment_input.mean": (64,), "alignment_input.scale": (64,)}
    # row k is <question k+1>'s trained row, whatever order token_indices lists them in
    from safetensors.torch import load_file

    saved = load_file(folder / "encoder" / "adapter_model.safetensors")
    matrix = saved["base_model.model.embed_tokens.base_layer.weight"]  # peft's whole resized copy
    delta = saved["base_model.model.embed_tokens.trainable_tokens_delta"]
    assert torch.equal(tensors["soft_tokens"], delta.flip(0))
    assert not torch.equal(tensors["soft_tokens"], matrix[tok.convert_tokens_to_ids(SPECIALS)])
    # transformers v4 spells the tokenizer's list additional_special_tokens: the same rows
    v4 = folder.parent / "v4"
    shutil.copytree(folder, v4)
    config = json.loads((v4 / "tokenizer_config.json").read_text())
    config["additional_special_tokens"] = config.pop("extra_special_tokens")
    (v4 / "tokenizer_config.json").write_text(json.dumps(config))
    assert torch.equal(read_official(v4)[1]["soft_tokens"], tensors["soft_tokens"])


def test_embeddings_equal_their_mechanism(official, encoder):
    """One text: no padding, the same positions, the same float32 values (the K rows enter as
    embeddings here, as looked-up ids there): measured bit-equal, checked at 1e-6. A batch: left
    padding, positions from the mask here and counting the pads there; RoPE's scores depend only
    on position differences, so the two differ by rounding alone (rotations by other angles):
    measured 4e-7 on values up to 1.6, checked at 1e-5 (a kernel's other summation order on
    another CPU stays far inside it; a real difference, e.g. one row off, moves values by 0.1)."""
    folder, backbone = official
    from grace.encoders.llm2vec_gen import LLM2VecGenEncoder

    assert isinstance(encoder, LLM2VecGenEncoder) and encoder.embedding_dim == TEACHER_DIM
    ref, _ = _official_embeddings(folder, backbone, TEXTS[:1], DOC)
    one = encoder.encode_document(TEXTS[:1], convert_to_tensor=True)
    torch.testing.assert_close(one, ref, rtol=0, atol=1e-6)
    ref, _ = _official_embeddings(folder, backbone, TEXTS, DOC)
    many = encoder.encode_document(TEXTS, convert_to_tensor=True, batch_size=3)
    torch.testing.assert_close(many, ref, rtol=0, atol=1e-5)
    assert ref.abs().max() > 0.1  # not trivially small numbers
    query = encoder.query_instruction  # the paper's STS instruction
    ref, _ = _official_embeddings(folder, backbone, TEXTS[:1], query)
    torch.testing.assert_close(encoder.encode_query(TEXTS[:1], convert_to_tensor=True), ref, rtol=0, atol=1e-6)
    # texts are tokenised by the backbone's tokenizer: a literal special token is plain text
    # (with the folder's, its id would lie past the unresized embedding matrix)
    assert encoder.tokenizer.padding_side == "left" and len(encoder.tokenizer) == 49152
    plain = encoder.encode(["about <question1> here"])
    assert plain.shape == (1, TEACHER_DIM) and np.isfinite(plain).all()


def test_truncation_keeps_the_same_tokens(official, tmp_path):
    """Theirs cuts text + specials at max_input_length and writes the specials over the last K
    ids; ours keeps the first max_input_length - K text tokens: the same sequence."""
    from grace import GraceEncoder

    folder, backbone = official
    short = tmp_path / "short"
    shutil.copytree(folder, short)
    (short / "run_config.yml").write_text(_run_config(str(backbone), max_input_length=20))
    encoder = GraceEncoder.from_pretrained(short)
    assert encoder.options.max_prompt_tokens == 20
    texts = [TEXTS[1] * 3, TEXTS[2]]  # the first is cut, the second is not
    ref, _ = _official_embeddings(short, backbone, texts, DOC, max_length=20)
    with pytest.warns(UserWarning, match="1 of 2 texts were truncated"):
        ours = encoder.encode_document(texts, convert_to_tensor=True)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


def test_decoding_is_greedy_from_their_soft_prompts(official, encoder):
    """The decoding by hand: HF generate on the plain causal LM from their p as inputs_embeds."""
    from transformers import AutoModelForCausalLM

    from grace.encoders.llm2vec_gen import decoded_text
    from grace.models.backbones import end_token_ids

    folder, backbone = official
    _, p = _official_embeddings(folder, backbone, TEXTS[:1], DOC)
    lm = AutoModelForCausalLM.from_pretrained(backbone).eval()
    expected = lm.generate(inputs_embeds=p, attention_mask=torch.ones(1, K, dtype=torch.long),
                           max_new_tokens=6, do_sample=False, eos_token_id=end_token_ids(lm, encoder.tokenizer),
                           pad_token_id=encoder.tokenizer.pad_token_id)[0].tolist()
    ours = encoder.model.decode(p, 6, end_token_ids(lm, encoder.tokenizer), encoder.tokenizer.pad_token_id)
    assert ours[0] == expected[: len(ours[0])] and len(ours[0]) >= 1
    assert encoder.decode(TEXTS[0], max_new_tokens=6, instruction=DOC) == decoded_text(
        encoder.tokenizer, ours[0], END_TEXT)
    # any of several end ids stops it; the literal end text cuts a decoding
    assert encoder.model.decode(p, 6, [encoder.tokenizer.eos_token_id, expected[0]], 0) == [[]]
    ids = encoder.tokenizer("An answer." + END_TEXT + " more")["input_ids"]
    assert decoded_text(encoder.tokenizer, ids, END_TEXT) == "An answer."


def test_grace_decode_cli_and_save_in_our_format(official, encoder, tmp_path):
    folder, _ = official
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "grace.cli", "decode", "--model", str(folder),
                             "--max-new-tokens", "4", "first text", "second text"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("\n") == 2
    # save_pretrained writes our format (backbone reference + the converted parts): same vectors
    from grace import GraceEncoder

    encoder.save_pretrained(tmp_path / "ours")
    again = GraceEncoder.from_pretrained(tmp_path / "ours")
    assert again.model.spec.end_text == END_TEXT
    np.testing.assert_allclose(again.encode(TEXTS), encoder.encode(TEXTS), rtol=0, atol=1e-6)


def test_backbone_override_for_a_hub_id(official, tmp_path):
    """The folder names a hub id (offline here: unreachable); ``backbone=`` points at a copy."""
    from grace import GraceEncoder

    folder, backbone = official
    moved = tmp_path / "hub"
    shutil.copytree(folder, moved)
    (moved / "run_config.yml").write_text(_run_config("McGill-NLP/not-on-this-machine"))
    assert read_official(moved)[0].backbone == "McGill-NLP/not-on-this-machine"
    enc = GraceEncoder.from_pretrained(moved, backbone=str(backbone))
    assert enc.encode(TEXTS[:1]).shape == (1, TEACHER_DIM)
    _edit_json(moved / "encoder" / "config.json", model_type="qwen3")  # a backbone of another kind
    with pytest.raises(GraceInputError, match="trained on a qwen3 backbone, .* is a llama"):
        GraceEncoder.from_pretrained(moved, backbone=str(backbone))


def test_mteb_adapter_loads_the_folder(official, encoder):
    mteb_types = pytest.importorskip("mteb.types")
    from datasets import Dataset
    from mteb._create_dataloaders import create_dataloader

    from grace.evaluation.mteb_adapter import GraceMTEBModel
    from grace.evaluation.tasks import make_lee_task

    model = GraceMTEBModel(str(official[0]))
    assert model.mteb_model_meta.use_instructions and model.mteb_model_meta.embed_dim == TEACHER_DIM
    task = make_lee_task("Lee")
    loader = create_dataloader(Dataset.from_dict({"text": TEXTS[:2]}), task_metadata=task.metadata, batch_size=2)
    d = model.encode(loader, prompt_type=mteb_types.PromptType.document, task_metadata=task.metadata,
                     hf_split="test", hf_subset="default")
    np.testing.assert_allclose(d, encoder.encode_document(TEXTS[:2]), rtol=0, atol=1e-5)


def _edit_json(path, **changes):
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _edit_head(path, **config):
    saved = torch.load(path, weights_only=True)
    saved["config"].update(config)
    torch.save(saved, path)


REFUSED = [
    ("lora", lambda f: _edit_json(f / "encoder" / "adapter_config.json", peft_type="LORA"),
     "a LORA adapter is not supported"),
    ("decoder", lambda f: _edit_json(f / "encoder_decoder_config.json", save_decoder=True),
     "save_decoder is true"),
    ("subset", lambda f: _edit_json(f / "encoder_decoder_config.json", encoding_mode="total_10_last_5_tokens"),
     "pools the last 5 of 10"),
    ("mode", lambda f: _edit_json(f / "encoder_decoder_config.json", encoding_mode="mean_tokens"),
     "encoding_mode 'mean_tokens' is not supported"),
    ("size", lambda f: _edit_head(f / "alignment_mlp", size=2), "a head of size 2"),
    ("pooling", lambda f: _edit_head(f / "reconstruction_mlp", pooling_mode="mean"), "pooling_mode 'mean'"),
]


@pytest.mark.parametrize("name,edit,message", REFUSED, ids=[r[0] for r in REFUSED])
def test_what_grace_cannot_run_is_refused_in_one_line(official, tmp_path, name, edit, message):
    folder = tmp_path / name
    shutil.copytree(official[0], folder)
    edit(folder)
    with pytest.raises(GraceInputError, match=message) as caught:
        read_official(folder)
    assert "\n" not in str(caught.value)


def test_the_cli_reports_a_refusal_in_one_line(official, tmp_path, capsys):
    from grace.cli import main

    folder = tmp_path / "lora"
    shutil.copytree(official[0], folder)
    _edit_json(folder / "encoder" / "adapter_config.json", peft_type="LORA")
    capsys.readouterr()
    assert main(["decode", "--model", str(folder), "text"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "LORA adapter is not supported" in err
