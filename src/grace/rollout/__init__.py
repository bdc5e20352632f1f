"""Rollouts: who gets which rationale, the typed sequence batches, the fast engine and the plain HF path (hf_path), the generation cache."""
