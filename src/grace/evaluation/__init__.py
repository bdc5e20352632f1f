"""Scores of encoders: mteb tasks built from local files (tasks/), the lite, dev and dev-mini
suites, the one mteb adapter, the capability probes (ARC-Easy, perplexity), the Lee benchmark.

May import: encoders, rollout, data, models, errors.
(encoders, in the same layer: evaluation scores them; rollout: the rationale quality figures.)
"""
