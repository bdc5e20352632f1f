"""Generation: who gets which rationale (roles), the typed sequence batches, the fast engine
(engine, decode_step, kv_cache, buckets, sampling, orientation), the plain HF path (hf_path), the
update's log-probs with each prompt run once, rationale quality figures, and the one generation
cache (rationales and LLM2Vec-Gen's responses). It knows no reward, loss or method: GRACE's step
batch is grace.grpo.rollout_batch.

May import: data, models, errors.
(data, in the same layer: the triplets the roles plan rollouts over.)
"""
