#!/usr/bin/env bash
# Every speed figure of results-speed.md, one after the other on a quiet machine (issue 15).
#   bash benchmarks/speed/run_speed.sh            # ~25 min on 2 cores; optional anchors need ctranslate2
set -u
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
run() { echo "== $*"; "$PY" "$@" 2>&1 | grep -v -i "warning\|forward_call\|Loading weights" ; }
run -m benchmarks.speed.profile_steps
run -m benchmarks.speed.bench_rollout
run -m benchmarks.speed.bench_encode_lite --dtypes bfloat16 --repeats 2
run -m benchmarks.speed.check_bf16_encode
run -m benchmarks.speed.bench_grpo_step --batch 2
run -m benchmarks.speed.bench_grpo_step --batch 2 --no-share-prompts
run -m benchmarks.speed.bench_grpo_step --batch 2 --rollout-dtype auto --mixed-precision auto
run -m benchmarks.speed.bench_grpo_step --batch 2 --mixed-bf16
if "$PY" -c "import ctranslate2" 2>/dev/null; then run -m benchmarks.speed.bench_anchors; else echo "== anchors skipped: no ctranslate2"; fi
