"""Replies per second of `quimbot eval compare`'s batched generation vs generating the same
replies one at a time, on the same model (the bundled SmolLM2 through transformers), the same
prompts and greedy settings, in one run. Target: batched >= 2x one-at-a-time.

    .venv/bin/python benchmarks/compare_throughput.py [--prompts 32] [--batch-size 8] [--max-tokens 48]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from train.evaluate.compare import prompt_messages  # noqa: E402
from train.evaluate.prompt_sets import load_prompts
from tutor.backends import GenerationOptions, load_backend  # noqa: E402
from tutor.config import Settings  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=32, help="prompts from the tutoring set (default 32)")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size of the compare path (default 8)")
    parser.add_argument("--max-tokens", type=int, default=48, help="tokens per reply (default 48)")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats per path, interleaved (default 2)")
    args = parser.parse_args()

    prompts = load_prompts()[:args.prompts]
    conversations = [prompt_messages(p) for p in prompts]
    options = GenerationOptions(temperature=0.0, max_tokens=args.max_tokens, seed=0)
    backend = load_backend("hf:default", Settings())
    print(f"machine: {platform.platform()}, cpus={os.cpu_count()}, loadavg={os.getloadavg()[0]:.2f}")
    print(f"model: hf:default (bundled SmolLM2-135M-Instruct, transformers, {backend.device}), "
          f"{len(prompts)} prompts, max_tokens={args.max_tokens}, greedy")
    backend.generate_batch(conversations[:2], options)  # warm-up

    def one_at_a_time() -> list[str]:
        return ["".join(c.text for c in backend.stream(m, options)).strip() for m in conversations]

    def batched() -> list[str]:
        out: list[str] = []
        for start in range(0, len(conversations), args.batch_size):
            out += backend.generate_batch(conversations[start:start + args.batch_size], options)
        return out

    times = {"one at a time": [], "batched (compare)": []}
    replies = {}
    for _ in range(args.repeats):
        for name, fn in (("one at a time", one_at_a_time), ("batched (compare)", batched)):
            start = time.perf_counter()
            replies[name] = fn()
            times[name].append(time.perf_counter() - start)
    rates = {name: len(prompts) / statistics.median(t) for name, t in times.items()}
    for name, rate in rates.items():
        print(f"{name:<20} {statistics.median(times[name]):7.1f} s   {rate:6.2f} replies/s")
    same = sum(a == b for a, b in zip(replies["one at a time"], replies["batched (compare)"]))
    print(f"identical replies: {same}/{len(prompts)} (padding can change a greedy choice on near-ties)")
    ratio = rates["batched (compare)"] / rates["one at a time"]
    print(f"ratio batched / one at a time: {ratio:.2f}x (target >= 2x) {'PASS' if ratio >= 2 else 'MISS'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
