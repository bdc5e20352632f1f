#!/usr/bin/env bash
# README command 2: set up .venv (with the test extra: pytest, httpx, playwright), install
# Debian's Chromium for the browser test when it is missing and we may, then run the test
# suite offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/install_chromium.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -q "$@"
