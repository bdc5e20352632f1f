"""benchmarks/quality/llm2vec_gen_results.py: the report is built from what the stages wrote (here
written by hand), and make_results.py offers --only llm2vec-gen."""

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.quality import llm2vec_gen_results as results

REPO = Path(__file__).resolve().parents[1]


def _suite(overall: float) -> dict:
    return {"tasks": {"TaskA": {"main_score": overall}, "TaskB": {"main_score": overall / 2}},
            "overall": overall, "rationale": "none"}


def test_report_lists_rows_diagnostics_runs_and_decodings(tmp_path):
    diag = tmp_path
    figures = {"texts": 256, "cosine_to_teacher": 0.41, "constant_baseline": 0.22,
               "pairwise_model": 0.12, "pairwise_teacher": 0.05, "ridge_heldout": 0.38,
               "sts_spearman": 0.61, "sts_pairs": 500, "f1_paired": 0.2, "f1_shuffled": 0.1,
               "samples": [{"text": results.QUERY_INSTRUCTION + " Cats purr.", "decoded": "A cat\npurrs.",
                            "answer": "Cats make a purring sound."}]}
    (diag / "diag-llm2vec-gen.json").write_text(json.dumps(figures))
    (diag / "diag-untrained-bare.json").write_text(json.dumps({**figures, "pairwise_model": 0.99}))
    (diag / "train-llm2vec-gen.json").write_text(json.dumps({"seconds": 120.0, "metrics": [
        {"step": s, "loss/recon": r, "loss/align": 0.002, "align/cosine": c}
        for s, r, c in ((1, 9.0, 0.3), (2, 4.5, 0.45))]}))
    lines = results.report_lines(tmp_path, {"base": {**_suite(0.4642), "overall_by_type": 0.4},
                                            "LLM2Vec-Gen": _suite(0.5)})
    text = "\n".join(lines)
    assert "| base | 46.42 | 23.21 | 40.00 | 46.42 |" in text and "| LLM2Vec-Gen | 50.00 | 25.00 | - | 50.00 |" in text
    assert "MiniLM" not in text.split("## Diagnostics")[0].split("| model |")[1]  # rows not run: absent
    assert ("| untrained, bare heads (alignment head 0) | 0.410 | 0.220 | 0.990 | 0.050 | 0.380 | "
            "0.610 | 0.200 | 0.100 |") in text
    assert "2.0 min" in text
    assert "loss/recon 9.0000 -> 4.5000; loss/align 0.0020 -> 0.0020; align/cosine 0.3000 -> 0.4500" in text
    assert "text 'Cats purr.'" in text and "decoded: 'A cat purrs.'" in text


def test_make_results_offers_the_llm2vec_gen_stages_alone():
    out = subprocess.run([sys.executable, "-m", "benchmarks.quality.make_results", "--help"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--only {llm2vec-gen}" in out.stdout
