"""Benchmark (c) of issue 5: ``encode`` without rationale against sentence-transformers.

    .venv/bin/python -m benchmarks.speed.bench_encode_none            # SmolLM2-135M, writes results-speed.md
    .venv/bin/python -m benchmarks.speed.bench_encode_none --quick    # fewer texts, < 1 minute, prints only

The last line printed is ``ratio: <sentence-transformers seconds / our seconds>`` in float32
(> 1: we are faster).

Both sides embed the same texts (STS-B sentences from shared/data, in their file order) with the
same backbone weights (our SmolLM2-135M-Instruct safetensors folder), the same dtype, batch size
and thread count, and mean-pool the last hidden states:

* ours: ``GraceEncoder.encode(texts, rationale="none")`` -- GRACE's prompt (system prompt + chat
  template around the text), pooled after the system prefix; the system prefix's KV cache is
  computed once per batch and shared, length-sorted batches;
* sentence-transformers: ``SentenceTransformer([Transformer(folder), Pooling(mean)])`` over the
  raw texts (its own length sorting and batching).

So we run the template tokens around every text and ST runs the bare text: per text we process
more tokens. The table reports both the seconds and the tokens each side ran through the model.
The two sides alternate; each figure is the median of ``--repeats`` runs after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from benchmarks.common import paths  # noqa: E402
from benchmarks.common.report import machine, write_section  # noqa: E402

DATA = paths.SHARED_DATA


def _texts(n: int) -> list[str]:
    with (DATA / "sts" / "stsb-test.jsonl").open() as f:
        rows = [json.loads(line) for line in f if line.strip()]
    texts = []
    for row in rows:
        texts += [row["sentence1"], row["sentence2"]]
    return texts[:n]


def _st_model(folder: str, dtype: str):
    from sentence_transformers import SentenceTransformer, models

    word = models.Transformer(folder, model_kwargs={"dtype": getattr(torch, dtype)})
    dim = getattr(word, "get_embedding_dimension", None) or word.get_word_embedding_dimension
    pool = models.Pooling(dim(), pooling_mode="mean")
    return SentenceTransformer(modules=[word, pool], device="cpu")


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer texts, under a minute, no results file")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    args = parser.parse_args()
    if args.quick:
        args.texts, args.repeats, args.dtypes = 32, 1, "float32"

    from grace.models.backbones import load_backbone, resolve_model_path
    from grace.encoders.base import GraceEncoder
    from grace.models.prompt import build_prompts

    folder = resolve_model_path(args.model)
    texts = _texts(args.texts)
    rows = []
    for dtype in args.dtypes.split(","):
        model, tokenizer = load_backbone(folder, dtype)
        ours = GraceEncoder(model, tokenizer, cache=False)
        st = _st_model(folder, dtype)
        run = {
            "ours": lambda: ours.encode(texts, batch_size=args.batch_size, rationale="none"),
            "sentence-transformers": lambda: st.encode(texts, batch_size=args.batch_size,
                                                       convert_to_numpy=True, normalize_embeddings=True),
        }
        for fn in run.values():  # warm-up
            fn()
        seconds = {name: [] for name in run}
        for _ in range(args.repeats):
            for name, fn in run.items():
                t, _out = _timed(fn)
                seconds[name].append(t)
        median = {name: statistics.median(v) for name, v in seconds.items()}
        prompts = build_prompts(tokenizer, texts)
        ours_tokens = int(prompts.attention_mask.sum())
        shared = int((prompts.pool_start - (prompts.input_ids.shape[1] - prompts.attention_mask.sum(1)))[0])
        st_tokens = sum(len(tokenizer(t, add_special_tokens=True)["input_ids"]) for t in texts)
        speedup = median["sentence-transformers"] / median["ours"]
        rows.append((dtype, median, ours_tokens, shared, st_tokens, speedup))
        print(f"{dtype:9s} {len(texts)} texts: ours {median['ours']:.2f} s ({len(texts) / median['ours']:.1f} texts/s) | "
              f"sentence-transformers {median['sentence-transformers']:.2f} s "
              f"({len(texts) / median['sentence-transformers']:.1f} texts/s) | speed-up {speedup:.2f}x", flush=True)
    headline = next(r[5] for r in rows if r[0] == "float32") if any(r[0] == "float32" for r in rows) else rows[0][5]
    if not args.quick:
        lines = [
            "## (c) `encode --rationale none` vs sentence-transformers mean pooling",
            "",
            f"`python -m benchmarks.speed.bench_encode_none` ({time.strftime('%Y-%m-%d')}), "
            f"model `{args.model}`, "
            f"{len(texts)} STS-B sentences, batch {args.batch_size}, median of {args.repeats} alternating repeats.",
            f"Machine: {machine('sentence-transformers')}.",
            "",
            "| dtype | ours s | ours texts/s | ST s | ST texts/s | speed-up | tokens: ours prompts (system prefix, run once per batch) | tokens: ST |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for dtype, median, ours_tokens, shared, st_tokens, speedup in rows:
            lines.append(
                f"| {dtype} | {median['ours']:.2f} | {len(texts) / median['ours']:.1f} | "
                f"{median['sentence-transformers']:.2f} | {len(texts) / median['sentence-transformers']:.1f} | "
                f"**{speedup:.2f}x** | {ours_tokens} ({shared} per text) | {st_tokens} |")
        lines += ["", "Our prompts wrap every text in GRACE's system prompt and chat template; the "
                  "shared system prefix is run once per batch, the rest (template + text) per text. "
                  "ST runs the bare text (with the tokenizer's special tokens)."]
        print(f"wrote {write_section('encode_none', chr(10).join(lines))}")
    print(f"ratio: {headline:.2f}")


if __name__ == "__main__":
    main()
