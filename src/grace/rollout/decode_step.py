"""One decoding step of a Llama-family decoder as plain tensor ops over the engine's KV buffers.

``generate_and_score`` feeds one token per row per step. Through the HF decoder that step pays,
per layer, for the cache API, the mask construction, the attention-interface dispatch and the
module hooks, on top of the matmuls: at B=32 rows most of a ~150 ms step on 2 CPU cores. This
step runs the same computation straight from the module weights (the same ops in the same
order, up to the orientation of the matmuls below; float32 greedy tokens stay those of HF
``generate``, tested):

    x = embed(token)
    per layer (each projection transposed, see below):  h = rmsnorm(x); q, k, v = h Wq, h Wk, h Wv; rotary(q, k) at each row's position
                k, v written in place at the cache's next column; attention of q over the
                filled columns (``grouped_attention``: sdpa's math with the query heads of a
                key/value head as rows of one matmul; no mask when nothing is masked, as
                HF's mask builder); x += o Wo;
                x += down(silu(gate(rmsnorm(x))) * up(...))
    final rmsnorm

Every projection runs transposed (``linear_t``): as ``W @ h^T`` (the weight as the GEMM's row
operand, the few token rows its column operand; 1.2-1.4x faster than ``h @ W^T`` at 32 rows on
AMD EPYC cores, the LM head most of all) or as ``(h @ W^T)^T`` where that is faster (an Intel
Xeon with AMX: 1.07x in whole rollouts), chosen by timing both once per process
(grace.rollout.orientation; the LM head always as ``W @ h^T``). The GEMM may then sum in another
order, so the states equal the HF decoder's to float32 rounding (a few 1e-7 on the tiny test
model; 0 on SmolLM2 at 32 rows here), not always bit for bit; the states stay in that
transposed layout between a projection and the next row-wise op.

Weights are read from the modules at every call (never copied), so a policy that was just
updated decodes with its new weights. ``unsupported(model, cache)`` says why a model cannot
use this step (peft-wrapped layers, other attention variants, another cache): the engine then
keeps the HF decoder. Refused: peft wrappers, quantised or adapter layers, any class other
than the stock Llama/Qwen2/Mistral ones (e.g. Liger or hub kernels), hooks (e.g. accelerate
offloading), attention other than sdpa, sliding windows.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from grace.rollout.orientation import linear_t, weights_first as faster_orientation

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


def _kernelized(module: nn.Module) -> bool:
    """Whether the ``kernels`` library replaced the forward of ``module`` or of a function-module
    it holds as a plain attribute (transformers >= 5.25 kernelizes at load by default, which
    replaces nothing where no hub kernel fits, e.g. on CPU or offline: ``use_kernels`` alone
    says nothing)."""
    held = [v for v in vars(module).values() if isinstance(v, nn.Module)]
    return any("_kernel_repo" in vars(m) or ("forward" in vars(m) and m is not module) for m in [module, *held])


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
    stock = _stock_classes(model_type)
    decoder = model.model
    if type(decoder) is not stock["Model"] or type(decoder.rotary_emb) is not stock["RotaryEmbedding"]:
        return "a decoder or rotary embedding that is not the stock class"
    for module in decoder.modules():
        if _kernelized(module):
            return "hub kernels replace a layer's forward or function"
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


def head_logits(head, hidden: torch.Tensor) -> torch.Tensor:
    """The LM head on (n, D) hidden states -> (n, V) logits, contiguous; a plain ``nn.Linear``
    head runs as ``linear_t`` (the head is a fifth of a decode step's FLOPs and the matmul
    that suffers most at a few rows), any other head (e.g. an adapter) as itself. (Running it
    in vocabulary chunks, each block transposed while in cache, was 1.2x faster alone at 32
    rows but gave no measurable gain in whole rollouts: 9.82 vs 9.41 s, median of 7 pairs.)"""
    if type(head) is not nn.Linear or hidden.dim() != 2:
        return head(hidden)
    return linear_t(hidden, head).t().contiguous()


def _rotary_t(xt: torch.Tensor, cos_t: torch.Tensor, sin_t: torch.Tensor) -> torch.Tensor:
    """HF's ``x * cos + rotate_half(x) * sin`` in the transposed layout: xt (heads, hd, n),
    cos_t/sin_t (1, hd, n)."""
    half = xt.shape[1] // 2
    return xt * cos_t + torch.cat((-xt[:, half:], xt[:, :half]), dim=1) * sin_t


def grouped_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **_):
    """Attention of one new token per row over its cache, with transformers' attention-function
    signature and result: query (n, H, 1, hd), key/value (n, KV, L, hd), ``attention_mask``
    (n, 1, 1, L) bool (True: attend) or None -> ((n, 1, H, hd), None). The H / KV query heads
    that share a key/value head run as that many query rows of one matmul, so the cache is read
    as it is, where sdpa's path with a mask first copies it once per query head (repeat_kv);
    scores and softmax in float32, as sdpa's CPU kernels accumulate. Equal to sdpa to float32
    rounding (a few 1e-7)."""
    n, heads, _, hd = query.shape
    kv = key.shape[1]
    grouped = query.reshape(n, kv, heads // kv, hd)  # head h = kv head h // (H / KV), as repeat_kv
    scores = torch.matmul(grouped, key.transpose(-1, -2)).float() * (hd ** -0.5 if scaling is None else scaling)
    if attention_mask is not None:
        scores = scores.masked_fill(~attention_mask, float("-inf"))
    probs = scores.softmax(-1).to(value.dtype)  # (n, KV, H / KV, L)
    return torch.matmul(probs, value).reshape(n, 1, heads, hd), None


def _states(decoder, attention, tokens, positions, keys, values, column, mask, unmasked: bool,
            weights_first: bool = True):
    """The step as a pure function of tensors (what ``torch.compile`` captures): hidden states
    (n, D) of ``tokens`` (n,) at ``positions`` (n,). Each layer's new key/value is written at
    ``column`` ((1,) long tensor) of its buffers ``keys[i]``/``values[i]`` (n, KV, capacity, hd),
    and attention runs over the first L columns, ``mask`` (n, L) bool saying where a row attends
    (no mask when ``unmasked``, as transformers' sdpa mask builder when nothing is masked).
    Uncompiled, L = column + 1; compiled, L = capacity (columns past the filled ones masked and
    zero), so that every step of a chunk has the same shapes (no size is read from an int).
    ``weights_first``: the projections' GEMM orientation (grace.rollout.orientation)."""
    n = tokens.shape[0]
    width = mask.shape[1]
    attend = None if unmasked else mask[:, None, None, :]  # (n, 1, 1, L): one query, all causal
    x = decoder.embed_tokens(tokens)  # (n, D)
    cos, sin = decoder.rotary_emb(x[:, None], positions[:, None])  # (n, 1, hd)
    cos_t, sin_t = cos[:, 0].t()[None], sin[:, 0].t()[None]  # (1, hd, n): every head
    for layer, k_buf, v_buf in zip(decoder.layers, keys, values):
        attn, mlp = layer.self_attn, layer.mlp
        hd = attn.head_dim
        h = _rmsnorm(x, layer.input_layernorm)  # (n, D)
        q_t = _rotary_t(linear_t(h, attn.q_proj, weights_first).view(-1, hd, n), cos_t, sin_t)  # (H, hd, n)
        k_t = _rotary_t(linear_t(h, attn.k_proj, weights_first).view(-1, hd, n), cos_t, sin_t)  # (KV, hd, n)
        v_t = linear_t(h, attn.v_proj, weights_first).view(-1, hd, n)
        k_buf.index_copy_(2, column, k_t.permute(2, 0, 1)[:, :, None])  # (n, KV, 1, hd), in place
        v_buf.index_copy_(2, column, v_t.permute(2, 0, 1)[:, :, None])
        q = q_t.permute(2, 0, 1).contiguous()[:, :, None]  # (n, H, 1, hd), as HF's layer holds it
        o, _ = attention(attn, q, k_buf[:, :, :width], v_buf[:, :, :width], attend,
                         dropout=0.0, scaling=attn.scaling)
        x = x + linear_t(o.reshape(n, -1), attn.o_proj, weights_first).t()  # o: (n, 1, H, hd)
        h = _rmsnorm(x, layer.post_attention_layernorm)
        act = F.silu(linear_t(h, mlp.gate_proj, weights_first)) * linear_t(h, mlp.up_proj, weights_first)  # (I, n)
        x = x + linear_t(act.t(), mlp.down_proj, weights_first).t()
    return _rmsnorm(x, decoder.norm)


def whole_buffer_attention(keys: torch.Tensor, width: int) -> bool:
    """Whether attention should read the whole key/value buffers ``keys`` (n, KV, capacity, hd)
    (the unfilled columns masked; they are zeros) instead of their first ``width`` filled
    columns: on the CPU in bf16 or fp16, where the batched matmul copies a strided slice of
    the buffers first (oneDNN wants it contiguous), as long as the buffers are at most 1.5x
    the filled width (early in a long generation the unfilled columns would cost more than the
    copy; 1.5 is a round, untuned bound: the gain below was measured in 32-token rollouts of
    ~100-token prompts, buffers about 1.3x their filled width at the first step, and a profiled
    step at 1.47x was not faster than with the copy) --
    the whole cache, every layer and step: 19 ms of a 74 ms bf16 step at 32 rows x 132 cached
    tokens (profiled), where the unfilled columns (at most the rollout's new tokens) cost a
    little more attention matmul. Whole bf16 rollouts, 8 x 4 x 32 tokens: 2.02 -> 1.82 s;
    greedy encode of 32 texts: 2.48 -> 2.29 s (medians of 5 alternating runs, Intel Xeon with
    AMX, 2 cores). float32 matmuls read the slice as it is."""
    return (keys.device.type == "cpu" and keys.dtype in (torch.bfloat16, torch.float16)
            and 2 * keys.shape[2] <= 3 * width)


def _to_capacity(mask: torch.Tensor, buffers: torch.Tensor) -> torch.Tensor:
    """A step's (n, L) mask padded to the (n, capacity) of ``buffers`` (n, KV, capacity, hd):
    attention over the whole buffers, the unfilled columns masked."""
    return F.pad(mask, (0, buffers.shape[2] - mask.shape[1]), value=False)


_COMPILED: dict[str, object] = {}  # "states": the compiled _states, "failed": why it could not be


def _compiled_states():
    """``_states`` under ``torch.compile`` (inductor, dynamic shapes: one graph for every batch
    size and cache length), built once per process; None if compilation is not available here
    (said once in the log)."""
    if "failed" in _COMPILED:
        return None
    if "states" not in _COMPILED:
        logging.getLogger(__name__).info(
            "compiling the decode step (torch.compile, once per process; 3-4 min on 2 CPU cores)")
        _COMPILED["states"] = torch.compile(_states, dynamic=True)
    return _COMPILED["states"]


def _compile_failed(error: Exception) -> None:
    _COMPILED.pop("states", None)
    _COMPILED["failed"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    logging.getLogger(__name__).warning(
        "torch.compile cannot build the decode step here (%s); decoding uncompiled", _COMPILED["failed"])


class StaticDecodeStep:
    """``step(tokens, positions, cache, mask) -> (n, D)`` last hidden states (after the final
    norm) of one new token per row, its keys/values appended to ``cache`` (PreallocatedLayer
    layers, every row at the same column). ``mask``: (n, length + 1) bool, True where a row
    attends (the new column included).

    ``compiled=True`` runs the step through ``torch.compile`` (built at the first call, 3-4
    minutes for SmolLM2-135M on 2 CPU cores, then shared by every step of the process). It always passes
    the mask (one graph), so its states equal the uncompiled step's to float32 rounding, not
    bit for bit. Where compilation fails (no C++ compiler, an unsupported platform) it says so
    once in the log and runs uncompiled."""

    def __init__(self, model, compiled: bool = False, weights_first: bool | None = None):
        reason = unsupported(model)
        if reason is not None:
            raise ValueError(f"the static decode step cannot run this model: {reason}")
        self.decoder = model.model
        self.attention = grouped_attention  # sdpa's math, the cache read once per key/value head
        self.compiled = compiled
        self.weights_first = weights_first  # None: the faster here (grace.rollout.orientation)

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor, cache, mask: torch.Tensor) -> torch.Tensor:
        layers = cache.layers
        for kv in layers:
            kv.reserve(1)
        if mask.shape[1] != layers[0].length + 1:
            raise ValueError(f"mask covers {mask.shape[1]} columns, the cache holds {layers[0].length} + 1")
        keys, values = [kv._k for kv in layers], [kv._v for kv in layers]
        column = torch.tensor([layers[0].length], device=tokens.device)
        first = (self.weights_first if self.weights_first is not None
                 else faster_orientation(self.decoder.layers, tokens.shape[0]))
        states = _compiled_states() if self.compiled else None
        hidden = None
        if states is not None:
            try:
                hidden = states(self.decoder, self.attention, tokens, positions, keys, values, column,
                                _to_capacity(mask, keys[0]), False, first)
            except Exception as error:  # inductor/dynamo failures have many types  # noqa: BLE001
                _compile_failed(error)
        if hidden is None and whole_buffer_attention(keys[0], mask.shape[1]):
            hidden = _states(self.decoder, self.attention, tokens, positions, keys, values, column,
                             _to_capacity(mask, keys[0]), False, first)
        elif hidden is None:
            hidden = _states(self.decoder, self.attention, tokens, positions, keys, values, column, mask,
                             bool(mask.all()), first)
        for kv in layers:
            kv.advance(1)
        return hidden
