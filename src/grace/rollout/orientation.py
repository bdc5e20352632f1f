"""Which orientation of the decode step's projection GEMMs is the faster one on this machine.

A decode step multiplies every projection weight W (out, in) by a few token rows h (n, in).
Run as ``W @ h^T`` (the weight as the GEMM's row operand, the result transposed) it was 1.2-1.4x
faster than ``h @ W^T`` per GEMM at 32 rows on AMD EPYC cores (MKL); on an Intel Xeon with AMX
and a 480 MB L3 it was the other way round: whole float32 rollouts (8 x 4 x 32 tokens) took
3.55 s with ``W @ h^T`` and 3.31 s with ``h @ W^T``, greedy encoding of 32 texts 4.33 vs 3.99 s
(medians of 5 alternating runs). So the step times both on the model's own weights, once per
process for each (device, dtype, row bucket), and keeps the faster. Both give the same
products up to float32 rounding (tested against the HF decoder either way).

That rounding is not nothing: a sampled rollout can take another token, so two processes that
time differently (one of them on a busy CPU) can train differently from the same seed. For runs
that must reproduce exactly across processes (a resumed run against an uninterrupted one, a
step-budget rerun of a time-budget run), ``GRACE_DECODE_ORIENTATION`` fixes the choice:
``weights`` (``W @ h^T``), ``rows`` (``h @ W^T``) or ``auto`` (timed; the default). The test
suite sets ``weights``.
"""

from __future__ import annotations

import logging
import os
import time

import torch
from torch import nn

_CHOSEN: dict[tuple, bool] = {}  # (device type, dtype, row bucket) -> weights first
ORIENTATIONS = {"weights": True, "rows": False, "auto": None}  # GRACE_DECODE_ORIENTATION


def _setting() -> str:
    """``GRACE_DECODE_ORIENTATION`` as given, trimmed and lower-cased; unset or empty: ``auto``."""
    return os.environ.get("GRACE_DECODE_ORIENTATION", "auto").strip().lower() or "auto"


def forced_orientation() -> bool | None:
    """``GRACE_DECODE_ORIENTATION``'s choice: True (``weights``: ``W @ h^T``), False (``rows``:
    ``h @ W^T``) or None (``auto`` or unset: timed). A ValueError names the variable and the
    values it takes."""
    value = _setting()
    if value not in ORIENTATIONS:
        raise ValueError(f"GRACE_DECODE_ORIENTATION={value!r}: choose {', '.join(ORIENTATIONS)}")
    return ORIENTATIONS[value]


def orientation_record() -> dict:
    """What decided this process's decode GEMMs, for a run's record: the
    ``GRACE_DECODE_ORIENTATION`` setting and each timed choice so far, as
    ``{"setting": "auto", "timed": {"cpu float32 32": "weights"}}`` ("weights": ``W @ h^T``,
    "rows": ``h @ W^T``; keys device, dtype and row bucket)."""
    timed = {f"{device} {str(dtype).removeprefix('torch.')} {bucket}": "weights" if first else "rows"
             for (device, dtype, bucket), first in _CHOSEN.items()}
    return {"setting": _setting(), "timed": timed}


def linear_t(h: torch.Tensor, linear: nn.Linear, weights_first: bool = True) -> torch.Tensor:
    """``linear(h)`` transposed: (n, in) -> (out, n), as ``W @ h^T`` (contiguous; the weight as
    the GEMM's row operand) or as ``(h @ W^T)^T`` (a transposed view), + bias; equal to float32
    rounding."""
    if weights_first:
        if linear.bias is None:
            return torch.mm(linear.weight, h.t())
        return torch.addmm(linear.bias[:, None], linear.weight, h.t())
    if linear.bias is None:
        return torch.mm(h, linear.weight.t()).t()
    return torch.addmm(linear.bias, h, linear.weight.t()).t()


def row_bucket(rows: int) -> int:
    """The power of two at or above ``rows``: the row counts that share one choice."""
    return 1 << max(0, rows - 1).bit_length()


@torch.no_grad()
def weights_first(layers, rows: int, repeats: int = 3) -> bool:
    """Whether ``W @ h^T`` beats ``h @ W^T`` for the seven projections of every one of
    ``layers`` (Llama-family decoder layers) at ``rows`` rows (its power-of-two bucket): the
    best of ``repeats`` alternating passes over all the layers each, measured at the first call
    for each (device type, dtype, bucket) of the process and remembered (0.3 s for SmolLM2-135M
    at 32 rows on 2 cores). All the layers, as a step runs them: one layer's weights stay in
    the caches and time otherwise (one layer alone: W @ h^T 0.66 vs 0.98 ms on the Xeon where
    30 layers and whole rollouts favour h @ W^T). Off the CPU it is not timed: ``W @ h^T``;
    with ``GRACE_DECODE_ORIENTATION`` set to ``weights`` or ``rows`` it is not timed either."""
    forced = forced_orientation()
    if forced is not None:
        return forced
    weight = layers[0].self_attn.q_proj.weight
    bucket = row_bucket(rows)
    key = (weight.device.type, weight.dtype, bucket)
    if key not in _CHOSEN:  # (called at every decode step: the lookup is all it costs then)
        if weight.device.type != "cpu":
            _CHOSEN[key] = True
        else:
            linears = [lin for layer in layers for lin in (
                layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj, layer.self_attn.o_proj,
                layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj)]
            gen = torch.Generator().manual_seed(0)  # not the global one: sampling's draws stay as they were
            rows_of = {lin.in_features: torch.randn(bucket, lin.in_features, generator=gen).to(weight.dtype)
                       for lin in linears}
            best = {True: float("inf"), False: float("inf")}
            for _ in range(repeats):
                for first in (True, False):
                    start = time.perf_counter()
                    for lin in linears:
                        linear_t(rows_of[lin.in_features], lin, first)
                    best[first] = min(best[first], time.perf_counter() - start)
            _CHOSEN[key] = best[True] <= best[False]
            logging.getLogger(__name__).debug(
                "decode projections at %d rows (%s): %s (W @ h^T %.1f ms, h @ W^T %.1f ms, all layers)",
                bucket, weight.dtype, "W @ h^T" if _CHOSEN[key] else "h @ W^T",
                1e3 * best[True], 1e3 * best[False])
    return _CHOSEN[key]
