"""The training loop every method shares, on ``accelerate`` (single process, DDP/FSDP/DeepSpeed
via ``accelerate launch``; CPU processes use gloo).

``Trainer`` holds the data order, model loading, LoRA, the optimizer and schedule,
checkpoint/resume (grace.training.checkpoint), the one-run-per-folder lock
(grace.training.run_lock), metrics.jsonl and samples.jsonl (grace.training.metrics) and the
progress bar. A method subclasses it and supplies ``step()`` plus a few small hooks; this
module imports no method. grace.train maps a method's name to its trainer.

A nan or inf loss (``check_loss``) or gradient norm (``optimizer_step``) stops the run before
that optimizer step with a ``NonFiniteTrainingError`` naming the step; nothing of the step is
saved, so the checkpoints already written stay the run's last good state.

Data order is a seeded permutation per epoch (``DataOrder``), so the data position in a
checkpoint resumes exactly.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from pathlib import Path

import torch
from tqdm.auto import tqdm

from grace.config.methods import MODES
from grace.config.schema import TrainConfig
from grace.data.readers import DataFields, load_records
from grace.errors import GraceInputError, NonFiniteTrainingError
from grace.models.backbones import apply_lora, load_backbone, resolve_mixed_precision
from grace.training.checkpoint import (
    TrainingProgress,
    latest_checkpoint,
    load_model_weights,
    load_training_state,
    prepare_checkpointing,
    record_config,
    resumable_checkpoint,
    save_checkpoint,
)
from grace.training.metrics import JsonlLogger
from grace.training.run_lock import RunLock
from grace.training.trackers import PROJECT, flat_config, parse_report_to, scalars


class DataOrder:
    """Seeded permutation per epoch; ``batch(step)`` gives this process's records of a step.

    An epoch has ``ceil(n / batch_size)`` steps: as with HF Trainer's default (no drop_last),
    its last batch holds the records that are left, rounded down to a multiple of the number of
    processes (each process gets as many) and kept if that leaves at least 2 (every method
    compares a text with others). Data smaller than one batch: each step trains on all of it,
    with a warning that gives the effective batch size.

    Why not a DataLoader with accelerate's ``skip_first_batches`` on resume: the batch of any
    step is a pure function of (seed, step), so a resumed run needs no skipping at all, the
    order is the same for any number of processes, and a method can read the texts of future
    steps before training (LLM2Vec-Gen generates the backbone's responses to every text the run
    will visit first; a DataLoader iterator would have to be run through, or run twice).
    """

    MIN_BATCH = 2

    def __init__(self, records: list, batch_size: int, seed: int, shuffle: bool, rank: int, world: int):
        if batch_size % world:
            raise GraceInputError(f"batch_size {batch_size} must be divisible by the {world} processes")
        full, rest = divmod(len(records), batch_size)
        rest -= rest % world
        self.sizes = [batch_size] * full + ([rest] if rest >= self.MIN_BATCH else [])  # per step of an epoch
        if not self.sizes:
            raise GraceInputError(
                f"the data has {len(records)} record(s); training needs at least "
                f"{max(self.MIN_BATCH, world)} (and as many per process)")
        if len(records) < batch_size and rank == 0:
            warnings.warn(f"the data has {len(records)} records, fewer than batch_size {batch_size}: "
                          f"every step trains on {rest} of them (effective batch size {rest})",
                          stacklevel=2)
        self.records, self.batch_size, self.seed, self.shuffle = records, batch_size, seed, shuffle
        self.rank, self.world = rank, world
        self.steps_per_epoch = len(self.sizes)

    def position(self, step: int) -> dict:
        """Epoch and offset of the first record of ``step`` (1-based)."""
        epoch, index = divmod(step - 1, self.steps_per_epoch)
        return {"epoch": epoch, "offset": index * self.batch_size}

    def batch(self, step: int) -> list:
        pos = self.position(step)
        order = torch.arange(len(self.records))
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + pos["epoch"])
            order = torch.randperm(len(self.records), generator=gen)
        local = self.sizes[(step - 1) % self.steps_per_epoch] // self.world
        start = pos["offset"] + self.rank * local
        return [self.records[i] for i in order[start : start + local].tolist()]


class Trainer:
    """The loop every method shares: holds the model, optimizer and data order; ``train()`` runs
    and checkpoints it. A method subclasses this and supplies ``step()``; the hooks below have
    defaults that suit any method."""

    modes: tuple[str, ...] = MODES  # the training modes (data formats) the method accepts

    def __init__(self, config: TrainConfig, accelerator=None):
        from accelerate import Accelerator

        if config.mode not in self.modes:
            raise GraceInputError(
                f"method '{config.method}' needs mode {' or '.join(self.modes)} "
                f"(got mode '{config.mode}'): pass --mode {self.modes[0]}"
            )
        self.config = config
        launched = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun / accelerate launch
        # Without GPUs a multi-process launch needs accelerate's CPU mode (gloo process group).
        if accelerator is None and launched == 1:
            # accelerate keeps one global state; a new trainer in the same process (notebooks,
            # benchmarks/quality/make_results.py) may ask for another mixed precision
            from accelerate.state import AcceleratorState

            AcceleratorState._reset_state()
        self.trackers = parse_report_to(config.report_to)
        self.acc = accelerator or Accelerator(cpu=launched > 1 and not torch.cuda.is_available(),
                                              mixed_precision=resolve_mixed_precision(
                                                  config.model.mixed_precision, config.model.dtype),
                                              log_with=self.trackers or None,
                                              project_dir=str(config.output_dir))
        if launched > 1 and self.acc.num_processes == 1:  # each process would train alone
            raise GraceInputError(
                f"launched as {launched} processes (WORLD_SIZE) but accelerate set up no process "
                "group, so each would train alone; launch with `accelerate launch --multi_gpu "
                "--num_processes N` (CPU too: gloo) or torchrun, or set ACCELERATE_USE_CPU=1"
            )
        self.output_dir = Path(config.output_dir)
        self._lock = self._take_lock()
        try:
            self._setup(config)
        except BaseException:
            self._lock.release()
            raise

    def _take_lock(self) -> RunLock:
        """The output folder's run lock (grace.training.run_lock), taken by the main process; every
        process learns whether it was free."""
        lock, error = RunLock(self.output_dir), None
        if self.acc.is_main_process:
            try:
                lock.acquire()
            except GraceInputError as exc:
                error = str(exc)
        if self.acc.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            error = broadcast_object_list([error])[0]
        if error:
            raise GraceInputError(error)
        if lock.previous:
            tqdm.write(f"grace: {lock.path} was left by a run that is no longer running "
                       f"({lock.previous}); taking it over")
        return lock

    def close(self) -> None:
        """Release the output folder for another run (``train()`` does it when it returns)."""
        self._lock.release()

    def _setup(self, config: TrainConfig) -> None:
        """Data, model, optimizer, schedule and (from the newest good checkpoint) resume."""
        from accelerate.utils import set_seed

        set_seed(config.seed)
        say = tqdm.write if self.acc.is_main_process else (lambda line: None)
        self.resume_from = resumable_checkpoint(self.output_dir, say)  # verified first: fail fast
        fields = DataFields(
            text=config.data.text_field,
            query=config.data.query_field,
            positive=config.data.positive_field,
            negative=config.data.negative_field,
        )
        if not config.data.path:
            raise GraceInputError("no training data: pass --data FILE (or data.path in the config)")
        records = load_records(config.data.path, config.mode, fields, split=config.data.split)
        self.order = DataOrder(
            records, config.batch_size, config.seed, config.data.shuffle,
            self.acc.process_index, self.acc.num_processes,
        )
        model, self.tokenizer = load_backbone(
            config.model.name, config.model.dtype, config.model.trust_remote_code
        )
        model = self.prepare_model(model)
        if config.model.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        if self.resume_from is not None:
            self.load_weights(model, self.resume_from)
        optimizer = torch.optim.AdamW(
            self.param_groups(model), lr=self.learning_rate, weight_decay=config.optim.weight_decay,
            fused=True if config.optim.fused_adamw else None,
        )
        from transformers import get_scheduler

        per_step = self.optimizer_steps_per_step  # the schedule counts optimizer steps
        scheduler = get_scheduler(
            config.optim.lr_scheduler, optimizer,
            num_warmup_steps=config.optim.warmup_steps * per_step,
            num_training_steps=config.max_steps * per_step,
        )
        self.model, self.optimizer, self.scheduler = self.acc.prepare(model, optimizer, scheduler)
        self.progress = TrainingProgress()
        prepare_checkpointing(self.acc, self.progress)
        self.start_step, self.start_seconds = 0, 0.0
        if self.resume_from is not None:
            state = load_training_state(self.acc, self.resume_from, self.optimizer, self.scheduler,
                                        self.progress)
            self.start_step = state["step"]
            self.start_seconds = float(state.get("train_seconds", 0.0))

    # -- what a method supplies -------------------------------------------------------------
    @property
    def learning_rate(self) -> float:
        return self.config.optim.learning_rate

    @property
    def optimizer_steps_per_step(self) -> int:
        """Optimizer (and scheduler) steps in one ``step()``."""
        return 1

    def prepare_model(self, model):
        """The loaded backbone -> the model to train (before resume, optimizer and ``prepare``)."""
        m = self.config.model
        if m.lora and not hasattr(model, "peft_config"):
            model = apply_lora(
                model, m.lora_rank, m.lora_alpha, m.lora_dropout, m.lora_target_modules
            )
        return model

    def param_groups(self, model) -> list[dict]:
        """The optimizer's parameter groups (torch.optim format): every trainable parameter at
        ``learning_rate``. A method overrides this to give some parameters their own lr."""
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]

    def load_weights(self, model, checkpoint: Path) -> None:
        """Load ``checkpoint``'s trained weights into the model ``prepare_model`` returned."""
        load_model_weights(model, checkpoint)

    def step(self, step: int) -> tuple[dict, list]:
        """Run step ``step`` (1-based): ``(metrics row, sample rows)``; metrics hold ``step``."""
        raise NotImplementedError

    def postfix(self, metrics: dict) -> dict:
        """What the progress bar shows of a step's metrics."""
        return {"s": f"{metrics['time/step_s']:.1f}"}

    def describe_sample(self, sample: dict) -> str:
        """One console line for a logged sample."""
        return f"[step {sample['step']}] {sample}"

    def check_loss(self, loss: torch.Tensor) -> None:
        """Stop the run (``NonFiniteTrainingError``; the loop adds the step) if ``loss``, the loss
        backpropagated for the coming optimizer step, is nan or inf. Summed over the processes
        first, so they all stop together; call it before ``optimizer_step``."""
        total = loss.detach().float().reshape(1).to(self.acc.device)
        if self.acc.num_processes > 1:
            total = self.acc.reduce(total, "sum")
        if not math.isfinite(float(total)):
            raise NonFiniteTrainingError(f"the loss is {float(total)}")

    def optimizer_step(self) -> float:
        """Clip the gradient norm to ``optim.max_grad_norm``, step the optimizer and the
        scheduler, zero the gradients; returns the norm before clipping. A nan or inf norm
        steps nothing: ``NonFiniteTrainingError`` stops the run with the weights as they were
        (the norm is the same on every process)."""
        norm = self.acc.clip_grad_norm_(self.model.parameters(), self.config.optim.max_grad_norm)
        if not math.isfinite(float(norm)):
            raise NonFiniteTrainingError(f"the gradient norm is {float(norm)}")
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        return float(norm)

    def seed_step(self, step: int) -> None:
        """Seed the sampling RNG from (seed, step, process), so a resumed step draws the same
        random numbers as it did the first time. With one torch thread a resumed run, and a rerun,
        end bitwise equal to an uninterrupted run on the same machine; with more threads the CPU
        kernels' sums vary from run to run (float rounding: on 2 cores the weights of two
        identical 4-step runs at lr 1e-3 were ~3e-5 apart). tests/test_run_record.py checks both."""
        torch.manual_seed(self.config.seed * 1_000_003 + step * 101 + self.acc.process_index)

    @property
    def policy(self):
        return self.acc.unwrap_model(self.model)

    # -- the loop -------------------------------------------------------------------------
    def train(self) -> Path | None:
        """Run the remaining steps, checkpointing; the output folder is released at the end."""
        try:
            return self._train()
        finally:
            self.close()

    def _train(self) -> Path | None:
        cfg, acc = self.config, self.acc
        main = acc.is_main_process
        if main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            record_config(self.output_dir, cfg, self.start_step)  # never rewrites the run's record
        metrics_log = JsonlLogger(self.output_dir / "metrics.jsonl", self.start_step, enabled=main)
        samples_log = JsonlLogger(self.output_dir / "samples.jsonl", self.start_step, enabled=main)
        if self.start_step and main:
            tqdm.write(f"resuming from {self.resume_from} (step {self.start_step})")
        if self.trackers:
            acc.init_trackers(PROJECT, config=flat_config(cfg.to_dict()))
        try:
            return self._loop(metrics_log, samples_log)
        finally:
            if self.trackers:
                acc.end_training()

    def budget_spent(self, seconds: float) -> bool:
        """Whether ``max_minutes`` (if set) is used up after ``seconds`` of training."""
        budget = self.config.max_minutes
        return budget is not None and seconds >= 60.0 * budget

    def _loop(self, metrics_log: JsonlLogger, samples_log: JsonlLogger) -> Path | None:
        cfg, acc = self.config, self.acc
        main = acc.is_main_process
        last = None
        seconds = self.start_seconds  # training time of the run (steps only), over all its resumes
        if self.budget_spent(seconds):
            if main:
                tqdm.write(f"the run's time budget ({cfg.max_minutes} min) is spent: nothing to do")
            return self.resume_from
        # with a time budget the step count is open: the bar counts steps, its postfix minutes
        bar = tqdm(range(self.start_step + 1, cfg.max_steps + 1), initial=self.start_step,
                   total=None if cfg.max_minutes else cfg.max_steps, desc=f"{cfg.method} train",
                   disable=not main)
        for step in bar:
            started = time.perf_counter()
            try:
                metrics, samples = self.step(step)
            except NonFiniteTrainingError as exc:
                kept = latest_checkpoint(self.output_dir)
                raise NonFiniteTrainingError(
                    f"training stopped at step {step}: {exc}; nothing of this step was saved (last "
                    f"checkpoint: {kept or 'none'}). A smaller optim.learning_rate (baselines: "
                    "baseline.learning_rate) or reward.scale, or float32 weights, may help") from None
            seconds += time.perf_counter() - started  # saving and logging are not counted
            if acc.num_processes > 1:  # every process stops at the same step: the slowest's time
                seconds = float(acc.gather(torch.tensor([seconds], device=acc.device)).max())
            metrics["time/train_min"] = seconds / 60.0
            metrics_log.log(metrics)
            if self.trackers:
                acc.log(scalars(metrics), step=step)
            for sample in samples:
                samples_log.log(sample)
                if main:
                    tqdm.write(self.describe_sample(sample))
            budget = {"min": f"{seconds / 60:.1f}/{cfg.max_minutes:g}"} if cfg.max_minutes else {}
            bar.set_postfix(**self.postfix(metrics), **budget)
            out_of_time = self.budget_spent(seconds)
            if step % cfg.save_every == 0 or step == cfg.max_steps or out_of_time:
                state = {"step": step, **self.order.position(step + 1), "seed": cfg.seed,
                         "train_seconds": round(seconds, 3)}
                last = save_checkpoint(acc, self.model, self.tokenizer, cfg, state,
                                       self.output_dir, self.progress)
            if out_of_time:
                if main:
                    tqdm.write(f"time budget of {cfg.max_minutes} min reached after step {step} "
                               f"({seconds / 60:.1f} min of training)")
                break
        if last is None:
            last = latest_checkpoint(self.output_dir)
        return last
