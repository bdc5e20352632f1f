"""LLM2Vec-Gen at our scale (SmolLM2-135M-Instruct, MiniLM teacher, 2 CPU cores): the stages
``make_results.py`` runs for it, and ``benchmarks/quality/results-llm2vec-gen.md``.

    .venv/bin/python -m benchmarks.quality.make_results --only llm2vec-gen     # these stages alone

Stages (each small output goes to ``benchmarks/quality/results-data/llm2vec-gen/``, which is
committed, and a stage whose output is there is skipped, so an interrupted run resumes in a later
session; checkpoints and the response cache stay under --work):
1. diagnostics of the untrained model, bare (the heads as ``head_init`` leaves them) and with
   the start a run fits before step 1 (standardisation, ridge head), on held-out texts;
2. the two runs (full, and the paper's alignment-only ablation ``recon_weight 0``) and their
   diagnostics, with decodings of held-out texts scored against the backbone's own answers;
3. (make_results) the lite-suite rows (results-data/eval/, beside the main table's);
4. probes: short runs that chose the defaults (alignment weight, alignment-head lr), scored on
   the same held-out texts and on the STS-B dev split, never on the lite suite; they run last
   because the choice they support is made (re-running them reproduces its evidence);
5. the report (written after stage 3 and again after stage 4).

Held-out texts: the Wikipedia sentences after the first 4,800 of the runs' data order (no run
trains past 150 steps of 32), so no run, probe or ridge start has seen them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from benchmarks.common import report

HERE = Path(__file__).resolve().parent
REPORT = HERE / "results-llm2vec-gen.md"
DATA = HERE / "results-data" / "llm2vec-gen"  # committed stage outputs (small JSON files)
QUERY_INSTRUCTION = "Generate text that is semantically similar to this text:"
BATCH, STEPS = 32, 120
COMMON = {  # both runs and every probe: the responses are shared (same settings, one cache file)
    "batch_size": BATCH, "optim.lr_scheduler": "constant_with_warmup", "optim.warmup_steps": 10,
    "llm2vec_gen.train_instruction": QUERY_INSTRUCTION,  # as the encoder reads queries
    "llm2vec_gen.response_max_new_tokens": 64, "llm2vec_gen.max_response_tokens": 64,
    "llm2vec_gen.response_dtype": "bfloat16", "llm2vec_gen.response_batch_size": 64,
    "model.mixed_precision": "no",  # as the runs reported were trained (the default became auto)
}
CHOSEN = {  # what the probes below chose (now also the package's defaults), spelled out
    "llm2vec_gen.align_weight": 1000.0, "llm2vec_gen.learning_rate": 5e-5,
    "llm2vec_gen.align_head_learning_rate": 2e-5, "llm2vec_gen.standardize_momentum": 0.1,
}
RUNS = {  # name -> overrides of the packaged config llm2vec-gen
    "llm2vec-gen": {**COMMON, **CHOSEN, "max_steps": STEPS, "save_every": 20, "sample_every": 20},
    "llm2vec-gen-align-only": {**COMMON, **CHOSEN, "max_steps": STEPS, "save_every": 20,
                               "sample_every": 0, "llm2vec_gen.recon_weight": 0.0},
}
PROBE_STEPS = 20
FAST = {"llm2vec_gen.learning_rate": 5e-4, "llm2vec_gen.align_head_learning_rate": None}  # paper lr
PROBES = {  # name -> (what it tries, overrides on top of COMMON); each sets every field they vary
    # at the ridge start the soft tokens' gradient from the alignment loss (MSE, mean over 384
    # dims) was 4,500x smaller than the reconstruction loss's (0.0037 vs 16.9, step 1)
    "probe-paper-weights": ("align_weight 1 (the paper's), fixed standardisation",
                            {**FAST, "llm2vec_gen.align_weight": 1.0,
                             "llm2vec_gen.standardize_momentum": 0.0}),
    "probe-align1000": ("align_weight 1000, fixed standardisation",
                        {**FAST, "llm2vec_gen.align_weight": 1000.0,
                         "llm2vec_gen.standardize_momentum": 0.0}),
    # both collapsed (pairwise cosine 0.99 / 0.93 at step 20): the reconstruction loss moves the
    # soft prompts, and the fixed statistics no longer centre them; so they follow the batches
    "probe-tracked-paper-weights": ("align_weight 1, standardisation tracked (momentum 0.1)",
                                    {**FAST, "llm2vec_gen.align_weight": 1.0,
                                     "llm2vec_gen.standardize_momentum": 0.1}),
    # collapsed too: the reconstruction loss re-parameterises the soft prompts within a few steps
    # (its loss 10 -> 4.5 by step 5) and the alignment head, which reads them, cannot follow
    "probe-align-only": ("alignment only (recon_weight 0), one lr 5e-4",
                         {**FAST, "llm2vec_gen.recon_weight": 0.0, "llm2vec_gen.align_weight": 1.0,
                          "llm2vec_gen.standardize_momentum": 0.1}),
    # diverged as well (alignment loss 0.0017 -> 0.06, pairwise 0.99 by step 12, lr 5e-4 reached
    # at step 10): with standardised inputs an Adam step of 5e-4 on each of the head's 576 input
    # weights moves an output by far more than the targets' spread per dimension (~0.05)
    "probe-align-only-lr2e-5": ("alignment only, one lr 2e-5",
                                {"llm2vec_gen.recon_weight": 0.0, "llm2vec_gen.align_weight": 1.0,
                                 "llm2vec_gen.learning_rate": 2e-5,
                                 "llm2vec_gen.align_head_learning_rate": None,
                                 "llm2vec_gen.standardize_momentum": 0.1}),
    "probe-slow": ("align_weight 1000, lr 5e-5 (soft tokens, reconstruction head), alignment "
                   "head 2e-5",
                   {"llm2vec_gen.align_weight": 1000.0, "llm2vec_gen.learning_rate": 5e-5,
                    "llm2vec_gen.align_head_learning_rate": 2e-5,
                    "llm2vec_gen.standardize_momentum": 0.1}),
}
HELD_OUT = {"n": 256, "skip": 4800, "decode": 32, "decode_tokens": 48}  # no run trains that far


def _log(msg: str) -> None:
    print(f"[llm2vec-gen {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _config(overrides: dict, out: Path, data_dir: Path):
    from grace.config.schema import load_config

    return load_config("llm2vec-gen", {**overrides, "output_dir": str(out),
                                        "data.path": str(data_dir / "texts/wiki-sentences.txt")})


def _diagnose(out: Path, config, checkpoint, data_dir: Path, **kwargs) -> dict:
    if not out.is_file():
        from benchmarks.quality.llm2vec_gen_diagnostics import diagnose_run

        figures = diagnose_run(config, checkpoint, n=HELD_OUT["n"], skip=HELD_OUT["skip"],
                               sts_file=data_dir / "sts/stsb-dev.jsonl", **kwargs)
        report.write_json(out, figures)
    return json.loads(out.read_text())


def train_stage(name: str, config) -> Path:
    """Train ``config`` (into its output_dir) unless its last checkpoint exists; the seconds
    go to train_seconds.json. Returns the last checkpoint (make_results' stage 1 uses it too)."""
    from grace.train import train

    out = Path(config.output_dir)
    done = out / f"checkpoint-{config.max_steps}"
    if not done.is_dir():
        _log(f"training {name} ({config.max_steps} steps)")
        start = time.perf_counter()
        train(config)
        tmp = out / "train_seconds.json.tmp"
        tmp.write_text(json.dumps({"seconds": time.perf_counter() - start}))
        tmp.replace(out / "train_seconds.json")  # never half a file under the final name
    return done


def _train(name: str, overrides: dict, work: Path, data_dir: Path, data: Path = DATA) -> Path:
    """Train ``name`` under --work/train and record its metrics and seconds in ``data``."""
    out = work / "train" / name
    checkpoint = train_stage(name, _config(overrides, out, data_dir))
    record_run(out, data / f"train-{name}.json", {"overrides": overrides})
    return checkpoint


def record_run(out: Path, record: Path, about: dict) -> None:
    """Write ``about`` + the run's metrics rows and seconds (from its output folder ``out``) to
    ``record``, unless it exists (make_results' runs use it too)."""
    if record.is_file():
        return
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    try:  # missing if a run was killed after its last checkpoint: no figure rather than a crash
        seconds = json.loads((out / "train_seconds.json").read_text())["seconds"]
    except (OSError, ValueError, KeyError):
        seconds = None
    report.write_json(record, {**about, "seconds": seconds, "metrics": rows})


def gradient_shares(work: Path, data_dir: Path) -> dict:
    """Each loss's gradient norm on the soft tokens at step 1 (from the ridge start), for the
    paper's alignment weight and the chosen one: what ``align_weight`` was chosen from."""
    out = DATA / "gradient-shares.json"
    if out.is_file():
        return json.loads(out.read_text())
    from grace.llm2vec_gen.trainer import LLM2VecGenTrainer

    shares = {}
    for weight in (1.0, CHOSEN["llm2vec_gen.align_weight"]):
        config = _config({**COMMON, **CHOSEN, "llm2vec_gen.align_weight": weight,
                          "llm2vec_gen.grad_norm_every": 1, "max_steps": PROBE_STEPS,
                          "sample_every": 0}, work / "gradient-shares" / f"align{weight:g}", data_dir)
        trainer = LLM2VecGenTrainer(config)
        try:
            metrics, _ = trainer.step(1)
        finally:
            trainer.close()
        shares[f"{weight:g}"] = {"align": metrics["grad/align_soft_tokens"],
                                 "recon": metrics["grad/recon_soft_tokens"]}
    report.write_json(out, shares)
    return shares


def run_stages(work: Path, data_dir: Path, evaluated=()) -> dict:
    """Stages 1-2; returns the checkpoints of RUNS by name. A run whose diagnostics and record
    are in DATA and whose lite row is in ``evaluated`` (names) is not trained again."""
    untrained = _config(RUNS["llm2vec-gen"], work / "train" / "llm2vec-gen", data_dir)
    for name, fit in (("untrained-bare", False), ("untrained-start", True)):
        _log(f"diagnostics: {name}")
        _diagnose(DATA / f"diag-{name}.json", untrained, None, data_dir, fit_start=fit,
                  decode=HELD_OUT["decode"], decode_tokens=HELD_OUT["decode_tokens"])
    _log("gradient shares at step 1")
    gradient_shares(work, data_dir)
    checkpoints = {}
    for name, overrides in RUNS.items():
        diag = DATA / f"diag-{name}.json"
        if diag.is_file() and (DATA / f"train-{name}.json").is_file() and name in evaluated:
            continue
        checkpoints[name] = _train(name, overrides, work, data_dir)
        _log(f"diagnostics: {name}")
        _diagnose(diag, _run_config(checkpoints[name]), checkpoints[name],
                  data_dir, decode=HELD_OUT["decode"], decode_tokens=HELD_OUT["decode_tokens"])
    return {name: str(path) for name, path in checkpoints.items()}


def run_probes(work: Path, data_dir: Path) -> None:
    """Stage 4: each probe's short run (unless its diagnostics are in DATA) and diagnostics."""
    for name, (_, overrides) in PROBES.items():
        diag = DATA / f"diag-{name}.json"
        if diag.is_file():
            continue
        checkpoint = _train(name, {**COMMON, "max_steps": PROBE_STEPS, "save_every": PROBE_STEPS,
                                   "sample_every": 0, **overrides}, work, data_dir)
        _log(f"diagnostics: {name}")
        _diagnose(diag, _run_config(checkpoint), checkpoint, data_dir)


def _run_config(checkpoint: Path):
    from grace.config.schema import load_config

    return load_config(str(checkpoint.parent / "grace_config.yaml"))


# -- the report -----------------------------------------------------------------------------
DIAG_COLUMNS = (("cosine_to_teacher", "cos to teacher"), ("constant_baseline", "constant"),
                ("pairwise_model", "pairwise (model)"), ("pairwise_teacher", "pairwise (teacher)"),
                ("ridge_heldout", "ridge ceiling"), ("sts_spearman", "STS-B dev"),
                ("f1_paired", "decode F1"), ("f1_shuffled", "F1 shuffled"))
DIAG_ROWS = {"untrained-bare": "untrained, bare heads (alignment head 0)",
             "untrained-start": "untrained + the start (standardisation, ridge head)",
             "llm2vec-gen": f"trained, full ({STEPS} steps)",
             "llm2vec-gen-align-only": f"trained, alignment only ({STEPS} steps, recon_weight 0)"}
SUITE_ROWS = ("LLM2Vec-Gen", "LLM2Vec-Gen align-only", "MiniLM (teacher)", "base")  # run in this order


def _record(data: Path, name: str) -> dict:
    path = data / f"train-{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _cell(figures: dict, key: str) -> str:
    value = figures.get(key)
    return "-" if value is None else f"{value:.3f}"


def report_lines(data: Path, evals: dict) -> list[str]:
    """The markdown of results-llm2vec-gen.md from the stage outputs in ``data`` and the lite
    rows ``evals`` (label -> suite output)."""
    import os
    import platform

    import torch

    diag = data
    lines = ["# LLM2Vec-Gen at our scale: SmolLM2-135M-Instruct, MiniLM teacher, 2-core CPU", "",
             f"Regenerate with `.venv/bin/python -m benchmarks.quality.make_results --only llm2vec-gen` "
             f"({time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, torch "
             f"{torch.__version__}); stages in `benchmarks/quality/llm2vec_gen_results.py`. The teacher is "
             "all-MiniLM-L6-v2 (not the paper's LLM2Vec teacher); the backbone stays frozen.", ""]
    rows = [label for label in ("base", "MiniLM (teacher)", "LLM2Vec-Gen", "LLM2Vec-Gen align-only")
            if label in evals]
    if rows:
        tasks = list(evals[rows[0]]["tasks"])
        lines += ["## Lite suite (mteb evaluators, seeded subsamples, x 100)", "",
                  "| model | " + " | ".join(tasks) + " | overall (types) | overall (tasks) |",
                  "|---" * (len(tasks) + 3) + "|"]
        for label in rows:
            res = evals[label]
            cells = [f"{100 * res['tasks'][t]['main_score']:.2f}" for t in tasks]
            by_type = res.get("overall_by_type")
            lines.append(f"| {label} | " + " | ".join(cells)
                         + f" | {'-' if by_type is None else f'{100 * by_type:.2f}'} | {100 * res['overall']:.2f} |")
        lines += ["", "*overall (types)*: the mean over task types (as results.md's Table 1 leads "
                  "with), *overall (tasks)*: over tasks. "
                  "One training seed and small subsamples: a difference of a few points is "
                  "within noise. LLM2Vec-Gen rows encode queries and symmetric texts with the "
                  "query instruction and documents with the document instruction."
                  + ("" if "base" in evals else " The untrained backbone's mean pooling (\"base\") "
                     "is the first row of results.md's Table 1 (the same suite and evaluation)."), ""]
    found = {name: json.loads((diag / f"diag-{name}.json").read_text())
             for name in [*DIAG_ROWS, *PROBES] if (diag / f"diag-{name}.json").is_file()}
    if found:
        any_row = next(iter(found.values()))
        lines += ["## Diagnostics on held-out texts", "",
                  f"{any_row['texts']} Wikipedia sentences the runs never trained on (they follow the "
                  f"first {HELD_OUT['skip']} in the data order), with the training instruction; "
                  "targets are the teacher's embeddings of the backbone's answers to them. "
                  "*constant*: the best constant predictor's cosine (the teacher's mean direction); "
                  "*ridge ceiling*: a ridge fit from the mean soft-token states on 80% of these "
                  "texts, scored on the rest; *STS-B dev*: Spearman on "
                  f"{any_row.get('sts_pairs', '-')} pairs of the dev split; *decode F1*: unigram F1 "
                  f"of greedy decodings of {HELD_OUT['decode']} of the texts against the "
                  "backbone's answer to the same text, *F1 shuffled* against another text's answer.",
                  "", "| model | " + " | ".join(c for _, c in DIAG_COLUMNS) + " |",
                  "|---" * (len(DIAG_COLUMNS) + 1) + "|"]
        for name, figures in found.items():
            label = DIAG_ROWS.get(name) or f"probe: {PROBES[name][0]} ({PROBE_STEPS} steps)"
            lines.append(f"| {label} | " + " | ".join(_cell(figures, k) for k, _ in DIAG_COLUMNS) + " |")
        lines.append("")
    shares_file = diag / "gradient-shares.json"
    if shares_file.is_file():
        shares = json.loads(shares_file.read_text())
        lines += ["Gradient norm of each weighted loss on the soft tokens at step 1 (from the ridge "
                  "start): " + "; ".join(f"align_weight {w}: alignment {v['align']:.4g}, "
                                         f"reconstruction {v['recon']:.4g}" for w, v in shares.items())
                  + ".", ""]
    chosen = ", ".join(f"{k.split('.')[-1]} {v:g}" for k, v in CHOSEN.items())
    lines += [f"Chosen from the probes (held-out texts and STS-B dev only): {chosen}; both runs "
              "below use them (the alignment-only run with recon_weight 0).", ""]
    for name in RUNS:
        record = _record(data, name)
        rows_ = record.get("metrics", [])
        if not rows_:
            continue
        first, last = rows_[0], rows_[-1]
        keys = [k for k in ("loss/recon", "loss/align", "align/cosine", "align/pairwise_model",
                            "recon/token_accuracy") if k in last]
        spent = (f", {record['seconds'] / 60:.1f} min (responses included when generated by this "
                 "run)") if record.get("seconds") is not None else ""
        lines.append(f"- **{name}** (`llm2vec-gen` with `{json.dumps(RUNS[name])}`{spent}): "
                     + "; ".join(f"{k} {first[k]:.4f} -> {last[k]:.4f}" for k in keys))
    samples = found.get("llm2vec-gen", {}).get("samples", [])[:5]
    if samples:
        lines += ["", "## What held-out texts decode to (full run, greedy from the soft prompts)", ""]
        for x in samples:
            lines.append(f"- text {x['text'][len(QUERY_INSTRUCTION) + 1:][:100]!r}\n"
                         f"  - decoded: {' '.join(x['decoded'].split())[:200]!r}\n"
                         f"  - backbone's answer: {' '.join(x['answer'].split())[:200]!r}")
    return lines


def write_report(evals: dict, data: Path = DATA) -> Path:
    tmp = REPORT.with_suffix(".tmp")
    tmp.write_text("\n".join(report_lines(data, evals)) + "\n")
    tmp.replace(REPORT)
    return REPORT
