"""Evaluation suites: a GRACE encoder on local MTEB-style tasks, every score computed by mteb.

    from grace.evaluation.suite import run_suite
    results = run_suite("smollm2-135m", data_dir="../shared/data", rationale="greedy",
                        output="runs/eval-lite.json")

Suite ``lite`` runs what it finds: the Lee benchmark always (it ships with gensim), and from
``data_dir`` (laid out like shared/data, see its README) each task whose files exist:

| task                     | files                                 | type               | lite subsample (seeded)                                    | texts |
|--------------------------|---------------------------------------|--------------------|------------------------------------------------------------|------:|
| LeeDocSim                | gensim test data                      | STS                | all 1,225 pairs of the 50 documents                        |    50 |
| LocalSTSBenchmark        | sts/stsb-test.jsonl                   | STS                | 400 of 1,379 pairs                                         |   775 |
| LocalSICK-R              | sts/sickr-test.jsonl                  | STS                | 400 of 4,927 pairs                                         |   749 |
| LocalSTSBPairs           | derived from sts/stsb-test.jsonl      | PairClassification | 300 pairs scored >= 4 (similar) or <= 1 (not)              |  364* |
| LocalSciFact             | retrieval/scifact (qrels-test)        | Retrieval          | 40 of 300 queries; 150 abstracts incl. every relevant one  |   190 |
| LocalSciFactReranking    | derived from scifact (qrels-test)     | Reranking          | 30 queries, their relevant abstracts + 10 TF-IDF-hard negatives each | 284* |
| LocalBanking77           | classification/banking77-{train,test} | Classification     | 10 of 77 labels; 8 train per label (one mteb experiment); 400 test | 480 |
| LocalBanking77Clustering | derived from banking77-test           | Clustering         | 300 test texts of 10 intents                               |   0* |
| LocalHotpotQA            | retrieval/hotpotqa-500 (qrels-test)   | Retrieval          | 80 of 300 multi-hop questions; 320 Wikipedia paragraphs incl. the 2 supporting ones of each | 400 |
| LocalTREC                | classification/trec-{train,test}      | Classification     | 6 question types; 8 train per type; 400 of 500 test questions | 448 |
| LocalEmotion             | classification/emotion-{train,test}   | Classification     | 6 emotions; 8 train per label; 400 of 2,000 test tweets    |   448 |
| LocalQuoraPairs          | pairclassification/quora-test         | PairClassification | 300 of 5,000 question pairs (half duplicates)              |  ~600 |
| LocalStackOverflowClustering | clustering/stackoverflow-test     | Clustering         | 400 of 10,000 titles, 20 tags                              |   400 |

(* new texts only: tasks share texts, and the adapter encodes each distinct text once; the
clustering texts are all among the classification task's.) About 5,200 distinct texts in all,
~475 of them SciFact abstracts and 320 Wikipedia paragraphs. The derived tasks are written once
from the test splits alone (grace.evaluation.dev_data.derive_files(data_dir, "test")).
Subsamples were grown where one item was worth a point (Banking77 had 100 test items, STS 200
pairs); retrieval and reranking are still sized by time, so one query moves them by up to 2.5
(SciFact), 1.25 (HotpotQA) and 3.3 points. The second batch of tasks (HotpotQA to
StackOverflow, issue 25) adds questions, where a rationale can work as query expansion, and
tweets and titles; they were sized so that a greedy float32 row stays under ~40 minutes on 2
cores (~25 min estimated from the rates below; a whole row has not been timed yet). Time goes
by tokens rather than texts: measured on a 2-core AMD EPYC (SmolLM2-135M, float32 weights,
greedy 32-token rationales) ~5.2 short texts/s (sentences, questions, tweets,
titles), ~2.2 Wikipedia paragraphs/s and ~1.0 SciFact abstracts/s; on a quiet 2-core machine
in bfloat16 with bf16 units, no rationale ~120 sentences/s and ~2.3 abstracts/s, greedy
~16 sentences/s and ~1.9 abstracts/s. ``full=True`` runs the
whole sets (Banking77: all 77 labels and mteb's 10 experiments of 8 examples per label): hours
with rationales. Subsets are drawn with ``seed``, which is also the mteb task seed.

Suite ``dev`` has the same six task types built from training and dev splits only (STS-B dev,
SciFact train qrels, Banking77's train file split in two, and tasks derived from them; HotpotQA
dev qrels (60 questions, 240 paragraphs), TREC's train file split in two, emotion dev tweets,
Quora dev pairs, StackOverflow's train half): choose settings there; ``lite`` is for the final
table. Both suites are category-balanced through ``overall_by_type``. Suite ``dev-mini`` (four
of dev's tasks, four types, ~620 texts, ~2.5 min with greedy float32 rationales on 2 cores)
scores training curves at every checkpoint.

Output (returned, and written as JSON to ``output``): per task the mteb main score and main
metrics (mteb's 0-1 scale), task type and category, requested limits and kept sizes, texts
encoded, seconds; averages of the main score per task type (only the types present), overall
(mean over tasks) and ``overall_by_type`` (mean of the type averages, as MTEB's leaderboard
balances categories); the model, rationale settings, seed and versions; with rationales (greedy,
sampled, echo), ``rationale_quality`` per task and for the whole run (copy rate, mean length,
EOS rate, distinct-2, empty rate: grace.rollout.quality, each distinct text once). The printed
table shows scores x 100, as the MTEB leaderboard does; with ``capability`` it also shows ARC-Easy
acc and acc_norm (x 100) and the held-out perplexity.

``output`` is checked before any work (not a folder; its folder exists or can be made, and is
writable), and the JSON is written before the table is printed, through a temporary file renamed
into place. With ``capability`` the tasks' scores are written as soon as they are done (marked
``"capability": {"unfinished": ...}``) and the file is rewritten when the probes end. If the file
cannot be written at the end (the disk filled, the folder went away), the results go to
``OUTPUT.recovered.json`` or the temp folder (stdout as a last resort) and a ``GraceInputError``
says where: hours of scoring are never lost to a path.

Rationales come from the encoder's cache (on by default), so tasks and runs that share texts
generate them once. mteb runs with no result cache (no result files are written; importing mteb
still creates its empty cache folder, ~/.cache/mteb or $MTEB_CACHE) and no CO2 tracker.
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
import time
import warnings
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from grace.errors import GraceInputError
from grace.evaluation.suite_tasks import SUITE_TASKS

SUITES = tuple(SUITE_TASKS)  # lite, dev, dev-mini

# Metrics kept (besides the main score) per mteb task type.
MAIN_METRICS = {
    "STS": ("cosine_spearman", "cosine_pearson", "spearman", "pearson"),
    "Retrieval": ("ndcg_at_10", "map_at_10", "mrr_at_10", "recall_at_10", "recall_at_100"),
    "Reranking": ("map_at_1000", "mrr_at_10", "ndcg_at_10"),
    "Classification": ("accuracy", "f1", "f1_weighted"),
    "Clustering": ("v_measure", "v_measure_std", "ami"),
    "PairClassification": ("max_ap", "max_f1", "max_accuracy", "cosine_ap"),
}


def build_suite(suite: str = "lite", data_dir: str | Path | None = None, full: bool = False,
                seed: int = 0) -> tuple[list, dict[str, str]]:
    """(mteb tasks to run, {skipped task: reason}) for the files found under ``data_dir``."""
    if suite not in SUITES:
        raise GraceInputError(f"unknown suite '{suite}': choose one of {', '.join(SUITES)}")
    root = Path(data_dir) if data_dir is not None else None
    if root is not None and not root.is_dir():
        raise GraceInputError(f"data directory not found: {root} (expected a folder laid out like "
                              "shared/data: sts/, retrieval/, classification/ ...)")
    tasks, skipped = [], {}
    for spec in SUITE_TASKS[suite]:
        missing = [f for f in spec.files if root is None or not (root / f).is_file()]
        if missing:
            skipped[spec.name] = ("no data directory given" if root is None
                                  else f"{root / missing[0]} not found")
            continue
        tasks.append(spec.build(spec.name, root, seed=seed, **({} if full else spec.lite)))
    return tasks, skipped


def check_output(output) -> Path | None:
    """``output`` as a Path, once it is known that results can be written there: not a folder,
    and its folder exists or can be made inside a writable one. ``GraceInputError`` otherwise
    (called before any work, so a bad path costs nothing)."""
    if output is None:
        return None
    path = Path(output)
    if path.is_dir():
        raise GraceInputError(f"output {path} is a folder; give a file path such as "
                              f"{path / 'results.json'}")
    existing = next(p for p in (path.parent, *path.parent.parents) if p.exists())
    if not existing.is_dir():
        raise GraceInputError(f"cannot write output {path}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError:
        raise GraceInputError(f"cannot write output {path}: folder {existing} is not writable") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise GraceInputError(f"cannot write output {path}: the file is not writable")
    return path


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def save_results(results: dict, output: str | Path) -> Path:
    """Write ``results`` as JSON to ``output`` (a temporary sibling renamed into place), and
    return the path. If that fails, write them to ``OUTPUT.recovered.json``, else to the temp
    folder, else print them to stdout, and raise a ``GraceInputError`` that says where they are."""
    output = Path(output)
    text = json.dumps(_jsonable(results), indent=2) + "\n"
    try:
        _write_atomic(output, text)
        return output
    except OSError as exc:
        reason = exc.strerror or str(exc)
    for fallback in (output.with_name(output.name + ".recovered.json"),
                     Path(tempfile.gettempdir()) / f"grace-eval-{os.getpid()}-{output.name}"):
        try:
            _write_atomic(fallback, text)
        except OSError:
            continue
        raise GraceInputError(f"could not write {output} ({reason}); the results are saved in "
                              f"{fallback}")
    print(text, flush=True)
    raise GraceInputError(f"could not write {output} ({reason}) nor a fallback file; the results "
                          "were printed to stdout above")


def _capability_function():
    try:
        from grace.evaluation.capability import evaluate_capability
    except ImportError as exc:
        raise GraceInputError(f"capability evaluation is not available ({exc})") from None
    return evaluate_capability


def _encoder(model, rationale: str, max_new_tokens: int | None, cache, dtype: str = "float32",
             pooling: str | None = None, system_prompt: str | None = None):
    from grace.encoders.base import GraceEncoder

    options = {"rationale": rationale, "max_new_tokens": max_new_tokens, "pooling": pooling,
               "system_prompt": system_prompt}  # None: the encoder's own (given_options)
    if isinstance(model, GraceEncoder):
        return model.with_options(cache=cache, **options)
    return GraceEncoder.from_pretrained(model, cache=cache, dtype=dtype, **options)


def weights_dtype(model) -> str:
    """The dtype most of ``model``'s parameters have (an LLM2Vec-Gen model keeps its small
    trainable parts in float32 beside a bf16 backbone): "bfloat16", "float32", ..."""
    counts: dict = {}
    for param in model.parameters():
        counts[param.dtype] = counts.get(param.dtype, 0) + param.numel()
    return str(max(counts, key=counts.get)).replace("torch.", "")


def _jsonable(value):
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _mean(values: list[float]) -> float | None:
    """The mean, or None if any value is missing (a task that scored NaN): an average over the
    other tasks would read as the average of them all."""
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)


def evaluate_task(model, task) -> dict[str, Any]:
    """Run one task through ``mteb.evaluate`` (no result cache) and summarise its scores."""
    import mteb
    from sklearn.exceptions import UndefinedMetricWarning

    texts_before, start = model.texts_encoded, time.perf_counter()
    model.requested = []
    with warnings.catch_warnings():
        # mteb's macro precision over labels a weak model never predicts: 0 by definition
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        result = mteb.evaluate(model, task, cache=None, co2_tracker=False, overwrite_strategy="always",
                               show_progress_bar=False, raise_error=True,
                               encode_kwargs={"batch_size": model.encoder.options.batch_size})
    seconds = time.perf_counter() - start
    meta = task.metadata
    quality = _quality(model, model.requested)
    scores = result.task_results[0].scores[meta.eval_splits[0]][0]
    return {
        "type": meta.type,
        "category": meta.category,
        "main_score_name": meta.main_score,
        "main_score": _jsonable(scores["main_score"]),
        "metrics": {k: _jsonable(scores[k]) for k in MAIN_METRICS.get(meta.type, ()) if k in scores},
        "subsample": {"limits": dict(task.limits), "sizes": dict(task.sizes)},
        "texts_encoded": model.texts_encoded - texts_before,
        "seconds": round(seconds, 2),
        "dataset": dict(meta.dataset),
        **({"rationale_quality": quality} if quality is not None else {}),
    }


def _quality(model, keys) -> dict | None:
    """grace.rollout.quality's figures of the rationales of the (role, text) ``keys`` the mteb
    adapter ``model`` recorded (each distinct text once); None without rationales."""
    from grace.models.backbones import end_token_ids
    from grace.rollout.quality import records_quality

    records = [(key[1], model.rationale_ids[key]) for key in dict.fromkeys(keys)
               if key in model.rationale_ids]
    if not records:
        return None
    encoder = model.encoder
    return records_quality(encoder.tokenizer, records, end_token_ids(encoder.model, encoder.tokenizer))


def summarise(tasks: dict[str, dict]) -> tuple[dict[str, float], float | None]:
    """(mean main score per task type, in first-seen order; mean over all tasks)."""
    by_type: dict[str, list[float]] = {}
    for row in tasks.values():
        by_type.setdefault(row["type"], []).append(row["main_score"])
    unscored = [name for name, row in tasks.items() if row["main_score"] is None]
    if unscored:
        warnings.warn(f"no score (NaN) for {', '.join(unscored)}: the averages that include "
                      "them are null", stacklevel=2)
    return {t: _mean(v) for t, v in by_type.items()}, _mean([r["main_score"] for r in tasks.values()])


def print_table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    def pct(value):
        return "-" if value is None else f"{100 * value:.2f}"

    table = Table(title=f"{results['model']} | rationale {results['rationale']}"
                  + (f" ({results['max_new_tokens']} tokens)" if results["rationale"] != "none" else "")
                  + f" | suite {results['suite']}{' (full)' if results['full'] else ''}")
    for column, justify in (("task", "left"), ("type", "left"), ("main metric", "left"),
                            ("score", "right"), ("texts", "right"), ("seconds", "right")):
        table.add_column(column, justify=justify, no_wrap=True)
    for name, row in results["tasks"].items():
        table.add_row(name, row["type"], row["main_score_name"], pct(row["main_score"]),
                      str(row["texts_encoded"]), f"{row['seconds']:.1f}")
    table.add_section()
    for task_type, value in results["averages"].items():
        table.add_row("average", task_type, "", pct(value), "", "")
    table.add_row("overall", "mean over tasks", "", pct(results["overall"]),
                  str(results["texts_encoded"]), f"{results['seconds']:.1f}", style="bold")
    if len(results["averages"]) > 1:
        table.add_row("overall", "mean over types", "", pct(results.get("overall_by_type")), "", "",
                      style="bold")
    notes = dict(results["skipped"])
    capability = results.get("capability")
    if capability:
        table.add_section()
        arc, ppl = capability.get("arc_easy", {}), capability.get("perplexity", {})
        if "acc" in arc:
            table.add_row("ARC-Easy", "capability", "acc", pct(arc["acc"]),
                          str(arc.get("num_questions", "")), f"{arc.get('seconds', 0):.1f}")
            table.add_row("ARC-Easy", "capability", "acc_norm", pct(arc.get("acc_norm")), "", "")
        elif "skipped" in arc:
            table.add_row("ARC-Easy", "capability", "skipped", "-", "", "")
            notes["ARC-Easy"] = arc["skipped"]
        if "perplexity" in ppl:
            value = ppl["perplexity"]
            table.add_row("perplexity", "capability", "held-out text",
                          "-" if value is None else f"{value:.2f}", str(ppl.get("num_texts", "")),
                          f"{ppl.get('seconds', 0):.1f}")
    console = Console()
    if not console.is_terminal:  # a pipe or file: rich would wrap at 80 columns
        console = Console(width=120)
    console.print(table)
    for name, reason in notes.items():
        console.print(f"skipped {name}: {reason}")


def run_suite(model_name_or_encoder, suite: str = "lite", data_dir: str | Path | None = None,
              rationale: str = "greedy", max_new_tokens: int | None = None, full: bool = False,
              output: str | Path | None = None, seed: int = 0, cache=True, capability: bool = False,
              show: bool = True, dtype: str = "float32", pooling: str | None = None,
              system_prompt: str | None = None) -> dict:
    """Evaluate an encoder (a name ``GraceEncoder.from_pretrained`` loads, or a GraceEncoder,
    whose rationale settings are then replaced by ``rationale``/``max_new_tokens``) on a suite;
    ``max_new_tokens`` None keeps the encoder's own (a checkpoint's ``rollout.max_new_tokens``).

    ``cache``: the rationale cache (True = the default file, False = none, or a path).
    ``dtype``: weights' dtype when a name is loaded (bfloat16 is several times faster on CPUs
    with bf16 matrix instructions; scores move slightly).
    ``pooling``: mean | balanced (grace.models.pooling.pool_sums); None keeps the encoder's own.
    ``system_prompt``: the system message every text is encoded under; None keeps the encoder's
    own (a checkpoint's trained prompt, else the paper's).
    ``capability``: also run ``grace.evaluation.capability.evaluate_capability`` (general
    abilities of the policy), stored under "capability". Returns the results dict (see the
    module docstring), writes it to ``output`` as JSON (checked first: ``check_output``; written
    by ``save_results``) and prints a table if ``show``.
    """
    from grace.encoders.encode import RATIONALE_MODES

    if rationale not in RATIONALE_MODES:
        raise GraceInputError(f"unknown rationale mode '{rationale}': choose one of "
                              f"{', '.join(RATIONALE_MODES)}")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise GraceInputError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    output = check_output(output)
    evaluate_capability = _capability_function() if capability else None
    tasks, skipped = build_suite(suite, data_dir, full, seed)  # fails before the model loads

    import mteb

    from grace.evaluation.mteb_adapter import GraceMTEBModel

    start = time.perf_counter()
    encoder = _encoder(model_name_or_encoder, rationale, max_new_tokens, cache, dtype, pooling,
                       system_prompt)
    model = GraceMTEBModel(encoder)
    options = getattr(encoder, "options", None)  # GRACE's EncodeOptions; None for other encoders
    rows = {}
    for task in tasks:
        rows[task.metadata.name] = evaluate_task(model, task)
    averages, overall = summarise(rows)
    results = {
        "model": str(encoder.name),
        "mteb_model": model.mteb_model_meta.name,
        "revision": model.mteb_model_meta.revision,
        "rationale": rationale,
        "max_new_tokens": (max_new_tokens if max_new_tokens is not None
                           else getattr(options, "max_new_tokens", None)),
        "pooling": getattr(options, "pooling", None),
        "system_prompt": getattr(options, "system_prompt", None),
        "dtype": weights_dtype(encoder.model),
        "suite": suite,
        "full": full,
        "seed": seed,
        "data_dir": None if data_dir is None else str(data_dir),
        "tasks": rows,
        "skipped": skipped,
        "averages": averages,
        "overall": overall,
        "overall_by_type": _mean(list(averages.values())),  # mean of the type means (MTEB's view)
        "rationale_quality": _quality(model, list(model.rationale_ids)),  # every text of the run
        "texts_encoded": model.texts_encoded,
        "seconds": None,
        "versions": {"mteb": mteb.__version__, "python": platform.python_version()},
    }
    if evaluate_capability is not None:
        if output is not None:  # the tasks' scores are safe before the probes start
            save_results({**results, "capability": {"unfinished": "the capability probes had not "
                                                    "finished when this file was written"}}, output)
        results["capability"] = _jsonable(
            evaluate_capability(encoder.model, encoder.tokenizer, data_dir=data_dir, full=full))
    results["seconds"] = round(time.perf_counter() - start, 2)
    try:
        if output is not None:
            save_results(results, output)  # the JSON first: a failing table loses nothing
    finally:
        if show:
            print_table(results)
    return results
