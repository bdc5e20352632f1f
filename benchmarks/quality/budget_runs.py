"""Training at real budgets (issue 25): each run trains for a fixed time, its curves are scored on
``dev-mini`` at every checkpoint, and the final checkpoint on ``dev`` (and on ``lite`` for the
final table only).

    .venv/bin/python -m benchmarks.quality.budget_runs --runs grace-sup --seeds 0 --minutes 45
    .venv/bin/python -m benchmarks.quality.budget_runs --runs grace-sup-lr3e-5 --minutes 15 --no-dev
    .venv/bin/python -m benchmarks.quality.budget_runs --runs grace-sup-c0 --steps 120 --no-dev
    .venv/bin/python -m benchmarks.quality.budget_runs --pooling-check --runs grace-sup-contrastive --minutes 45
    .venv/bin/python -m benchmarks.quality.budget_runs --pooling-check dev lite --runs grace-sup-contrastive-anchor10
    .venv/bin/python -m benchmarks.quality.budget_runs --pooling-check --reading text:0.7 --runs grace-sup-contrastive-anchor10
    .venv/bin/python -m benchmarks.quality.budget_runs --report   # results-budget.md + curves, runs nothing

Stages of one run (``NAME-sSEED-MINm``); each stage's small output goes to
``benchmarks/quality/results-data/budget/<run>/`` (committed), and a stage whose output is there
is skipped, so the script resumes after an interruption; checkpoints stay under --work:
1. ``train.json``: train ``RUNS[name]`` for ``--minutes`` of training time (``grace train
   --max-minutes``; the run resumes from its checkpoints after a kill), float32 throughout;
   its metrics rows and settings;
2. ``curve-STEP.json``: every checkpoint on ``dev-mini`` (greedy rationales for GRACE, none for
   the contrastive baselines, which were trained on plain mean pooling); scored checkpoints but
   the newest and the best so far are deleted (each is ~1.6 GB with its optimizer);
3. ``selected.json``: the checkpoint the run is judged by, the best on ``dev-mini`` (early
   stopping on a split we may choose on, the same rule for every method); ``dev.json``: that
   checkpoint on ``dev`` (``--no-dev`` skips it: a search run that ``dev-mini`` already ruled out);
4. ``lite.json`` with ``--lite``: the selected checkpoint on the final table's suite (never used
   to choose);
5. ``capability.json`` with ``--capability``: ARC-Easy (300 seeded questions,
   log-likelihood) and held-out perplexity of the selected checkpoint (the base model's with
   ``--references``);
6. ``samples.json`` with ``--samples``: the selected checkpoint's greedy rationales of
   ``SAMPLE_TEXTS`` (a sentence, a question, a passage), which results.md shows (the untrained model's in
   ``references/`` with ``--references``).
On demand, ``--pooling-check [SUITE ...]`` (no training): ``SUITE-POOLING.json`` (default suite
``dev-mini``), the selected checkpoint read with the other pooling than it was trained with (mean
<-> balanced), or with ``--reading``'s (``text:W``, a text share: ``SUITE-textW.json``). The
rationales are those its own pooling cached (the pooling changes no token), so such a reading
costs one scoring pass once the run's own suite file is written.
Untrained references (``REFERENCES``: base, echo, +reasoning) get the same evaluation files.

Evaluation is float32 with ``RATIONALE_TOKENS``-token greedy rationales unless a run sets
another length. Minutes are training time on this machine: runs compare only when they ran one
at a time on the same machine kind (each train.json records the CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.common import paths, report  # noqa: E402
from benchmarks.quality import budget_report  # noqa: E402
from grace.cli import pooling_type  # noqa: E402

HERE = Path(__file__).resolve().parent  # benchmarks/quality/: results-budget.md, results-data/
DATA = HERE / "results-data" / "budget"
RATIONALE_TOKENS = 32
EVAL_DTYPE = "float32"  # bf16 greedy rationales change with the batch (issue 25)

FLOAT32 = {"model.mixed_precision": "no", "rollout.dtype": "policy", "max_steps": 100_000}
GRACE = {**FLOAT32, "batch_size": 4, "rollout.num_rollouts": 4,
         "rollout.max_new_tokens": RATIONALE_TOKENS, "data.max_prompt_tokens": 128,
         "optim.learning_rate": 1e-5, "optim.num_mini_batches": 2,
         "reward.penalize_truncation": False, "save_every": 25, "sample_every": 10,
         "optim.contrastive_weight": 0.0,  # sup-nli ships 1.0 since; the runs before it had 0
         "optim.anchor_weight": 0.0,  # sup-nli and unsup-wiki ship 10 since; runs set their own
         "optim.contrastive_memory": 0}  # unsup-wiki ships 64 since (seventeenth session)
BASELINE = {**FLOAT32, "batch_size": 16, "save_every": 25}
# system prompts shorter and more concrete than the paper's (a 135M model may follow one
# better; issue 25), read untrained first (the references below): label -> system message
PROMPTS = {
    "topic": "Say what the following text is about: name its topic and the main people, places, "
             "things or ideas it mentions.",
    "keywords": "List the key words and topics of the following text.",
}
# name -> (packaged config, overrides, data file under --data-dir)
NLI, WIKI = "triplets/nli-triplets.jsonl", "texts/wiki-sentences.txt"
# supervised GRACE with the contrastive term (what sup-nli ships), the base of the anchor runs
SUP_TERM = {**GRACE, "reward.variant": "reference", "optim.contrastive_weight": 1.0}
UNSUP_TERM = {**GRACE, "optim.contrastive_weight": 1.0}  # the same term, unsupervised
# what unsup-wiki ships: the term with the KL anchor (the base of the anchor-10 runs below)
UNSUP_SHIPPED = {**UNSUP_TERM, "optim.anchor_weight": 10.0}
RUNS = {
    "grace-sup": ("sup-nli", {**GRACE, "reward.variant": "reference"}, NLI),
    "grace-sup-lr3e-5": ("sup-nli", {**GRACE, "reward.variant": "reference",
                                     "optim.learning_rate": 3e-5}, NLI),
    "grace-sup-decoupled": ("sup-nli", {**GRACE, "reward.variant": "decoupled"}, NLI),
    "grace-sup-g8": ("sup-nli", {**GRACE, "reward.variant": "reference", "batch_size": 2,
                                 "rollout.num_rollouts": 8}, NLI),
    # lr 3e-5 alone fell into loops after ~120 steps: a penalty on them, or KL to the start
    "grace-sup-lr3e-5-rep2": ("sup-nli", {**GRACE, "reward.variant": "reference",
                                          "optim.learning_rate": 3e-5,
                                          "reward.repetition_penalty": 2.0}, NLI),
    "grace-sup-lr3e-5-kl": ("sup-nli", {**GRACE, "reward.variant": "reference",
                                        "optim.learning_rate": 3e-5, "optim.kl_coef": 0.05}, NLI),
    # both lr runs: the contrastive term stayed flat while consistency climbed to ~1.0 and
    # the rationales collapsed; without consistency, and with every rollout's reward its own
    "grace-sup-decoupled-c0": ("sup-nli", {**GRACE, "reward.variant": "decoupled",
                                           "reward.consistency_weight": 0.0}, NLI),
    "grace-sup-c0": ("sup-nli", {**GRACE, "reward.variant": "reference",
                                 "reward.consistency_weight": 0.0}, NLI),
    "grace-sup-balanced": ("sup-nli", {**GRACE, "reward.variant": "reference",
                                       "optim.learning_rate": 3e-5, "rollout.pooling": "balanced"}, NLI),
    # beyond the paper: InfoNCE on the text + rationale embeddings beside GRPO
    # (optim.contrastive_weight): InfoNCE led GRACE sup by ~7 on dev-mini at 45 minutes
    "grace-sup-contrastive": ("sup-nli", SUP_TERM, NLI),
    # weight 1 moved held-out perplexity +10.4%: a lighter term
    "grace-sup-contrastive-w0.3": ("sup-nli", {**GRACE, "reward.variant": "reference",
                                               "optim.contrastive_weight": 0.3}, NLI),
    # weight 0.3 cost as much perplexity (+10.1%): a KL anchor to the initial model on the raw
    # input texts (optim.anchor_weight, grace.grpo.anchor_term) beside the full term
    "grace-sup-contrastive-anchor": ("sup-nli", {**SUP_TERM, "optim.anchor_weight": 1.0}, NLI),
    # anchor 1 took the cost from +10.4% to +6.4% at 50 steps (dev-mini 68.73 vs 70.59): stronger
    "grace-sup-contrastive-anchor5": ("sup-nli", {**SUP_TERM, "optim.anchor_weight": 5.0}, NLI),
    # anchor 5: +3.3% at 50 steps, dev-mini 70.27 (no loss against the term alone's 70.59)
    "grace-sup-contrastive-anchor20": ("sup-nli", {**SUP_TERM, "optim.anchor_weight": 20.0}, NLI),
    # anchor 20: +1.2% (the first within 2%), dev-mini 65.17 at 50 steps (-5); 10 between
    "grace-sup-contrastive-anchor10": ("sup-nli", {**SUP_TERM, "optim.anchor_weight": 10.0}, NLI),
    # supervised rationales drift to one frame for every text ("This text conveys a scene of")
    "grace-sup-template": ("sup-nli", {**GRACE, "reward.variant": "reference",
                                       "reward.template_penalty": 2.0}, NLI),
    "grace-unsup": ("unsup-wiki", {**GRACE}, WIKI),
    "grace-unsup-lr3e-5": ("unsup-wiki", {**GRACE, "optim.learning_rate": 3e-5}, WIKI),
    # texts of train splits that no suite scores (benchmarks/quality/unscored_data.py)
    "grace-unsup-mixed": ("unsup-wiki", {**GRACE, "optim.learning_rate": 3e-5}, "unscored:mixed"),
    # the mix at lr 3e-5 moved held-out perplexity +6.8% in 75 steps: the same at lr 1e-5
    "grace-unsup-mixed-lr1e-5": ("unsup-wiki", {**GRACE}, "unscored:mixed"),
    "grace-unsup-mixed-contrastive": ("unsup-wiki", UNSUP_TERM, "unscored:mixed"),
    # the term's perplexity cost in unsupervised mode (+7.9%) against the anchor that cut it
    # in supervised mode (anchor 5: +10.4% -> +3.3% at 50 steps)
    "grace-unsup-mixed-contrastive-anchor5": ("unsup-wiki", {**UNSUP_TERM, "optim.anchor_weight": 5.0},
                                              "unscored:mixed"),
    # sup-nli ships anchor 10 (+1.2% perplexity at 45 minutes, lite 66.68 vs 67.89 without):
    # the same weight in unsupervised mode
    "grace-unsup-mixed-contrastive-anchor10": ("unsup-wiki", UNSUP_SHIPPED, "unscored:mixed"),
    # anchor 10 unsupervised: dev-mini 65.94 at step 50, then a drift to copying (copy rate
    # 0.23 -> 0.39, retrieval 71.9 -> 65.2): a reward penalty on each rollout's copy rate
    "grace-unsup-mixed-contrastive-anchor10-copy1": ("unsup-wiki", {**UNSUP_SHIPPED,
                                                      "reward.copy_penalty": 1.0}, "unscored:mixed"),
    # copy 1 at 50 steps (seed 0): copy rate 0.243 -> 0.165 and dev-mini 65.94 -> 62.73 (STS -7):
    # copying is part of what the reward pays for; off
    # SimCSE led GRACE unsup by 4.4 on lite (seed 0): a heavier contrastive term, nearer SimCSE's
    # objective, with the anchor that keeps perplexity
    "grace-unsup-mixed-contrastive3-anchor10": ("unsup-wiki", {**UNSUP_SHIPPED, "optim.contrastive_weight": 3.0},
                                                "unscored:mixed"),
    # weight 3 at 50 steps (seed 0): dev-mini 64.69 (65.99 read balanced) against weight 1's
    # 65.94 (67.02), copy rate 0.20 against 0.24: no gain from a heavier term
    # every reading since the tenth session is balanced, yet the rewards and the term were computed
    # on the paper's mean: the same run trained (and so scored on its curve) balanced
    "grace-unsup-mixed-contrastive-anchor10-balanced": ("unsup-wiki", {**UNSUP_SHIPPED,
                                                        "rollout.pooling": "balanced"}, "unscored:mixed"),
    # trained balanced, 50 steps (seed 0): dev-mini 66.45 balanced against 67.02 for the same run
    # trained with the mean and read balanced (copy rate 0.27 against 0.24): the reading, not the
    # training, is where the balanced pooling pays
    "grace-unsup-questions": ("unsup-wiki", {**GRACE, "optim.learning_rate": 3e-5},
                              "unscored:questions"),
    "infonce": ("infonce-nli", BASELINE, NLI),
    "simcse": ("simcse-wiki", BASELINE, WIKI),
    # SimCSE on the data the best unsupervised GRACE run had (equal data as well as time)
    "simcse-mixed": ("simcse-wiki", BASELINE, "unscored:mixed"),
    # the shipped unsupervised recipe with groups of 8 rollouts (twice the rollouts a step): 25
    # steps against 50 of G 4 is the same time
    "grace-unsup-mixed-contrastive-anchor10-g8": ("unsup-wiki", {**UNSUP_SHIPPED,
                                                  "rollout.num_rollouts": 8}, "unscored:mixed"),
    # the shipped unsupervised recipe with twice the texts a step and groups of 2 (the same 16
    # sampled rationales a step as batch 4 with G 4): more texts and in-batch negatives
    "grace-unsup-mixed-contrastive-anchor10-b8g2": ("unsup-wiki", {**UNSUP_SHIPPED, "batch_size": 8,
                                                    "rollout.num_rollouts": 2}, "unscored:mixed"),
    # the shipped unsupervised recipe whose contrastive term also scores the positives of the
    # last 16 steps (64 rows, detached) as negatives: 67 negatives a query instead of 3
    "grace-unsup-mixed-contrastive-anchor10-mem64": ("unsup-wiki", {**UNSUP_SHIPPED,
                                                     "optim.contrastive_memory": 64}, "unscored:mixed"),
    # the memory recipe (unsup-wiki as shipped) as a LoRA adapter (r 16, alpha 32, all linear
    # layers) at 10x the full fine-tuning lr, LoRA's usual scale, for G 4's 50-step time (14.5 min)
    "grace-unsup-mixed-contrastive-anchor10-mem64-lora": ("unsup-wiki", {
        **UNSUP_SHIPPED, "optim.contrastive_memory": 64, "model.lora": True,
        "optim.learning_rate": 1e-4}, "unscored:mixed"),
    # the shipped unsupervised recipe with 64-token rationales, for G 4's 50-step time (14.5 min)
    "grace-unsup-mixed-contrastive-anchor10-t64": ("unsup-wiki", {**UNSUP_SHIPPED,
                                                   "rollout.max_new_tokens": 64}, "unscored:mixed"),
    # the shipped unsupervised recipe under another of PROMPTS (trained once its untrained
    # reading beats the paper's prompt on dev-mini)
    **{f"grace-unsup-mixed-contrastive-anchor10-{label}": (
        "unsup-wiki", {**UNSUP_SHIPPED, "data.system_prompt": prompt},
        "unscored:mixed") for label, prompt in PROMPTS.items()},
}
# untrained SmolLM2: label -> (rationale, pooling[, PROMPTS label; default the paper's prompt])
REFERENCES = {"base": ("none", "mean"), "echo": ("echo", "mean"), "plus_reasoning": ("greedy", "mean"),
              "echo_balanced": ("echo", "balanced"), "plus_reasoning_balanced": ("greedy", "balanced"),
              **{f"plus_reasoning_balanced_{p}": ("greedy", "balanced", p) for p in PROMPTS}}


def _log(msg: str) -> None:
    print(f"[budget {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_key(name: str, seed: int, minutes: float, steps: int | None = None) -> str:
    return f"{name}-s{seed}-{steps}steps" if steps else f"{name}-s{seed}-{minutes:g}m"


def budget_overrides(minutes: float, steps: int | None) -> dict:
    """A time budget, or with ``steps`` a step budget instead: a search run that shares the CPU
    with other work then still gets its steps (its minutes are not comparable)."""
    return {"max_steps": steps, "max_minutes": None} if steps else {"max_minutes": minutes}


def rationale_of(name: str) -> tuple[str, int, str]:
    """(rationale mode, tokens, pooling) a run's checkpoints are evaluated with: those it was
    trained with."""
    config, overrides, _ = RUNS[name]
    if config.startswith(("infonce", "simcse")):
        return "none", RATIONALE_TOKENS, "mean"
    return ("greedy", int(overrides.get("rollout.max_new_tokens", RATIONALE_TOKENS)),
            overrides.get("rollout.pooling", "mean"))


def last_samples(out: Path, n: int = 4) -> list[dict]:
    """The last ``n`` logged sample rationales of a run (samples.jsonl), if it logs any."""
    path = out / "samples.jsonl"
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()][-n:]


def train_run(work: Path, data_dir: Path, name: str, seed: int, minutes: float,
              steps: int | None = None) -> Path:
    """Stage 1: train (or resume) until the budget is spent; returns the output folder."""
    from grace.config.schema import load_config
    from grace.rollout.orientation import orientation_record
    from grace.train import train

    key = run_key(name, seed, minutes, steps)
    out, record = work / key, DATA / key / "train.json"
    config_name, overrides, data = RUNS[name]
    if not record.is_file():
        if data.startswith("unscored:"):
            from benchmarks.quality import unscored_data

            path = unscored_data.write_unscored(data_dir, work / "data")[data.split(":", 1)[1]]
        else:
            path = data_dir / data
        cfg = load_config(config_name, {**overrides, **budget_overrides(minutes, steps), "seed": seed,
                                        "output_dir": str(out), "data.path": str(path)})
        _log(f"training {key}")
        train(cfg)
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
        report.write_json(record, {"run": key, "name": name, "seed": seed,
                             "minutes": None if steps else minutes, "step_budget": steps,
                             "config": config_name, "overrides": overrides, "data": data,
                             "cpu": report.cpu_model(), "cores": os.cpu_count(), "steps": len(rows),
                             "decode_orientation": orientation_record(),
                             "train_minutes": rows[-1]["time/train_min"] if rows else None,
                             "samples": last_samples(out), "metrics": rows})
    return out


def evaluate(source: str, suite: str, how: tuple[str, int, str], data_dir: Path, out: Path,
             cache: Path, system_prompt: str | None = None) -> dict:
    """``source`` on ``suite`` with ``how`` = (rationale, tokens, pooling), into ``out``
    (``system_prompt``: another system message than the model's own)."""
    if not out.is_file():
        from grace.evaluation.suite import run_suite

        rationale, tokens, pooling = how
        _log(f"{suite}: {source} (rationale {rationale}, pooling {pooling})")
        tmp = out.with_suffix(".tmp")
        out.parent.mkdir(parents=True, exist_ok=True)
        run_suite(source, suite=suite, data_dir=data_dir, rationale=rationale, max_new_tokens=tokens,
                  output=tmp, cache=cache, dtype=EVAL_DTYPE, show=False, pooling=pooling,
                  system_prompt=system_prompt)
        tmp.replace(out)
    return json.loads(out.read_text())


def capability(source: str, data_dir: Path, out: Path) -> dict:
    """grace.evaluation.capability's figures of ``source`` (ARC-Easy on its seeded 300
    questions, held-out perplexity), into ``out``."""
    if not out.is_file():
        from grace.evaluation.capability import evaluate_capability
        from grace.models.backbones import load_backbone

        _log(f"capability: {source}")
        model, tokenizer = load_backbone(source, EVAL_DTYPE)
        model.eval()
        report.write_json(out, evaluate_capability(model, tokenizer, data_dir=data_dir, show_progress=False))
    return json.loads(out.read_text())


# results.md shows each final row's greedy rationales of these (a short sentence, a question, a
# long passage; from the dev and lite suites, for display only: nothing is chosen on them)
SAMPLE_TEXTS = (
    "A man with a hard hat is dancing.",
    "What science fantasy young adult series, told in first person, has a set of companion books "
    "narrating the stories of enslaved worlds and alien species?",
    "The Hork-Bajir Chronicles is the second companion book to the \"Animorphs\" series, written by "
    "K. A. Applegate. With respect to continuity within the series, it takes place before book #23, "
    "\"The Pretender\", although the events told in the story occur between the time of \"The "
    "Ellimist Chronicles\" and \"The Andalite Chronicles\". The book is introduced by Tobias, who "
    "flies to the valley of the free Hork-Bajir, where Jara Hamee tells him the story of how the "
    "Yeerks enslaved the Hork-Bajir.",
)


def samples(source: str, tokens: int, out: Path) -> dict:
    """Greedy ``tokens``-token rationales of ``SAMPLE_TEXTS`` by ``source`` (float32, one text a
    batch, no cache), into ``out``: the sample rationales results.md shows."""
    if not out.is_file():
        from grace.encoders import GraceEncoder

        _log(f"samples: {source}")
        encoder = GraceEncoder.from_pretrained(source, dtype=EVAL_DTYPE, cache=False, rationale="greedy",
                                               max_new_tokens=tokens)
        _, rationales = encoder.encode(list(SAMPLE_TEXTS), batch_size=1, return_rationales=True)
        report.write_json(out, {"source": source, "max_new_tokens": tokens, "texts": list(SAMPLE_TEXTS),
                                "rationales": list(rationales)})
    return json.loads(out.read_text())


def selected_step(key: str) -> int | None:
    """The step of the checkpoint a run is judged by: the best on dev-mini (early stopping on a
    split we may choose on; the earliest of equal scores), or None before any is scored."""
    best = budget_report.best_checkpoint(budget_report.load_curve(DATA / key))
    return None if best is None else best[0]


def curve_stage(out: Path, key: str, how: tuple, data_dir: Path, cache: Path) -> None:
    """Stage 2: every checkpoint on dev-mini; once scored, a checkpoint is deleted unless it is
    the newest (to resume from) or the best on dev-mini so far (the selected one)."""
    from grace.training.checkpoint import checkpoints

    found = checkpoints(out)  # newest first
    for checkpoint in reversed(found):
        step = int(checkpoint.name.split("-")[1])
        evaluate(str(checkpoint), "dev-mini", how, data_dir, DATA / key / f"curve-{step}.json", cache)
        best = selected_step(key)
        for other in checkpoints(out):
            other_step = int(other.name.split("-")[1])
            if other != found[0] and other_step != best and (DATA / key / f"curve-{other_step}.json").is_file():
                shutil.rmtree(other)


def selected_checkpoint(work: Path, key: str, purpose: str) -> Path:
    """The checkpoint directory ``selected.json`` names for run ``key``, or a SystemExit that
    says why ``purpose`` cannot be scored: no checkpoint chosen yet, or the chosen one deleted."""
    record = DATA / key / "selected.json"
    if not record.is_file():
        raise SystemExit(f"{key}: no selected checkpoint yet ({record} is written once every "
                         f"checkpoint is scored on dev-mini), so {purpose} cannot be scored: run "
                         "its stages first")
    chosen = work / key / f"checkpoint-{json.loads(record.read_text())['step']}"
    if not chosen.is_dir():
        raise SystemExit(f"{key}: the selected checkpoint {chosen} is gone, so {purpose} cannot be "
                         "scored (delete the run's train.json and curve files to retrain)")
    return chosen


def run_one(work: Path, data_dir: Path, name: str, seed: int, minutes: float, dev: bool,
            lite: bool, with_capability: bool = False, steps: int | None = None,
            with_samples: bool = False) -> None:
    """All stages of one run; dev, lite and capability score the checkpoint chosen on dev-mini
    (``selected.json`` says which)."""
    key = run_key(name, seed, minutes, steps)
    how = rationale_of(name)
    cache = work / "rationales.sqlite"
    out = train_run(work, data_dir, name, seed, minutes, steps)
    curve_stage(out, key, how, data_dir, cache)
    best = selected_step(key)
    record = DATA / key / "selected.json"
    if best is not None and not record.is_file():
        score = budget_report.best_checkpoint(budget_report.load_curve(DATA / key))[1]
        report.write_json(record, {"step": best, "by": "dev-mini overall_by_type", "dev_mini": score})
    for suite, wanted in (("dev", dev), ("lite", lite), ("capability", with_capability),
                          ("samples", with_samples and how[0] != "none")):
        target = DATA / key / f"{suite}.json"
        if not wanted or target.is_file():
            continue
        chosen = selected_checkpoint(work, key, suite)
        if suite == "capability":
            capability(str(chosen), data_dir, target)
        elif suite == "samples":
            samples(str(chosen), how[1], target)
        else:
            evaluate(str(chosen), suite, how, data_dir, target, cache)


OTHER_POOLING = {"mean": "balanced", "balanced": "mean"}


def pooling_label(pooling: str) -> str:
    """A pooling as it is named in a file name: ``text:0.7`` -> ``text0.7`` (no colon)."""
    return pooling.replace(":", "")


def pooling_check(work: Path, data_dir: Path, name: str, seed: int, minutes: float,
                  steps: int | None = None, suites: tuple[str, ...] = ("dev-mini",),
                  reading: str | None = None) -> None:
    """The selected checkpoint of a GRACE run on each of ``suites`` read with the pooling
    ``reading`` (default: the other one than it was trained with, mean <-> balanced; or a text
    share ``text:W``), into ``SUITE-LABEL.json`` (``pooling_label``): whether weighing the text
    and the rationale otherwise reads a trained model better, with no retraining. A contrastive
    baseline (no rationale, where every pooling is the text's mean) is skipped."""
    key = run_key(name, seed, minutes, steps)
    rationale, tokens, pooling = rationale_of(name)
    if rationale == "none":
        _log(f"{key}: no rationale to weigh (a contrastive baseline), skipped")
        return
    other = reading or OTHER_POOLING[pooling]
    for suite in suites:
        target = DATA / key / f"{suite}-{pooling_label(other)}.json"
        if target.is_file():
            continue
        chosen = selected_checkpoint(work, key, f"{suite} with {other} pooling")
        evaluate(str(chosen), suite, (rationale, tokens, other), data_dir, target,
                 work / "rationales.sqlite")


def run_references(work: Path, data_dir: Path, suites: list[str], with_capability: bool,
                   labels: list[str] | None = None, with_samples: bool = False) -> None:
    """The untrained references ``labels`` on ``suites`` (default: every one in REFERENCES under
    the paper's prompt; the other prompts' only by name: they are read on dev-mini to choose)."""
    if with_capability:
        capability("smollm2-135m", data_dir, DATA / "references" / "capability.json")
    if with_samples:
        samples("smollm2-135m", RATIONALE_TOKENS, DATA / "references" / "samples.json")
    for label in labels or [k for k, v in REFERENCES.items() if len(v) == 2]:
        rationale, pooling, *prompt = REFERENCES[label]
        for suite in suites:
            evaluate("smollm2-135m", suite, (rationale, RATIONALE_TOKENS, pooling), data_dir,
                     DATA / "references" / f"{label}-{suite}.json", work / "rationales.sqlite",
                     PROMPTS[prompt[0]] if prompt else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="*", default=[], choices=list(RUNS), metavar="RUN",
                        help=f"runs to do, in order: {', '.join(RUNS)}")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--minutes", type=float, default=45.0, help="training time per run")
    parser.add_argument("--steps", type=int, default=None,
                        help="a step budget instead of --minutes (search runs beside other work)")
    parser.add_argument("--references", nargs="*", default=None, metavar="SUITE",
                        help="also score the untrained references on these suites (dev-mini dev lite)")
    parser.add_argument("--reference-names", nargs="+", default=None, choices=list(REFERENCES),
                        metavar="LABEL", help=f"only these references: {', '.join(REFERENCES)}")
    parser.add_argument("--no-dev", action="store_true", help="skip the full dev suite")
    parser.add_argument("--lite", action="store_true",
                        help="also score the selected checkpoint (best on dev-mini) on lite")
    parser.add_argument("--capability", action="store_true",
                        help="also ARC-Easy and held-out perplexity of the selected checkpoint")
    parser.add_argument("--samples", action="store_true",
                        help="also greedy rationales of SAMPLE_TEXTS by the selected checkpoint of each "
                             "GRACE run (the untrained model's with --references)")
    parser.add_argument("--pooling-check", nargs="*", default=None, metavar="SUITE",
                        choices=["dev-mini", "dev", "lite"],
                        help="only score the selected checkpoint of each GRACE run on these suites "
                             "(default dev-mini) with the other pooling (mean <-> balanced, or "
                             "--reading's); trains nothing")
    parser.add_argument("--reading", default=None, metavar="POOLING", type=pooling_type,
                        help="the pooling --pooling-check reads with instead of the other one: mean, "
                             "balanced or text:W (the text's mean weighs W, the rationale's 1 - W)")
    parser.add_argument("--report", action="store_true", help="write results-budget.md, run nothing")
    parser.add_argument("--data-dir", default=str(paths.SHARED_DATA))
    parser.add_argument("--work", default=str(paths.RUNS / "budget"))
    args = parser.parse_args()
    work, data_dir = Path(args.work), Path(args.data_dir)
    if not args.report:
        work.mkdir(parents=True, exist_ok=True)
        if args.references is not None:
            run_references(work, data_dir, args.references, args.capability, args.reference_names,
                           args.samples)
        for seed in args.seeds:
            for name in args.runs:
                if args.pooling_check is not None:
                    pooling_check(work, data_dir, name, seed, args.minutes, args.steps,
                                  tuple(args.pooling_check) or ("dev-mini",), args.reading)
                    continue
                run_one(work, data_dir, name, seed, args.minutes, not args.no_dev, args.lite,
                        args.capability, args.steps, args.samples)
    _log(f"wrote {budget_report.write(DATA, HERE, GRACE, BASELINE)}")


if __name__ == "__main__":
    main()
