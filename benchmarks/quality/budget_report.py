"""benchmarks/quality/results-budget.md and results-budget-curves.png from budget_runs.py's stage
outputs (results-data/budget/): every run listed with its settings, seed, minutes, steps,
dev-mini curve, dev and lite scores and rationale quality, beside the untrained references.

Pure functions of the JSON the stages wrote, so the report can be rebuilt at any time.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.quality.budget_final import final_lines, method_rows, target_lines

CURVE_KEYS = (("reward/contrastive", "contrastive reward"), ("reward/consistency", "consistency"),
              ("reward/hard", "hard"), ("rationale/copy_rate", "copy rate"),
              ("rationale/length_mean", "rationale tokens"))


def _json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def load_curve(folder: Path) -> dict[int, dict]:
    """step -> dev-mini result of every scored checkpoint of one run folder, by step."""
    curve = {int(p.stem.split("-")[1]): _json(p) for p in folder.glob("curve-*.json")}
    return dict(sorted(curve.items()))


REPOOLED_SUITES = ("dev-mini", "dev", "lite")  # budget_runs --pooling-check writes SUITE-POOLING.json


def _repooled(folder: Path) -> dict[str, dict[str, dict]]:
    """suite -> pooling -> result of the selected checkpoint read with another pooling than it
    was trained with (``SUITE-LABEL.json``: mean, balanced, or a text share ``textW``), keyed by
    the pooling the result names (``text:0.7``)."""
    found: dict[str, dict[str, dict]] = {}
    for path in folder.glob("*.json"):
        suite, _, label = path.stem.rpartition("-")
        if suite in REPOOLED_SUITES and (label in ("mean", "balanced") or label.startswith("text")):
            result = _json(path)
            found.setdefault(suite, {})[result.get("pooling", label)] = result
    return found


def load_runs(data: Path) -> dict[str, dict]:
    """run key -> {"train", "curve": {step: result}, "dev", "lite", "capability", "repooled":
    {suite: {pooling: result}}} for every run folder."""
    runs = {}
    if not data.is_dir():
        return runs
    for folder in sorted(p for p in data.iterdir() if p.is_dir() and p.name != "references"):
        train = _json(folder / "train.json")
        if train is None:
            continue
        runs[folder.name] = {"train": train, "curve": load_curve(folder),
                             "dev": _json(folder / "dev.json"), "lite": _json(folder / "lite.json"),
                             "capability": _json(folder / "capability.json"),
                             "repooled": _repooled(folder)}
    return runs


def load_references(data: Path) -> dict[str, dict[str, dict]]:
    """label -> suite -> result of the untrained references."""
    refs: dict[str, dict[str, dict]] = {}
    for path in sorted((data / "references").glob("*-*.json")) if (data / "references").is_dir() else []:
        label, suite = path.stem.rsplit("-", 1) if not path.stem.endswith("dev-mini") else (
            path.stem[: -len("-dev-mini")], "dev-mini")
        refs.setdefault(label, {})[suite] = json.loads(path.read_text())
    return refs


def readings(data: Path) -> list[str]:
    """The hand-written readings of the runs (results-data/budget/READINGS.md), dated, shown
    as they are above the generated tables."""
    path = data / "READINGS.md"
    return [path.read_text().strip(), ""] if path.is_file() else []


def pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _score(result: dict | None) -> str:
    return "-" if result is None else pct(result.get("overall_by_type"))


def _readings(run: dict, suite: str) -> str:
    """A run's score on ``suite`` with its own pooling, then each --pooling-check reading of it
    named by its pooling ("60.19; balanced 61.42")."""
    parts = [] if run[suite] is None else [_score(run[suite])]
    parts += [f"{pooling} {_score(result)}" for pooling, result in sorted(run["repooled"].get(suite, {}).items())]
    return "; ".join(parts) or "-"


def _quality(result: dict | None) -> str:
    q = (result or {}).get("rationale_quality")
    return "-" if not q else f"{q['copy_rate']:.2f} / {q['length_mean']:.1f}"


def _changed(overrides: dict, base: dict) -> str:
    keep = {k: v for k, v in overrides.items() if base.get(k) != v}
    return ", ".join(f"{k}={v}" for k, v in keep.items()) or "-"


def best_checkpoint(curve: dict) -> tuple[int, float] | None:
    """(step, dev-mini score) of the best scored checkpoint, the earliest of equal scores: the
    checkpoint a run is judged by (early stopping on dev-mini; budget_runs.selected_step)."""
    scored = [(step, c["overall_by_type"]) for step, c in curve.items()
              if c and c.get("overall_by_type") is not None]
    return max(scored, key=lambda sv: (sv[1], -sv[0])) if scored else None


def run_lines(runs: dict, common: dict) -> list[str]:
    lines = ["| run | settings beyond the common ones | seed | minutes | steps | dev-mini first -> last "
             "checkpoint | best on dev-mini (step) | dev (types) | lite (types) | copy rate / tokens (dev) |",
             # dev and lite: the run's own pooling, then any other reading of the same checkpoint
             "|---|---|---|---|---|---|---|---|---|---|"]
    for key, run in runs.items():
        t = run["train"]
        curve = list(run["curve"].values())
        trend = (f"{_score(curve[0])} -> {_score(curve[-1])}" if len(curve) > 1
                 else _score(curve[0]) if curve else "-")
        minutes = "-" if t.get("train_minutes") is None else f"{t['train_minutes']:.1f}"
        if t.get("step_budget"):
            minutes += " (step budget)"  # may have shared the CPU: its minutes compare with nothing
        best = best_checkpoint(run["curve"])
        best_text = "-" if best is None else f"{pct(best[1])} ({best[0]})"
        lines.append(f"| {key} | {t['config']}: {_changed(t['overrides'], common)} | {t['seed']} | "
                     f"{minutes} | {t['steps']} | {trend} | {best_text} | {_readings(run, 'dev')} | "
                     f"{_readings(run, 'lite')} | {_quality(run['dev'])} |")
    return lines


def reference_lines(refs: dict) -> list[str]:
    lines = ["| untrained SmolLM2 | dev-mini (types) | dev (types) | lite (types) | copy rate / tokens (dev) |",
             "|---|---|---|---|---|"]
    for label, by_suite in refs.items():
        lines.append(f"| {label} | {_score(by_suite.get('dev-mini'))} | {_score(by_suite.get('dev'))} | "
                     f"{_score(by_suite.get('lite'))} | {_quality(by_suite.get('dev'))} |")
    return lines


def type_lines(named: dict[str, dict], suite: str = "dev") -> list[str]:
    """Per-category scores on ``suite`` of the rows that have them."""
    named = {k: v for k, v in named.items() if v is not None}
    if not named:
        return []
    types = list(next(iter(named.values()))["averages"])
    lines = [f"| {suite} | " + " | ".join(types) + " | overall (types) |",
             "|---|" + "---|" * (len(types) + 1)]
    for label, result in named.items():
        lines.append(f"| {label} | " + " | ".join(pct(result["averages"].get(t)) for t in types)
                     + f" | {pct(result['overall_by_type'])} |")
    return lines


def pooling_lines(refs: dict, runs: dict, suite: str = "dev-mini") -> list[str]:
    """``suite`` of the same rationales read with both poolings: the references that have both,
    and each GRACE run's selected checkpoint (its own pooling from the curve or the run's suite
    file, the other from ``--pooling-check``)."""
    shares = sorted({p for run in runs.values() for p in run["repooled"].get(suite, {})
                     if p not in ("mean", "balanced")}, key=lambda p: float(p.split(":", 1)[1]))
    columns = ["mean", "balanced", *shares]
    names = {"mean": "mean (the paper)", "balanced": "balanced (text and rationale equal)",
             **{p: f"{p} (text {p.split(':', 1)[1]})" for p in shares}}
    lines = [f"| {suite} | " + " | ".join(names[p] for p in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for label in refs:
        other = refs.get(f"{label}_balanced", {}).get(suite)
        if other is not None and refs[label].get(suite) is not None:
            lines.append(f"| untrained, {label} | {_score(refs[label][suite])} | {_score(other)} |"
                         + " - |" * len(shares))
    for key, run in runs.items():
        others = list(run["repooled"].get(suite, {}).values())
        if not others:
            continue
        # the checkpoint the other poolings read, beside its own reading of it (each result
        # names its checkpoint and pooling)
        model = others[0]["model"]
        step = int(model.rsplit("checkpoint-", 1)[1])
        if suite == "dev-mini":
            own = run["curve"].get(step)
        else:  # the run's own suite file, when it read the same checkpoint
            own = run.get(suite)
            own = own if own and own.get("model") == model else None
        if own is None:
            continue
        by = {o["pooling"]: o for o in others if o["model"] == model} | {own["pooling"]: own}
        lines.append(f"| {key} (step {step}) | " + " | ".join(_score(by.get(p)) for p in columns) + " |")
    return lines if len(lines) > 2 else []


def sample_lines(runs: dict) -> list[str]:
    """The last logged sample rationales of each run (training rollouts, sampled at T = 1)."""
    lines = []
    for key, run in runs.items():
        for sample in run["train"].get("samples", []):
            text = sample["text"].replace("|", "/")
            rationale = sample["rationale"].replace("|", "/").replace("\n", " ")
            lines.append(f"| {key} | {sample['step']} | {text} | {rationale} |")
    return (["| run | step | text | rationale |", "|---|---|---|---|", *lines]) if lines else []


def capability_lines(base: dict | None, runs: dict) -> list[str]:
    """ARC-Easy accuracy and held-out perplexity, with the perplexity's change from the base."""
    rows = ({"base (untrained)": base} if base else {}) | {k: r["capability"] for k, r in runs.items()
                                                          if r.get("capability")}
    if not rows:
        return []
    base_ppl = base["perplexity"]["perplexity"] if base else None
    lines = ["| model | ARC-Easy acc | questions | held-out perplexity | vs base |", "|---|---|---|---|---|"]
    for label, cap in rows.items():
        arc, ppl = cap["arc_easy"], cap["perplexity"]["perplexity"]
        change = "-" if base_ppl is None else f"{100 * (ppl / base_ppl - 1):+.1f}%"
        lines.append(f"| {label} | {arc['acc']:.4f} | {arc['num_questions']} | {ppl:.2f} | {change} |")
    return lines


def plot(runs: dict, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not runs:
        return False
    fig, axes = plt.subplots(2, 4, figsize=(18, 7))
    axes = axes.ravel()
    for i, (key, run) in enumerate(runs.items()):
        rows = run["train"]["metrics"]
        colour = plt.cm.tab20(i % 20)  # 20 distinct colours: the run list outgrew C0-C9
        steps = [r["step"] for r in rows]
        for ax, (metric, title) in zip(axes[:5], CURVE_KEYS):
            if rows and metric in rows[0]:
                ax.plot(steps, [r[metric] for r in rows], color=colour, lw=0.8, label=key)
                ax.set_title(f"{title} per step")
                ax.set_xlabel("step")
        if rows and "contrastive/loss" in rows[0]:  # optim.contrastive_weight runs
            axes[7].plot(steps, [r["contrastive/loss"] for r in rows], color=colour, lw=0.8, label=key)
        minutes = {r["step"]: r.get("time/train_min") for r in rows}
        scored = sorted((int(s), 100 * c["overall_by_type"]) for s, c in run["curve"].items()
                        if c.get("overall_by_type") is not None)
        if scored:
            axes[5].plot([s for s, _ in scored], [v for _, v in scored], "o-", color=colour, label=key)
        # minutes only of time-budget runs: a step-budget run shared the CPU with other work
        timed = [(minutes[s], v) for s, v in scored if minutes.get(s) is not None]
        if timed and not run["train"].get("step_budget"):
            axes[6].plot([m for m, _ in timed], [v for _, v in timed], "o-", color=colour, label=key)
    axes[5].set_title("dev-mini overall (types) x 100 per checkpoint")
    axes[5].set_xlabel("step")
    axes[5].legend(fontsize=6)
    axes[6].set_title("dev-mini x 100, time-budget runs")
    axes[6].set_xlabel("training minutes")
    axes[6].legend(fontsize=6)
    axes[7].set_title("contrastive term (InfoNCE) per step")
    axes[7].set_xlabel("step")
    if not axes[7].lines:
        axes[7].axis("off")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write(data: Path, here: Path, grace: dict, baseline: dict) -> Path:
    """results-budget.md (and its curves) in ``here`` from the stage outputs in ``data``;
    ``grace`` and ``baseline`` are the settings every run shares (budget_runs.GRACE, .BASELINE),
    which each run's line leaves out."""
    runs, refs = load_runs(data), load_references(data)
    final = method_rows(runs, refs)  # the lite table and its targets read the same rows
    out = here / "results-budget.md"
    lines = [
        "# GRACE at real budgets: search on dev (issue 25)",
        "",
        "Regenerate with `.venv/bin/python -m benchmarks.quality.budget_runs --report`; each run with "
        "`python -m benchmarks.quality.budget_runs --runs NAME --seeds S --minutes M` (stage outputs in "
        "`benchmarks/quality/results-data/budget/`, resumable). SmolLM2-135M-Instruct, full fine-tuning, "
        "float32 training and evaluation, greedy 32-token rationales for GRACE rows (none for the "
        "contrastive baselines). Scores are mteb main scores x 100, category-balanced (mean of the "
        "type means). *dev-mini*: four dev tasks (STS-B dev, HotpotQA dev, TREC train split, Quora "
        "dev; small subsamples, so read it as a trend); *dev*: the whole dev suite; *lite*: the "
        "final table's suite, never used to choose.",
        "",
        f"Common GRACE settings: `{json.dumps(grace)}`; baselines: `{json.dumps(baseline)}`.",
        "",
        *readings(data),
        "## Untrained references",
        "",
        *reference_lines(refs),
        "",
        "## The final table so far (lite, float32, 45 minutes a run, mean over seeds)",
        "",
        *(final_lines(final) or ["No lite row yet."]),
        "",
        *target_lines(final, runs, _json(data / "references" / "capability.json")),
        "",
        "## Every run",
        "",
        *run_lines(runs, grace),
        "",
        "## Per category on dev",
        "",
        *type_lines({**{k: v.get("dev") for k, v in refs.items()},
                     **{k: r["dev"] for k, r in runs.items()}}),
    ]
    on_lite = {**{k: v.get("lite") for k, v in refs.items()}, **{k: r["lite"] for k, r in runs.items()},
               **{f"{k} ({pooling})": result for k, r in runs.items()  # --pooling-check lite
                  for pooling, result in r["repooled"].get("lite", {}).items()}}
    if any(on_lite.values()):
        lines += ["", "## Per category on lite (the final table's suite; never used to choose)", "",
                  *type_lines(on_lite, "lite")]
    for suite in ("dev-mini", "dev"):
        pooling = pooling_lines(refs, runs, suite)
        if pooling:
            lines += ["", f"## Pooling at evaluation ({suite}, the same rationales)", "", *pooling]
    samples = sample_lines(runs)
    if samples:
        lines += ["", "## Sample rationales (training rollouts, last logged)", "", *samples]
    capability = capability_lines(_json(data / "references" / "capability.json"), runs)
    if capability:
        lines += ["", "## General abilities", "", *capability]
    if plot(runs, here / "results-budget-curves.png"):
        lines += ["", "## Curves", "", "![results-budget-curves.png](results-budget-curves.png)"]
    out.write_text("\n".join(lines) + "\n")
    return out
