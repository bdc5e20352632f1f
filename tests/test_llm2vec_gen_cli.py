"""The issue's command line, end to end on the tiny random model: ``grace train --method
llm2vec-gen`` in a fresh process (default batch size 64 and the default teacher, the packaged
all-MiniLM-L6-v2), then ``grace decode`` on its output folder."""

import json
import os
import subprocess
import sys

from sample_data import TEXTS
from safetensors.torch import load_file

from grace.cli import main

ALLOWED = {  # the trainable parts + backbone reference, training state, tokenizer files
    "llm2vec_gen.safetensors", "llm2vec_gen.json", "trainer_state.json", "grace_config.yaml",
    # accelerate's save_state: optimizer, scheduler, RNG, the registered run position
    "optimizer.bin", "scheduler.bin", "random_states_0.pkl", "custom_checkpoint_0.pkl",
    "tokenizer.json",
    "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json",
    "checkpoint_manifest.json",  # every file's size and SHA-256, verified on resume
    "modules.json", "config_sentence_transformers.json",  # sentence-transformers' view (st_files)
    "README.md",  # the model card (training.model_card)
}


def test_train_then_decode(tmp_path, capsys):
    queries = tmp_path / "QUERIES.txt"  # 72 queries: one full default batch (64) per step
    queries.write_text("".join(f"Question {i}: what does this mean? {TEXTS[i % len(TEXTS)]}\n"
                               for i in range(72)))
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    command = [sys.executable, "-m", "grace.cli", "train", "--method", "llm2vec-gen", "--model",
               "tiny-random", "--data", queries.name, "--max-steps", "2", "--output-dir", "OUT",
               # short responses into a cache of the test's own (defaults: 500 tokens, $GRACE_CACHE)
               "--llm2vec_gen.response_max_new_tokens", "8", "--llm2vec_gen.cache", "gen.sqlite"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "llm2vec-gen: 29,760 trainable parameters" in result.stdout  # 10*64 + 64*64+64 + 64*384+384
    assert "done: last checkpoint OUT/checkpoint-2" in result.stdout

    checkpoint = tmp_path / "OUT" / "checkpoint-2"
    files = {p.name for p in checkpoint.iterdir()}
    assert files <= ALLOWED, files - ALLOWED
    weights = load_file(checkpoint / "llm2vec_gen.safetensors")
    assert {k: tuple(v.shape) for k, v in weights.items()} == {
        "soft_tokens": (10, 64), "reconstruction_head.weight": (64, 64),
        "reconstruction_head.bias": (64,), "alignment_head.weight": (384, 64),
        "alignment_head.bias": (384,),
        # the alignment input's fixed standardisation (not trained, not counted above)
        "alignment_input.mean": (64,), "alignment_input.scale": (64,)}
    assert (checkpoint / "llm2vec_gen.safetensors").stat().st_size < 4 * (29_760 + 128) + 4096
    spec = json.loads((checkpoint / "llm2vec_gen.json").read_text())
    assert spec["backbone"] == "tiny-random" and spec["teacher"] == "all-MiniLM-L6-v2"
    rows = [json.loads(x) for x in (tmp_path / "OUT" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    from grace.rollout.generation_cache import RationaleCache

    store = RationaleCache(tmp_path / "gen.sqlite")  # one response per distinct query, settings in the key
    settings = {json.loads(s)["max_new_tokens"] for s in
                {row[0] for row in store._db.execute("SELECT settings FROM rationales")}}
    assert len(store) > 64 and settings == {8}

    capsys.readouterr()
    assert main(["decode", "--model", str(tmp_path / "OUT"), "--max-new-tokens", "6", "some text"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # one line per text
