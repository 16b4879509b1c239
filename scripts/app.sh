#!/usr/bin/env bash
# One command: set up everything and open the chat app on the bundled default model.
# Extra arguments go to `quimbot app` (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# No model hub: typed specs load only from disk and the local cache, unless the operator opts in
# with QUIMBOT_ALLOW_HUB=1.
if [ "${QUIMBOT_ALLOW_HUB:-}" != "1" ]; then
  export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
fi
exec .venv/bin/quimbot app "$@"
