"""A first-in first-out memory of earlier embeddings, the extra negatives of a contrastive loss.

Beyond the paper (cross-batch memory, XBM: Wang et al. 2020): a small batch gives InfoNCE few
in-batch negatives (GRACE's unsupervised recipe: 4 texts a step, 3 negatives each, against 15 for
SimCSE at batch 16). The memory keeps the last ``size`` rows pushed into it (detached, in the
order pushed) and hands them to ``grace.contrastive.losses.info_nce(memory=...)``. The rows are
as old as the steps that made them; with a small learning rate they move little. A memory is
not saved with a checkpoint: a resumed run starts with it empty.
"""

from __future__ import annotations

import torch


class EmbeddingMemory:
    """The last ``size`` pushed rows (K <= size, D), oldest first; ``size`` 0 keeps nothing."""

    def __init__(self, size: int):
        if size < 0:
            raise ValueError(f"memory size must be >= 0, got {size}")
        self.size = size
        self._rows: torch.Tensor | None = None  # (K, D)

    def __len__(self) -> int:
        return 0 if self._rows is None else len(self._rows)

    def rows(self) -> torch.Tensor | None:
        """The kept rows (K, D), or None while empty."""
        return self._rows

    def push(self, rows: torch.Tensor) -> None:
        """Append ``rows`` (N, D), detached, and drop the oldest beyond ``size``."""
        if self.size == 0:
            return
        rows = rows.detach()
        kept = rows if self._rows is None else torch.cat([self._rows, rows.to(self._rows)])
        self._rows = kept[-self.size:].clone()
