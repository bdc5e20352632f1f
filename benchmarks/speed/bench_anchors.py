"""Anchor benchmark (issue 15): our engine against a dedicated CPU inference engine, CTranslate2.

    .venv/bin/pip install ctranslate2            # an optional extra of the benchmarks, not of grace
    .venv/bin/python -m benchmarks.speed.bench_anchors            # writes results-speed.md (section anchors)
    .venv/bin/python -m benchmarks.speed.bench_anchors --quick    # fewer repeats, prints only

The packaged SmolLM2-135M-Instruct safetensors folder is converted once with CTranslate2's
Transformers converter (the library behind ``ct2-transformers-converter``) into
``$GRACE_CACHE/ct2/<name>-<quantization>``, float32 and int8. Both engines get the same token
prompts (GRACE's system prompt and chat template around Wikipedia sentences) and the same
thread count, and produce at most ``--max-new-tokens`` tokens per row:

- ``rollout``: B prompts x G samples at T=1 over the whole vocabulary (CTranslate2: each prompt
  repeated G times, ``sampling_topk=0``);
- ``encode``: greedy, one row per text.

CTranslate2 runs in a child process of its own (``CT2Process``), so that its OpenMP threads and
torch's do not share one process; runs still alternate and never overlap.
CTranslate2 only generates (no pooled embedding, no per-token log-probs) and gets the shared
system prefix as its ``static_prompt`` (cached once), as our engine shares it; ours also pools
the embeddings. Through this API CTranslate2 runs each batch's prompts together only up to the
shortest one (the rest of a longer prompt goes one token per step) and gets a group's prompt
G times (ours prefills it once): both favour us, so ``ratio`` is an upper bound on the engines'
own difference. Tokens/s counts the tokens produced, EOS included. The median of ``--repeats``
alternating runs is reported. The last line printed is ``ratio: X``: our rollout tokens/s over
CTranslate2 float32's (> 1: we are faster).

llama.cpp (``llama-cpp-python`` on the packaged GGUF) is not run here: its wheel is built from
source (a portable build, ``CMAKE_ARGS="-DGGML_NATIVE=OFF"``, several minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from benchmarks.common import paths  # noqa: E402
from benchmarks.common.report import machine, write_section  # noqa: E402

DATA = paths.WIKI_SENTENCES


def converted(model_name: str, quantization: str) -> Path:
    """The CTranslate2 folder of ``model_name`` (converted once)."""
    import ctranslate2

    from grace.models.backbones import cache_dir, resolve_model_path

    out = cache_dir() / "ct2" / f"{model_name}-{quantization}"
    if not (out / "model.bin").is_file():
        converter = ctranslate2.converters.TransformersConverter(resolve_model_path(model_name))
        converter.convert(str(out), quantization=None if quantization == "float32" else quantization,
                          force=True)
    return out


def token_prompts(tokenizer, texts):
    """(shared prefix tokens, per-text suffix tokens, our PromptBatch) of GRACE's prompts."""
    from grace.models.prompt import build_prompts
    from grace.rollout.engine import split_shared_prefix

    prompts = build_prompts(tokenizer, texts)
    lay = split_shared_prefix(prompts, tokenizer.pad_token_id)
    prefix = tokenizer.convert_ids_to_tokens(lay.prefix[0].tolist())
    suffixes = [tokenizer.convert_ids_to_tokens(row[: int(n)].tolist())
                for row, n in zip(lay.suffix, lay.lengths)]
    return prefix, suffixes, prompts


def ct2_run(generator, prefix, suffixes, samples, temperature, tokens, end_tokens):
    rows = [s for s in suffixes for _ in range(samples)]
    start = time.perf_counter()
    results = generator.generate_batch(
        rows, max_length=tokens, sampling_topk=0 if temperature > 0 else 1,
        sampling_temperature=max(temperature, 1e-6), static_prompt=prefix, cache_static_prompt=True,
        include_prompt_in_result=False, end_token=end_tokens, return_end_token=True,
        max_batch_size=len(rows))
    seconds = time.perf_counter() - start
    return seconds, sum(len(r.sequences_ids[0]) for r in results)


def _ct2_worker(conn, model_name: str, quantizations: tuple, threads: int) -> None:
    """A child process that owns CTranslate2 (its conversion, generators and thread pools):
    receives (name, ct2_run args) and answers ct2_run's (seconds, tokens), until None."""
    import ctranslate2

    generators = {f"CTranslate2 {q}": ctranslate2.Generator(
        str(converted(model_name, q)), device="cpu", compute_type=q, intra_threads=threads, inter_threads=1)
        for q in quantizations}
    conn.send(("ready", ctranslate2.__version__))
    while (request := conn.recv()) is not None:
        name, args = request
        conn.send(ct2_run(generators[name], *args))


class CT2Process:
    """CTranslate2 in its own process, so that its thread pools and torch's never live in one
    process. (On our noisy 2-core machine this could not be shown to matter: our rollouts right
    after a CTranslate2 run took 8.5-8.9 s in one check and 5.6-6.8 s in another, in one
    process; 8.6 and 6.7 s with this child process; 5.4-6.9 s with CTranslate2 idle.) Timing is
    taken in the child, around the call alone."""

    def __init__(self, model_name: str, quantizations: tuple, threads: int):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_ct2_worker, args=(child, model_name, quantizations, threads),
                                   daemon=True)
        self.process.start()
        try:
            _ready, self.version = self.conn.recv()
        except EOFError:
            raise RuntimeError("the CTranslate2 worker process died while loading (see its error above)") from None

    def run(self, name: str, *args):
        self.conn.send((name, args))
        return self.conn.recv()

    def close(self) -> None:
        self.conn.send(None)
        self.process.join(timeout=30)


def ours_run(model, tokenizer, prompts, samples, temperature, tokens):
    from grace.rollout.engine import generate_and_score

    start = time.perf_counter()
    out = generate_and_score(model, tokenizer, prompts, num_samples=samples, temperature=temperature,
                             max_new_tokens=tokens, batch_size=prompts.input_ids.shape[0] * samples,
                             with_logprobs=temperature > 0)  # as training rollouts / the encoder
    return time.perf_counter() - start, int(out.seqs.response_mask.sum())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="one repeat, prints only")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--encode-texts", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    if args.quick:
        args.repeats = 1
    import importlib.util

    if importlib.util.find_spec("ctranslate2") is None:  # imported in its worker process only
        raise SystemExit("bench_anchors needs ctranslate2: .venv/bin/pip install ctranslate2")
    from grace.models.backbones import end_token_ids, load_backbone

    torch.set_num_threads(args.threads)
    model, tokenizer = load_backbone(args.model, "float32")
    model.eval()
    end_tokens = tokenizer.convert_ids_to_tokens(end_token_ids(model, tokenizer))
    texts = [t.strip() for t in DATA.read_text().splitlines() if t.strip()]
    quantizations = ("float32", "int8")
    ct2 = CT2Process(args.model, quantizations, args.threads)
    engines = ["ours float32", *(f"CTranslate2 {q}" for q in quantizations)]
    rows = []
    for scenario, n, samples, temperature in (("rollout", args.prompts, args.samples, 1.0),
                                              ("encode", args.encode_texts, 1, 0.0)):
        prefix, suffixes, prompts = token_prompts(tokenizer, texts[:n])
        times = {name: [] for name in engines}
        produced = {name: [] for name in engines}
        for repeat in range(args.repeats + 1):  # the first round warms up
            for name in engines:
                torch.manual_seed(repeat)
                if name == "ours float32":
                    seconds, made = ours_run(model, tokenizer, prompts, samples, temperature, args.max_new_tokens)
                else:
                    seconds, made = ct2.run(name, prefix, suffixes, samples, temperature,
                                            args.max_new_tokens, end_tokens)
                if repeat:
                    times[name].append(seconds)
                    produced[name].append(made)
        for name in engines:
            s, t = statistics.median(times[name]), statistics.median(produced[name])
            rows.append((scenario, n, samples, name, s, t / s))
            print(f"{scenario:8s} B={n} G={samples} {name:20s} {s:.2f} s  {t / s:.0f} tok/s", flush=True)
    ct2.close()
    rate = {(sc, name): tps for sc, _n, _s, name, _sec, tps in rows}
    ratio = rate[("rollout", "ours float32")] / rate[("rollout", "CTranslate2 float32")]
    if not args.quick:
        lines = ["## (e) Anchors: our engine vs CTranslate2 on the same prompts", "",
                 f"`python -m benchmarks.speed.bench_anchors` ({time.strftime('%Y-%m-%d')}), "
                 f"model `{args.model}`, "
                 f"max {args.max_new_tokens} new tokens, median of {args.repeats} alternating repeats, "
                 f"ctranslate2 {ct2.version}.",
                 f"Machine: {machine(threads=args.threads)}.", "",
                 "| scenario | texts x samples | engine | s | tok/s | ours / this |", "|---|---|---|---|---|---|"]
        for scenario, n, samples, name, seconds, tps in rows:
            lines.append(f"| {scenario} | {n} x {samples} | {name} | {seconds:.2f} | {tps:.0f} | "
                         f"{rate[(scenario, 'ours float32')] / tps:.2f} |")
        lines += ["", "CTranslate2 generates only; ours also pools an embedding per row and (rollout) "
                  "keeps per-token log-probs. Both share the system prefix. llama.cpp: not run (see the "
                  "script's docstring)."]
        print(f"wrote {write_section('anchors', chr(10).join(lines))}")
    print(f"ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
