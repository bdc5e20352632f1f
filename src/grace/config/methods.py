"""The one list of training methods, data modes, reward variants and learning-rate schedules
(every module that checks or branches on one of them imports it from here)."""

METHODS = ("grace", "infonce", "simcse", "llm2vec-gen")  # grace.train maps them to trainers
MODES = ("supervised", "unsupervised")  # data: (query, positive, negative) records | single texts
VARIANTS = ("paper", "reference", "decoupled")  # GRACE reward variants (grace.grpo.rewards)
# transformers schedulers the loop cannot drive: it passes only warmup and total steps, and steps
# them without a metric (these need a metric, or min_lr / num_decay_steps arguments)
UNDRIVEN_LR_SCHEDULERS = ("reduce_lr_on_plateau", "greedy", "cosine_with_min_lr",
                          "cosine_warmup_with_min_lr", "warmup_stable_decay")


def lr_schedulers() -> tuple[str, ...]:
    """The ``optim.lr_scheduler`` names: transformers.SchedulerType's, less UNDRIVEN_LR_SCHEDULERS."""
    from transformers import SchedulerType  # imported when a config is checked, not before

    return tuple(s.value for s in SchedulerType if s.value not in UNDRIVEN_LR_SCHEDULERS)
