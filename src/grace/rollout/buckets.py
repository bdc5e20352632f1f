"""Length buckets for the prefill: which rows of a batch to run together so that little is padded.

A batched prefill pads every row to the batch's longest, and the padding costs as much as real
tokens (for the 8 prompts of a GRACE step, 472 token rows for 297 real ones). Running rows of
similar length together saves that, at the cost of one more decoder call per bucket.
``length_buckets`` sorts the rows by length and cuts the sorted list where that pays, exactly
(dynamic programming over the cut points): the cost of a bucket is its rows x its longest length
plus ``overhead`` token rows per call. The default of 64 is a round, untuned figure for a
decoder call's fixed cost (per-op dispatch of 30 layers: tens of ms on 2 CPU cores, about what
64 token rows of matmuls take); measured with it: 32 mixed Wikipedia prompts prefill in 3.06 s
instead of 5.75 (4 buckets), the 8 prompts of a GRACE step in 0.92 s instead of 0.97 (2).
"""

from __future__ import annotations


def length_buckets(lengths: list[int], overhead: int = 64) -> list[list[int]]:
    """Row indices grouped into buckets (each in ascending length; the buckets in ascending
    order) that minimise sum over buckets of (rows x longest length + ``overhead``)."""
    if any(n < 0 for n in lengths):
        raise ValueError(f"lengths must be >= 0, got {lengths}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[j]: least cost of the first j sorted rows
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = lengths[order[j - 1]]
        for i in range(j):  # last bucket = sorted rows i .. j-1
            cost = best[i] + (j - i) * longest + overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i
    buckets, j = [], n
    while j > 0:
        buckets.append(order[cut[j]:j])
        j = cut[j]
    return buckets[::-1]
