"""The machine's limit for a decoder: measured matmul throughput at the model's own shapes.

``decode_limit(model, dtype)`` times, at a large batch of token rows (where a matmul runs at the
machine's best), every linear layer of one decoder layer and the LM head with the model's
shapes, and returns the tokens/s that the matmuls alone would allow: one token needs every
layer's projections once and the head once. Attention over the cache, norms, sampling and
Python are left out, so this is an upper bound that no decoder reaches; benchmarks report their
tokens/s as a share of it.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F


def linear_shapes(model) -> tuple[list[tuple[int, int]], tuple[int, int], int]:
    """([(in, out)] of one decoder layer's projections, (in, out) of the LM head, layers)."""
    c = model.config
    heads, kv = c.num_attention_heads, c.num_key_value_heads
    hd = getattr(c, "head_dim", None) or c.hidden_size // heads
    D, inter = c.hidden_size, c.intermediate_size
    layer = [(D, heads * hd), (D, kv * hd), (D, kv * hd), (heads * hd, D),
             (D, inter), (D, inter), (inter, D)]
    return layer, (D, c.vocab_size), c.num_hidden_layers


def _seconds(fn, repeats: int) -> float:
    fn()  # warm-up (allocation, kernel choice)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


@torch.no_grad()
def decode_limit(model, dtype: torch.dtype, rows: int = 1024, repeats: int = 5) -> dict:
    """{"tokens_per_s": the matmul-only limit, "gflops": achieved GFLOP/s at ``rows`` rows,
    "flops_per_token"} for ``model``'s shapes in ``dtype`` (random weights of those shapes)."""
    layer, head, n_layers = linear_shapes(model)
    weights = [torch.randn(o, i, dtype=dtype) * 0.02 for i, o in layer]
    head_w = torch.randn(head[1], head[0], dtype=dtype) * 0.02
    xs = {i: torch.randn(rows, i, dtype=dtype) for i in {i for i, _ in layer} | {head[0]}}

    def one_layer():
        for (i, _), w in zip(layer, weights):
            F.linear(xs[i], w)

    t_layer = _seconds(one_layer, repeats)
    t_head = _seconds(lambda: F.linear(xs[head[0]], head_w), repeats)
    per_token_s = (n_layers * t_layer + t_head) / rows
    flops = 2 * (n_layers * sum(i * o for i, o in layer) + head[0] * head[1])
    return {"tokens_per_s": 1.0 / per_token_s, "gflops": flops / per_token_s / 1e9,
            "flops_per_token": flops, "rows": rows, "seconds_per_token": per_token_s,
            "layer_seconds_per_token": n_layers * t_layer / rows}


def best_limit(measured: list[dict]) -> dict:
    """The highest of several ``decode_limit`` readings of one run (with ``"readings"``: all
    their tokens/s): on a shared machine a reading falls when a neighbour is busy, and the
    limit is the best the machine showed, so shares of it are not flattered by a bad moment."""
    best = dict(max(measured, key=lambda m: m["tokens_per_s"]))
    best["readings"] = [m["tokens_per_s"] for m in measured]
    return best


def shared_prefix_tokens(prompts) -> int:
    """Prompt tokens a decoder must run at least once for ``prompts`` (a PromptBatch): the
    longest prefix all real token sequences share, once, and every row's rest."""
    rows = [ids[mask.bool()].tolist() for ids, mask in zip(prompts.input_ids, prompts.attention_mask)]
    common = 0
    while all(len(r) > common for r in rows) and len({r[common] for r in rows}) == 1:
        common += 1
    return common + sum(len(r) - common for r in rows)


def work_seconds(limit: dict, prompt_tokens: int, generated_tokens: int) -> float:
    """The least time the matmuls of a generation allow at ``limit``: every prompt token
    through the layers (no LM head), every generated token through the layers and the head."""
    return prompt_tokens * limit["layer_seconds_per_token"] + generated_tokens * limit["seconds_per_token"]


def bf16_matrix_units() -> bool:
    """Whether this CPU has bfloat16 matrix instructions (AMX-BF16 or AVX512-BF16): where
    bfloat16 matmuls run several times faster than float32 (see grace.models.backbones)."""
    from grace.models.backbones import cpu_has_bf16_units

    return cpu_has_bf16_units()


@torch.no_grad()
def rows_floor(model, rows: int, repeats: int = 5) -> dict:
    """The matmuls of one decode step at ``rows`` rows, timed with the model's own weights (every
    layer's, in order, so they stream from memory as in a real step) in the orientation the
    static step uses (``W @ h^T``): {"step_seconds", "tokens_per_s" = rows / step_seconds}.
    Attention, norms, sampling and Python are left out: no decode step at this many rows runs
    faster with these GEMMs, so ``tokens_per_s`` / ``decode_limit`` is the highest share of the
    limit a decoder of ``rows`` rows can reach here."""
    weights = [getattr(part, name).weight for layer in model.model.layers
               for part, names in ((layer.self_attn, ("q_proj", "k_proj", "v_proj", "o_proj")),
                                   (layer.mlp, ("gate_proj", "up_proj", "down_proj")))
               for name in names]
    weights.append(model.get_output_embeddings().weight)
    dtype = weights[0].dtype
    hs = {w.shape[1]: torch.randn(rows, w.shape[1], dtype=dtype) for w in weights}  # (rows, in)

    def step():
        for w in weights:
            torch.mm(w, hs[w.shape[1]].t())  # as decode_step.linear_t

    seconds = _seconds(step, repeats)
    return {"step_seconds": seconds, "tokens_per_s": rows / seconds, "rows": rows}


def best_rollout_seconds(limit: dict, floor: dict, prompt_tokens: int, steps: float) -> float:
    """The least time a rollout of ``steps`` decode steps at ``floor``'s rows can take: its
    prompt tokens through the layers at the limit (prefill at large batch runs near it) and each
    step's matmuls at ``floor`` (``rows_floor``), nothing else."""
    return prompt_tokens * limit["layer_seconds_per_token"] + steps * floor["step_seconds"]
