#!/usr/bin/env bash
# README command 1: set up .venv, then run the embedded default offline (grace demo):
# SmolLM2-135M, Lee similarity before/after a short unsupervised GRACE run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/grace demo "$@"
