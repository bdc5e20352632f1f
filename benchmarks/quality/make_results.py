"""Regenerate benchmarks/quality/results.md: the paper's Table 1 at our scale (SmolLM2-135M, 2 CPU cores).

    .venv/bin/python -m benchmarks.quality.make_results [--data-dir ../shared/data] [--work runs/results]

Stages (each small output goes to ``benchmarks/quality/results-data/``, which is committed, and a
stage whose output is there is skipped: the script resumes after an interruption, in this session
or a later one; delete a file to redo its stage). Checkpoints and the rationale cache stay under
--work (not committed):
1. untrained rows on the ``lite`` suite (every score computed by mteb): base (no rationale),
   echo (the text copied as its own rationale), +reasoning (greedy rationales), the MiniLM
   reference encoder; capability retention of the base model;
2. per training seed (``SEEDS``) and model, train from SmolLM2-135M-Instruct (GRACE supervised
   and InfoNCE on the NLI triplets, GRACE unsupervised and SimCSE on the Wikipedia sentences;
   budgets in ``TRAINING``), then score it on ``lite`` (GRACE with greedy rationales, the
   contrastive baselines without: they were trained on plain mean pooling) and its capability
   retention (ARC-Easy, held-out perplexity); one model is finished before the next starts;
3. plots (training reward curves, per-category scores) and the markdown report
   (benchmarks/quality/results_table.py): mean and spread over seeds, both overalls, copy rates.
   results.md opens with issue 25's table at real budgets (benchmarks/quality/final_report.py,
   from budget_runs.py's stage outputs); these 8-step rows follow it as "Earlier budgets".

LLM2Vec-Gen has its own stages and report (``--only llm2vec-gen``; results-llm2vec-gen.md).
The training data (NLI triplets, Wikipedia sentences) share no texts with the evaluation sets
(the triplets file dropped sentences that occur in evaluation sets; see shared/data/README.md).
Settings were not chosen on ``lite`` (issue 14): it is the final table only.
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

from benchmarks.common import paths, report  # noqa: E402
from benchmarks.quality import final_report, llm2vec_gen_results, results_table  # noqa: E402

HERE = Path(__file__).resolve().parent  # benchmarks/quality/: results.md, its plots, results-data/

DATA = HERE / "results-data"  # committed stage outputs: eval/, capability/, train/
RATIONALE_TOKENS = 32  # rationale length in training and evaluation (CPU budget)
EVAL_POOLING = "mean"  # every row of this table read with the paper's pooling, also the checkpoints
# of presets that ship another reading (rollout.encode_pooling): one pooling a table
ARC_QUESTIONS = 300  # seeded ARC-Easy subsample per model (n = 100 is +-10 points at 95%)
EVAL_DTYPE = "bfloat16"  # evaluation weights (trained in float32); bf16 is ~5x faster on this CPU
SEEDS = (0, 1)  # training seeds of every trained row

# name -> (packaged config, overrides). Budgets are sized for a 2-core CPU.
GRACE_COMMON = {
    "batch_size": 4, "rollout.num_rollouts": 4, "rollout.max_new_tokens": RATIONALE_TOKENS,
    "data.max_prompt_tokens": 128, "optim.learning_rate": 1e-5, "optim.num_mini_batches": 2,
    "reward.penalize_truncation": False, "save_every": 8, "sample_every": 4,
    "rollout.dtype": "policy",  # float32 rollouts and updates, as every row of the table was
    "model.mixed_precision": "no",  # trained (before these defaults became bf16 on bf16 CPUs)
    # the paper's objective, as the table's rows were trained (the presets ship terms beyond it
    # since: sup-nli and unsup-wiki's contrastive term and anchor, unsup-wiki's memory, issue 25)
    "optim.contrastive_weight": 0.0, "optim.anchor_weight": 0.0, "optim.contrastive_memory": 0,
}
TRAINING = {
    "infonce": ("infonce-nli", {"batch_size": 16, "max_steps": 10, "save_every": 10,
                                "model.mixed_precision": "no"}),
    "grace-sup": ("sup-nli", {**GRACE_COMMON, "max_steps": 8, "reward.variant": "reference"}),
    "simcse": ("simcse-wiki", {"batch_size": 16, "max_steps": 10, "save_every": 10,
                               "model.mixed_precision": "no"}),
    "grace-unsup": ("unsup-wiki", {**GRACE_COMMON, "max_steps": 8}),
}
# Table rows: label -> (model source, rationale mode); a source in TRAINING is trained per seed
ROWS = {
    "base": ("smollm2-135m", "none"),
    "echo": ("smollm2-135m", "echo"),  # the text itself as the rationale: the copy baseline
    "+reasoning": ("smollm2-135m", "greedy"),
    "InfoNCE": ("infonce", "none"),
    "GRACE sup": ("grace-sup", "greedy"),
    "SimCSE": ("simcse", "none"),
    "GRACE unsup": ("grace-unsup", "greedy"),
    "MiniLM (teacher)": ("all-MiniLM-L6-v2", "none"),  # the packaged reference encoder
}
L2V_ROWS = {  # evaluated by --only llm2vec-gen (its own report)
    "LLM2Vec-Gen": ("llm2vec-gen", "none"),  # no rationale: K soft tokens, one forward pass
    "LLM2Vec-Gen align-only": ("llm2vec-gen-align-only", "none"),  # the paper's ablation
}
CAPABILITY = {"base": "smollm2-135m", "InfoNCE": "infonce", "GRACE sup": "grace-sup",
              "SimCSE": "simcse", "GRACE unsup": "grace-unsup"}
# (row, the rows it is compared with): the paper's pairings (same data, same supervision) and
# the copy baseline: does the rationale add more than the text copied again?
PAIRS = {"+reasoning": ("echo", "base"), "echo": ("base",),
         "GRACE sup": ("InfoNCE", "+reasoning", "echo", "base"),
         "GRACE unsup": ("SimCSE", "+reasoning", "echo", "base")}


READINGS = (("+reasoning", "echo"), ("echo", "base"), ("GRACE sup", "echo"), ("GRACE unsup", "echo"),
            ("GRACE sup", "InfoNCE"), ("GRACE unsup", "SimCSE"))


def _log(msg: str) -> None:
    print(f"[results {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _slug(label: str) -> str:
    return label.replace(" ", "_").replace("+", "plus_").replace("(", "").replace(")", "")


def _key(label: str, seed: int | None) -> str:
    return _slug(label) if seed is None else f"{_slug(label)}-s{seed}"


def _seeds(label: str):
    return SEEDS if {**ROWS, **L2V_ROWS}[label][0] in TRAINING else (None,)


def train_model(work: Path, data_dir: Path, name: str, seed: int) -> Path:
    """Train ``name`` with ``seed`` (unless its last checkpoint exists); its metrics and seconds
    go to results-data/train/. Returns the last checkpoint."""
    from grace.config.schema import load_config

    data = {"sup-nli": data_dir / "triplets/nli-triplets.jsonl",
            "infonce-nli": data_dir / "triplets/nli-triplets.jsonl",
            "unsup-wiki": data_dir / "texts/wiki-sentences.txt",
            "simcse-wiki": data_dir / "texts/wiki-sentences.txt"}
    config_name, overrides = TRAINING[name]
    out = work / "train" / f"{name}-s{seed}"
    cfg = load_config(config_name, {**overrides, "seed": seed, "output_dir": str(out),
                                    "data.path": str(data[config_name])})
    checkpoint = llm2vec_gen_results.train_stage(f"{name} (seed {seed})", cfg)
    llm2vec_gen_results.record_run(out, DATA / "train" / f"{name}-s{seed}.json",
                                   {"config": config_name, "overrides": overrides, "seed": seed})
    return checkpoint


def current(run: dict) -> bool:
    """Whether an eval output was made with today's settings: the lite suite's tasks and
    limits, the rationale length and the evaluation dtype (else it is redone, not mixed in)."""
    from grace.evaluation.suite_tasks import LITE

    def kept(limits):
        return {k: v for k, v in (limits or {}).items() if v is not None}

    tasks = {name: kept(row["subsample"]["limits"]) for name, row in run.get("tasks", {}).items()}
    return (run.get("max_new_tokens") == RATIONALE_TOKENS and run.get("dtype") == EVAL_DTYPE
            and run.get("pooling") in (EVAL_POOLING, None)  # None: rows from before it was recorded
            and run.get("suite") == "lite" and tasks == {t.name: kept(t.lite) for t in LITE})


def evaluate_row(work: Path, data_dir: Path, label: str, source: str, rationale: str, out: Path) -> dict:
    from grace.evaluation.suite import run_suite

    if out.is_file() and not current(json.loads(out.read_text())):
        _log(f"{out.name} was made with other suite settings: evaluating {label} again")
        out.unlink()
    if not out.is_file():
        _log(f"evaluating {label} ({source}, rationale {rationale})")
        tmp = out.with_suffix(".tmp")
        run_suite(source, data_dir=data_dir, rationale=rationale, max_new_tokens=RATIONALE_TOKENS,
                  output=tmp, cache=work / "rationales.sqlite", dtype=EVAL_DTYPE, show=False,
                  pooling=EVAL_POOLING)
        tmp.replace(out)  # whole files only under the final name
    return json.loads(out.read_text())


def evaluate_capability(label: str, source: str, out: Path, data_dir: Path) -> dict:
    if not out.is_file():
        from grace.evaluation.capability import arc_easy_accuracy, load_heldout_texts, perplexity
        from grace.models.backbones import load_backbone

        _log(f"capability of {label}")
        model, tokenizer = load_backbone(source, EVAL_DTYPE)
        model.eval()
        arc = arc_easy_accuracy(model, tokenizer, data_dir / "capability/arc-easy-test.jsonl",
                                max_questions=ARC_QUESTIONS, seed=0)
        report.write_json(out, {"arc_easy": arc, "perplexity": perplexity(model, tokenizer, load_heldout_texts())})
    return json.loads(out.read_text())


def run_table(work: Path, data_dir: Path, labels=None) -> None:
    """Stages 1-2: every row (untrained first, then seed by seed, model by model)."""
    labels = list(ROWS) if labels is None else labels
    for label in labels:
        source, rationale = ROWS[label]
        if source in TRAINING:
            continue
        evaluate_row(work, data_dir, label, source, rationale, DATA / "eval" / f"{_key(label, None)}.json")
        if label in CAPABILITY:
            evaluate_capability(label, source, DATA / "capability" / f"{_key(label, None)}.json", data_dir)
    for seed in SEEDS:
        for label in labels:
            source, rationale = ROWS[label]
            if source not in TRAINING:
                continue
            evaluation = DATA / "eval" / f"{_key(label, seed)}.json"
            capability = DATA / "capability" / f"{_key(label, seed)}.json"
            if evaluation.is_file() and capability.is_file():
                continue
            if evaluation.is_file() and not (work / "train" / f"{source}-s{seed}").is_dir():
                _log(f"{label} seed {seed}: evaluated, but its checkpoint is gone: retraining it for "
                     "the capability figures (same config and seed, so the same run up to "
                     "non-determinism of the kernels)")
            checkpoint = str(train_model(work, data_dir, source, seed))
            evaluate_row(work, data_dir, label, checkpoint, rationale, evaluation)
            evaluate_capability(label, checkpoint, capability, data_dir)


def load_table() -> tuple[dict, dict, dict]:
    """(rows aggregated over seeds, capability runs per row, training records) found in
    results-data. Outputs made with other suite settings are left out, unless no row has a
    current one: then the earlier table is returned as it was, each row marked ``current`` False."""
    rows, stale_rows, caps = {}, {}, {}
    for label in [*ROWS, *L2V_ROWS]:  # LLM2Vec-Gen's rows: one seed, from --only llm2vec-gen
        runs = [DATA / "eval" / f"{_key(label, s)}.json" for s in _seeds(label)]
        runs = [json.loads(p.read_text()) for p in runs if p.is_file()]
        stale = [r for r in runs if not current(r)]
        if stale:
            stale_rows[label] = {**results_table.aggregate(stale), "current": False}
            runs = [r for r in runs if current(r)]
        if runs:
            rows[label] = results_table.aggregate(runs)
        if label in CAPABILITY:
            found = [DATA / "capability" / f"{_key(label, s)}.json" for s in _seeds(label)]
            found = [json.loads(p.read_text()) for p in found if p.is_file()]
            if found:
                caps[label] = found
    if stale_rows and not rows:  # the earlier table as it was (the suite changed since)
        _log(f"no row made with today's suite settings: the {len(stale_rows)} earlier rows are shown as such")
        rows = stale_rows
    elif stale_rows:
        _log(f"{', '.join(stale_rows)}: output(s) made with other suite settings left out")
    train = {p.stem: json.loads(p.read_text()) for p in sorted((DATA / "train").glob("*.json"))}
    return rows, caps, train


def run_llm2vec_gen(work: Path, data_dir: Path, report_only: bool = False) -> None:
    """``--only llm2vec-gen``: its stages (llm2vec_gen_results.py), its lite rows in
    results-data/eval/ (base and MiniLM are the main table's own files, reused when current),
    and its report, written once the rows exist and again after the probes."""
    l2v = llm2vec_gen_results
    table = {**ROWS, **L2V_ROWS}
    files = {label: DATA / "eval" / f"{_key(label, None)}.json" for label in l2v.SUITE_ROWS}

    def found() -> dict:
        runs = {label: json.loads(p.read_text()) for label, p in files.items() if p.is_file()}
        return {label: run for label, run in runs.items() if current(run)}

    if not report_only:
        evaluated = {table[label][0] for label in found()}
        checkpoints = l2v.run_stages(work, data_dir, evaluated=evaluated)
        for label in l2v.SUITE_ROWS:
            source, rationale = table[label]
            evaluate_row(work, data_dir, label, checkpoints.get(source, source), rationale, files[label])
        _log(f"wrote {l2v.write_report(found())}")
        l2v.run_probes(work, data_dir)
    _log(f"wrote {l2v.write_report(found())}")


def make_plots(rows: dict, train: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, name in zip(axes, ("grace-sup", "grace-unsup")):
        for seed in SEEDS:
            metrics = train.get(f"{name}-s{seed}", {}).get("metrics", [])
            steps = [r["step"] for r in metrics]
            style = "-" if seed == SEEDS[0] else ":"
            for key, colour in (("reward/contrastive", "C0"), ("reward/consistency", "C1"),
                                ("reward/hard", "C2")):
                if metrics and key in metrics[0]:
                    ax.plot(steps, [r[key] for r in metrics], style, color=colour,
                            label=f"{key.split('/')[1]} (seed {seed})")
        ax.set_title(f"{name}: reward components per step")
        ax.set_xlabel("step")
        ax.legend(loc="lower left", fontsize=6)
    fig.tight_layout()
    fig.savefig(HERE / "reward_curves.png", dpi=110)
    made.append("reward_curves.png")

    types = [c for c in results_table.CATEGORIES if any(c in r["types"] for r in rows.values())]
    fig, ax = plt.subplots(figsize=(11, 3.8))
    width = 0.8 / max(len(rows), 1)
    for i, (label, row) in enumerate(rows.items()):
        stats = [row["types"].get(c, (None, None)) for c in types] + [row["overall_by_type"]]
        ax.bar([c + i * width for c in range(len(stats))], [100 * (m or 0) for m, _ in stats], width,
               yerr=[100 * (sd or 0) for _, sd in stats], label=label, capsize=2)
    ax.set_xticks([c + 0.4 - width / 2 for c in range(len(types) + 1)], types + ["overall (types)"])
    ax.set_ylabel("score x 100")
    ax.set_title("lite suite per category (SmolLM2-135M; error bars: sd over training seeds)")
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(HERE / "category_scores.png", dpi=110)
    made.append("category_scores.png")
    return made


def _llm2vec_gen_section() -> list[str]:
    return ["", "### LLM2Vec-Gen", "",
            "Its diagnostics, the probes that chose its defaults, both runs (full and "
            "alignment-only), their lite-suite rows and decodings of held-out texts: "
            "[results-llm2vec-gen.md](results-llm2vec-gen.md) (`make_results.py --only llm2vec-gen`; "
            "the same lite suite as the table above, its rows in results-data/eval/). The MiniLM "
            "row above is its teacher (all-MiniLM-L6-v2, not the paper's LLM2Vec teacher)."]


def _suite_description(any_row: dict) -> list[str]:
    lines = ["| task | type | subsample (requested limits -> kept sizes) |", "|---|---|---|"]
    for name, task in any_row["tasks"].items():
        limits = ", ".join(f"{k} {v}" for k, v in task["subsample"]["limits"].items() if v is not None)
        sizes = ", ".join(f"{k} {v}" for k, v in task["subsample"]["sizes"].items())
        lines.append(f"| {name} | {task['type']} | {limits or 'all'} -> {sizes} |")
    return lines


def _status(rows: dict) -> list[str]:
    expected = {label: len(_seeds(label)) for label in ROWS}
    missing = [f"{label} ({expected[label] - (rows[label]['seeds'] if label in rows else 0)} of "
               f"{expected[label]})" for label in ROWS
               if (rows[label]["seeds"] if label in rows else 0) < expected[label]]
    if not missing:
        return []
    return [f"**Status: partial.** Not run yet: {', '.join(missing)}. Rerunning the script "
            "resumes (stage outputs are in benchmarks/quality/results-data/).", ""]


def write_report(rows: dict, capabilities: dict, train: dict, plots: list[str]) -> Path:
    import torch

    any_run = json.loads(next(iter(sorted((DATA / "eval").glob("*.json")))).read_text())
    floors = results_table.item_floors(any_run)
    floor_text = ", ".join(f"{c} {v:.1f}" for c, v in floors.items())

    lines = [
        "### Table 1 at 8 steps",
        "",
        "Regenerate with `.venv/bin/python -m benchmarks.quality.make_results` "
        f"(written {time.strftime('%Y-%m-%d')}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
        "stage outputs in `benchmarks/quality/results-data/`, resumable).",
        "Every score is computed by mteb's own evaluators on the local `lite` suite (test splits, "
        "seeded subsamples, see `src/grace/evaluation/suite.py`), x 100. No setting was chosen on "
        "it. These are tiny training budgets on a 135M model; they say whether each method moves "
        "the numbers here, not what it does at the paper's scale (SPEC 1.8: 1.5B-4B backbones, "
        "1.5M triplets).",
        f"Models are trained in float32 and evaluated with {EVAL_DTYPE} weights; rationales are "
        f"greedy (echo: the text's first {RATIONALE_TOKENS} tokens), {RATIONALE_TOKENS} tokens at most. "
        f"Trained rows: mean ± sample sd over training seeds {', '.join(map(str, SEEDS))} (the "
        "evaluation subsample is the same for every row). *overall (types)*: the mean of the "
        "category means, as MTEB's leaderboard balances categories; *overall (tasks)*: the mean "
        "over tasks (3 of 8 are STS). *copy rate*: share of rationale tokens inside a >= 4-token "
        "n-gram of the input (grace.rollout.quality), over every distinct text of the run.",
        "",
        *_status(rows),
        *results_table.table_lines(rows),
        "",
        "### What each difference is worth",
        "",
        "Differences of the category-balanced overall and of each category, points x 100. A "
        "difference is called *within noise* when it is at most the larger of a floor and the sum "
        "of the two rows' seed sd. The floor is 1 point, or what one item moves its task by where "
        f"that is more ({floor_text or 'none here'}: one query). The sd of an untrained row is 0: "
        "its noise, the evaluation subsample, is not measured here, so a difference between two "
        "untrained rows is marked *single runs* and is a lead, not a result; two training seeds "
        "give a rough spread only.",
        "",
        *results_table.comparison_lines(rows, PAIRS, floors),
        "",
        "Where the rationale, not the copy, seems to earn its points (computed from the rows "
        "above, with the noise rule above):",
        "",
        *[f"- {line}" for line in (results_table.plain_reading(rows, a, b, floors) for a, b in READINGS)
          if line],
        "",
        "The lite suite's tasks and subsamples:",
        "",
        *_suite_description(any_run),
    ]
    lines += _llm2vec_gen_section()
    lines += ["", "### Training budgets", "",
              "From SmolLM2-135M-Instruct, full fine-tuning; minutes are the training alone:", ""]
    for name, (config_name, overrides) in TRAINING.items():
        spent = [f"seed {r['seed']} {r['seconds'] / 60:.1f} min" for key, r in train.items()
                 if key.rsplit("-s", 1)[0] == name]
        lines.append(f"- **{name}**: config `{config_name}` with `{json.dumps(overrides)}`"
                     + (f" ({'; '.join(spent)})" if spent else ""))
    lines += ["", "### General abilities (capability retention)", "",
              f"ARC-Easy: a seeded subsample of {ARC_QUESTIONS} questions (the same for every model; "
              f"at 40% accuracy a 95% interval is ±{100 * results_table.binomial_half_width(0.4, ARC_QUESTIONS):.1f} "
              "points), scored by log-likelihood of each choice; perplexity on held-out text.", "",
              *results_table.capability_lines(capabilities)]
    lines += ["", "### Plots", ""] + [f"![{p}]({p})" for p in plots]
    lines += ["", "### Seconds", "",
              "Whole lite suite per row (mean over seeds), bfloat16 weights, each distinct text "
              "encoded once (the texts/s of a greedy row is the suite's greedy encoding speed at "
              f"{RATIONALE_TOKENS} tokens). One job at a time was the rule, but light test runs shared "
              "the machine during some rows: read these as upper bounds.", ""]
    for label, r in rows.items():
        rate = f", {r['texts_encoded'] / r['seconds']:.2f} texts/s" if r.get("texts_encoded") else ""
        lines.append(f"- {label} ({r['rationale']}): {r['seconds']:.0f} s for "
                     f"{r.get('texts_encoded', '-')} texts{rate}")
    out = HERE / "results.md"
    head = ["# Results at our scale: SmolLM2-135M-Instruct on a 2-core CPU", "",
            "`.venv/bin/python -m benchmarks.quality.make_results --report-only` rewrites this file "
            "from the committed stage outputs (the first section's come from "
            "`benchmarks/quality/budget_runs.py`).", "",
            *final_report.section(DATA / "budget"), "## Earlier budgets", "",
            "make_results.py's own rows: every trained row is 8 optimizer steps (about 2 minutes), "
            "as the table stood before issue 25's real budgets above."
            + ("" if all(r.get("current", True) for r in rows.values()) else
               " They were scored on the lite suite as it was then (eight tasks, before the "
               "question, tweet and title tasks), with bfloat16 weights: they compare with each "
               "other, not with the table above. Rerunning make_results.py scores them again."), ""]
    out.write_text("\n".join(head + lines) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(paths.SHARED_DATA))
    parser.add_argument("--work", default=str(paths.RUNS / "results"))
    parser.add_argument("--report-only", action="store_true",
                        help="write results.md from the stage outputs already in "
                             "benchmarks/quality/results-data, run nothing")
    parser.add_argument("--only", choices=["llm2vec-gen"],
                        help="run one method's stages and write its own report only "
                             "(llm2vec-gen: benchmarks/quality/results-llm2vec-gen.md)")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), metavar="ROW",
                        help=f"run only these table rows (default: all): {', '.join(ROWS)}")
    args = parser.parse_args()
    work, data_dir = Path(args.work), Path(args.data_dir)
    work.mkdir(parents=True, exist_ok=True)
    if args.only == "llm2vec-gen":
        run_llm2vec_gen(work, data_dir, report_only=args.report_only)
        return
    if not args.report_only:
        run_table(work, data_dir, args.rows)
    rows, capabilities, train = load_table()
    if not rows:
        raise SystemExit("no stage output in benchmarks/quality/results-data yet: "
                         "run without --report-only")
    _log(f"wrote {write_report(rows, capabilities, train, make_plots(rows, train))}")


if __name__ == "__main__":
    main()
