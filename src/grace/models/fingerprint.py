"""A short fingerprint of a model's weights: the key of the generation cache
(grace.rollout.generation_cache) and the check that an LLM2Vec-Gen checkpoint is loaded on the
backbone it was trained on.

It hashes the config and a strided sample of every parameter tensor: it changes when the
weights change (training), without reading every weight of a large model.
"""

from __future__ import annotations

import hashlib

import torch

SAMPLES_PER_TENSOR = 4096


def model_fingerprint(model) -> str:
    """A short hash of the model's config and (a strided sample of) its parameters."""
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        digest.update(config.to_json_string(use_diff=False).encode())
    with torch.no_grad():
        for name, param in model.named_parameters():
            flat = param.detach().reshape(-1)
            step = max(1, flat.numel() // SAMPLES_PER_TENSOR)
            sample = flat[::step].float().cpu().numpy().tobytes()
            digest.update(name.encode())
            digest.update(str(tuple(param.shape)).encode())
            digest.update(sample)
    return digest.hexdigest()[:24]
