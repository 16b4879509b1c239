#!/usr/bin/env bash
# One command: set up everything and open the chat app on the bundled default model.
# Extra arguments go to `quimbot app` (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/quimbot app "$@"
