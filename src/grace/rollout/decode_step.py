"""One decoding step of a Llama-family decoder as plain tensor ops over the engine's KV buffers.

``generate_and_score`` feeds one token per row per step. Through the HF decoder that step pays,
per layer, for the cache API, the mask construction, the attention-interface dispatch and the
module hooks, on top of the matmuls: at B=32 rows most of a ~150 ms step on 2 CPU cores. This
step runs the same computation (the same ops in the same order, so float32 greedy tokens stay
those of HF ``generate``) straight from the module weights:

    x = embed(token)
    per layer:  h = rmsnorm(x); q, k, v = h Wq, h Wk, h Wv; rotary(q, k) at each row's position
                k, v written in place at the cache's next column; attention of q over the
                filled columns through transformers' own sdpa attention function (no mask
                when nothing is masked, as HF's mask builder); x += o Wo;
                x += down(silu(gate(rmsnorm(x))) * up(...))
    final rmsnorm

Weights are read from the modules at every call (never copied), so a policy that was just
updated decodes with its new weights. ``unsupported(model, cache)`` says why a model cannot
use this step (peft-wrapped layers, other attention variants, another cache): the engine then
keeps the HF decoder. Refused: peft wrappers, quantised or adapter layers, any class other
than the stock Llama/Qwen2/Mistral ones (e.g. Liger or hub kernels), hooks (e.g. accelerate
offloading), attention other than sdpa, sliding windows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED_TYPES = {"llama": "Llama", "qwen2": "Qwen2", "mistral": "Mistral"}  # same layer up to biases
_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP = ("gate_proj", "up_proj", "down_proj")


def _stock_classes(model_type: str) -> dict[str, type]:
    """The HF classes whose computation the step reproduces, for ``model_type``."""
    import importlib

    module = importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")
    prefix = SUPPORTED_TYPES[model_type]
    return {part: getattr(module, f"{prefix}{part}")
            for part in ("DecoderLayer", "Attention", "MLP", "RMSNorm", "RotaryEmbedding", "Model")}


def _patched_or_hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or "forward" in module.__dict__
                or hasattr(module, "_hf_hook"))


def unsupported(model, cache=None) -> str | None:
    """Why ``model`` (and ``cache``) cannot use the static step, or None if it can: anything
    that makes the HF decoder compute other than the stock Llama/Qwen2/Mistral layer does."""
    from transformers.activations import SiLUActivation

    from grace.rollout.kv_cache import PreallocatedLayer

    config = getattr(model, "config", None)
    if hasattr(model, "get_base_model") or not hasattr(model, "model"):
        return "a wrapped model (e.g. peft)"
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_TYPES:
        return f"model type {model_type!r} is not one of {tuple(SUPPORTED_TYPES)}"
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return f"attention implementation {getattr(config, '_attn_implementation', None)!r} (only sdpa)"
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return "sliding-window attention"
    if any(t != "full_attention" for t in (getattr(config, "layer_types", None) or [])):
        return "layers other than full attention"
    if getattr(model, "use_kernels", False):
        return "hub kernels replace the layers' forward"
    stock = _stock_classes(model_type)
    decoder = model.model
    if type(decoder) is not stock["Model"] or type(decoder.rotary_emb) is not stock["RotaryEmbedding"]:
        return "a decoder or rotary embedding that is not the stock class"
    for module in decoder.modules():
        if _patched_or_hooked(module):
            return "a module with hooks or a patched forward (e.g. accelerate offloading)"
    for layer in decoder.layers:
        parts = {"DecoderLayer": layer, "Attention": layer.self_attn, "MLP": layer.mlp,
                 "RMSNorm": layer.input_layernorm}
        if any(type(m) is not stock[k] for k, m in parts.items()) or \
                type(layer.post_attention_layernorm) is not stock["RMSNorm"]:
            return "a decoder layer, attention, MLP or norm that is not the stock class"
        modules = [getattr(layer.self_attn, n, None) for n in _PROJECTIONS]
        modules += [getattr(layer.mlp, n, None) for n in _MLP]
        if any(type(m) is not nn.Linear for m in modules):
            return "a projection that is not a plain nn.Linear (an adapter or a quantised layer)"
        if type(layer.mlp.act_fn) is not SiLUActivation:
            return f"activation {type(layer.mlp.act_fn).__name__} (only silu)"
    if type(decoder.norm) is not stock["RMSNorm"]:
        return "a final norm that is not the stock class"
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
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        reason = unsupported(model)
        if reason is not None:
            raise ValueError(f"the static decode step cannot run this model: {reason}")
        self.decoder = model.model
        # the attention call HF's layers make (the sdpa entry of transformers' registry)
        self.attention = ALL_ATTENTION_FUNCTIONS[model.config._attn_implementation]

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor, cache, mask: torch.Tensor) -> torch.Tensor:
        dec = self.decoder
        n = tokens.shape[0]
        x = dec.embed_tokens(tokens)[:, None, :]  # (n, 1, D)
        cos, sin = dec.rotary_emb(x, positions[:, None])  # (n, 1, hd)
        cos, sin = cos[:, None], sin[:, None]  # (n, 1, 1, hd): every head
        # as transformers' mask builder for sdpa: no mask when nothing is masked, else the
        # (n, 1, 1, L) boolean mask (one query token: causality is all True)
        attend = None if bool(mask.all()) else mask[:, None, None, :]
        for layer, kv in zip(dec.layers, cache.layers):
            attn, mlp = layer.self_attn, layer.mlp
            hd = attn.head_dim
            h = _rmsnorm(x, layer.input_layernorm)
            q = F.linear(h, attn.q_proj.weight, attn.q_proj.bias).view(n, 1, -1, hd).transpose(1, 2)
            k = F.linear(h, attn.k_proj.weight, attn.k_proj.bias).view(n, 1, -1, hd).transpose(1, 2)
            v = F.linear(h, attn.v_proj.weight, attn.v_proj.bias).view(n, 1, -1, hd).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin  # (n, H, 1, hd)
            k = k * cos + _rotate_half(k) * sin  # (n, KV, 1, hd)
            keys, values = kv.update(k, v)  # (n, KV, L, hd) views of the buffers
            o, _ = self.attention(attn, q, keys, values, attend, dropout=0.0, scaling=attn.scaling)
            o = o.reshape(n, 1, -1).contiguous()  # (n, 1, H * hd)
            x = x + F.linear(o, attn.o_proj.weight, attn.o_proj.bias)
            h = _rmsnorm(x, layer.post_attention_layernorm)
            gate = F.linear(h, mlp.gate_proj.weight, mlp.gate_proj.bias)
            up = F.linear(h, mlp.up_proj.weight, mlp.up_proj.bias)
            x = x + F.linear(F.silu(gate) * up, mlp.down_proj.weight, mlp.down_proj.bias)
        return _rmsnorm(x, dec.norm)[:, 0]
