"""Data-parallel training: the gather layout of the reward inputs, and a real two-process run.

How to launch two CPU processes with accelerate 1.x: ``accelerate launch --cpu --num_processes 2``
does NOT do it (on CPU the simple launcher starts ONE process unless MPI is set up). What works
is the torchrun-based launcher, ``--multi_gpu --num_processes 2``. On a machine without GPUs
the trainer then builds its Accelerator in CPU mode, so every process joins a gloo process
group (no ACCELERATE_USE_CPU needed). Should processes ever come up without a process group,
each would train alone; the trainer refuses that.
"""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from sample_data import TEXTS as ALL_TEXTS

from grace.config.schema import load_config
from grace.errors import GraceInputError
from grace.grpo.trainer import GraceTrainer
from grace.grpo.gather import gather_blocks, local_rows

TEXTS = ALL_TEXTS[:4]


# --------------------------------------------------------------------------- gather layout


class FakeRank:
    """The accelerator as rank ``r`` of ``world`` sees it. ``gather`` returns ``everyone``, the
    concatenation (dim 0, rank order) of what each rank sent, as ``accelerator.gather`` does."""

    def __init__(self, world: int, everyone: torch.Tensor | None = None):
        self.num_processes, self.everyone, self.sent = world, everyone, None

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        self.sent = tensor
        return self.everyone if self.everyone is not None else tensor


def gather_on_every_rank(xs: list[torch.Tensor], blocks: int) -> list[torch.Tensor]:
    """``gather_blocks`` run on each rank: first collect what each sends, then gather."""
    world, sent = len(xs), []
    for x in xs:
        rank = FakeRank(world)
        gather_blocks(rank, x, blocks)
        sent.append(rank.sent)
    everyone = torch.cat(sent)
    return [gather_blocks(FakeRank(world, everyone), x, blocks) for x in xs]


def labelled(rank: int, blocks: int, n: int, width: int = 3) -> torch.Tensor:
    """Rows [block_0; block_1; ...] of ``n`` instances each; row value 100*rank + 10*block + i."""
    rows = [100 * rank + 10 * b + i for b in range(blocks) for i in range(n)]
    return torch.tensor(rows).unsqueeze(1).expand(-1, width).clone()  # (blocks*n, width)


@pytest.mark.parametrize("world, blocks, n", [(2, 1, 1), (2, 2, 3), (3, 2, 2), (4, 1, 2)])
def test_gather_blocks_keeps_blocks_and_local_rows_inverts_it(world, blocks, n):
    xs = [labelled(rank, blocks, n) for rank in range(world)]
    gathered = gather_on_every_rank(xs, blocks)
    # [block_0 of rank 0, block_0 of rank 1, ...; block_1 of rank 0, block_1 of rank 1, ...]
    expected = torch.cat([xs[r][b * n : (b + 1) * n] for b in range(blocks) for r in range(world)])
    for full in gathered:
        assert torch.equal(full, expected)
    for rank in range(world):
        assert torch.equal(local_rows(expected, blocks, rank, world), xs[rank])


def test_gather_blocks_layout_of_trained_groups_and_truncation_flags():
    """As the trainer calls it: (groups, G*D) embeddings and (groups, G) bool flags, decoupled
    layout (2 group blocks per record: queries, then positives), 2 records per rank."""
    world, blocks, n, G, D = 2, 2, 2, 3, 4
    emb = [torch.randn(blocks * n * G, D) for _ in range(world)]  # (groups*G, D) group-major
    flags = [torch.rand(blocks * n, G) > 0.5 for _ in range(world)]  # (groups, G)
    full_emb = gather_on_every_rank([e.view(-1, G * D) for e in emb], blocks)[0].view(-1, D)
    full_flags = gather_on_every_rank(flags, blocks)[0]
    for b in range(blocks):  # global block b = the block-b groups of rank 0, then of rank 1
        for r in range(world):
            rows = slice((b * world + r) * n, (b * world + r + 1) * n)  # in groups
            assert torch.equal(full_flags[rows], flags[r][b * n : (b + 1) * n])
            mine = emb[r].view(-1, G, D)[b * n : (b + 1) * n]  # (n, G, D)
            assert torch.equal(full_emb.view(-1, G, D)[rows], mine)
    rewards = torch.arange(world * blocks * n * G).view(-1, G)  # (all groups, G)
    mine = local_rows(rewards, blocks, 1, world)  # rank 1's groups, in its own order
    expected = [rewards[(b * world + 1) * n : (b * world + 2) * n] for b in range(blocks)]
    assert torch.equal(mine, torch.cat(expected))


def test_single_process_gather_is_the_identity():
    x = torch.arange(12).view(6, 2)
    assert gather_blocks(FakeRank(1), x, 2) is x
    assert torch.equal(local_rows(x, 2, 0, 1), x)


def test_trainer_refuses_processes_that_would_train_alone(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    config = load_config(None, {"model.name": "tiny-random", "data.path": str(tmp_path / "x.txt"),
                                "output_dir": str(tmp_path / "OUT")})
    with pytest.raises(GraceInputError, match="ACCELERATE_USE_CPU"):
        GraceTrainer(config, accelerator=FakeRank(1))


# --------------------------------------------------------------------------- two processes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch_two_processes(cwd, train_args: list[str]) -> subprocess.CompletedProcess:
    """``grace train TRAIN_ARGS`` in two CPU processes (gloo) under accelerate's launcher."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    env.pop("ACCELERATE_USE_CPU", None)  # the trainer picks CPU mode by itself
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--num_cpu_threads_per_process", "1", "--main_process_port", str(_free_port()),
        "-m", "grace.cli", "train", *train_args,
    ]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_two_cpu_processes_train_one_run(tmp_path):
    (tmp_path / "texts.txt").write_text("".join(text + "\n" for text in TEXTS))
    args = ["--model", "tiny-random", "--mode", "unsupervised", "--data", "texts.txt",
            "--output-dir", "OUT", "--batch-size", "2", "--rollout.num_rollouts", "2",
            "--rollout.max_new_tokens", "8", "--rollout.micro_batch_size", "8",
            "--optim.num_mini_batches", "2", "--max-minutes", "1000",  # a budget: its time is gathered
            "--optim.contrastive_weight", "1", "--optim.contrastive_memory", "4"]  # as unsup-wiki
    result = _launch_two_processes(tmp_path, [*args, "--max-steps", "2"])
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "OUT"
    checkpoint = out / "checkpoint-2"
    assert json.loads((checkpoint / "trainer_state.json").read_text())["step"] == 2
    assert (checkpoint / "model.safetensors").is_file()
    # both processes took part in one run (not two runs writing the same folder)
    assert (checkpoint / "random_states_0.pkl").is_file() and (checkpoint / "random_states_1.pkl").is_file()
    assert (checkpoint / "optimizer.bin").is_file()  # written by accelerate's save_state
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2]  # logged by the main process only
    # each process holds 1 of the 2 groups: a non-zero in-batch term means the rewards saw the
    # other process's group, so the embeddings were gathered
    assert all(row["reward/hard"] != 0 for row in rows)
    # the memory holds the global batch's positives (2 a step: gathered, not the 1 of a process)
    assert [row["contrastive/memory"] for row in rows] == [0, 2]

    # the same command with more steps: both processes resume through accelerate's load_state
    resumed = _launch_two_processes(tmp_path, [*args, "--max-steps", "3"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from OUT/checkpoint-2 (step 2)" in resumed.stdout + resumed.stderr
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3]
    assert rows[2]["contrastive/memory"] == 0  # not saved with a checkpoint: empty on resume
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["step"] == 3
    # the training time went on from checkpoint-2's (the slowest process's, the same on each)
    before = json.loads((checkpoint / "trainer_state.json").read_text())["train_seconds"]
    assert state["train_seconds"] > before > 0
    assert rows[2]["time/train_min"] == pytest.approx(state["train_seconds"] / 60, abs=1e-4)


@pytest.mark.slow
def test_two_cpu_processes_train_llm2vec_gen(tmp_path):
    """LLM2Vec-Gen under the same launcher: the main process writes the responses, both train."""
    (tmp_path / "texts.txt").write_text("".join(text + "\n" for text in ALL_TEXTS))
    result = _launch_two_processes(tmp_path, [
        "--method", "llm2vec-gen", "--model", "tiny-random",
        "--data", "texts.txt", "--max-steps", "2", "--output-dir", "OUT", "--batch-size", "4",
        "--llm2vec_gen.teacher", "tiny-random", "--llm2vec_gen.num_tokens", "4",
        "--llm2vec_gen.response_max_new_tokens", "4", "--llm2vec_gen.cache", "gen.sqlite",
        "--sample_every", "0",
    ])
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = tmp_path / "OUT" / "checkpoint-2"
    assert (checkpoint / "llm2vec_gen.safetensors").is_file() and not (checkpoint / "model.safetensors").exists()
    assert (checkpoint / "random_states_0.pkl").is_file() and (checkpoint / "random_states_1.pkl").is_file()
    from grace.rollout.generation_cache import RationaleCache

    assert len(RationaleCache(tmp_path / "gen.sqlite")) == len(set(ALL_TEXTS))  # one per text, written once
    rows = [json.loads(line) for line in (tmp_path / "OUT" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2]
