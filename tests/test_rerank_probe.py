"""benchmarks/quality/rerank_probe.py: its --row parsing (the scoring is mteb's, run by hand)."""

import pytest

from benchmarks.quality import rerank_probe


def test_row_with_and_without_rationale_readings():
    assert rerank_probe.parse_row("GRACE sup s1=runs/x/checkpoint-125") == (
        "GRACE sup s1", "runs/x/checkpoint-125", ["greedy-mean", "greedy-balanced", "none"])
    assert rerank_probe.parse_row("InfoNCE=runs/y/checkpoint-9:none") == ("InfoNCE", "runs/y/checkpoint-9", ["none"])


@pytest.mark.parametrize("bad", ["no-equals-sign", "=runs/x", "label="])
def test_malformed_row_names_itself(bad):
    with pytest.raises(SystemExit, match=bad):
        rerank_probe.parse_row(bad)
