"""GRPO for GRACE: rewards, group advantages, the clipped policy loss, the step batch
(RolloutBatch) and its rows across processes, the GRACE trainer.

May import: training, rollout, config, models, errors, contrastive.
(contrastive: its InfoNCE loss and gathering, for optim.contrastive_weight.)
"""
