"""Shared fixtures: one tiny seeded model for the whole session."""

import pytest
import torch


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
