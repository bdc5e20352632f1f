"""Shared fixtures: one tiny seeded model for the whole session.

The suite runs as on a CPU without bf16 matrix units whatever the machine (GRACE_CPU_BF16=0:
``rollout.dtype auto`` keeps rollouts on the policy); tests of the bf16 defaults set it
themselves. The decode step's GEMM orientation is fixed (GRACE_DECODE_ORIENTATION=weights), so
runs in different processes round alike however busy the CPU."""

import os

import pytest
import torch

os.environ["GRACE_CPU_BF16"] = "0"  # before any test imports grace (subprocesses inherit it)
# the decode step's GEMM orientation fixed, not timed: a resumed run is compared with an
# uninterrupted one in another process, which on a busy CPU could time the other way (float32
# rounding apart; grace.rollout.orientation)
os.environ["GRACE_DECODE_ORIENTATION"] = "weights"


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer): the seeded 2-layer Llama with SmolLM2's tokenizer, in eval mode."""
    from grace.models.backbones import load_backbone

    model, tokenizer = load_backbone("tiny-random")
    model.eval()
    return model, tokenizer


@pytest.fixture
def one_thread():
    """One torch thread for in-process training tests (other test processes share the cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
