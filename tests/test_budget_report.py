"""benchmarks/quality/budget_report.py: the budget runs' report and curves from hand-written stage
outputs (the layout budget_runs.py writes), and the dev-mini suite the curves are scored on."""

import json

import pytest

from benchmarks.quality import budget_report, budget_runs


def _result(by_type, copy=None):
    quality = None if copy is None else {"copy_rate": copy, "length_mean": 30.0}
    return {"averages": {"STS": by_type - 0.1, "Retrieval": by_type + 0.1}, "overall_by_type": by_type,
            "rationale_quality": quality, "pooling": "mean"}


def _write(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "budget"
    rows = [{"step": s, "time/train_min": s / 4, "reward/contrastive": 0.1 * s,
             "rationale/copy_rate": 0.4, "rationale/length_mean": 31.0} for s in range(1, 9)]
    key = budget_runs.run_key("grace-sup-lr3e-5", 0, 2)
    _write(root / key / "train.json", {
        "run": key, "name": "grace-sup-lr3e-5", "seed": 0, "minutes": 2, "config": "sup-nli",
        "overrides": budget_runs.RUNS["grace-sup-lr3e-5"][1], "steps": 8, "train_minutes": 2.0,
        "samples": [{"step": 8, "text": "A | cat.", "rationale": "A cat\nsits.", "reward": 0.1}],
        "metrics": rows})
    _write(root / key / "curve-4.json", _result(0.40))
    _write(root / key / "curve-8.json", _result(0.45))
    _write(root / key / "dev.json", _result(0.50, copy=0.25))
    _write(root / "references" / "echo-dev.json", _result(0.55, copy=1.0))
    _write(root / "references" / "echo-dev-mini.json", _result(0.52, copy=1.0))
    cap = {"arc_easy": {"acc": 0.5, "num_questions": 300}, "perplexity": {"perplexity": 200.0}}
    _write(root / "references" / "capability.json", cap)
    _write(root / key / "capability.json", {**cap, "perplexity": {"perplexity": 203.0}})
    return root


def test_report_lists_every_run_with_its_changed_settings_and_scores(data, tmp_path):
    out = budget_report.write(data, tmp_path, budget_runs.GRACE, budget_runs.BASELINE)
    text = out.read_text()
    key = "grace-sup-lr3e-5-s0-2m"
    line = next(x for x in text.splitlines() if x.startswith(f"| {key} "))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] == "sup-nli: optim.learning_rate=3e-05, reward.variant=reference"
    assert cells[2:6] == ["0", "2.0", "8", "40.00 -> 45.00"]
    assert cells[6:] == ["45.00 (8)", "50.00", "-", "0.25 / 30.0"]  # dev and lite: as read
    assert "| echo | 52.00 | 55.00 | - | 1.00 / 30.0 |" in text
    assert f"| {key} | 40.00 | 60.00 | 50.00 |" in text  # per category on dev
    assert "| base (untrained) | 0.5000 | 300 | 200.00 | +0.0% |" in text
    assert f"| {key} | 8 | A / cat. | A cat sits. |" in text  # table-safe sample rationales
    assert f"| {key} | 0.5000 | 300 | 203.00 | +1.5% |" in text
    assert (tmp_path / "results-budget-curves.png").stat().st_size > 1000


def test_the_selected_checkpoint_is_the_best_on_dev_mini_and_the_earliest_of_equals(tmp_path, monkeypatch):
    monkeypatch.setattr(budget_runs, "DATA", tmp_path)
    assert budget_runs.selected_step("run") is None
    for step, score in ((25, 0.40), (50, 0.47), (75, 0.47), (100, 0.30)):
        _write(tmp_path / "run" / f"curve-{step}.json", _result(score))
    assert budget_runs.selected_step("run") == 50
    curve = {s: _result(v) for s, v in ((25, 0.40), (50, 0.47), (75, 0.47))}
    assert budget_report.best_checkpoint(curve) == (50, 0.47)


def test_the_curve_stage_keeps_only_the_newest_and_the_best_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(budget_runs, "DATA", tmp_path / "data")
    scores = {25: 0.40, 50: 0.47, 75: 0.45, 100: 0.30}
    out = tmp_path / "run"
    for step in scores:
        (out / f"checkpoint-{step}").mkdir(parents=True)

    def fake_evaluate(source, suite, how, data_dir, target, cache):
        _write(target, _result(scores[int(source.rsplit("-", 1)[1])]))

    monkeypatch.setattr(budget_runs, "evaluate", fake_evaluate)
    budget_runs.curve_stage(out, "key", ("greedy", 32, "mean"), tmp_path, tmp_path / "cache")
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-100", "checkpoint-50"]
    assert sorted(p.name for p in (tmp_path / "data" / "key").iterdir()) == [
        "curve-100.json", "curve-25.json", "curve-50.json", "curve-75.json"]


def test_the_pooling_check_scores_the_selected_checkpoint_with_the_other_pooling(data, tmp_path, monkeypatch):
    monkeypatch.setattr(budget_runs, "DATA", data)
    key = budget_runs.run_key("grace-sup-lr3e-5", 0, 2)
    (tmp_path / "work" / key / "checkpoint-8").mkdir(parents=True)
    asked = []

    def fake_evaluate(source, suite, how, data_dir, target, cache):
        asked.append((source.rsplit("/", 1)[1], suite, how, target.name))
        _write(target, {**_result(0.48), "model": source, "pooling": how[2]})

    monkeypatch.setattr(budget_runs, "evaluate", fake_evaluate)
    with pytest.raises(SystemExit, match="no selected checkpoint yet"):
        budget_runs.pooling_check(tmp_path / "work", tmp_path, "grace-sup-lr3e-5", 0, 2)
    _write(data / key / "selected.json", {"step": 8})
    budget_runs.pooling_check(tmp_path / "work", tmp_path, "grace-sup-lr3e-5", 0, 2)
    assert asked == [("checkpoint-8", "dev-mini", ("greedy", 32, "balanced"), "dev-mini-balanced.json")]
    budget_runs.pooling_check(tmp_path / "work", tmp_path, "grace-sup-lr3e-5", 0, 2)  # scored: kept
    assert len(asked) == 1
    budget_runs.pooling_check(tmp_path / "work", tmp_path, "grace-sup-lr3e-5", 0, 2, None, ("dev-mini", "dev"))
    assert asked[1:] == [("checkpoint-8", "dev", ("greedy", 32, "balanced"), "dev-balanced.json")]
    del asked[1:]
    gone = budget_runs.run_key("grace-sup-lr3e-5", 1, 2)
    _write(data / gone / "selected.json", {"step": 8})  # its checkpoint was never kept here
    with pytest.raises(SystemExit, match="checkpoint-8 is gone, so dev-mini with balanced pooling"):
        budget_runs.pooling_check(tmp_path / "work", tmp_path, "grace-sup-lr3e-5", 1, 2)
    budget_runs.pooling_check(tmp_path / "work", tmp_path, "infonce", 0, 2)  # no rationale: skipped
    assert len(asked) == 1
    # a run trained with the balanced pooling: its curve is the balanced column
    other = budget_runs.run_key("grace-sup-balanced", 0, 2)
    _write(data / other / "train.json", {"run": other, "name": "grace-sup-balanced", "seed": 0,
                                         "minutes": 2, "config": "sup-nli", "steps": 4, "train_minutes": 2.0,
                                         "overrides": budget_runs.RUNS["grace-sup-balanced"][1], "metrics": []})
    _write(data / other / "curve-4.json", {**_result(0.44), "pooling": "balanced"})
    _write(data / other / "dev-mini-mean.json", {**_result(0.41), "model": "w/checkpoint-4", "pooling": "mean"})
    _write(data / "references" / "echo_balanced-dev-mini.json", _result(0.50))
    text = budget_report.write(data, tmp_path, budget_runs.GRACE, budget_runs.BASELINE).read_text()
    assert "| untrained, echo | 52.00 | 50.00 |" in text
    assert f"| {key} (step 8) | 45.00 | 48.00 |" in text  # its own pooling (mean) from the curve
    assert f"| {other} (step 4) | 41.00 | 44.00 |" in text
    # the whole dev suite read both ways: its own dev.json beside --pooling-check dev's file
    _write(data / key / "dev.json", {**_result(0.47), "model": "w/checkpoint-8", "pooling": "mean"})
    _write(data / key / "dev-balanced.json", {**_result(0.49), "model": "w/checkpoint-8", "pooling": "balanced"})
    text = budget_report.write(data, tmp_path, budget_runs.GRACE, budget_runs.BASELINE).read_text()
    dev = text[text.index("## Pooling at evaluation (dev,"):]
    assert f"| {key} (step 8) | 47.00 | 49.00 |" in dev
    # a lite reading with the other pooling (--pooling-check lite) is a row of the lite table
    _write(data / key / "lite-balanced.json", {**_result(0.46), "model": "w/checkpoint-8", "pooling": "balanced"})
    text = budget_report.write(data, tmp_path, budget_runs.GRACE, budget_runs.BASELINE).read_text()
    lite = text[text.index("## Per category on lite"):]
    assert f"| {key} (balanced) | 36.00 | 56.00 | 46.00 |" in lite
    # ... and every run's row names each reading (its own pooling's first, then the others)
    line = next(x for x in text.splitlines() if x.startswith(f"| {key} | "))
    assert [c.strip() for c in line.strip("|").split("|")][7:9] == ["47.00; balanced 49.00", "balanced 46.00"]


def test_a_text_share_reading_is_its_own_file_and_column(data, tmp_path, monkeypatch):
    """--reading text:0.7: the selected checkpoint read with that text share goes to
    dev-mini-text0.7.json and the pooling table gains a column for it beside mean and balanced;
    the final table's balanced lite reading is untouched by it."""
    from benchmarks.quality import budget_final

    monkeypatch.setattr(budget_runs, "DATA", data)
    key = budget_runs.run_key("grace-sup-lr3e-5", 0, 2)
    (tmp_path / "work" / key / "checkpoint-8").mkdir(parents=True)
    _write(data / key / "selected.json", {"step": 8})
    asked = []

    def fake_evaluate(source, suite, how, data_dir, target, cache):
        asked.append((suite, how, target.name))
        _write(target, {**_result(0.43 if how[2] == "balanced" else 0.47), "model": source, "pooling": how[2]})

    monkeypatch.setattr(budget_runs, "evaluate", fake_evaluate)
    budget_runs.pooling_check(tmp_path / "work", tmp_path, "grace-sup-lr3e-5", 0, 2)
    budget_runs.pooling_check(tmp_path / "work", tmp_path, "grace-sup-lr3e-5", 0, 2, reading="text:0.7")
    _write(data / "references" / "echo_balanced-dev-mini.json", _result(0.50))
    assert asked == [("dev-mini", ("greedy", 32, "balanced"), "dev-mini-balanced.json"),
                     ("dev-mini", ("greedy", 32, "text:0.7"), "dev-mini-text0.7.json")]
    text = budget_report.write(data, tmp_path, budget_runs.GRACE, budget_runs.BASELINE).read_text()
    assert ("| dev-mini | mean (the paper) | balanced (text and rationale equal) | text:0.7 (text 0.7) |"
            in text)
    assert f"| {key} (step 8) | 45.00 | 43.00 | 47.00 |" in text  # curve (mean), balanced, text:0.7
    assert "| untrained, echo | 52.00 | 50.00 | - |" in text  # not read with a text share
    run = budget_report.load_runs(data)[key]
    assert budget_final.pooled_lite(run, "balanced") is None  # no lite reading: none is borrowed


def test_runs_are_evaluated_with_their_own_rationale_settings():
    assert budget_runs.rationale_of("grace-sup") == ("greedy", budget_runs.RATIONALE_TOKENS, "mean")
    assert budget_runs.rationale_of("grace-sup-balanced")[2] == "balanced"
    assert budget_runs.rationale_of("infonce") == ("none", budget_runs.RATIONALE_TOKENS, "mean")
    assert budget_runs.run_key("simcse", 1, 45.0) == "simcse-s1-45m"


def test_dev_mini_is_four_dev_tasks_of_four_types():
    from grace.evaluation.suite_tasks import SUITE_TASKS

    mini = SUITE_TASKS["dev-mini"]
    dev = {t.name: t for t in SUITE_TASKS["dev"]}
    assert [t.name for t in mini] == ["DevSTSB", "DevHotpotQA", "DevTREC", "DevQuoraPairs"]
    for task in mini:  # the same data and builder, smaller subsamples
        assert task.files == dev[task.name].files and task.build is dev[task.name].build
        assert all(v <= dev[task.name].lite[k] for k, v in task.lite.items())


def test_unscored_training_texts_leave_out_every_text_a_suite_scores(tmp_path, monkeypatch):
    from benchmarks.quality import unscored_data
    from test_evaluation import LABELLED, QUESTIONS, make_data_dir

    monkeypatch.setenv("GRACE_CACHE", str(tmp_path / "cache"))
    root = make_data_dir(tmp_path / "data")
    (root / "texts").mkdir()
    (root / "texts/wiki-sentences.txt").write_text("A wiki sentence.\nAnother one.\n")
    (root / "sts/stsb-dev.jsonl").write_text((root / "sts/stsb-test.jsonl").read_text())
    (root / "retrieval/scifact/qrels-train.tsv").write_text(
        (root / "retrieval/scifact/qrels-test.tsv").read_text())
    rows = [{"text": f"{t} ({k})", "label": label} for k in range(3)  # 12 per intent, as the dev split needs
            for label, texts in LABELLED.items() for t in texts]
    (root / "classification/banking77-train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    questions = [{"text": f"{t} ({k})", "label": label} for k in range(6)  # 30 per type: 8-shot
                 for label, texts in QUESTIONS.items() for t in texts]  # pools leave some out
    (root / "classification/trec-train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in questions))
    files = unscored_data.write_unscored(root, tmp_path / "out")
    questions = files["questions"].read_text().splitlines()
    scored = unscored_data.scored_texts(root)
    trec = [json.loads(x)["text"] for x in (root / "classification/trec-train.jsonl").read_text().splitlines()]
    assert questions and set(questions) < set(trec)
    assert not {unscored_data.norm(q) for q in questions} & scored
    assert len(questions) <= len(trec) - 18 - 24  # the test side (18) and a few-shot pool are out
    mixed = files["mixed"].read_text().splitlines()
    assert sorted(mixed) == sorted(questions + files["titles"].read_text().splitlines()
                                   + ["A wiki sentence.", "Another one."])


def test_the_prompt_references_read_the_untrained_model_under_their_prompt(tmp_path, monkeypatch):
    """By default the references use the paper's prompt; one of PROMPTS is read only when named,
    under its own system message (and the trained runs of that prompt carry the same text)."""
    monkeypatch.setattr(budget_runs, "DATA", tmp_path / "data")
    asked = []

    def fake_evaluate(source, suite, how, data_dir, target, cache, system_prompt=None):
        asked.append((target.name, how, system_prompt))

    monkeypatch.setattr(budget_runs, "evaluate", fake_evaluate)
    budget_runs.run_references(tmp_path, tmp_path, ["dev-mini"], False)
    assert [a[0] for a in asked] == ["base-dev-mini.json", "echo-dev-mini.json", "plus_reasoning-dev-mini.json",
                                     "echo_balanced-dev-mini.json", "plus_reasoning_balanced-dev-mini.json"]
    assert {a[2] for a in asked} == {None}
    del asked[:]
    budget_runs.run_references(tmp_path, tmp_path, ["dev-mini"], False, ["plus_reasoning_balanced_topic"])
    assert asked == [("plus_reasoning_balanced_topic-dev-mini.json", ("greedy", 32, "balanced"),
                      budget_runs.PROMPTS["topic"])]
    trained = budget_runs.RUNS["grace-unsup-mixed-contrastive-anchor10-topic"][1]
    assert trained["data.system_prompt"] == budget_runs.PROMPTS["topic"]
    assert {k: v for k, v in trained.items() if k != "data.system_prompt"} == \
        budget_runs.RUNS["grace-unsup-mixed-contrastive-anchor10"][1]
