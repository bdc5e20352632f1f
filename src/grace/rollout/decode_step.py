"""One decoding step of a Llama-family decoder as plain tensor ops over the engine's KV buffers.

``generate_and_score`` feeds one token per row per step. Through the HF decoder that step pays,
per layer, for the cache API, the mask construction, the attention-interface dispatch and the
module hooks, on top of the matmuls: at B=32 rows most of a ~150 ms step on 2 CPU cores. This
step runs the same computation straight from the module weights (the same ops in the same
order, up to the orientation of the matmuls below; float32 greedy tokens stay those of HF
``generate``, tested):

    x = embed(token)
    per layer (each projection as W @ h^T, see below):  h = rmsnorm(x); q, k, v = h Wq, h Wk, h Wv; rotary(q, k) at each row's position
                k, v written in place at the cache's next column; attention of q over the
                filled columns through transformers' own sdpa attention function (no mask
                when nothing is masked, as HF's mask builder); x += o Wo;
                x += down(silu(gate(rmsnorm(x))) * up(...))
    final rmsnorm

Every projection runs as ``W @ h^T`` (``linear_t``): the weight is the GEMM's row operand and
the few token rows its column operand. At 32 rows this is 1.2-1.4x faster than ``h @ W^T`` on
this project's CPUs (MKL), the LM head most of all. The GEMM may then sum in another order, so
the states equal the HF decoder's to float32 rounding (a few 1e-7 on the tiny test model;
0 on SmolLM2 at 32 rows here), not always bit for bit; the states stay in that transposed
layout between a projection and the next row-wise op.

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


def linear_t(h: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """``linear(h)`` transposed: (n, in) -> (out, n) = W @ h^T (+ bias), the weight as the GEMM's
    row operand (faster than h @ W^T at a few rows; equal to float32 rounding)."""
    if linear.bias is None:
        return torch.mm(linear.weight, h.t())
    return torch.addmm(linear.bias[:, None], linear.weight, h.t())


def head_logits(head, hidden: torch.Tensor) -> torch.Tensor:
    """The LM head on (n, D) hidden states -> (n, V) logits, contiguous; a plain ``nn.Linear``
    head runs as ``linear_t`` (the head is a fifth of a decode step's FLOPs and the matmul
    that suffers most at a few rows), any other head (e.g. an adapter) as itself."""
    if type(head) is not nn.Linear or hidden.dim() != 2:
        return head(hidden)
    return linear_t(hidden, head).t().contiguous()


def _rotary_t(xt: torch.Tensor, cos_t: torch.Tensor, sin_t: torch.Tensor) -> torch.Tensor:
    """HF's ``x * cos + rotate_half(x) * sin`` in the transposed layout: xt (heads, hd, n),
    cos_t/sin_t (1, hd, n)."""
    half = xt.shape[1] // 2
    return xt * cos_t + torch.cat((-xt[:, half:], xt[:, :half]), dim=1) * sin_t


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
        x = dec.embed_tokens(tokens)  # (n, D)
        cos, sin = dec.rotary_emb(x[:, None], positions[:, None])  # (n, 1, hd)
        cos_t, sin_t = cos[:, 0].t()[None], sin[:, 0].t()[None]  # (1, hd, n): every head
        # as transformers' mask builder for sdpa: no mask when nothing is masked, else the
        # (n, 1, 1, L) boolean mask (one query token: causality is all True)
        attend = None if bool(mask.all()) else mask[:, None, None, :]
        for layer, kv in zip(dec.layers, cache.layers):
            attn, mlp = layer.self_attn, layer.mlp
            hd = attn.head_dim
            h = _rmsnorm(x, layer.input_layernorm)  # (n, D)
            q_t = _rotary_t(linear_t(h, attn.q_proj).view(-1, hd, n), cos_t, sin_t)  # (H, hd, n)
            k_t = _rotary_t(linear_t(h, attn.k_proj).view(-1, hd, n), cos_t, sin_t)  # (KV, hd, n)
            v_t = linear_t(h, attn.v_proj).view(-1, hd, n)
            # (n, heads, 1, hd) as HF's layer holds them; the cache copies k and v in place
            keys, values = kv.update(k_t.permute(2, 0, 1)[:, :, None], v_t.permute(2, 0, 1)[:, :, None])
            q = q_t.permute(2, 0, 1).contiguous()[:, :, None]  # (n, H, 1, hd)
            o, _ = self.attention(attn, q, keys, values, attend, dropout=0.0, scaling=attn.scaling)
            x = x + linear_t(o.reshape(n, -1), attn.o_proj).t()  # o: (n, 1, H, hd)
            h = _rmsnorm(x, layer.post_attention_layernorm)
            act = F.silu(linear_t(h, mlp.gate_proj)) * linear_t(h, mlp.up_proj)  # (I, n)
            down = mlp.down_proj
            x = x + (torch.mm(down.weight, act) if down.bias is None
                     else torch.addmm(down.bias[:, None], down.weight, act)).t()
        return _rmsnorm(x, dec.norm)
