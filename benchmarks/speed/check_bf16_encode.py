"""Is an embedding the same whatever batch its text is encoded in? float32 vs bfloat16 (issue 15).

    .venv/bin/python -m benchmarks.speed.check_bf16_encode     # writes results-speed.md (bf16_encode)

Encodes ``--texts`` STS-B test sentences and SciFact abstracts three ways with greedy 32-token
rationales and without rationales: each text alone, all together (one batch of mixed lengths),
and together in reverse order; then reports, per dtype and mode, the largest absolute
difference and the smallest cosine between a text's embeddings across the three, and the
share of texts whose greedy rationale changes with its batch. What it decides: the encoder's
default dtype stays float32 unless bfloat16 embeddings do not depend on the batch.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from benchmarks.common import paths  # noqa: E402
from benchmarks.common.report import machine, write_section  # noqa: E402

SHARED = paths.SHARED_DATA


def texts(n: int) -> list[str]:
    rows = [json.loads(x) for x in (SHARED / "sts/stsb-test.jsonl").read_text().splitlines()[: n - n // 4]]
    out = [r["sentence1"] for r in rows]
    for line in (SHARED / "retrieval/scifact/corpus.jsonl").read_text().splitlines()[: n // 4]:
        r = json.loads(line)
        out.append(f"{r.get('title') or ''} {r.get('text') or ''}".strip())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--texts", type=int, default=16)
    p.add_argument("--write", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args()
    from grace import GraceEncoder

    items = texts(args.texts)
    rows = []
    for dtype in ("float32", "bfloat16"):
        for mode in ("none", "greedy"):
            enc = GraceEncoder.from_pretrained(args.model, cache=False, rationale=mode,
                                               max_new_tokens=32, dtype=dtype)
            alone = [enc.encode([t], return_rationales=True) for t in items]
            alone_emb = np.stack([np.asarray(e)[0] for e, _ in alone])
            alone_rat = [r[0] for _, r in alone]
            together, rat = enc.encode(items, return_rationales=True)
            rev, rat_rev = enc.encode(items[::-1], return_rationales=True)
            runs = [alone_emb, np.asarray(together), np.asarray(rev)[::-1]]
            diff = max(float(np.abs(a - b).max()) for a in runs for b in runs)
            cos = min(float((a * b).sum(axis=1).min()) for a in runs for b in runs)  # unit vectors
            changed = (sum(len({x, y, z}) > 1 for x, y, z in zip(alone_rat, rat, rat_rev[::-1])) / len(items)
                       if mode == "greedy" else 0.0)
            rows.append((dtype, mode, diff, cos, changed))
            print(f"{dtype:9s} {mode:7s} max|diff| {diff:.2e}  min cosine {cos:.6f}  "
                  f"rationales changed {changed:.0%}", flush=True)
    if args.write:
        lines = ["## (g) Does an embedding depend on its batch? float32 vs bfloat16", "",
                 f"`python -m benchmarks.speed.check_bf16_encode` ({time.strftime('%Y-%m-%d')}), "
                 f"model `{args.model}`, "
                 f"{len(items)} texts ({len(items) - args.texts // 4} STS-B sentences, {args.texts // 4} "
                 "SciFact abstracts), each encoded alone, in one batch and in one batch reversed.",
                 f"Machine: {machine()}.", "",
                 "| weights | rationale | max abs difference | min cosine | greedy rationales that change |",
                 "|---|---|---|---|---|"]
        lines += [f"| {d} | {m} | {x:.2e} | {c:.6f} | {ch:.0%} |" for d, m, x, c, ch in rows]
        print(f"wrote {write_section('bf16_encode', chr(10).join(lines))}")


if __name__ == "__main__":
    main()
