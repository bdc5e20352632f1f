"""The markdown of benchmarks/quality/results.md from the stage outputs of make_results.py: rows
over training seeds (mean and spread), per-category and per-task tables, both overalls, rationale
copy rate and length, computed comparisons and capability retention.

Pure functions of the JSON the stages wrote (eval results of ``grace.evaluation.suite``,
capability and training records), so the report can be rebuilt (``--report-only``) and tested
on hand-written inputs.
"""

from __future__ import annotations

import math
import statistics

CATEGORIES = ("STS", "PairClassification", "Retrieval", "Reranking", "Classification", "Clustering")


def mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    """(mean, sample standard deviation over seeds; None with one value); (None, None) if any
    value is missing (a task that scored NaN)."""
    if not values or any(v is None for v in values):
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def aggregate(runs: list[dict]) -> dict:
    """One table row from the eval results of each seed of a model: {"seeds": n, "tasks":
    {task: (mean, sd)}, "types": {type: (mean, sd)}, "overall", "overall_by_type", "copy_rate",
    "length": (mean, sd)} (quality figures None without rationales)."""
    def stat(get):
        return mean_sd([get(r) for r in runs])

    first = runs[0]
    quality = [r.get("rationale_quality") for r in runs]
    return {
        "seeds": len(runs),
        "rationale": first["rationale"],
        "tasks": {t: stat(lambda r, t=t: r["tasks"][t]["main_score"]) for t in first["tasks"]},
        "types": {c: stat(lambda r, c=c: r["averages"].get(c)) for c in first["averages"]},
        "overall": stat(lambda r: r["overall"]),
        "overall_by_type": stat(lambda r: r["overall_by_type"]),
        "copy_rate": mean_sd([q["copy_rate"] for q in quality]) if all(quality) else (None, None),
        "length": mean_sd([q["length_mean"] for q in quality]) if all(quality) else (None, None),
        "seconds": statistics.fmean(r["seconds"] for r in runs),
        "texts_encoded": first.get("texts_encoded"),
    }


def cell(stat: tuple, scale: float = 100.0, digits: int = 2) -> str:
    """'mean' or 'mean ± sd' (x scale); '-' when missing."""
    mean, sd = stat
    if mean is None:
        return "-"
    text = f"{scale * mean:.{digits}f}"
    return text if sd is None else f"{text} ± {scale * sd:.{digits}f}"


def difference(a: tuple, b: tuple, floor: float = 1.0) -> tuple[float, float, bool] | None:
    """(a - b, the noise it is read against, whether any seed spread was measured) in points
    x 100, or None if either is missing. The noise is the larger of ``floor`` (1 point: never
    read a one-point difference as a result; more where one item moves a task by more, e.g.
    one of 40 retrieval queries) and the sum of the two rows' seed spreads (sd over training
    seeds; 0 for an untrained row, whose evaluation-subsample noise is not measured here)."""
    if a[0] is None or b[0] is None:
        return None
    spread = 100 * ((a[1] or 0.0) + (b[1] or 0.0))
    return 100 * (a[0] - b[0]), max(floor, spread), a[1] is not None or b[1] is not None


def verdict(diff: tuple[float, float, bool] | None) -> str:
    if diff is None:
        return "n/a"
    delta, noise, measured = diff
    word = "within noise" if abs(delta) <= noise else ("above" if delta > 0 else "below")
    if not measured and word != "within noise":
        word += ", single runs"
    return f"{delta:+.2f} ({word}, noise {noise:.1f})"


def comparison_lines(rows: dict[str, dict], pairs: dict[str, tuple[str, ...]],
                     floors: dict[str, float] | None = None) -> list[str]:
    """Per (row, other): the category-balanced overall's difference and each category's, each
    read against the noise of ``difference`` (``floors``: per category, default 1 point)."""
    floors = floors or {}
    lines = []
    for ours, others in pairs.items():
        if ours not in rows:
            continue
        for other in others:
            if other not in rows:
                continue
            a, b = rows[ours], rows[other]
            parts = [f"{c} {verdict(difference(a['types'][c], b['types'][c], floors.get(c, 1.0)))}"
                     for c in a["types"] if c in b["types"]]
            lines.append(f"- **{ours} vs {other}**: overall (types) "
                         f"{verdict(difference(a['overall_by_type'], b['overall_by_type']))}; "
                         + "; ".join(parts))
    return lines


def table_lines(rows: dict[str, dict]) -> list[str]:
    """The per-category table (both overalls, copy rate, length) and the per-task table."""
    types = [c for c in CATEGORIES if any(c in r["types"] for r in rows.values())]
    lines = ["| model | rationale | seeds | " + " | ".join(types)
             + " | overall (types) | overall (tasks) | copy rate | rationale tokens |",
             "|---" * (len(types) + 7) + "|"]
    for label, r in rows.items():
        cells = [cell(r["types"].get(c, (None, None))) for c in types]
        lines.append(f"| {label} | {r['rationale']} | {r['seeds']} | " + " | ".join(cells)
                     + f" | {cell(r['overall_by_type'])} | {cell(r['overall'])} | "
                     f"{cell(r['copy_rate'], 1.0, 3)} | {cell(r['length'], 1.0, 1)} |")
    tasks = list(next(iter(rows.values()))["tasks"])
    lines += ["", "Per task (mean over seeds; mteb main scores x 100):", "",
              "| model | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for label, r in rows.items():
        lines.append(f"| {label} | " + " | ".join(cell((r["tasks"][t][0], None)) if t in r["tasks"]
                                                  else "-" for t in tasks) + " |")
    return lines


def capability_lines(capabilities: dict[str, list[dict]]) -> list[str]:
    """ARC-Easy accuracy and held-out perplexity per model, mean ± sd over seeds."""
    lines = ["| model | seeds | ARC-Easy acc | ARC-Easy acc_norm | questions | held-out perplexity |",
             "|---|---|---|---|---|---|"]
    for label, runs in capabilities.items():
        acc = mean_sd([r["arc_easy"].get("acc") for r in runs])
        norm = mean_sd([r["arc_easy"].get("acc_norm") for r in runs])
        ppl = mean_sd([r["perplexity"]["perplexity"] for r in runs])
        questions = runs[0]["arc_easy"].get("num_questions", "-")
        lines.append(f"| {label} | {len(runs)} | {cell(acc, 1.0, 4)} | {cell(norm, 1.0, 4)} | "
                     f"{questions} | {cell(ppl, 1.0, 2)} |")
    return lines


def binomial_half_width(p: float, n: int) -> float:
    """The 95% half-width of an accuracy p measured on n items (normal approximation)."""
    return 1.96 * math.sqrt(max(p * (1 - p), 0.0) / n) if n else float("nan")


def plain_reading(rows: dict[str, dict], ours: str, other: str,
                  floors: dict[str, float] | None = None) -> str | None:
    """One sentence: the categories where ``ours`` is above, below and within noise of ``other``."""
    if ours not in rows or other not in rows:
        return None
    floors = floors or {}
    a, b = rows[ours], rows[other]
    sides: dict[str, list[str]] = {"above": [], "below": [], "within noise": []}
    measured = False
    for c in a["types"]:
        diff = difference(a["types"][c], b["types"].get(c, (None, None)), floors.get(c, 1.0))
        if diff is not None:
            delta, noise, measured = diff
            sides["within noise" if abs(delta) <= noise else ("above" if delta > 0 else "below")].append(
                f"{c} ({delta:+.1f})")
    overall = verdict(difference(a["overall_by_type"], b["overall_by_type"]))
    caveat = "" if measured else " Both are single runs: the evaluation subsample's noise is not measured."
    return (f"**{ours}** vs **{other}**: overall (types) {overall}; above on "
            f"{', '.join(sides['above']) or 'no category'}; below on "
            f"{', '.join(sides['below']) or 'no category'}; within noise on "
            f"{', '.join(sides['within noise']) or 'no category'}.{caveat}")


def item_floors(run: dict) -> dict[str, float]:
    """Per task type, the points one item can move its task by where that exceeds 1 (a query
    of a retrieval or reranking task: 100 / queries), from an eval result's kept sizes."""
    floors: dict[str, float] = {}
    for row in run["tasks"].values():
        n = row["subsample"]["sizes"].get("queries")
        if row["type"] in ("Retrieval", "Reranking") and n:
            floors[row["type"]] = max(floors.get(row["type"], 1.0), 100.0 / n)
    return floors
