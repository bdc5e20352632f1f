"""Rows across processes for GRACE's reward stage: the in-batch terms of a reward see the global
batch of groups, and each process then keeps the rows of its own groups.

A tensor laid out in ``blocks`` blocks ([block_0; block_1; ...], each instance-major; how many a
mode and reward variant use: grace.rollout.roles) is gathered block by block, so the gathered
tensor has the layout one process with the global batch would have had.
"""

import torch


def gather_blocks(accelerator, x: torch.Tensor, blocks: int) -> torch.Tensor:
    """Gather ``x`` = [block_0; block_1; ...] (each instance-major) from every process,
    keeping the block layout: -> [block_0 of all processes; block_1 of all processes; ...]."""
    if accelerator.num_processes == 1:
        return x
    per = x.view(blocks, -1, *x.shape[1:]).transpose(0, 1).contiguous()  # (n, blocks, ...)
    full = accelerator.gather(per)  # (world*n, blocks, ...)
    return full.transpose(0, 1).reshape(-1, *x.shape[1:])


def local_rows(x: torch.Tensor, blocks: int, rank: int, world: int) -> torch.Tensor:
    """Inverse of ``gather_blocks`` for this process's rows."""
    per_block = x.view(blocks, world, -1, *x.shape[1:])[:, rank]  # (blocks, n, ...)
    return per_block.reshape(-1, *x.shape[1:])
