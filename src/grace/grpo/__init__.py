"""GRPO for GRACE: rewards, group advantages, the clipped policy loss, the GRACE trainer."""
