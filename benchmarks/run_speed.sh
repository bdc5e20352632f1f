#!/usr/bin/env bash
# Every speed figure of results-speed.md, one after the other on a quiet machine (issue 15).
#   bash benchmarks/run_speed.sh            # ~25 min on 2 cores; optional anchors need ctranslate2
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
run() { echo "== $*"; "$PY" "$@" 2>&1 | grep -v -i "warning\|forward_call\|Loading weights" ; }
run benchmarks/profile_steps.py
run benchmarks/bench_rollout.py
run benchmarks/bench_encode_lite.py --dtypes bfloat16 --repeats 2
run benchmarks/check_bf16_encode.py
run benchmarks/bench_grpo_step.py --batch 2
run benchmarks/bench_grpo_step.py --batch 2 --no-share-prompts
run benchmarks/bench_grpo_step.py --batch 2 --rollout-dtype auto --mixed-precision auto
run benchmarks/bench_grpo_step.py --batch 2 --mixed-bf16
if "$PY" -c "import ctranslate2" 2>/dev/null; then run benchmarks/bench_anchors.py; else echo "== anchors skipped: no ctranslate2"; fi
