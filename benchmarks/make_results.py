"""Regenerate benchmarks/results.md: the paper's Table 1 at our scale (SmolLM2-135M on 2 CPU cores).

    .venv/bin/python benchmarks/make_results.py [--data-dir ../shared/data] [--work runs/results]

Stages (each writes its output under --work and is skipped when that output exists, so the
script resumes after an interruption; delete a stage's folder/file to redo it):
1. train four models from SmolLM2-135M-Instruct: GRACE supervised and InfoNCE on the NLI
   triplets, GRACE unsupervised and SimCSE on the Wikipedia sentences (training budgets below);
2. score six rows on the ``lite`` suite (every score computed by mteb): base (no rationale),
   +reasoning (base model, greedy rationales), InfoNCE, GRACE sup, SimCSE, GRACE unsup; GRACE
   models and +reasoning are encoded with greedy rationales, the contrastive baselines without
   (they were trained on plain mean pooling);
3. capability retention (ARC-Easy accuracy, held-out perplexity) of the base and the four models;
4. plots (training reward curves, per-category scores) and the markdown report.

The training data (NLI triplets, Wikipedia sentences) share no texts with the evaluation sets
(the triplets file dropped sentences that occur in evaluation sets; see shared/data/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).resolve().parent
import llm2vec_gen_results  # noqa: E402  (benchmarks/, beside this script)
RATIONALE_TOKENS = 32  # rationale length in training and evaluation (CPU budget)
ARC_QUESTIONS = 100  # seeded ARC-Easy subsample per model (the CLI default is 300)
EVAL_DTYPE = "bfloat16"  # evaluation weights (trained in float32); bf16 is ~5x faster on this CPU

# name -> (packaged config, overrides). Budgets are sized for a 2-core CPU.
GRACE_COMMON = {
    "batch_size": 4, "rollout.num_rollouts": 4, "rollout.max_new_tokens": RATIONALE_TOKENS,
    "data.max_prompt_tokens": 128, "optim.learning_rate": 1e-5, "optim.num_mini_batches": 2,
    "reward.penalize_truncation": False, "save_every": 4, "sample_every": 4,
}
TRAINING = {
    "grace-sup": ("sup-nli", {**GRACE_COMMON, "max_steps": 8, "reward.variant": "reference"}),
    "grace-unsup": ("unsup-wiki", {**GRACE_COMMON, "max_steps": 8}),
    "infonce": ("infonce-nli", {"batch_size": 16, "max_steps": 10, "save_every": 5}),
    "simcse": ("simcse-wiki", {"batch_size": 16, "max_steps": 10, "save_every": 5}),
}
# Table rows: label -> (model source, rationale mode)
ROWS = {
    "base": ("smollm2-135m", "none"),
    "+reasoning": ("smollm2-135m", "greedy"),
    "InfoNCE": ("infonce", "none"),
    "GRACE sup": ("grace-sup", "greedy"),
    "SimCSE": ("simcse", "none"),
    "GRACE unsup": ("grace-unsup", "greedy"),
    "MiniLM (teacher)": ("all-MiniLM-L6-v2", "none"),  # the packaged reference encoder
    "LLM2Vec-Gen": ("llm2vec-gen", "none"),  # no rationale: K soft tokens, one forward pass
    "LLM2Vec-Gen align-only": ("llm2vec-gen-align-only", "none"),  # the paper's ablation
}
CAPABILITY = {"base": "smollm2-135m", "InfoNCE": "infonce", "GRACE sup": "grace-sup",
              "SimCSE": "simcse", "GRACE unsup": "grace-unsup"}


def _log(msg: str) -> None:
    print(f"[results {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def train_models(work: Path, data_dir: Path) -> dict:
    from grace.config.schema import load_config

    data = {"sup-nli": data_dir / "triplets/nli-triplets.jsonl",
            "infonce-nli": data_dir / "triplets/nli-triplets.jsonl",
            "unsup-wiki": data_dir / "texts/wiki-sentences.txt",
            "simcse-wiki": data_dir / "texts/wiki-sentences.txt"}
    checkpoints = {}
    for name, (config_name, overrides) in TRAINING.items():
        cfg = load_config(config_name, {**overrides, "output_dir": str(work / "train" / name),
                                         "data.path": str(data[config_name])})
        checkpoints[name] = str(llm2vec_gen_results.train_stage(name, cfg))
    return checkpoints


def evaluate_rows(work: Path, data_dir: Path, checkpoints: dict, modes=("none", "greedy"),
                  labels=None) -> dict:
    from grace.evaluation.suite import run_suite

    results = {}
    for label in labels if labels is not None else ROWS:
        source, rationale = ROWS[label]
        if rationale not in modes:
            continue
        out = _row_file(work, label)
        if not out.is_file():
            _log(f"evaluating {label} ({source}, rationale {rationale})")
            run_suite(checkpoints.get(source, source), data_dir=data_dir, rationale=rationale,
                      max_new_tokens=RATIONALE_TOKENS, output=out, cache=work / "rationales.sqlite",
                      dtype=EVAL_DTYPE)
        results[label] = json.loads(out.read_text())
    return results


def evaluate_capabilities(work: Path, data_dir: Path, checkpoints: dict) -> dict:
    from grace.models.backbones import load_backbone
    from grace.evaluation.capability import arc_easy_accuracy, load_heldout_texts, perplexity

    results = {}
    for label, source in CAPABILITY.items():
        out = work / "capability" / f"{label.replace(' ', '_')}.json"
        if not out.is_file():
            _log(f"capability of {label}")
            model, tokenizer = load_backbone(checkpoints.get(source, source), EVAL_DTYPE)
            model.eval()
            arc = arc_easy_accuracy(model, tokenizer, data_dir / "capability/arc-easy-test.jsonl",
                                    max_questions=ARC_QUESTIONS, seed=0)
            ppl = perplexity(model, tokenizer, load_heldout_texts())
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"arc_easy": arc, "perplexity": ppl}, indent=2))
        results[label] = json.loads(out.read_text())
    return results


def _row_file(work: Path, label: str) -> Path:
    return work / "eval" / f"{label.replace(' ', '_').replace('+', 'plus_')}.json"


def load_existing(work: Path) -> tuple[dict, dict]:
    """The evaluation and capability results already on disk (for --report-only)."""
    evals = {label: json.loads(_row_file(work, label).read_text())
             for label in ROWS if _row_file(work, label).is_file()}
    caps = {}
    for label in CAPABILITY:
        path = work / "capability" / f"{label.replace(' ', '_')}.json"
        if path.is_file():
            caps[label] = json.loads(path.read_text())
    return evals, caps


def _metrics(work: Path, name: str) -> list[dict]:
    path = work / "train" / name / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def make_plots(work: Path, evals: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, name in zip(axes, ("grace-sup", "grace-unsup")):
        rows = _metrics(work, name)
        steps = [r["step"] for r in rows]
        for key in ("reward/contrastive", "reward/consistency", "reward/hard"):
            ax.plot(steps, [r[key] for r in rows], label=key.split("/")[1])
        ax2 = ax.twinx()
        ax2.plot(steps, [r["reward/mean"] for r in rows], "k--", label="total (scaled)")
        ax2.set_ylabel("total reward")
        ax.set_title(f"{name}: reward components per step")
        ax.set_xlabel("step")
        ax.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    fig.savefig(HERE / "reward_curves.png", dpi=110)
    made.append("reward_curves.png")

    categories = sorted({c for r in evals.values() for c in r["averages"]})
    fig, ax = plt.subplots(figsize=(10, 3.5))
    width = 0.8 / len(evals)
    for i, (label, res) in enumerate(evals.items()):
        ax.bar([c + i * width for c in range(len(categories) + 1)],
               [100 * (res["averages"].get(cat) or 0) for cat in categories] + [100 * res["overall"]],
               width, label=label)
    ax.set_xticks([c + 0.4 - width / 2 for c in range(len(categories) + 1)], categories + ["overall"])
    ax.set_ylabel("score x 100")
    ax.set_title("lite suite per category (SmolLM2-135M)")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(HERE / "category_scores.png", dpi=110)
    made.append("category_scores.png")
    return made


def _fmt(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


# (GRACE row, the rows it is compared with): the paper's pairings (same data, same supervision)
PAIRS = {"GRACE sup": ("InfoNCE", "+reasoning", "base"), "GRACE unsup": ("SimCSE", "+reasoning", "base"),
         "LLM2Vec-Gen": ("MiniLM (teacher)", "GRACE unsup", "base")}


def _comparisons(evals: dict) -> list[str]:
    """Per method row, the tasks where it scores below each comparison row (computed, not written)."""
    lines = []
    for grace, others in PAIRS.items():
        if grace not in evals:
            continue
        ours = evals[grace]
        for other in others:
            if other not in evals:
                continue
            theirs = evals[other]
            losses = [f"{t} {100 * (ours['tasks'][t]['main_score'] - v['main_score']):+.2f}"
                      for t, v in theirs["tasks"].items()
                      if t in ours["tasks"] and ours["tasks"][t]["main_score"] < v["main_score"]]
            delta = 100 * (ours["overall"] - theirs["overall"])
            where = "; below it on " + ", ".join(losses) if losses else "; not below it on any task"
            lines.append(f"- {grace} vs {other}: overall {delta:+.2f}{where}")
    if lines:
        lines = ["", "Where each method gains and loses (computed from the table, points x 100; one training "
                 "seed and small seeded subsamples, so a difference of a few points is within noise):",
                 ""] + lines
    return lines


def _llm2vec_gen_section() -> list[str]:
    return ["", "## LLM2Vec-Gen", "",
            "The MiniLM row is the LLM2Vec-Gen teacher (all-MiniLM-L6-v2, not the paper's LLM2Vec "
            "teacher). Its diagnostics, the probes that chose its defaults, both runs (full and "
            "alignment-only) and decodings of held-out texts: "
            "[results-llm2vec-gen.md](results-llm2vec-gen.md) (`make_results.py --only llm2vec-gen`)."]


def write_report(work: Path, evals: dict, capabilities: dict, plots: list[str]) -> Path:
    import torch

    tasks = list(next(iter(evals.values()))["tasks"])
    categories = sorted({c for r in evals.values() for c in r["averages"]})
    lines = [
        "# Results at our scale: SmolLM2-135M-Instruct on a 2-core CPU",
        "",
        f"Regenerate with `.venv/bin/python benchmarks/make_results.py` ({time.strftime('%Y-%m-%d')}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}).",
        "Every score below is computed by mteb's own evaluators on the local `lite` suite "
        "(seeded subsamples, see `src/grace/evaluation/suite.py`), x 100. These are tiny training "
        "budgets on a 135M model; they say whether each method moves the numbers here, not what it "
        "does at the paper's scale (SPEC 1.8: 1.5B-4B backbones, 1.5M triplets).",
        f"Models are trained in float32 and evaluated with {EVAL_DTYPE} weights (several times faster "
        f"on this CPU); rationales are greedy, {RATIONALE_TOKENS} tokens at most.",
        "",
        *([f"**Status: partial.** {len(ROWS) - len(evals)} of {len(ROWS)} rows and "
           f"{len(CAPABILITY) - len(capabilities)} of {len(CAPABILITY)} capability rows have not "
           "been run yet (the run was interrupted; rerunning the script resumes it).", ""]
          if len(evals) < len(ROWS) or len(capabilities) < len(CAPABILITY) else []),
        "## Table 1 at our scale",
        "",
        "| model | rationale | " + " | ".join(tasks) + " | " + " | ".join(f"avg {c}" for c in categories) + " | overall |",
        "|---" * (3 + len(tasks) + len(categories)) + "|",
    ]
    for label in ROWS:
        if label not in evals:
            lines.append(f"| {label} | {ROWS[label][1]} | " + " | ".join(["not run"] * (len(tasks) + len(categories) + 1)) + " |")
            continue
        res = evals[label]
        cells = [_fmt(res["tasks"][t]["main_score"]) for t in tasks]
        avgs = [_fmt(res["averages"].get(c)) for c in categories]
        lines.append(f"| {label} | {res['rationale']} | " + " | ".join(cells + avgs) + f" | {_fmt(res['overall'])} |")
    lines += _comparisons(evals)
    reference = sorted((work / "eval-float32").glob("*.json")) if (work / "eval-float32").is_dir() else []
    if reference:
        lines += ["", "The same rows evaluated with float32 weights (what bf16 evaluation changes):", ""]
        for path in reference:
            res = json.loads(path.read_text())
            lines.append(f"- {path.stem} ({res['rationale']}, float32): overall {_fmt(res['overall'])}; "
                         + ", ".join(f"{t} {_fmt(v['main_score'])}" for t, v in res["tasks"].items()))
    lines += _llm2vec_gen_section()
    lines += ["", "Training budgets (from SmolLM2-135M-Instruct, seed 0; full fine-tuning except "
              "llm2vec-gen, which trains only its soft tokens and two heads):", ""]
    for name, (config_name, overrides) in {**TRAINING, **{n: ("llm2vec-gen", o) for n, o in
                                                          llm2vec_gen_results.RUNS.items()}}.items():
        seconds_file = work / "train" / name / "train_seconds.json"
        seconds = json.loads(seconds_file.read_text())["seconds"] if seconds_file.is_file() else None
        spent = f", {seconds / 60:.1f} min" if seconds else ""
        lines.append(f"- **{name}**: config `{config_name}` with `{json.dumps(overrides)}`{spent}")
    lines += ["", "## General abilities (capability retention)", "",
              "| model | ARC-Easy acc | ARC-Easy acc_norm | questions | held-out perplexity |",
              "|---|---|---|---|---|"]
    for label, cap in capabilities.items():
        arc, ppl = cap["arc_easy"], cap["perplexity"]
        lines.append(f"| {label} | {arc.get('acc', float('nan')):.4f} | {arc.get('acc_norm', float('nan')):.4f} | "
                     f"{arc.get('num_questions', '-')} | {ppl['perplexity']:.2f} |")
    if "LLM2Vec-Gen" in evals:
        lines += ["", "LLM2Vec-Gen is not in this table: its backbone is frozen (bit-for-bit, tested), "
                  "so its language-model abilities are the base row's by construction."]
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    lines += ["", "## Seconds", ""]
    for label, res in evals.items():
        lines.append(f"- {label}: suite {res['seconds']:.0f} s, {res.get('texts_encoded', '-')} texts encoded")
    out = HERE / "results.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data"))
    parser.add_argument("--work", default=str(HERE.parent / "runs" / "results"))
    parser.add_argument("--report-only", action="store_true",
                        help="write results.md from the outputs already in --work, run nothing")
    parser.add_argument("--only", choices=["llm2vec-gen"],
                        help="run one method's stages and write its own report only "
                             "(llm2vec-gen: benchmarks/results-llm2vec-gen.md)")
    parser.add_argument("--skip-greedy", action="store_true",
                        help="run training, the no-rationale rows and capability only (greedy rows "
                             "are the expensive part), then write the report")
    args = parser.parse_args()
    work, data_dir = Path(args.work), Path(args.data_dir)
    work.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        evals, capabilities = load_existing(work)
        _log(f"wrote {llm2vec_gen_results.write_report(work, evals)}")
        if args.only is None:
            _log(f"wrote {write_report(work, evals, capabilities, make_plots(work, evals))}")
        return
    l2v = llm2vec_gen_results
    if args.only == "llm2vec-gen":
        checkpoints = l2v.run_stages(work, data_dir)
        evals = evaluate_rows(work, data_dir, checkpoints, modes=("none",), labels=l2v.SUITE_ROWS)
        _log(f"wrote {l2v.write_report(work, evals)}")
        return
    checkpoints = {**train_models(work, data_dir), **l2v.run_stages(work, data_dir)}
    evaluate_rows(work, data_dir, checkpoints, modes=("none",))  # cheap rows first
    capabilities = evaluate_capabilities(work, data_dir, checkpoints)
    modes = ("none",) if args.skip_greedy else ("none", "greedy")
    evals = evaluate_rows(work, data_dir, checkpoints, modes=modes)
    plots = make_plots(work, evals)
    _log(f"wrote {l2v.write_report(work, evals)}")
    _log(f"wrote {write_report(work, evals, capabilities, plots)}")


if __name__ == "__main__":
    main()
