"""The contrastive baselines: InfoNCE and SimCSE losses and their trainers.

May import: training, models, errors.
"""
