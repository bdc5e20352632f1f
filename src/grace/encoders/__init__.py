"""Text encoders behind one sentence-transformers-like API: GRACE, sentence-transformers, and the generation cache."""
