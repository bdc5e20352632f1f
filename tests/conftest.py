"""Shared fixtures: one tiny seeded model for the whole session.

The suite runs as on a CPU without bf16 matrix units whatever the machine (GRACE_CPU_BF16=0:
``rollout.dtype auto`` keeps rollouts on the policy); tests of the bf16 defaults set it
themselves."""

import os

import pytest
import torch

os.environ["GRACE_CPU_BF16"] = "0"  # before any test imports grace (subprocesses inherit it)


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
