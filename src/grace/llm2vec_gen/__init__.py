"""LLM2Vec-Gen (arXiv 2603.10913): a FROZEN LLM learns, through K soft tokens and two
linear heads, to compress its own answer to a text into an embedding that a teacher embedding
model agrees with and that the LLM itself can decode back into text.

Module map, in pipeline order:
- ``inputs``: encoder inputs (instruction + " " + text, no chat template, left pad), response
  prompts (chat template) and reconstruction targets;
- ``responses``: the backbone's own answers to the training queries, kept in grace's one
  generation cache (grace.rollout.generation_cache), so a killed run keeps them;
- ``teacher``: the target embedding model (packaged all-MiniLM-L6-v2, any sentence-transformers
  folder, or a grace model/checkpoint);
- ``model``: soft tokens + reconstruction head + alignment head around the frozen backbone;
  greedy decoding from the soft prompts;
- ``losses``: L_recon and L_align as pure tensor functions;
- ``head_fit``: the standardisation and ridge start of the alignment head before step 1;
- ``diagnostics``: collapse figures (cosine to the teacher vs the best constant, pairwise
  cosines, a ridge ceiling, decoding overlap; the first ones are logged every step);
- ``trainer``: ``grace train --method llm2vec-gen`` on the shared loop (grace.training.loop.Trainer);
- ``checkpoint``: trainable parts + a backbone reference, never a copy of the backbone;
- ``official``: a folder saved by the official llm2vec-gen code (McGill-NLP/LLM2Vec-Gen-*),
  converted in memory into ``checkpoint``'s spec and tensors and the ``model``;
- its encoder lives with the others, in ``grace.encoders.llm2vec_gen``: ``LLM2VecGenEncoder``, what ``GraceEncoder.from_pretrained`` returns for these
  checkpoints (``encode_query`` / ``encode_document`` with the paper's two instructions, ``decode``),
  so ``grace eval`` and the mteb adapter work unchanged; ``grace decode`` calls it.

Deviations from the paper, each explained where it is made: the K special tokens are a (K, d)
parameter appended as embeddings (equivalent to peft TrainableTokens on K new tokens, without
resizing the backbone's vocabulary: model); responses are capped below the paper's 500 tokens
on CPUs (config/presets/llm2vec-gen.yaml); EOS is a reconstruction target only when the backbone
finished its answer (inputs).

May import: training, rollout, data, models, errors.
One exception, upward: ``teacher.py`` imports grace.encoders, because a teacher may be any
encoder (all-MiniLM-L6-v2, a sentence-transformers folder, a GRACE model with its rationales),
loaded through ``GraceEncoder.from_pretrained`` (listed with its reason in
tests/test_package_structure.py). Nothing else here knows the encoders.
"""
