"""Concurrent model lanes: rows/s of `quimbot data generate` at concurrency 16 vs 1, in one run.

    .venv/bin/python benchmarks/generate_concurrency.py [--n 128] [--latency 0.3] [--concurrency 16] [--strict]

Both runs go through the real generation code (train.data.generate.run_generation: the OpenAI-compatible
backend, the quality filter, the schema gate, the in-order writer) against the wire-protocol fake
server of the tests (tests/fakes.py, FakeOpenAI) holding every reply for ``--latency`` seconds, as a
remote model does. The server runs in a process of its own (``python tests/fakes.py openai``), as a
real server would, so its work does not compete with the client for one interpreter
(``--in-process`` runs it in a thread of the benchmark instead). The same entries are generated at concurrency 1 and at ``--concurrency``, into
two fresh files; the script checks that the rows files, the rejects files and the reports are
identical apart from the timing fields, then prints rows/s of both and their ratio.
Target: ratio >= 10 at concurrency 16 (``--strict`` exits 1 when missed; a difference in the output
always exits 1).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT, ROOT / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from fakes import FakeOpenAI, free_port, run_fake_process, stop_fake_process, tutor_like_reply  # noqa: E402

from train.data.generate import TIMING_FIELDS, GenerateConfig, run_generation  # noqa: E402

TARGET = 10.0


def run(spec: str, out: Path, n: int, concurrency: int):
    cfg = GenerateConfig(out=out, n=n, lanes=[spec], rotate_every=16, concurrency=concurrency)
    start = time.perf_counter()
    report = run_generation(cfg, progress=False)
    return report, time.perf_counter() - start


def files(out: Path) -> tuple[bytes, bytes]:
    return out.read_bytes(), out.with_name(out.name + ".rejects.jsonl").read_bytes()


@contextlib.contextmanager
def fake_server(latency: float, in_process: bool):
    """(base_url, peak-in-flight getter) of a FakeOpenAI with tutor-like replies."""
    if in_process:
        with FakeOpenAI(latency=latency, reply=tutor_like_reply) as server:
            yield server.base_url, lambda: server.max_in_flight
        return
    port = free_port()
    proc = run_fake_process(["openai", "--port", str(port), "--latency", str(latency), "--reply", "tutor"])
    try:
        yield f"http://127.0.0.1:{port}/v1", lambda: None
    finally:
        stop_fake_process(proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=128, help="entries per run (default 128)")
    parser.add_argument("--latency", type=float, default=0.3, help="seconds the fake server holds a reply (0.3)")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrency of the second run (16)")
    parser.add_argument("--strict", action="store_true", help=f"exit 1 when the ratio is below {TARGET:g}")
    parser.add_argument("--in-process", action="store_true", help="run the fake server in a thread of this process")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp, fake_server(args.latency, args.in_process) as (base_url, peak_of):
        spec = f"openai:tutor-test?base_url={base_url}&retries=0&timeout=60"
        one, t_one = run(spec, Path(tmp) / "c1.jsonl", args.n, 1)
        many, t_many = run(spec, Path(tmp) / f"c{args.concurrency}.jsonl", args.n, args.concurrency)
        same_files = files(Path(tmp) / "c1.jsonl") == files(Path(tmp) / f"c{args.concurrency}.jsonl")
        strip = set(TIMING_FIELDS) | {"out", "concurrency"}
        same_report = ({k: v for k, v in one.to_dict().items() if k not in strip}
                       == {k: v for k, v in many.to_dict().items() if k not in strip})
        peak = peak_of()

    ratio = many.rows_per_s / one.rows_per_s if one.rows_per_s else float("inf")
    print(f"fake OpenAI-compatible server, {args.latency * 1000:.0f} ms per reply; {args.n} entries per run "
          f"({one.written} rows, {one.rejected} rejected: {100 * one.rejected / args.n:.1f}%)")
    print(f"{'concurrency':>12} {'rows/s':>8} {'entries/s':>10} {'wall s':>7}")
    for c, report, wall in ((1, one, t_one), (args.concurrency, many, t_many)):
        print(f"{c:>12} {report.rows_per_s:>8.2f} {report.entries_per_s:>10.2f} {wall:>7.2f}")
    print(f"ratio rows/s at {args.concurrency} / at 1: {ratio:.1f}x (target >= {TARGET:g}x: "
          f"{'met' if ratio >= TARGET else 'MISSED'})" + (f"; most requests in flight at once: {peak}" if peak else ""))
    print(f"output identical apart from timing fields: rows+rejects {'yes' if same_files else 'NO'}, "
          f"report {'yes' if same_report else 'NO'}")
    if not (same_files and same_report):
        return 1
    return 1 if args.strict and ratio < TARGET else 0


if __name__ == "__main__":
    sys.exit(main())
