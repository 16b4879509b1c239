#!/usr/bin/env bash
# One command: set up everything and run the whole test suite (the same command CI runs).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
# The layers are a contract (pyproject.toml [tool.importlinter]): a forbidden import fails here, first.
.venv/bin/lint-imports --no-cache || { echo "quimbot test: an import breaks a layer contract (README \"Architecture\")" >&2; exit 1; }
exec .venv/bin/python -m pytest "$@"
