"""benchmarks/quality/final_report.py: results.md's first section (issue 25's table at real
budgets) from hand-written stage outputs laid out as budget_runs writes them; the means, spreads
and margins below are computed by hand."""

import json

import pytest

from benchmarks.quality import budget_final, final_report


@pytest.fixture(autouse=True)
def _mean_table(monkeypatch):
    """These layouts are read with the paper's pooling (lite.json, no --pooling-check files);
    a test of the balanced table sets its own."""
    monkeypatch.setattr(budget_final, "POOLING", "mean")


def _lite(sts, retrieval, copy=None, rationale="greedy"):
    """A lite result of two tasks, one per category; overall (types) = their mean."""
    return {"rationale": rationale, "seconds": 10.0, "texts_encoded": 4,
            "tasks": {"STSB": {"main_score": sts, "type": "STS", "subsample": {"sizes": {"pairs": 100}}},
                      "Hotpot": {"main_score": retrieval, "type": "Retrieval",
                                 "subsample": {"sizes": {"queries": 40}}}},
            "averages": {"STS": sts, "Retrieval": retrieval},
            "overall": (sts + retrieval) / 2, "overall_by_type": (sts + retrieval) / 2,
            "rationale_quality": None if copy is None else {"copy_rate": copy, "length_mean": 30.0}}


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _run(data, key, lite, samples=None):
    _write(data / key / "train.json", {"config": "sup-nli", "overrides": {}, "seed": 0, "steps": 3})
    _write(data / key / "lite.json", lite)
    if samples is not None:
        _write(data / key / "samples.json", samples)


def _table(lines, first):
    """The markdown table that starts at the line beginning with ``first``: label -> cells."""
    start = next(i for i, line in enumerate(lines) if line.startswith(first))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


SUP0, SUP1 = budget_final.FINAL["GRACE sup"]
LONG = "word " * 60  # 300 characters: shown cut at SAMPLE_CHARS


def _layout(tmp_path):
    data = tmp_path / "budget"
    _write(data / "references" / "base-lite.json", _lite(0.40, 0.50, rationale="none"))
    _write(data / "references" / "echo-lite.json", _lite(0.50, 0.60, copy=1.0, rationale="echo"))
    _write(data / "references" / "plus_reasoning-lite.json", _lite(0.30, 0.70, copy=0.3))
    texts = ["A man is dancing.", LONG.strip()]
    _write(data / "references" / "samples.json", {"texts": texts, "rationales": ["He | dances.", "Words."]})
    _run(data, SUP0, _lite(0.60, 0.80, copy=0.2), {"texts": texts, "rationales": ["A dance\nscene.", "Many."]})
    _run(data, SUP1, _lite(0.70, 0.80, copy=0.4))
    _run(data, budget_final.FINAL["InfoNCE"][0], _lite(0.66, 0.70, rationale="none"))
    _run(data, "grace-sup-other-s0-45m", _lite(0.99, 0.99, copy=0.1))  # not FINAL: not shown
    (data / "SUMMARY.md").write_text("**Status (by hand).** Two rows missing.\n")
    return data


def test_section_tables_rows_in_order_with_means_over_seeds(tmp_path):
    lines = final_report.section(_layout(tmp_path))
    assert lines[0] == "## Table 1 at real budgets (issue 25)"
    assert "**Status (by hand).** Two rows missing." in lines
    table = _table(lines, "| model | rationale | seeds |")
    assert list(table) == ["base", "echo", "+reasoning", "InfoNCE", "GRACE sup"]
    # GRACE sup: STS .60/.70 -> 65.00 ± 7.07; Retrieval 80.00 ± 0.00; overall .70/.75 -> 72.50 ± 3.54
    assert table["GRACE sup"][:5] == ["greedy", "2", "65.00 ± 7.07", "80.00 ± 0.00", "72.50 ± 3.54"]
    assert table["GRACE sup"][-2:] == ["0.300 ± 0.141", "30.0 ± 0.0"]
    assert table["+reasoning"][:5] == ["greedy", "1", "30.00", "70.00", "50.00"]
    assert table["InfoNCE"][-2:] == ["-", "-"]
    assert not any("grace-sup-other" in line for line in lines)


def test_section_targets_and_differences(tmp_path):
    lines = final_report.section(_layout(tmp_path))
    targets = _table(lines, "| target")
    assert targets["GRACE sup >= +reasoning + 5"] == ["met", "72.50 vs 50.00 + 5: +17.50"]
    # InfoNCE has one seed here: the two compare on one seed each (GRACE sup seed 0: .70)
    assert targets["GRACE sup >= InfoNCE"] == [
        "met (one seed)", "70.00 vs 68.00: +2.00 (the first 1 seed of each; all seeds: 72.50 (2) vs 68.00 (1))"]
    assert targets["GRACE unsup >= SimCSE"] == ["not measured", "no lite row for GRACE unsup, SimCSE"]
    diff = next(line for line in lines if line.startswith("- **GRACE sup vs InfoNCE**"))
    # +4.50 against noise max(1, 3.54 + 0) = 3.54: above it
    assert "overall (types) +4.50 (above, noise 3.5)" in diff
    # one of 40 retrieval queries moves the task by 2.5 points: Retrieval's floor; +10.00 above it
    assert "Retrieval +10.00 (above, noise 2.5)" in diff
    assert any("(Retrieval 2.5)" in line for line in lines)


def test_sample_rationales_by_text_untrained_first_long_text_cut(tmp_path):
    lines = final_report.section(_layout(tmp_path))
    first = lines.index('*Text 1* (4 words): "A man is dancing."')
    assert lines[first + 4:first + 6] == ["| untrained | He / dances. |", f"| GRACE sup ({SUP0}) | A dance scene. |"]
    second = next(line for line in lines if line.startswith("*Text 2*"))
    assert second.startswith("*Text 2* (60 words): \"word word") and second.endswith(' ..."')
    assert len(second) < final_report.SAMPLE_CHARS + 40


def test_section_without_lite_rows_says_so(tmp_path):
    data = tmp_path / "budget"
    data.mkdir()
    lines = final_report.section(data)
    assert lines[0] == "## Table 1 at real budgets (issue 25)" and "No lite row" in lines[2]


def test_one_pooling_per_table_rationale_rows_read_balanced(tmp_path, monkeypatch):
    """With POOLING "balanced", the GRACE runs' --pooling-check lite files and the balanced
    references stand for the rationale rows; base and InfoNCE (no rationale) keep theirs, and a
    run not yet read with that pooling has no row (never a mix of poolings)."""
    data = _layout(tmp_path)
    _write(data / "references" / "plus_reasoning_balanced-lite.json", _lite(0.40, 0.70, copy=0.3))
    _write(data / "references" / "echo_balanced-lite.json", _lite(0.55, 0.65, copy=1.0, rationale="echo"))
    model = "/runs/x/checkpoint-8"
    _write(data / SUP0 / "lite-balanced.json", {**_lite(0.80, 0.80, copy=0.2), "pooling": "balanced",
                                                 "model": model})
    monkeypatch.setattr(budget_final, "POOLING", "balanced")
    lines = final_report.section(data)
    table = _table(lines, "| model | rationale | seeds |")
    assert table["+reasoning"][2:5] == ["40.00", "70.00", "55.00"]
    assert table["echo"][2:5] == ["55.00", "65.00", "60.00"]
    assert table["base"][2:5] == ["40.00", "50.00", "45.00"]
    assert table["InfoNCE"][2:5] == ["66.00", "70.00", "68.00"]
    assert table["GRACE sup"][:5] == ["greedy", "1", "80.00", "80.00", "80.00"]  # SUP1 not repooled
    assert any("text's mean and the rationale's mean weighted equally" in line for line in lines)
    assert budget_final.pooled_lite({"lite": {"pooling": "balanced"}}, "mean") is None
    only = {"pooling": "balanced"}  # read with --pooling-check lite, its own lite stage never run
    assert budget_final.pooled_lite({"lite": None, "repooled": {"lite": {"balanced": only}}}, "balanced") is only
