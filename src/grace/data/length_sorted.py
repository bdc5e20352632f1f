"""Texts in length-sorted batches: the order in which every inference loop over texts runs them
(encoding, LLM2Vec-Gen's responses and head fit, the capability probe), so similar lengths share
a batch. Training batches are not made here: their order is grace.training.loop.DataOrder."""

from __future__ import annotations

from collections.abc import Sequence


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices ``0..n-1`` in batches of ``batch_size``, longest first (similar lengths share a
    batch: less padding). Callers write each result back at its index, so input order holds."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
