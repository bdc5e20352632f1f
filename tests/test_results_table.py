"""benchmarks/quality/results_table.py: rows over seeds, noise-aware comparisons and the tables, on
hand-written eval results (numbers computed by hand)."""

import pytest

from benchmarks.quality import results_table as rt


def _run(sts, rerank, copy=None, length=None):
    tasks = {"A": {"type": "STS", "main_score": sts}, "B": {"type": "Reranking", "main_score": rerank}}
    quality = None if copy is None else {"copy_rate": copy, "length_mean": length}
    return {"rationale": "greedy" if quality else "none", "tasks": tasks,
            "averages": {"STS": sts, "Reranking": rerank}, "overall": (sts + rerank) / 2,
            "overall_by_type": (sts + rerank) / 2, "rationale_quality": quality, "seconds": 10.0,
            "texts_encoded": 20}


def test_mean_sd_over_seeds():
    assert rt.mean_sd([0.5, 0.7]) == pytest.approx((0.6, 0.1414213562))  # sd = |a - b| / sqrt(2)
    assert rt.mean_sd([0.5]) == (0.5, None)
    assert rt.mean_sd([0.5, None]) == (None, None)  # a NaN task: no mean that hides it


def test_aggregate_and_cells():
    row = rt.aggregate([_run(0.40, 0.60, 0.2, 30.0), _run(0.50, 0.60, 0.4, 20.0)])
    assert row["seeds"] == 2 and row["rationale"] == "greedy"
    assert row["types"]["STS"] == pytest.approx((0.45, 0.0707106781))
    assert row["types"]["Reranking"] == pytest.approx((0.60, 0.0))
    assert row["overall_by_type"][0] == pytest.approx(0.525)
    assert row["copy_rate"][0] == pytest.approx(0.3) and row["length"][0] == pytest.approx(25.0)
    assert rt.cell(row["types"]["STS"]) == "45.00 ± 7.07"
    assert rt.cell((0.4642, None)) == "46.42" and rt.cell((None, None)) == "-"
    assert rt.aggregate([_run(0.4, 0.6)])["copy_rate"] == (None, None)


def test_a_difference_is_read_against_one_point_and_the_seed_spread():
    # 2.0 points apart, spreads 0.5 + 0.3 points: above the noise (max(1, 0.8) = 1)
    assert rt.verdict(rt.difference((0.52, 0.005), (0.50, 0.003))) == "+2.00 (above, noise 1.0)"
    # 0.8 points apart, untrained rows: within the one-point floor
    assert rt.verdict(rt.difference((0.500, None), (0.508, None))) == "-0.80 (within noise, noise 1.0)"
    # 2 points apart, untrained rows: above the floor, but nothing measured its noise
    assert rt.verdict(rt.difference((0.52, None), (0.50, None))) == "+2.00 (above, single runs, noise 1.0)"
    # one of 40 queries moves a retrieval task by 2.5 points: the floor
    assert rt.verdict(rt.difference((0.52, 0.001), (0.50, None), 2.5)) == "+2.00 (within noise, noise 2.5)"
    # 3 points apart but the seeds disagree by 2.5 + 1.0 points
    assert rt.verdict(rt.difference((0.53, 0.025), (0.50, 0.01))) == "+3.00 (within noise, noise 3.5)"
    assert rt.verdict(rt.difference((None, None), (0.5, None))) == "n/a"


def test_tables_and_comparisons():
    rows = {"base": rt.aggregate([_run(0.40, 0.50)]),
            "GRACE": rt.aggregate([_run(0.50, 0.50, 0.1, 31.0), _run(0.54, 0.52, 0.3, 29.0)])}
    text = "\n".join(rt.table_lines(rows))
    assert "| base | none | 1 | 40.00 | 50.00 | 45.00 | 45.00 | - | - |" in text
    assert "| GRACE | greedy | 2 | 52.00 ± 2.83 | 51.00 ± 1.41 | 51.50 ± 2.12 | 51.50 ± 2.12 | 0.200 ± 0.141 | 30.0 ± 1.4 |" in text
    assert "| GRACE | 52.00 | 51.00 |" in text  # per-task table: means
    (line,) = rt.comparison_lines(rows, {"GRACE": ("base", "missing")})
    assert line == ("- **GRACE vs base**: overall (types) +6.50 (above, noise 2.1); STS +12.00 "
                    "(above, noise 2.8); Reranking +1.00 (within noise, noise 1.4)")


def test_capability_lines_and_binomial_width():
    runs = [{"arc_easy": {"acc": 0.40, "acc_norm": 0.38, "num_questions": 300},
             "perplexity": {"perplexity": 250.0}},
            {"arc_easy": {"acc": 0.42, "acc_norm": 0.40, "num_questions": 300},
             "perplexity": {"perplexity": 254.0}}]
    (_, _, line) = rt.capability_lines({"GRACE": runs})
    assert line == "| GRACE | 2 | 0.4100 ± 0.0141 | 0.3900 ± 0.0141 | 300 | 252.00 ± 2.83 |"
    assert rt.binomial_half_width(0.4, 300) == pytest.approx(1.96 * (0.24 / 300) ** 0.5)


def test_plain_reading_names_the_categories_on_each_side():
    rows = {"greedy": rt.aggregate([_run(0.40, 0.56)]), "echo": rt.aggregate([_run(0.45, 0.50)])}
    assert rt.plain_reading(rows, "greedy", "echo") == (
        "**greedy** vs **echo**: overall (types) +0.50 (within noise, noise 1.0); above on "
        "Reranking (+6.0); below on STS (-5.0); within noise on no category. Both are single "
        "runs: the evaluation subsample's noise is not measured.")
    assert "within noise on Reranking (+6.0)" in rt.plain_reading(rows, "greedy", "echo", {"Reranking": 10.0})
    assert rt.plain_reading(rows, "greedy", "missing") is None


def test_item_floors_come_from_query_counts():
    run = {"tasks": {"R": {"type": "Retrieval", "subsample": {"sizes": {"queries": 40}}},
                     "K": {"type": "Reranking", "subsample": {"sizes": {"queries": 200}}},
                     "S": {"type": "STS", "subsample": {"sizes": {"pairs": 400}}}}}
    assert rt.item_floors(run) == {"Retrieval": 2.5, "Reranking": 1.0}
