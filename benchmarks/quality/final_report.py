"""The head of results.md: issue 25's final table at real budgets, from budget_runs.py's stage
outputs (results-data/budget/). Each trained row is a method of ``budget_final.FINAL`` (45 minutes
of training a run, alone on the CPU, judged by its checkpoint chosen on dev-mini), mean ± sd over
the seeds scored on ``lite`` so far; the untrained rows are budget_runs' references. Then the
differences read against their noise, the targets of the issue with their margins, capability
retention, greedy rationales of the selected checkpoints for short and long texts, and the
hand-written status (``results-data/budget/SUMMARY.md``, dated, shown as it is).

Pure functions of the JSON the stages wrote; of the benchmark's own modules it imports only the
other report modules (budget_final, budget_report, results_table).
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.quality import budget_final, budget_report, results_table

ORDER = ("base", "echo", "+reasoning", "InfoNCE", "GRACE sup", "SimCSE", "GRACE unsup")
PAIRS = {"+reasoning": ("echo", "base"), "echo": ("base",),
         "GRACE sup": ("InfoNCE", "+reasoning", "echo", "base"),
         "GRACE unsup": ("SimCSE", "+reasoning", "echo", "base")}
SAMPLE_CHARS = 160  # a long sample text is shown up to here
POOLING_TEXT = {"mean": "pooled as in the paper (the mean over every text and rationale token)",
                "balanced": "pooled with the text's mean and the rationale's mean weighted equally "
                            "(chosen on dev; every rationale row read the same way)"}


def lite_results(runs: dict, refs: dict) -> dict[str, list[dict]]:
    """label -> the lite results that stand for it (one per seed scored; one for an untrained
    reference), in ``ORDER``; labels with none are left out."""
    found = budget_final.lite_sources(runs, refs)
    return {label: [lite for _, lite in found[label]] for label in ORDER if label in found}


def sample_lines(data: Path, runs: dict) -> list[str]:
    """Per sample text, the greedy rationale of the untrained model and of each FINAL run's
    selected checkpoint (``samples.json``, budget_runs --samples), as a table."""
    sources = [("untrained", data / "references" / "samples.json")]
    sources += [(f"{label} ({key})", data / key / "samples.json")
                for label, keys in budget_final.FINAL.items() for key in keys if key in runs]
    found = [(name, json.loads(p.read_text())) for name, p in sources if p.is_file()]
    found = [(name, s) for name, s in found if s.get("rationales")]
    if not found:
        return []
    lines = []
    for i, text in enumerate(found[0][1]["texts"]):
        shown = text if len(text) <= SAMPLE_CHARS else text[:SAMPLE_CHARS].rsplit(" ", 1)[0] + " ..."
        lines += [f"*Text {i + 1}* ({len(text.split())} words): \"{_cell(shown)}\"", "",
                  "| model | greedy rationale |", "|---|---|"]
        lines += [f"| {name} | {_cell(s['rationales'][i])} |" for name, s in found
                  if s["texts"] == found[0][1]["texts"]]
        lines.append("")
    return lines


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ").strip()


def section(data: Path) -> list[str]:
    """results.md's first section, from the stage outputs in ``data`` (results-data/budget/)."""
    runs, refs = budget_report.load_runs(data), budget_report.load_references(data)
    results = lite_results(runs, refs)
    summary = data / "SUMMARY.md"
    lines = ["## Table 1 at real budgets (issue 25)", ""]
    if summary.is_file():
        lines += [summary.read_text().strip(), ""]
    if not results:
        return lines + ["No lite row of the budget runs yet (`python -m benchmarks.quality.budget_runs`).", ""]
    rows = {label: results_table.aggregate(found) for label, found in results.items()}
    final = budget_final.method_rows(runs, refs)
    floors = results_table.item_floors(next(iter(results.values()))[0])
    keys = [k for label in budget_final.FINAL for k in budget_final.FINAL[label]]
    cap_path = data / "references" / "capability.json"
    base_capability = json.loads(cap_path.read_text()) if cap_path.is_file() else None
    lines += [
        "The `lite` suite (test splits, seeded subsamples; never used to choose), float32 weights, "
        "greedy 32-token rationales for the GRACE and +reasoning rows (echo: the text's first 32 "
        f"tokens), {POOLING_TEXT[budget_final.POOLING]}; none for the contrastive baselines "
        "(trained on plain mean pooling). Each trained "
        "run had 45 minutes of training alone on a 2-core CPU and is judged by its best checkpoint "
        "on `dev-mini` (a split we may choose on); trained rows are mean ± sample sd over their "
        "seeds (the runs are listed below the table). Every run, the search on dev and the curves: "
        "[results-budget.md](results-budget.md).", "",
        *results_table.table_lines(rows), "",
        "The runs behind each row (seed in the name):", "",
        *budget_final.final_lines(final), "",
        "### Targets of issue 25", "",
        *budget_final.target_lines(final, runs, base_capability), "",
        "### What each difference is worth", "",
        "Points x 100; *within noise* when at most the larger of a floor and the two rows' seed sd "
        "summed (an untrained row has sd 0: its subsample's noise is not measured). The floor is 1 "
        "point, or what one query moves its task by where that is more "
        f"({', '.join(f'{c} {v:.1f}' for c, v in floors.items()) or 'none here'}).", "",
        *results_table.comparison_lines(rows, PAIRS, floors), "",
    ]
    capability = budget_report.capability_lines(base_capability, {k: runs[k] for k in keys if k in runs})
    if capability:
        lines += ["### General abilities of the selected checkpoints", "", *capability, ""]
    samples = sample_lines(data, runs)
    if samples:
        lines += ["### Sample rationales (greedy, float32, the selected checkpoints)", "", *samples]
    return lines
