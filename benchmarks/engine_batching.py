"""llama-server alone: aggregate tokens/s of N concurrent streams vs 1, per GGUF file, in one run.

    .venv/bin/python benchmarks/engine_batching.py [--history 12] [--streams 8] [--rounds 3] [GGUF ...]

What ``benchmarks/load.py`` cannot separate: how far the engine itself batches on this machine, with
no app, browser client or store beside it. For each GGUF file (default: the bundled Q4_1 file as it is,
and the Q8_0 copy the app serves it from, ``tutor/weights.py``) it starts llama-server with the app's own
command line (``server_command``: slots, per-slot KV cache, step size, threads, no flash attention),
gives each of ``--streams`` slots a conversation of ``--history`` exchanges (evaluated first, not
timed: the app's prompt cache holds a learner's history the same way), then times one new learner turn
alone and then one on every slot at once: 64 greedy tokens each (``ignore_eos``), so every reply has the
same length whatever the weights. The files take turns round after round (``--rounds``), so machine
noise falls on all of them alike; medians are printed, with each file's ratio N streams / 1 stream and
its tokens/s against the first file's.

Every wait is bounded (server start 120 s, a request --timeout s).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tutor.backends.llama_server import server_command  # noqa: E402
from tutor.engine import EngineConfig  # noqa: E402
from tutor.llama_build import default_gguf, server_binary, stop_process  # noqa: E402
from tutor.prompts import system_prompt  # noqa: E402
from tutor.weights import served_weights, weight_type  # noqa: E402

EXCHANGES = [
    ("Yesterday I go to the store with my friend.",
     "Oh, you went to the store with your friend yesterday? What did you buy there?"),
    ("We buy some apple and a big cake for my sister birthday.",
     "You bought some apples and a big cake for your sister's birthday? How old is she now?"),
    ("She is twelve years and she like chocolate very much.",
     "She is twelve years old and she likes chocolate very much! Was it a chocolate cake?"),
    ("No, it was a strawberry cake because my mother don't like chocolate.",
     "Ah, your mother doesn't like chocolate, so you had a strawberry cake. Did your sister like it?"),
]


def conversation(stream: int, history: int, last: str) -> list[dict]:
    messages = [{"role": "system", "content": system_prompt("intermediate")}]
    for k in range(history):
        learner, tutor = EXCHANGES[k % len(EXCHANGES)]
        messages += [{"role": "user", "content": f"({stream}.{k}) {learner}"}, {"role": "assistant", "content": tutor}]
    return messages + [{"role": "user", "content": last}]


def ask(base: str, messages: list[dict], slot: int, max_tokens: int, timeout: float) -> tuple[int, int]:
    """(completion tokens, prompt tokens) of one greedy reply on ``slot``."""
    body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
            "cache_prompt": True, "id_slot": slot}
    reply = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=timeout)
    reply.raise_for_status()
    usage = reply.json()["usage"]
    return int(usage["completion_tokens"]), int(usage["prompt_tokens"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(binary: Path, model: Path, config: EngineConfig, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(server_command(binary, model, (), config)(port), stdout=subprocess.DEVNULL,
                            stderr=open(log, "w"), start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"llama-server exited ({proc.returncode}) on {model}; see {log}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_process(proc)
    raise SystemExit(f"llama-server did not answer within 120 s on {model}; see {log}")


def one_round(binary: Path, model: Path, args, config: EngineConfig, log: Path) -> dict:
    proc, base = start(binary, model, config, log)
    try:
        convs = [conversation(i, args.history, "ok") for i in range(args.streams)]
        threads = [threading.Thread(target=ask, args=(base, c, i, 1, args.timeout)) for i, c in enumerate(convs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(args.timeout)
        new = [conversation(i, args.history, f"({i}) And then we go to the park and play football.")
               for i in range(args.streams)]
        t0 = time.perf_counter()
        tokens, prompt_tokens = ask(base, new[0], 0, args.max_tokens, args.timeout)
        alone = tokens / (time.perf_counter() - t0)
        # the same slots again, but a new turn: slot 0 has just done this one, so give it its next
        new = [conversation(i, args.history, f"({i}) Then we eat ice cream near the river.") for i in range(args.streams)]
        counts = [0] * args.streams

        def run(i: int) -> None:
            counts[i] = ask(base, new[i], i, args.max_tokens, args.timeout)[0]

        t0 = time.perf_counter()
        threads = [threading.Thread(target=run, args=(i,)) for i in range(args.streams)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(args.timeout)
        together = sum(counts) / (time.perf_counter() - t0)
        return {"alone": alone, "together": together, "prompt_tokens": prompt_tokens}
    finally:
        stop_process(proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("gguf", nargs="*", type=Path, help="GGUF files (default: the bundled one and its Q8_0 copy)")
    parser.add_argument("--history", type=int, default=12, help="exchanges already in each conversation (default 12)")
    parser.add_argument("--streams", type=int, default=8, help="concurrent streams (default 8; at most the slots)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the files take turns (default 3)")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per reply (default 64)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds allowed per request (default 300)")
    args = parser.parse_args(argv)
    binary = server_binary()
    if binary is None or not binary.exists():
        print("llama-server is not built: run `bash scripts/setup.sh` first")
        return 1
    config = EngineConfig.from_env()
    if args.streams > config.slots:
        parser.error(f"--streams {args.streams} is more than the engine's {config.slots} slots")
    models = args.gguf or [default_gguf(), served_weights(default_gguf(), "q8_0")]
    print("Quimbot engine batching benchmark: llama-server alone, the app's command line")
    print(f"machine   : {platform.platform()}, os.cpu_count()={os.cpu_count()}, "
          f"loadavg={'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    for m in models:
        print(f"model     : {m} ({weight_type(m)}, {m.stat().st_size / 1e6:.0f} MB)")
    print(f"workload  : {args.streams} slots with {args.history} exchanges of history each; one new turn alone, "
          f"then one per slot at once; {args.max_tokens} greedy tokens per reply; {args.rounds} rounds")
    results: dict[Path, list[dict]] = {m: [] for m in models}
    with tempfile.TemporaryDirectory(prefix="quimbot-batching-") as tmp:
        for r in range(args.rounds):
            for i, m in enumerate(models):
                res = one_round(binary, m, args, config, Path(tmp) / f"server-{i}.log")
                results[m].append(res)
                print(f"  round {r + 1} {m.name}: alone {res['alone']:.1f} tok/s, {args.streams} at once "
                      f"{res['together']:.1f} tok/s (prompt of the turn alone: {res['prompt_tokens']} tokens)",
                      flush=True)
    print()
    first = None
    summary = {}
    for m in models:
        alone = statistics.median(r["alone"] for r in results[m])
        together = statistics.median(r["together"] for r in results[m])
        first = first or (alone, together)
        summary[str(m)] = {"alone": alone, "together": together}
        print(f"{m.name}: median alone {alone:.1f} tok/s, {args.streams} at once {together:.1f} tok/s, "
              f"ratio {together / alone:.2f}; against the first file: alone {alone / first[0]:.2f}x, "
              f"{args.streams} at once {together / first[1]:.2f}x")
    print(json.dumps({"history": args.history, "streams": args.streams, "rounds": args.rounds, "medians": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
