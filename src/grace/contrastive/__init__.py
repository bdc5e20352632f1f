"""The contrastive baselines: InfoNCE and SimCSE losses and their trainers, and the memory of
earlier positives (extra negatives) that GRACE's contrastive term may keep.

May import: training, models, errors.
"""
