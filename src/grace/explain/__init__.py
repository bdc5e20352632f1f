"""Why two texts are close: exact token attributions of a cosine, and their rendering.

May import: encoders, llm2vec_gen, rollout, models, errors.
(encoders, in the same layer: an explanation reads an encoder's states; llm2vec_gen: its inputs.)
"""
