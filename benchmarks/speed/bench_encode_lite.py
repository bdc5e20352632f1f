"""The lite suite's greedy encoding speed (issue 15): texts/s at 32 rationale tokens.

    .venv/bin/python -m benchmarks.speed.bench_encode_lite            # writes results-speed.md (encode_lite)
    .venv/bin/python -m benchmarks.speed.bench_encode_lite --quick    # fewer texts, prints only

A fixed sample of the lite suite's own kinds of text, in its proportions (about 5 short texts
per SciFact abstract: STS-B and SICK-R test sentences, BANKING77 test queries, SciFact
abstracts), is encoded by ``GraceEncoder.encode`` with greedy 32-token rationales and no
cache, in bfloat16 weights (as ``make_results.py`` evaluates) and float32, through the engine's
static decode step (the default) and through the HF decoder (``decode="hf"``, what the engine
did before; the benchmark swaps it in for the encoder's call). Median of ``--repeats``
alternating runs. The whole suite's figure is in results.md (Seconds, greedy rows).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.common import paths  # noqa: E402
from benchmarks.common.report import machine, write_section  # noqa: E402

SHARED = paths.SHARED_DATA


def lite_texts(short: int, abstracts: int) -> list[str]:
    rows = [json.loads(x) for x in (SHARED / "sts/stsb-test.jsonl").read_text().splitlines()[: short // 3]]
    texts = [r["sentence1"] for r in rows]
    rows = [json.loads(x) for x in (SHARED / "sts/sickr-test.jsonl").read_text().splitlines()[: short // 3]]
    texts += [r["sentence1"] for r in rows]
    rows = [json.loads(x) for x in (SHARED / "classification/banking77-test.jsonl").read_text().splitlines()]
    texts += [r["text"] for r in rows[: short - len(texts)]]
    for line in (SHARED / "retrieval/scifact/corpus.jsonl").read_text().splitlines()[:abstracts]:
        r = json.loads(line)
        texts.append(f"{r.get('title') or ''} {r.get('text') or ''}".strip())
    return texts


def timed(encoder, texts, decode: str) -> float:
    import grace.encoders.encode as encode
    from grace.rollout.engine import generate_and_score

    original = encode.generate_and_score
    encode.generate_and_score = functools.partial(generate_and_score, decode=decode)
    try:
        start = time.perf_counter()
        encoder.encode(texts)
        return time.perf_counter() - start
    finally:
        encode.generate_and_score = original


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--short", type=int, default=250)
    p.add_argument("--abstracts", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    args = p.parse_args()
    if args.quick:
        args.short, args.abstracts, args.repeats = 30, 6, 1
    from grace import GraceEncoder

    texts = lite_texts(args.short, args.abstracts)
    rows = []
    for dtype in args.dtypes:
        encoder = GraceEncoder.from_pretrained(args.model, cache=False, rationale="greedy",
                                               max_new_tokens=32, dtype=dtype)
        for decode in ("static", "hf"):  # warm-up, each path
            timed(encoder, texts[:8], decode)
        times = {"static": [], "hf": []}
        for _ in range(args.repeats):
            for decode in times:
                times[decode].append(timed(encoder, texts, decode))
        static, hf = statistics.median(times["static"]), statistics.median(times["hf"])
        rows.append((dtype, static, hf))
        print(f"{dtype}: static step {len(texts) / static:.2f} texts/s, HF decoder "
              f"{len(texts) / hf:.2f} texts/s, ratio {hf / static:.2f}", flush=True)
    if not args.quick:
        lines = ["## (f) The lite suite's greedy encoding speed", "",
                 f"`python -m benchmarks.speed.bench_encode_lite` ({time.strftime('%Y-%m-%d')}), "
                 f"model `{args.model}`, "
                 f"{len(texts)} texts ({args.short} short, {args.abstracts} SciFact abstracts: the lite "
                 f"suite's mix), greedy 32-token rationales, no cache, median of {args.repeats}.",
                 f"Machine: {machine()}.", "",
                 "| weights | static step texts/s | HF decoder texts/s | HF s / static s |", "|---|---|---|---|"]
        lines += [f"| {d} | {len(texts) / s:.2f} | {len(texts) / h:.2f} | {h / s:.2f}x |" for d, s, h in rows]
        print(f"wrote {write_section('encode_lite', chr(10).join(lines))}")


if __name__ == "__main__":
    main()
