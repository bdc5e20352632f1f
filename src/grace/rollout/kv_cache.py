"""The engine's KV cache: transformers' dynamic cache with layers that write keys and values in
place into buffers sized for the whole rollout (no ``torch.cat`` of the whole cache per step)."""

from __future__ import annotations

import copy
import functools
import inspect

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicCache, DynamicLayer


class PreallocatedLayer(DynamicLayer):
    """A ``DynamicLayer`` that writes keys/values in place into a buffer with room for
    ``capacity`` positions (grown by doubling if exceeded) instead of concatenating."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        b, h, _, d = key_states.shape
        # zeros, not empty: the compiled decode step attends over the whole buffer (the unfilled
        # columns masked), and garbage there could be NaN, which a zero weight does not cancel
        self._k = key_states.new_zeros(b, h, self.capacity, d)
        self._v = value_states.new_zeros(b, h, self.capacity, value_states.shape[-1])
        self.length = 0

    def _refresh(self) -> None:
        self.keys = self._k[:, :, : self.length]
        self.values = self._v[:, :, : self.length]

    def reserve(self, count: int) -> None:
        """Room for ``count`` more positions in the buffers (grown by doubling if needed)."""
        end = self.length + count
        if end > self._k.shape[2]:
            grow = max(end, 2 * self._k.shape[2]) - self._k.shape[2]
            self._k = F.pad(self._k, (0, 0, 0, grow))
            self._v = F.pad(self._v, (0, 0, 0, grow))

    def advance(self, count: int) -> None:
        """Count ``count`` positions written straight into the buffers (the compiled step)."""
        self.length += count
        self._refresh()

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        count = key_states.shape[-2]
        self.reserve(count)
        self._k[:, :, self.length : self.length + count] = key_states
        self._v[:, :, self.length : self.length + count] = value_states
        self.advance(count)
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.length:
            self._k = self._k.repeat_interleave(repeats, dim=0)
            self._v = self._v.repeat_interleave(repeats, dim=0)
            self._refresh()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.length:
            self._k = self._k[indices]
            self._v = self._v[indices]
            self._refresh()

    def repeated(self, rows: int, capacity: int) -> "PreallocatedLayer":
        """A new layer holding this one's filled columns (of its one row) for ``rows`` rows, in
        buffers of ``capacity`` columns (the rest zeros)."""
        if self._k.shape[0] != 1:
            raise ValueError(f"repeated() copies a one-row layer, this one has {self._k.shape[0]} rows")
        new = PreallocatedLayer(max(capacity, self.length))
        k, v = self.keys.expand(rows, -1, -1, -1), self.values.expand(rows, -1, -1, -1)
        new.lazy_initialization(k, v)
        new._k[:, :, : self.length] = k
        new._v[:, :, : self.length] = v
        new.advance(self.length)
        return new

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove < 0 and self.length:
            self.length = max(0, self.length + tokens_to_remove)
            self._refresh()


def make_cache(model, capacity: int) -> DynamicCache:
    """A KV cache for ``model``: preallocated layers when every layer is a plain full-attention
    one (the models we train), the library's dynamic cache otherwise (sliding windows etc.)."""
    cache = DynamicCache(config=model.config)
    if cache.layers and all(type(layer) is DynamicLayer for layer in cache.layers):
        cache.layers = [PreallocatedLayer(capacity) for _ in cache.layers]
    return cache


def repeated_cache(cache: DynamicCache, rows: int, capacity: int) -> DynamicCache:
    """A cache of ``rows`` copies of the one row of ``cache`` (preallocated, filled layers),
    with room for ``capacity`` columns."""
    out = copy.copy(cache)  # the cache's own settings, new layers
    out.layers = [layer.repeated(rows, capacity) for layer in cache.layers]
    return out


def place_rows(target: DynamicCache, source: DynamicCache, rows: torch.Tensor, start: int) -> None:
    """Copy the columns ``start`` .. ``source``'s length of every layer of ``source`` into rows
    ``rows`` (len(rows) = source's rows) of ``target``, at the same columns; ``target``'s length
    is not changed (columns past a row's own end stay as they were: zeros, masked)."""
    for t, s in zip(target.layers, source.layers):
        end = s.length
        if end > t._k.shape[2]:
            raise ValueError(f"source fills {end} columns, the target has {t._k.shape[2]}")
        t._k[rows, :, start:end] = s._k[:, :, start:end]
        t._v[rows, :, start:end] = s._v[:, :, start:end]


def fill_to(cache: DynamicCache, length: int) -> None:
    """Count the first ``length`` columns of every layer as filled (written by place_rows)."""
    for layer in cache.layers:
        layer.reserve(length - layer.length)
        layer.advance(length - layer.length)


@functools.lru_cache(maxsize=None)
def _cache_argument(decoder_type: type) -> str:
    parameters = inspect.signature(decoder_type.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def cache_kwargs(decoder, cache) -> dict:
    """``{name: cache}`` for a call of ``decoder``, under the name its transformers release
    takes: ``cache`` from 5.25 on (``past_key_values`` is deprecated there), before that
    ``past_key_values``."""
    return {_cache_argument(type(decoder)): cache}
