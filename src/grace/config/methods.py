"""The one list of training methods, data modes and reward variants (every module that checks
or branches on one of them imports it from here)."""

METHODS = ("grace", "infonce", "simcse", "llm2vec-gen")  # grace.training.registry maps them to trainers
MODES = ("supervised", "unsupervised")  # data: (query, positive, negative) records | single texts
VARIANTS = ("paper", "reference", "decoupled")  # GRACE reward variants (grace.grpo.rewards)
