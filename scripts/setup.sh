#!/usr/bin/env bash
# Set up Quimbot in ./.venv: idempotent, quick when everything is already there.
#   bash scripts/setup.sh          app + CLI
#   bash scripts/setup.sh --dev    also test tools and Debian's Chromium for the browser tests
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
DEV=0
[[ "${1:-}" == "--dev" ]] && DEV=1

if [[ ! -x .venv/bin/python ]]; then
    echo "quimbot setup: creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi

# llama.cpp is compiled for any x86-64 CPU with AVX2, never -march=native: one machine of this kind
# advertised AMX that it could not run, and a native build died with SIGILL (tutor/llama_build.py).
if [[ -z "${CMAKE_ARGS:-}" ]]; then
    CMAKE_ARGS="$("$PYTHON" -m tutor.llama_build cmake-args)"
    export CMAKE_ARGS
fi

# Hash of the dependency list: skip pip entirely when nothing changed since the last install.
extras=""
[[ $DEV == 1 ]] && extras="[dev]"
stamp=".venv/.quimbot-installed${extras:+-dev}"
want="$(sha256sum pyproject.toml | cut -c1-16)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    echo "quimbot setup: installing Python packages (the first time llama-cpp-python compiles: ~7 min on 2 cores)"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".${extras}"
    echo "$want" > "$stamp"
fi

# pip's wheel cache does not key on CMAKE_ARGS: a wheel built natively on another machine may be here.
# Run the engine on the bundled model in a child process; rebuild it portably when it makes no token.
.venv/bin/python -m tutor.llama_build check-python
# llama.cpp's own server, which the app supervises: built once per version and flags, then checked.
.venv/bin/python -m tutor.llama_build server

if [[ $DEV == 1 ]] && [[ ! -x /usr/bin/chromium ]]; then
    if [[ $(id -u) == 0 ]]; then
        echo "quimbot setup: installing Debian's chromium for the browser tests"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "quimbot setup: /usr/bin/chromium is missing; run 'sudo apt-get install chromium' for the browser tests" >&2
    fi
fi
echo "quimbot setup: ready"
