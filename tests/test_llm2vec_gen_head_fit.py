"""The LLM2Vec-Gen alignment head's start (grace.llm2vec_gen.head_fit): standardisation and the
ridge fit by hand, the model after the fit, checkpoints with and without the standardisation,
the trainer's fit before step 1 (and not on resume), and the alignment head's own lr."""

import copy
import json

import pytest
import torch
from sample_data import TEXTS

from grace.llm2vec_gen.checkpoint import LLM2VecGenSpec
from grace.llm2vec_gen.head_fit import (
    fit_alignment_head,
    ridge_head,
    soft_prompt_means,
    standardization,
)
from grace.llm2vec_gen.inputs import build_encoder_inputs
from grace.llm2vec_gen.model import LLM2VecGenModel

pytestmark = pytest.mark.filterwarnings("ignore:.*texts are empty or whitespace-only:UserWarning")


def test_standardization_by_hand():
    x = torch.tensor([[1.0, 2.0, 0.0], [3.0, 2.0, 4.0]])
    mean, scale = standardization(x)
    assert torch.allclose(mean, torch.tensor([2.0, 2.0, 2.0]))
    # population std: (1, 0, 2); the constant column is only centred (scale 1, not 1/0)
    assert torch.allclose(scale, torch.tensor([1.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="at least 2 rows"):
        standardization(x[:1])


def test_ridge_head_by_hand():
    x = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    y = torch.cat([2 * x + 1, -x], dim=1)  # (4, 2): two exact linear targets
    w, b, alpha = ridge_head(x, y, alphas=(1e-9,))  # no penalty to speak of: the exact line
    assert w.shape == (2, 1) and b.shape == (2,) and alpha == 1e-9
    assert torch.allclose(w, torch.tensor([[2.0], [-1.0]]), atol=1e-6)
    assert torch.allclose(b, torch.tensor([1.0, 0.0]), atol=1e-6)
    # penalty 1, intercept unpenalised: centred x = (-1.5, -.5, .5, 1.5), sum x^2 = 5, sum x y = 10
    # for the first target -> w = 10 / (5 + 1), b = mean y - w mean x = 4 - (10/6) 1.5 = 1.5
    w, b, _ = ridge_head(x, y[:, :1], alphas=(1.0,))
    assert w.item() == pytest.approx(10 / 6, rel=1e-6) and b.item() == pytest.approx(1.5, rel=1e-6)
    # leave-one-out picks the small penalty for noiseless data
    _, _, alpha = ridge_head(x, y, alphas=(1e-6, 1e3))
    assert alpha == 1e-6


@pytest.fixture
def model(tiny):
    torch.manual_seed(0)
    spec = LLM2VecGenSpec(backbone="tiny-random", hidden_size=64, teacher_dim=3, num_tokens=4)
    m = LLM2VecGenModel(copy.deepcopy(tiny[0]), spec)
    m.init_heads("scaled")
    return m


def test_fit_sets_the_standardisation_and_the_ridge_head(model, tiny):
    _, tok = tiny
    texts = TEXTS
    targets = torch.randn(len(texts), 3, generator=torch.Generator().manual_seed(1))
    info = fit_alignment_head(model, tok, texts, targets, standardize=True, ridge=True, batch_size=4)
    assert info["texts"] == len(texts) and info["ridge_alpha"] > 0
    features = soft_prompt_means(model, tok, texts, batch_size=3)  # (N, 64), other batching
    standardized = model.alignment_input(features)
    varying = features.std(dim=0) > 1e-6
    assert torch.allclose(standardized.mean(dim=0), torch.zeros(64), atol=1e-4)
    assert torch.allclose(standardized.std(dim=0, unbiased=False)[varying],
                          torch.ones(int(varying.sum())), atol=1e-3)
    # the model's embedding of each fitted text is the ridge prediction from its features
    w, b, _ = ridge_head(standardized, targets, alphas=(info["ridge_alpha"],))
    enc = build_encoder_inputs(tok, texts, "", 512, 4)
    with torch.no_grad():
        e = model(enc.input_ids, enc.attention_mask)["embedding"]  # (N, 3)
    torch.testing.assert_close(e, standardized @ w.T + b, rtol=1e-3, atol=1e-4)


def test_checkpoint_keeps_the_standardisation_and_old_layout_loads_as_identity(model, tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    from grace.llm2vec_gen.checkpoint import WEIGHTS

    _, tok = tiny
    fit_alignment_head(model, tok, TEXTS[:8], torch.randn(8, 3), standardize=True, ridge=False)
    model.save_pretrained(tmp_path / "new")
    again = LLM2VecGenModel(copy.deepcopy(tiny[0]), model.spec)
    again.load_trainable(tmp_path / "new")
    assert torch.equal(again.alignment_input.mean, model.alignment_input.mean)
    assert torch.equal(again.alignment_input.scale, model.alignment_input.scale)
    # a checkpoint written before the standardisation existed: loads, and is the plain head
    old = tmp_path / "old"
    old.mkdir()
    tensors = {k: v for k, v in load_file(tmp_path / "new" / WEIGHTS).items()
               if not k.startswith("alignment_input.")}
    save_file(tensors, old / WEIGHTS)
    model.spec.save(old)
    legacy = LLM2VecGenModel(copy.deepcopy(tiny[0]), model.spec)
    legacy.load_trainable(old)
    assert torch.equal(legacy.alignment_input.mean, torch.zeros(64))
    assert torch.equal(legacy.alignment_input.scale, torch.ones(64))
    enc = build_encoder_inputs(tok, TEXTS[:2], "", 512, 4)
    with torch.no_grad():
        p = legacy(enc.input_ids, enc.attention_mask)["soft_prompts"]
        expected = legacy.alignment_head(p).mean(dim=1)  # z = W_a p + b_a, the old model
        torch.testing.assert_close(legacy(enc.input_ids, enc.attention_mask)["embedding"], expected)


def _config(tmp_path, **overrides):
    from grace.config.schema import load_config

    data = tmp_path / "texts.txt"
    data.write_text("".join(t + "\n" for t in TEXTS))
    responses = tmp_path / "responses.jsonl"  # distinct answers, so the targets vary
    responses.write_text("".join(json.dumps({"text": t, "response": " ".join(reversed(t.split()))})
                                 + "\n" for t in TEXTS))
    values = {"method": "llm2vec-gen", "model.name": "tiny-random", "data.path": str(data),
              "output_dir": str(tmp_path / "OUT"), "batch_size": 4, "max_steps": 2,
              "save_every": 1, "sample_every": 0, "llm2vec_gen.num_tokens": 4,
              "llm2vec_gen.teacher": "tiny-random", "llm2vec_gen.micro_batch_size": 4,
              "llm2vec_gen.responses_file": str(responses), "llm2vec_gen.init_texts": 6,
              "llm2vec_gen.cache": str(tmp_path / "gen.sqlite")}
    values.update(overrides)
    return load_config(None, values)


def test_trainer_fits_before_step_one_and_not_on_resume(tmp_path, one_thread, capsys):
    from grace.llm2vec_gen.trainer import LLM2VecGenTrainer

    trainer = LLM2VecGenTrainer(_config(tmp_path))
    model = trainer.policy
    assert "align_init ridge on 6 training texts" in capsys.readouterr().out
    assert not torch.equal(model.alignment_input.scale, torch.ones(64))
    assert model.alignment_head.weight.abs().sum() > 0  # the scaled init alone leaves it at 0
    fitted = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    trainer.train()
    saved = trainer.policy.trainable_state_dict()
    # the statistics followed the training batches (standardize_momentum 0.1), and were saved
    assert not torch.equal(saved["alignment_input.mean"], fitted["alignment_input.mean"])
    assert not torch.equal(saved["alignment_head.weight"], fitted["alignment_head.weight"])  # trained
    (tmp_path / "OUT" / "checkpoint-2").rename(tmp_path / "OUT" / "moved")  # resume from step 1
    resumed = LLM2VecGenTrainer(_config(tmp_path))
    assert resumed.start_step == 1 and "align_init" not in capsys.readouterr().out
    from safetensors.torch import load_file

    step1 = load_file(tmp_path / "OUT" / "checkpoint-1" / "llm2vec_gen.safetensors")
    for name, tensor in resumed.policy.trainable_state_dict().items():
        assert torch.equal(tensor, step1[name]), name


def test_nothing_fitted_when_both_are_off(tmp_path, one_thread):
    from grace.llm2vec_gen.trainer import LLM2VecGenTrainer

    trainer = LLM2VecGenTrainer(_config(tmp_path, **{"llm2vec_gen.standardize": False,
                                                     "llm2vec_gen.align_init": "none"}))
    assert torch.equal(trainer.policy.alignment_input.scale, torch.ones(64))
    assert trainer.policy.alignment_head.weight.abs().sum() == 0  # as the scaled init left it


def test_alignment_head_learning_rate_is_its_own_param_group(tmp_path, one_thread):
    from grace.llm2vec_gen.trainer import LLM2VecGenTrainer

    trainer = LLM2VecGenTrainer(_config(tmp_path, **{"llm2vec_gen.learning_rate": 1e-3,
                                                     "llm2vec_gen.align_head_learning_rate": 1e-5}))
    groups = trainer.optimizer.param_groups
    assert [g["initial_lr"] for g in groups] == [1e-3, 1e-5]
    head = {id(p) for p in trainer.policy.alignment_head.parameters()}
    assert {id(p) for p in groups[1]["params"]} == head
    assert not head & {id(p) for p in groups[0]["params"]}
    assert sum(len(g["params"]) for g in groups) == 5  # soft tokens, 2 + 2 head tensors


def test_bad_settings_are_named(tmp_path):
    from grace.errors import GraceInputError

    with pytest.raises(GraceInputError, match="align_init 'lstsq'"):
        _config(tmp_path, **{"llm2vec_gen.align_init": "lstsq"})
    with pytest.raises(GraceInputError, match="init_texts must be >= 5"):
        _config(tmp_path, **{"llm2vec_gen.init_texts": 2})


def test_standardisation_tracks_training_batches_by_hand():
    from grace.llm2vec_gen.model import Standardize

    s = Standardize(2, momentum=0.5)
    s.set(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 1.0]))
    s.track(torch.tensor([[2.0, 0.0], [4.0, 0.0]]))  # batch mean (3, 0), variance (1, 0)
    # mean: 0.5*0 + 0.5*3 = 1.5; scale^2: 0.5*1 + 0.5*1 = 1 and 0.5*1 + 0.5*0 = 0.5
    assert torch.allclose(s.mean, torch.tensor([1.5, 0.0]))
    assert torch.allclose(s.scale, torch.tensor([1.0, 0.5 ** 0.5]))
    s.track(torch.ones(1, 2))  # one row: no variance, nothing moves
    assert torch.allclose(s.mean, torch.tensor([1.5, 0.0]))
    fixed = Standardize(2)  # momentum 0: never moves
    fixed.track(torch.tensor([[2.0, 0.0], [4.0, 0.0]]))
    assert torch.equal(fixed.mean, torch.zeros(2)) and torch.equal(fixed.scale, torch.ones(2))


def test_training_moves_the_statistics_only_with_momentum(tmp_path, one_thread):
    from grace.llm2vec_gen.trainer import LLM2VecGenTrainer

    for momentum, moves in ((0.0, False), (0.3, True)):
        out = tmp_path / f"m{momentum}"
        trainer = LLM2VecGenTrainer(_config(tmp_path, output_dir=str(out),
                                            **{"llm2vec_gen.standardize_momentum": momentum}))
        start = trainer.policy.alignment_input.mean.clone()
        trainer.step(1)
        with torch.no_grad():  # eval-mode forwards (encoding, decoding samples) never move them
            trainer.policy.eval()
            after = trainer.policy.alignment_input.mean.clone()
            enc = build_encoder_inputs(trainer.tokenizer, TEXTS[:2], "", 64, 4)
            trainer.policy(enc.input_ids, enc.attention_mask)
        assert torch.equal(trainer.policy.alignment_input.mean, after)
        assert (not torch.equal(after, start)) == moves
        trainer.close()
