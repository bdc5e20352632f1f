"""Shared fixtures: one tiny seeded model for the whole session."""

import pytest


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer): the seeded 2-layer Llama with SmolLM2's tokenizer, in eval mode."""
    from grace.backbones import load_backbone

    model, tokenizer = load_backbone("tiny-random")
    model.eval()
    return model, tokenizer
