"""One decoding step of a Llama-family decoder as plain tensor ops over the engine's KV buffers.

``generate_and_score`` feeds one token per row per step. Through the HF decoder that step pays,
per layer, for the cache API, the mask construction, the attention-interface dispatch and the
module hooks, on top of the matmuls: at B=32 rows most of a ~150 ms step on 2 CPU cores. This
step runs the same computation (the same ops in the same order, so float32 greedy tokens stay
those of HF ``generate``) straight from the module weights:

    x = embed(token)
    per layer:  h = rmsnorm(x); q, k, v = h Wq, h Wk, h Wv; rotary(q, k) at each row's position
                k, v written in place at the cache's next column; attention of q over the
                filled columns (grouped-query heads packed, as HF's sdpa path does for one
                query token); x += o Wo; x += down(silu(gate(rmsnorm(x))) * up(...))
    final rmsnorm

Weights are read from the modules at every call (never copied), so a policy that was just
updated decodes with its new weights. ``unsupported(model, cache)`` says why a model cannot
use this step (peft-wrapped layers, other attention variants, another cache): the engine then
keeps the HF decoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED_TYPES = ("llama", "qwen2", "mistral")  # the same decoder layer up to the biases
_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP = ("gate_proj", "up_proj", "down_proj")


def unsupported(model, cache=None) -> str | None:
    """Why ``model`` (and ``cache``) cannot use the static step, or None if it can."""
    from grace.rollout.engine import PreallocatedLayer

    config = getattr(model, "config", None)
    if hasattr(model, "get_base_model") or not hasattr(model, "model"):
        return "a wrapped model (e.g. peft)"
    if getattr(config, "model_type", None) not in SUPPORTED_TYPES:
        return f"model type {getattr(config, 'model_type', None)!r} is not one of {SUPPORTED_TYPES}"
    if getattr(config, "hidden_act", None) != "silu":
        return f"activation {getattr(config, 'hidden_act', None)!r} (only silu)"
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return "sliding-window attention"
    if getattr(config, "_attn_implementation", "sdpa") not in ("sdpa", None):  # eager: other rounding
        return f"attention implementation {config._attn_implementation!r}"
    for layer in model.model.layers:
        modules = [getattr(layer.self_attn, n, None) for n in _PROJECTIONS]
        modules += [getattr(layer.mlp, n, None) for n in _MLP]
        if any(type(m) is not nn.Linear for m in modules):
            return "a projection that is not a plain nn.Linear (an adapter or a quantised layer)"
        if hasattr(layer.self_attn, "q_norm"):
            return "per-head q/k norms"
    if cache is not None and not all(isinstance(c, PreallocatedLayer) for c in cache.layers):
        return "a cache without preallocated layers"
    return None


def _rmsnorm(x: torch.Tensor, norm) -> torch.Tensor:
    """As LlamaRMSNorm: in float32, then back to x's dtype, times the weight."""
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * h.to(x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class StaticDecodeStep:
    """``step(tokens, positions, cache, mask) -> (n, D)`` last hidden states (after the final
    norm) of one new token per row, its keys/values appended to ``cache`` (PreallocatedLayer
    layers, every row at the same column). ``mask``: (n, length + 1) bool, True where a row
    attends (the new column included)."""

    def __init__(self, model):
        reason = unsupported(model)
        if reason is not None:
            raise ValueError(f"the static decode step cannot run this model: {reason}")
        self.decoder = model.model
        config = model.config
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.scaling = self.head_dim ** -0.5

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor, cache, mask: torch.Tensor) -> torch.Tensor:
        dec = self.decoder
        n = tokens.shape[0]
        H, KV, hd = self.heads, self.kv_heads, self.head_dim
        x = dec.embed_tokens(tokens)[:, None, :]  # (n, 1, D)
        cos, sin = dec.rotary_emb(x, positions[:, None])  # (n, 1, hd)
        cos, sin = cos[:, None], sin[:, None]  # (n, 1, 1, hd): every head
        attend = mask[:, None, None, :]  # (n, 1, 1, L) shared by the heads
        for layer, kv in zip(dec.layers, cache.layers):
            attn, mlp = layer.self_attn, layer.mlp
            h = _rmsnorm(x, layer.input_layernorm)
            q = F.linear(h, attn.q_proj.weight, attn.q_proj.bias).view(n, 1, H, hd).transpose(1, 2)
            k = F.linear(h, attn.k_proj.weight, attn.k_proj.bias).view(n, 1, KV, hd).transpose(1, 2)
            v = F.linear(h, attn.v_proj.weight, attn.v_proj.bias).view(n, 1, KV, hd).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin  # (n, H, 1, hd)
            k = k * cos + _rotate_half(k) * sin  # (n, KV, 1, hd)
            keys, values = kv.update(k, v)  # (n, KV, L, hd) views of the buffers
            if H != KV:  # one query token: the heads of a group become its queries
                q = q.reshape(n, KV, H // KV, hd)
            o = F.scaled_dot_product_attention(q, keys, values, attn_mask=attend, scale=self.scaling)
            o = o.reshape(n, H, 1, hd).transpose(1, 2).reshape(n, 1, H * hd)
            x = x + F.linear(o, attn.o_proj.weight, attn.o_proj.bias)
            h = _rmsnorm(x, layer.post_attention_layernorm)
            gate = F.linear(h, mlp.gate_proj.weight, mlp.gate_proj.bias)
            up = F.linear(h, mlp.up_proj.weight, mlp.up_proj.bias)
            x = x + F.linear(F.silu(gate) * up, mlp.down_proj.weight, mlp.down_proj.bias)
        return _rmsnorm(x, dec.norm)[:, 0]
