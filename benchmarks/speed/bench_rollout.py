"""Benchmark (a) of issue 5: rollouts + embeddings, our engine against generate + a second pass.

    .venv/bin/python -m benchmarks.speed.bench_rollout            # SmolLM2-135M, writes results-speed.md
    .venv/bin/python -m benchmarks.speed.bench_rollout --quick    # smaller, < 1 minute, prints only

The last line printed is ``ratio: <reference seconds / our seconds>`` for the training-shaped
scenario in float32 (> 1: we are faster).

Both pipelines produce the same thing: for B prompts (Wikipedia sentences, GRACE's system
prompt and chat template), rationales up to ``--max-new-tokens`` and, for every rationale, the
L2-normalised masked mean of the last hidden states over text + rationale plus the per-token
log-probs of the rationale.

* reference: what the GRACE reference implementation does -- Hugging Face ``generate`` on the
  left-padded prompts (prompt repeated G times), then a second full forward pass over prompt +
  rationale to pool and score (``grace.rollout.hf_path.generate_sequences`` + ``score_sequences``);
* ours: ``grace.rollout.engine.generate_and_score`` (shared system-prefix KV, one prefill per group, pooling and
  log-probs from the generation pass, early exit, preallocated KV cache) with its static decode
  step (grace.rollout.decode_step, the default); *ours, HF step*: the same engine decoding
  through the HF decoder (``decode="hf"``, what it did before issue 15); with ``--compiled``,
  *ours, compiled*: the static step under ``torch.compile`` (``decode="compiled"``; its
  warm-up builds the graph, whose seconds are reported apart: a training run pays them once
  per process, and inductor's on-disk cache makes later processes cheaper).

*limit*: the tokens/s that this machine's matmul throughput at the model's shapes allows
(``limits.decode_limit``: every projection and the LM head timed at 1,024 rows, the best case;
attention, norms and sampling left out), per dtype, measured in the same run before the
scenarios and after each, the highest reading kept (a busy neighbour lowers a reading; the
limit is the best the machine showed); *share* = our
rationale tokens/s (prefill time included) / limit; *share of the work's limit* = the least
time those matmuls need for the whole job (each prompt token once -- the prompts' common
prefix once -- through the layers, each rationale token through the layers and the LM head;
``limits.work_seconds``) / our seconds: the first share counts the prefill as lost time, this
one as work.

*matmul floor*: the same matmuls at the scenario's own row count (B x G), with the model's own
weights streaming from memory as in a real step and in the static step's orientation
(``limits.rows_floor``), as a share of the limit: what a decode step at this many rows could
reach if everything but its matmuls were free. *best share this shape allows*: the scenario's
tokens over its prompt tokens at the limit plus a step at that floor per token of a mean row
but its first
(``limits.best_rollout_seconds``): no implementation built on these GEMMs gets a higher share.

Scenarios: ``rollout`` = a training step's rollouts (B prompts x G samples at T=1.0);
``encode`` = greedy encoding (B texts, one rationale each; both pipelines produce the same
tokens, checked). Same model, batch, lengths, dtype and thread count; the two pipelines
alternate, each repeat runs both, the median of ``--repeats`` is reported (one warm-up first).
Tokens/s counts the rationale tokens produced (up to and including EOS).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from benchmarks.common import paths  # noqa: E402
from benchmarks.common.report import machine, write_section  # noqa: E402

DATA = paths.WIKI_SENTENCES


def _texts(n: int) -> list[str]:
    lines = [line.strip() for line in DATA.read_text().splitlines() if line.strip()]
    return lines[:n]


PIPELINES = ("ours", "ours, HF step", "reference")
COMPILED = "ours, compiled"
_DECODE = {"ours": "auto", "ours, HF step": "hf", COMPILED: "compiled"}


def _run(pipeline: str, model, tokenizer, prompts, samples: int, temperature: float, tokens: int):
    from grace.rollout.engine import generate_and_score
    from grace.rollout.hf_path import generate_sequences, score_sequences

    start = time.perf_counter()
    if pipeline.startswith("ours"):
        out = generate_and_score(model, tokenizer, prompts, num_samples=samples, temperature=temperature,
                                 max_new_tokens=tokens, batch_size=prompts.input_ids.shape[0] * samples,
                                 decode=_DECODE[pipeline])
    else:
        seqs = generate_sequences(model, tokenizer, prompts, num_samples=samples, temperature=temperature,
                                  max_new_tokens=tokens, batch_size=prompts.input_ids.shape[0] * samples)
        out = score_sequences(model, seqs, micro_batch_size=len(seqs))
    return time.perf_counter() - start, out


def measure(model, tokenizer, texts, samples, temperature, tokens, repeats, pipelines=PIPELINES):
    """Median seconds and produced tokens of the pipelines, alternating; checks greedy equality.
    ``result["warm-up"]``: each pipeline's warm-up seconds (the compiled one builds its graph)."""
    from grace.models.prompt import build_prompts

    prompts = build_prompts(tokenizer, texts)
    warm = {p: _run(p, model, tokenizer, prompts, samples, temperature, tokens)[0] for p in pipelines}
    times = {p: [] for p in pipelines}
    produced = {p: [] for p in pipelines}
    outs = {}
    for _ in range(repeats):
        for pipeline in pipelines:
            torch.manual_seed(0)
            seconds, out = _run(pipeline, model, tokenizer, prompts, samples, temperature, tokens)
            times[pipeline].append(seconds)
            produced[pipeline].append(int(out.seqs.response_mask.sum()))
            outs[pipeline] = out
    agreement = None
    step_agreement = None
    if temperature == 0:  # float32: the same tokens; bf16 rounding may flip near-ties
        float32 = next(model.parameters()).dtype == torch.float32
        step_agreement = _identical(outs["ours"], outs["ours, HF step"])
        if float32:
            assert step_agreement == 1.0, "greedy tokens of the static and the HF step differ in float32"
        if COMPILED in outs and float32:
            assert torch.equal(outs["ours"].seqs.response_ids, outs[COMPILED].seqs.response_ids)
        agreement = _identical(outs["ours"], outs["reference"])
        if float32:
            assert agreement == 1.0, "greedy tokens differ in float32"
            cos = torch.nn.functional.cosine_similarity(outs["ours"].embeddings, outs["reference"].embeddings)
            assert cos.min() >= 0.999, f"embeddings differ (min cosine {cos.min():.5f})"
    from benchmarks.speed.limits import shared_prefix_tokens

    result = {"identical_rationales": agreement, "identical_to_hf_step": step_agreement, "prompt_tokens": shared_prefix_tokens(prompts), "warm-up": warm}
    for pipeline in times:
        seconds = statistics.median(times[pipeline])
        n_tok = statistics.median(produced[pipeline])
        result[pipeline] = {"seconds": seconds, "tokens": n_tok, "tokens_per_s": n_tok / seconds,
                            "texts_per_s": len(texts) * samples / seconds}
    return result


def _identical(a, b) -> float:
    """The share of rows whose greedy rationales are the same token for token."""
    a, b = a.seqs.response_ids, b.seqs.response_ids
    width = min(a.shape[1], b.shape[1])
    return float((a[:, :width] == b[:, :width]).all(dim=1).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, under a minute, no results file")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=8, help="B: prompts per rollout batch")
    parser.add_argument("--samples", type=int, default=4, help="G: rollouts per prompt")
    parser.add_argument("--encode-texts", type=int, default=32, help="texts in the greedy scenario")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compiled", action="store_true",
                        help="also time the static step under torch.compile (builds a graph: minutes)")
    parser.add_argument("--dtypes", default=None, help="comma-separated (default float32,bfloat16; "
                        "--quick: float32)")
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.samples, args.encode_texts = 2, 4, 4
        args.max_new_tokens, args.repeats = 12, 1
    args.dtypes = args.dtypes or ("float32" if args.quick else "float32,bfloat16")

    from benchmarks.speed.limits import (best_limit, best_rollout_seconds, bf16_matrix_units, decode_limit,
                                         rows_floor, work_seconds)

    def work_share(r, dtype):
        ours = r["ours"]
        return work_seconds(limits[dtype], r["prompt_tokens"], ours["tokens"]) / ours["seconds"]

    def best_share(r, dtype, n_rows):
        """The highest share of the limit a rollout of this shape can reach with these GEMMs:
        its tokens over the prefill at the limit plus a step at the matmul floor for each token
        of a mean row but its first (which the prefill's last state gives: rows that end early
        cost no steps, so this is an upper bound)."""
        best = best_rollout_seconds(limits[dtype], floors[dtype][n_rows], r["prompt_tokens"],
                                    r["ours"]["tokens"] / n_rows - 1)
        return r["ours"]["tokens"] / best / limits[dtype]["tokens_per_s"]

    def read_floors(model, dtype):  # the fastest reading of each row count so far
        for n_rows in {args.prompts * args.samples, args.encode_texts}:
            f = rows_floor(model, n_rows)
            old = floors.setdefault(dtype, {}).get(n_rows)
            floors[dtype][n_rows] = f if old is None or f["step_seconds"] < old["step_seconds"] else old

    from grace.models.backbones import load_backbone

    pipelines = PIPELINES + ((COMPILED,) if args.compiled else ())
    rows, limits, floors = [], {}, {}
    for dtype in args.dtypes.split(","):
        model, tokenizer = load_backbone(args.model, dtype)
        model.eval()
        readings = [decode_limit(model, next(model.parameters()).dtype)]  # again after each scenario
        limits[dtype] = best_limit(readings)
        read_floors(model, dtype)
        print(f"limit {dtype}: {limits[dtype]['tokens_per_s']:.0f} tok/s "
              f"({limits[dtype]['gflops']:.0f} GFLOP/s at the model's shapes)", flush=True)
        scenario_rows = []
        for scenario, n_texts, samples, temperature in (
            ("rollout", args.prompts, args.samples, 1.0),
            ("encode", args.encode_texts, 1, 0.0),
        ):
            r = measure(model, tokenizer, _texts(n_texts), samples, temperature, args.max_new_tokens,
                        args.repeats, pipelines)
            speedup = r["reference"]["seconds"] / r["ours"]["seconds"]
            scenario_rows.append((scenario, dtype, n_texts, samples, r, speedup))
            readings.append(decode_limit(model, next(model.parameters()).dtype))
            limits[dtype] = best_limit(readings)
            read_floors(model, dtype)
            print(f"{scenario:8s} {dtype:9s} B={n_texts} G={samples}: "
                  + " | ".join(f"{p} {r[p]['seconds']:.2f} s ({r[p]['tokens_per_s']:.0f} tok/s)" for p in pipelines)
                  + f" | speed-up {speedup:.2f}x | limit readings so far "
                  + "/".join(f"{x:.0f}" for x in limits[dtype]["readings"]) + " tok/s", flush=True)
        for scenario, _d, n, g, r, _x in scenario_rows:
            floor = floors[dtype][n * g]
            print(f"{scenario:8s} {dtype:9s} share of limit {r['ours']['tokens_per_s'] / limits[dtype]['tokens_per_s']:.0%}"
                  f" | share of the work's limit {work_share(r, dtype):.0%}"
                  f" | matmul floor at {n * g} rows {floor['tokens_per_s']:.0f} tok/s"
                  f" ({floor['tokens_per_s'] / limits[dtype]['tokens_per_s']:.0%} of the limit)"
                  f" | best share this shape allows {best_share(r, dtype, n * g):.0%}", flush=True)
        rows += scenario_rows
        del model

    headline = next(s for (scenario, dtype, *_rest, s) in rows if scenario == "rollout" and dtype == "float32")
    if not args.quick:
        lines = [
            "## (a) Rollouts + embeddings: `grace.rollout.engine` vs `generate` + a second forward pass",
            "",
            f"`python -m benchmarks.speed.bench_rollout` ({time.strftime('%Y-%m-%d')}), "
            f"model `{args.model}`, "
            f"max {args.max_new_tokens} new tokens, median of {args.repeats} alternating repeats.",
            f"Machine: {machine()}; bf16 matrix units: {'yes' if bf16_matrix_units() else 'no'}.",
            "",
            "Limits measured in this run (the highest of a reading before the scenarios and one after "
            "each; all readings in brackets): " + "; ".join(
                f"{d} {v['tokens_per_s']:.0f} tok/s ({v['gflops']:.0f} GFLOP/s at the model's shapes, "
                f"{v['flops_per_token'] / 1e6:.0f} MFLOP per token; readings "
                + ", ".join(f"{x:.0f}" for x in v["readings"]) + ")" for d, v in limits.items()) + ".",
            "",
            "| scenario | dtype | texts x samples | ours s | ours tok/s | share of limit | share of the "
            "work's limit | matmul floor at these rows, share of limit | best share this shape allows | "
            "ours, HF step s | ours, HF step tok/s | reference s | reference tok/s | "
            "speed-up (reference / ours) | static step (HF step / ours) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for scenario, dtype, n_texts, samples, r, speedup in rows:
            o, hf, ref = r["ours"], r["ours, HF step"], r["reference"]
            lines.append(
                f"| {scenario} | {dtype} | {n_texts} x {samples} | {o['seconds']:.2f} | {o['tokens_per_s']:.0f} | "
                f"{o['tokens_per_s'] / limits[dtype]['tokens_per_s']:.0%} | {work_share(r, dtype):.0%} | "
                f"{floors[dtype][n_texts * samples]['tokens_per_s'] / limits[dtype]['tokens_per_s']:.0%} | "
                f"{best_share(r, dtype, n_texts * samples):.0%} | "
                f"{hf['seconds']:.2f} | "
                f"{hf['tokens_per_s']:.0f} | {ref['seconds']:.2f} | {ref['tokens_per_s']:.0f} | "
                f"**{speedup:.2f}x** | {hf['seconds'] / o['seconds']:.2f}x |")
        if args.compiled:
            lines += ["", "Under `torch.compile` (`decode=\"compiled\"`; the first warm-up builds the graph "
                      "for the whole process, later ones reuse it):", "",
                      "| scenario | dtype | compiled s | compiled tok/s | share of limit | speed-up "
                      "(reference / compiled) | compiled / default step | warm-up s (graph build in the first) |",
                      "|---|---|---|---|---|---|---|---|"]
            for scenario, dtype, n_texts, samples, r, speedup in rows:
                c = r[COMPILED]
                lines.append(
                    f"| {scenario} | {dtype} | {c['seconds']:.2f} | {c['tokens_per_s']:.0f} | "
                    f"{c['tokens_per_s'] / limits[dtype]['tokens_per_s']:.0%} | "
                    f"**{r['reference']['seconds'] / c['seconds']:.2f}x** | "
                    f"{r['ours']['seconds'] / c['seconds']:.2f}x | {r['warm-up'][COMPILED]:.1f} |")
        agree = [f"{dtype} {r['identical_rationales']:.0%}" for scenario, dtype, _n, _s, r, _x in rows
                 if scenario == "encode"]
        agree_step = [f"{dtype} {r['identical_to_hf_step']:.0%}" for scenario, dtype, _n, _s, r, _x in rows
                      if scenario == "encode"]
        counted = {scenario: r["prompt_tokens"] for scenario, _d, _n, _s, r, _x in rows}
        lines += ["", "Prompt tokens counted in the work's limit (common prefix once): "
                  + ", ".join(f"{k} {v}" for k, v in counted.items()) + "."]
        lines += ["", "`rollout`: sampled at T=1 (the pipelines draw different tokens, so token "
                  "counts differ a little; tok/s compares them fairly). `encode`: greedy; in float32 "
                  "every pipeline produces the same tokens (checked) and embeddings equal to cosine "
                  ">= 0.999; rationales identical to the reference's: " + ", ".join(agree) + "; to "
                  "the engine's through the HF step: " + ", ".join(agree_step) + " (bf16 "
                  "rounding differs between computation layouts and can flip near-ties)."]
        print(f"wrote {write_section('rollout', chr(10).join(lines))}")
    if args.compiled:
        compiled = next(r["reference"]["seconds"] / r[COMPILED]["seconds"]
                        for (scenario, dtype, _n, _s, r, _x) in rows if scenario == "rollout" and dtype == "float32")
        print(f"compiled ratio: {compiled:.2f}")
    print(f"ratio: {headline:.2f}")


if __name__ == "__main__":
    main()
