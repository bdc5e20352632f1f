"""Rollouts: who gets which rationale, the typed sequence batches, the fast engine and the HF reference path."""
