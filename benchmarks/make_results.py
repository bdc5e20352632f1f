"""Regenerate benchmarks/results.md: the paper's Table 1 at our scale (SmolLM2-135M on 2 CPU cores).

    .venv/bin/python benchmarks/make_results.py [--data-dir ../shared/data] [--work runs/results]

Stages (each writes its output under --work and is skipped when that output exists, so the
script resumes after an interruption; delete a stage's folder/file to redo it):
1. train four models from SmolLM2-135M-Instruct: GRACE supervised and InfoNCE on the NLI
   triplets, GRACE unsupervised and SimCSE on the Wikipedia sentences (training budgets below);
2. score six rows on the ``lite`` suite (every score computed by mteb): base (no rationale),
   +reasoning (base model, greedy rationales), InfoNCE, GRACE sup, SimCSE, GRACE unsup; GRACE
   models and +reasoning are encoded with greedy rationales, the contrastive baselines without
   (they were trained on plain mean pooling);
3. capability retention (ARC-Easy accuracy, held-out perplexity) of the base and the four models;
4. plots (training reward curves, per-category scores) and the markdown report.

The training data (NLI triplets, Wikipedia sentences) share no texts with the evaluation sets
(the triplets file dropped sentences that occur in evaluation sets; see shared/data/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).resolve().parent
RATIONALE_TOKENS = 32  # rationale length in training and evaluation (CPU budget)
ARC_QUESTIONS = 100  # seeded ARC-Easy subsample per model (the CLI default is 300)
EVAL_DTYPE = "bfloat16"  # evaluation weights (trained in float32); bf16 is ~5x faster on this CPU

# name -> (packaged config, overrides). Budgets are sized for a 2-core CPU.
GRACE_COMMON = {
    "batch_size": 4, "rollout.num_rollouts": 4, "rollout.max_new_tokens": RATIONALE_TOKENS,
    "data.max_prompt_tokens": 128, "optim.learning_rate": 1e-5, "optim.num_mini_batches": 2,
    "reward.penalize_truncation": False, "save_every": 4, "sample_every": 4,
}
TRAINING = {
    "grace-sup": ("sup-nli", {**GRACE_COMMON, "max_steps": 8, "reward.variant": "reference"}),
    "grace-unsup": ("unsup-wiki", {**GRACE_COMMON, "max_steps": 8}),
    "infonce": ("infonce-nli", {"batch_size": 16, "max_steps": 10, "save_every": 5}),
    "simcse": ("simcse-wiki", {"batch_size": 16, "max_steps": 10, "save_every": 5}),
    # frozen backbone; 120 steps x 32 = 3,840 Wikipedia sentences, one epoch (paper: 5,000 x 32);
    # the backbone's answers capped at 64 tokens and generated in bf16 (CPU budget); lr 1e-4, not
    # the paper's 5e-4, which diverged here (training alignment loss 0.0026 -> 0.02 in 23 steps;
    # the earlier attempts are listed in the report)
    "llm2vec-gen": ("llm2vec-gen", {"batch_size": 32, "max_steps": 120, "save_every": 20,
                                    "sample_every": 20, "optim.warmup_steps": 12,
                                    "llm2vec_gen.learning_rate": 1e-4,
                                    "llm2vec_gen.response_max_new_tokens": 64,
                                    "llm2vec_gen.max_response_tokens": 64,
                                    "llm2vec_gen.response_dtype": "bfloat16",
                                    "llm2vec_gen.response_batch_size": 64}),
}
# Table rows: label -> (model source, rationale mode)
ROWS = {
    "base": ("smollm2-135m", "none"),
    "+reasoning": ("smollm2-135m", "greedy"),
    "InfoNCE": ("infonce", "none"),
    "GRACE sup": ("grace-sup", "greedy"),
    "SimCSE": ("simcse", "none"),
    "GRACE unsup": ("grace-unsup", "greedy"),
    "MiniLM (teacher)": ("all-MiniLM-L6-v2", "none"),  # the packaged reference encoder
    "LLM2Vec-Gen": ("llm2vec-gen", "none"),  # no rationale: K soft tokens, one forward pass
}
CAPABILITY = {"base": "smollm2-135m", "InfoNCE": "infonce", "GRACE sup": "grace-sup",
              "SimCSE": "simcse", "GRACE unsup": "grace-unsup"}


def _log(msg: str) -> None:
    print(f"[results {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def train_models(work: Path, data_dir: Path) -> dict:
    from grace.config.schema import load_config
    from grace.training.registry import train

    data = {"sup-nli": data_dir / "triplets/nli-triplets.jsonl",
            "infonce-nli": data_dir / "triplets/nli-triplets.jsonl",
            "unsup-wiki": data_dir / "texts/wiki-sentences.txt",
            "simcse-wiki": data_dir / "texts/wiki-sentences.txt",
            "llm2vec-gen": data_dir / "texts/wiki-sentences.txt"}
    checkpoints = {}
    for name, (config_name, overrides) in TRAINING.items():
        out = work / "train" / name
        cfg = load_config(config_name, {**overrides, "output_dir": str(out),
                                         "data.path": str(data[config_name])})
        done = out / f"checkpoint-{cfg.max_steps}"
        if not done.is_dir():
            _log(f"training {name} ({config_name}, {cfg.max_steps} steps)")
            start = time.perf_counter()
            train(cfg)
            (out / "train_seconds.json").write_text(json.dumps({"seconds": time.perf_counter() - start}))
        checkpoints[name] = str(done)
    return checkpoints


def evaluate_rows(work: Path, data_dir: Path, checkpoints: dict, modes=("none", "greedy")) -> dict:
    from grace.evaluation.suite import run_suite

    results = {}
    for label, (source, rationale) in ROWS.items():
        if rationale not in modes:
            continue
        out = _row_file(work, label)
        if not out.is_file():
            _log(f"evaluating {label} ({source}, rationale {rationale})")
            run_suite(checkpoints.get(source, source), data_dir=data_dir, rationale=rationale,
                      max_new_tokens=RATIONALE_TOKENS, output=out, cache=work / "rationales.sqlite",
                      dtype=EVAL_DTYPE)
        results[label] = json.loads(out.read_text())
    return results


def evaluate_capabilities(work: Path, data_dir: Path, checkpoints: dict) -> dict:
    from grace.models.backbones import load_backbone
    from grace.evaluation.capability import arc_easy_accuracy, load_heldout_texts, perplexity

    results = {}
    for label, source in CAPABILITY.items():
        out = work / "capability" / f"{label.replace(' ', '_')}.json"
        if not out.is_file():
            _log(f"capability of {label}")
            model, tokenizer = load_backbone(checkpoints.get(source, source), EVAL_DTYPE)
            model.eval()
            arc = arc_easy_accuracy(model, tokenizer, data_dir / "capability/arc-easy-test.jsonl",
                                    max_questions=ARC_QUESTIONS, seed=0)
            ppl = perplexity(model, tokenizer, load_heldout_texts())
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"arc_easy": arc, "perplexity": ppl}, indent=2))
        results[label] = json.loads(out.read_text())
    return results


def _row_file(work: Path, label: str) -> Path:
    return work / "eval" / f"{label.replace(' ', '_').replace('+', 'plus_')}.json"


def load_existing(work: Path) -> tuple[dict, dict]:
    """The evaluation and capability results already on disk (for --report-only)."""
    evals = {label: json.loads(_row_file(work, label).read_text())
             for label in ROWS if _row_file(work, label).is_file()}
    caps = {}
    for label in CAPABILITY:
        path = work / "capability" / f"{label.replace(' ', '_')}.json"
        if path.is_file():
            caps[label] = json.loads(path.read_text())
    return evals, caps


def _metrics(work: Path, name: str) -> list[dict]:
    path = work / "train" / name / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def make_plots(work: Path, evals: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, name in zip(axes, ("grace-sup", "grace-unsup")):
        rows = _metrics(work, name)
        steps = [r["step"] for r in rows]
        for key in ("reward/contrastive", "reward/consistency", "reward/hard"):
            ax.plot(steps, [r[key] for r in rows], label=key.split("/")[1])
        ax2 = ax.twinx()
        ax2.plot(steps, [r["reward/mean"] for r in rows], "k--", label="total (scaled)")
        ax2.set_ylabel("total reward")
        ax.set_title(f"{name}: reward components per step")
        ax.set_xlabel("step")
        ax.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    fig.savefig(HERE / "reward_curves.png", dpi=110)
    made.append("reward_curves.png")

    categories = sorted({c for r in evals.values() for c in r["averages"]})
    fig, ax = plt.subplots(figsize=(10, 3.5))
    width = 0.8 / len(evals)
    for i, (label, res) in enumerate(evals.items()):
        ax.bar([c + i * width for c in range(len(categories) + 1)],
               [100 * (res["averages"].get(cat) or 0) for cat in categories] + [100 * res["overall"]],
               width, label=label)
    ax.set_xticks([c + 0.4 - width / 2 for c in range(len(categories) + 1)], categories + ["overall"])
    ax.set_ylabel("score x 100")
    ax.set_title("lite suite per category (SmolLM2-135M)")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(HERE / "category_scores.png", dpi=110)
    made.append("category_scores.png")
    return made


def _fmt(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


# (GRACE row, the rows it is compared with): the paper's pairings (same data, same supervision)
PAIRS = {"GRACE sup": ("InfoNCE", "+reasoning", "base"), "GRACE unsup": ("SimCSE", "+reasoning", "base"),
         "LLM2Vec-Gen": ("MiniLM (teacher)", "GRACE unsup", "base")}


def _comparisons(evals: dict) -> list[str]:
    """Per method row, the tasks where it scores below each comparison row (computed, not written)."""
    lines = []
    for grace, others in PAIRS.items():
        if grace not in evals:
            continue
        ours = evals[grace]
        for other in others:
            if other not in evals:
                continue
            theirs = evals[other]
            losses = [f"{t} {100 * (ours['tasks'][t]['main_score'] - v['main_score']):+.2f}"
                      for t, v in theirs["tasks"].items()
                      if t in ours["tasks"] and ours["tasks"][t]["main_score"] < v["main_score"]]
            delta = 100 * (ours["overall"] - theirs["overall"])
            where = "; below it on " + ", ".join(losses) if losses else "; not below it on any task"
            lines.append(f"- {grace} vs {other}: overall {delta:+.2f}{where}")
    if lines:
        lines = ["", "Where each method gains and loses (computed from the table, points x 100; one training "
                 "seed and small seeded subsamples, so a difference of a few points is within noise):",
                 ""] + lines
    return lines


DIAGNOSTIC_TEXTS = 256  # training texts (with their cached responses) for the alignment diagnostic


def llm2vec_gen_diagnostic(work: Path) -> dict | None:
    """Is the trained alignment more than the teacher's mean direction? On training texts:
    mean cos(e_i, t_i) of the model vs mean cos(mean t, t_i) of a constant predictor, and the
    mean pairwise cosine of the model's embeddings (near 1: collapsed to one direction)."""
    out = work / "llm2vec-gen-diagnostic.json"
    checkpoint = work / "train" / "llm2vec-gen" / f"checkpoint-{TRAINING['llm2vec-gen'][1]['max_steps']}"
    if out.is_file() or not checkpoint.is_dir():
        return json.loads(out.read_text()) if out.is_file() else None
    from grace.config.schema import load_config
    from grace.llm2vec_gen.checkpoint import LLM2VecGenSpec
    from grace.llm2vec_gen.diagnostics import (
        constant_baseline_cosine,
        mean_cosine,
        mean_pairwise_cosine,
    )
    from grace.encoders.llm2vec_gen import LLM2VecGenEncoder
    from grace.llm2vec_gen.responses import ResponseCache, default_responses_file, response_settings
    from grace.llm2vec_gen.teacher import load_teacher

    g = load_config(str(checkpoint.parent / "grace_config.yaml")).llm2vec_gen
    spec = LLM2VecGenSpec.load(checkpoint)  # the run's responses file, as its trainer named it
    path = g.responses_file or default_responses_file(
        response_settings(spec.backbone, spec.backbone_fingerprint, g))
    if not Path(path).is_file():
        return None
    entries = list(ResponseCache(path).entries.items())[:DIAGNOSTIC_TEXTS]
    texts, responses = [t for t, _ in entries], [r.text for _, r in entries]
    encoder = LLM2VecGenEncoder.from_pretrained(str(checkpoint))
    e = encoder.encode(texts, instruction="", convert_to_tensor=True)  # as trained
    t = load_teacher("all-MiniLM-L6-v2").encode(responses)
    result = {"texts": len(texts), "responses_file": Path(path).name,
              "cos_model_teacher": mean_cosine(e, t),
              "cos_teacher_mean_teacher": constant_baseline_cosine(t),
              "pairwise_cos_model": mean_pairwise_cosine(e),
              "pairwise_cos_teacher": mean_pairwise_cosine(t)}
    out.write_text(json.dumps(result, indent=2))
    return result


def _llm2vec_gen_section(work: Path) -> list[str]:
    """How the LLM2Vec-Gen run ended (its last metrics) and what a few embeddings decode to."""
    rows = _metrics(work, "llm2vec-gen")
    if not rows:
        return []
    first, last = rows[0], rows[-1]
    keys = [k for k in ("loss/recon", "loss/align", "align/cosine", "recon/token_accuracy") if k in last]
    lines = ["", "## LLM2Vec-Gen", "",
             "The MiniLM row is the LLM2Vec-Gen teacher: all-MiniLM-L6-v2 (22M parameters, trained "
             "contrastively on about 1B sentence pairs), not the paper's teacher (LLM2Vec "
             "unsup-SimCSE of the same backbone); LLM2Vec-Gen learns to reproduce its embedding of "
             "the backbone's answer from the question alone, with the backbone frozen.", "",
             "Training metrics, first and last step: " + "; ".join(
                 f"{k} {first.get(k, float('nan')):.4f} -> {last[k]:.4f}" for k in keys)]
    diag = json.loads((work / "llm2vec-gen-diagnostic.json").read_text()) if (
        work / "llm2vec-gen-diagnostic.json").is_file() else None
    if diag:
        lines += ["", f"Alignment diagnostic on {diag['texts']} training texts (their cached responses "
                  f"embedded by the teacher): mean cos(model, teacher) {diag['cos_model_teacher']:.3f} vs "
                  f"{diag['cos_teacher_mean_teacher']:.3f} for a constant predictor (the teacher's mean "
                  f"direction); mean pairwise cosine of the model's embeddings "
                  f"{diag['pairwise_cos_model']:.3f} (teacher's: {diag['pairwise_cos_teacher']:.3f}). "
                  "When the first is not above the second, the alignment head has learned the "
                  "teacher's average direction and little about each text: the budget (120 steps "
                  "of 32; the paper trains about 5,000) is far too small for this method here."]
    attempts = {  # earlier runs of the same data, kept for the record (stopped by hand)
        "llm2vec-gen-defaultinit": "nn.Linear's default head init, lr 5e-4, batch 32",
        "llm2vec-gen-scaled-lr5e-4": "scaled head init, lr 5e-4, batch 32",
        "llm2vec-gen-probe-lr1e-4": "scaled head init, lr 1e-4, batch 16, a 20-step probe",
    }
    tried = [(name, what, _metrics(work, name)) for name, what in attempts.items()]
    tried = [(name, what, rows) for name, what, rows in tried if rows]
    if tried:
        lines += ["", "Earlier attempts on the same data (training metrics only, no evaluation; they "
                  "chose the head initialisation and learning rate of the run above):", ""]
        for name, what, rows in tried:
            lines.append(f"- {what}: stopped at step {rows[-1]['step']}; alignment loss "
                         f"{rows[0]['loss/align']:.4f} -> max {max(r['loss/align'] for r in rows):.4f} -> "
                         f"{rows[-1]['loss/align']:.4f}, training alignment cosine at the last step "
                         f"{rows[-1]['align/cosine']:.3f} (max {max(r['align/cosine'] for r in rows):.3f})")
    samples_file = work / "train" / "llm2vec-gen" / "samples.jsonl"
    if samples_file.is_file():
        samples = [json.loads(x) for x in samples_file.read_text().splitlines() if x.strip()]
        final = [x for x in samples if x.get("step") == max(s.get("step", 0) for s in samples)][:3]
        lines += ["", "What training texts' embeddings decode to at the last sample step "
                  "(greedy from the soft prompts; the target is the backbone's answer):", ""]
        for x in final:
            lines.append(f"- text {x['text'][:90]!r}: decoded {x['decoded'][:160]!r}; "
                         f"answer {x['response'][:120]!r}")
    return lines


def write_report(work: Path, evals: dict, capabilities: dict, plots: list[str]) -> Path:
    import torch

    tasks = list(next(iter(evals.values()))["tasks"])
    categories = sorted({c for r in evals.values() for c in r["averages"]})
    lines = [
        "# Results at our scale: SmolLM2-135M-Instruct on a 2-core CPU",
        "",
        f"Regenerate with `.venv/bin/python benchmarks/make_results.py` ({time.strftime('%Y-%m-%d')}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}).",
        "Every score below is computed by mteb's own evaluators on the local `lite` suite "
        "(seeded subsamples, see `src/grace/evaluation/suite.py`), x 100. These are tiny training "
        "budgets on a 135M model; they say whether each method moves the numbers here, not what it "
        "does at the paper's scale (SPEC 1.8: 1.5B-4B backbones, 1.5M triplets).",
        f"Models are trained in float32 and evaluated with {EVAL_DTYPE} weights (several times faster "
        f"on this CPU); rationales are greedy, {RATIONALE_TOKENS} tokens at most.",
        "",
        *([f"**Status: partial.** {len(ROWS) - len(evals)} of {len(ROWS)} rows and "
           f"{len(CAPABILITY) - len(capabilities)} of {len(CAPABILITY)} capability rows have not "
           "been run yet (the run was interrupted; rerunning the script resumes it).", ""]
          if len(evals) < len(ROWS) or len(capabilities) < len(CAPABILITY) else []),
        "## Table 1 at our scale",
        "",
        "| model | rationale | " + " | ".join(tasks) + " | " + " | ".join(f"avg {c}" for c in categories) + " | overall |",
        "|---" * (3 + len(tasks) + len(categories)) + "|",
    ]
    for label in ROWS:
        if label not in evals:
            lines.append(f"| {label} | {ROWS[label][1]} | " + " | ".join(["not run"] * (len(tasks) + len(categories) + 1)) + " |")
            continue
        res = evals[label]
        cells = [_fmt(res["tasks"][t]["main_score"]) for t in tasks]
        avgs = [_fmt(res["averages"].get(c)) for c in categories]
        lines.append(f"| {label} | {res['rationale']} | " + " | ".join(cells + avgs) + f" | {_fmt(res['overall'])} |")
    lines += _comparisons(evals)
    reference = sorted((work / "eval-float32").glob("*.json")) if (work / "eval-float32").is_dir() else []
    if reference:
        lines += ["", "The same rows evaluated with float32 weights (what bf16 evaluation changes):", ""]
        for path in reference:
            res = json.loads(path.read_text())
            lines.append(f"- {path.stem} ({res['rationale']}, float32): overall {_fmt(res['overall'])}; "
                         + ", ".join(f"{t} {_fmt(v['main_score'])}" for t, v in res["tasks"].items()))
    lines += _llm2vec_gen_section(work)
    lines += ["", "Training budgets (from SmolLM2-135M-Instruct, seed 0; full fine-tuning except "
              "llm2vec-gen, which trains only its soft tokens and two heads):", ""]
    for name, (config_name, overrides) in TRAINING.items():
        seconds_file = work / "train" / name / "train_seconds.json"
        seconds = json.loads(seconds_file.read_text())["seconds"] if seconds_file.is_file() else None
        spent = f", {seconds / 60:.1f} min" if seconds else ""
        lines.append(f"- **{name}**: config `{config_name}` with `{json.dumps(overrides)}`{spent}")
    lines += ["", "## General abilities (capability retention)", "",
              "| model | ARC-Easy acc | ARC-Easy acc_norm | questions | held-out perplexity |",
              "|---|---|---|---|---|"]
    for label, cap in capabilities.items():
        arc, ppl = cap["arc_easy"], cap["perplexity"]
        lines.append(f"| {label} | {arc.get('acc', float('nan')):.4f} | {arc.get('acc_norm', float('nan')):.4f} | "
                     f"{arc.get('num_questions', '-')} | {ppl['perplexity']:.2f} |")
    if "LLM2Vec-Gen" in evals:
        lines += ["", "LLM2Vec-Gen is not in this table: its backbone is frozen (bit-for-bit, tested), "
                  "so its language-model abilities are the base row's by construction."]
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    lines += ["", "## Seconds", ""]
    for label, res in evals.items():
        lines.append(f"- {label}: suite {res['seconds']:.0f} s, {res.get('texts_encoded', '-')} texts encoded")
    out = HERE / "results.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data"))
    parser.add_argument("--work", default=str(HERE.parent / "runs" / "results"))
    parser.add_argument("--report-only", action="store_true",
                        help="write results.md from the outputs already in --work, run nothing")
    parser.add_argument("--skip-greedy", action="store_true",
                        help="run training, the no-rationale rows and capability only (greedy rows "
                             "are the expensive part), then write the report")
    args = parser.parse_args()
    work, data_dir = Path(args.work), Path(args.data_dir)
    work.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        evals, capabilities = load_existing(work)
        _log(f"wrote {write_report(work, evals, capabilities, make_plots(work, evals))}")
        return
    checkpoints = train_models(work, data_dir)
    evaluate_rows(work, data_dir, checkpoints, modes=("none",))  # cheap rows first
    capabilities = evaluate_capabilities(work, data_dir, checkpoints)
    llm2vec_gen_diagnostic(work)
    modes = ("none",) if args.skip_greedy else ("none", "greedy")
    evals = evaluate_rows(work, data_dir, checkpoints, modes=modes)
    plots = make_plots(work, evals)
    _log(f"wrote {write_report(work, evals, capabilities, plots)}")


if __name__ == "__main__":
    main()
