"""A class of learners at once: aggregate tokens/s of the real app at 8 sessions vs 1 session.

Starts the real app (``python -m quimbot.cli app --preload``, the default model, a temporary
database unless --db) in a subprocess on a free port, then drives it with gradio_client over HTTP,
exactly as browsers do (the ``/send`` endpoint of the learner page), in two phases on the same
warm server:

  1 session   one gradio_client.Client sends --turns messages, one after the other;
  N sessions  --sessions clients, one thread each, send --turns messages each, all at once
              (a barrier starts them together).

One warm-up turn (its own conversation, not counted) runs first, so the model and the page are hot.

Tokens are the app's own count, read from its SQLite log afterwards: ``turns.completion_tokens``
of every assistant turn: the engine's own count (llama-server's ``usage`` figures on the last streamed
chunk; the in-process engine tokenizes the finished reply with the model's tokenizer). Aggregate
tokens/s of a phase = all completion tokens of the phase's replies / the phase's wall time (first
message sent -> last reply received, client side).
The ratio printed is aggregate tokens/s at N sessions / aggregate tokens/s at 1 session, measured in
the same run against the same server.

Greedy decoding (--temperature 0) and a fixed --seed by default, and every session sends the same
sentences in the same order (only a "[phase session.turn]" tag differs), so both phases do the same
work per session.

Checked after the run (exit 1 with --strict when any fails): no ⚠️ status and no exception in any
turn; the database holds one conversation per session with exactly 2 x --turns turns, indexed in
order, every user turn being that session's own messages in the order it sent them (every turn
logged exactly once, never mixed up between learners), every reply 'ok'; what each client was shown
(its chat history) is its own messages; PRAGMA integrity_check is ok.

With the default engine (llama-server, one slot per conversation, continuous batching) the N sessions'
replies decode together, so the ratio measures how far batching pays on this machine; with
--engine in-process (one reply at a time, a lock around the model) above 1.0 can only come from
overlapping one session's per-turn overhead (HTTP, Gradio queue, store writes, detector) with another's
generation. QUIMBOT_ENGINE_ARGS passes through to the app, to compare engine flags ("-fa off").
Other processes on the machine skew everything (llama.cpp uses every core): the CPU they used during
each phase is measured from /proc and printed (the engine, the app, these clients, other processes), with a
warning above 0.2 cores for other processes.

Usage:  .venv/bin/python benchmarks/load.py [--sessions N] [--turns N] [--max-tokens N] [--db PATH]
"""

from __future__ import annotations

import argparse
import html
import os
import platform
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SENTENCES = [
    "Yesterday I go to the park with my friend and we eat ice cream.",
    "My sister have two cats and she love them very much.",
    "Last weekend we watched a film, it was very interesting for me.",
    "I am study English because I want to work in London.",
    "Tomorrow I will going to visit my grandmother in the village.",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def message(phase: str, session: int, turn: int) -> str:
    return f"[{phase} {session}.{turn}] {SENTENCES[turn % len(SENTENCES)]}"


def wait_for_http(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the app exited with code {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise SystemExit(f"the app did not answer at {url} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def history_users(history) -> list[str]:
    out = []
    for m in history or []:
        if m.get("role") != "user":
            continue
        c = m.get("content")
        out.append(c if isinstance(c, str) else "".join(p.get("text", "") for p in c if isinstance(p, dict)))
    return out


def run_phase(url: str, phase: str, sessions: int, turns: int, model: str, level: str, timeout: float) -> dict:
    """``sessions`` clients in threads, ``turns`` messages each; returns timings, errors and histories."""
    from gradio_client import Client

    clients = [Client(url, verbose=False) for _ in range(sessions)]  # config fetch: before the clock starts
    barrier = threading.Barrier(sessions + 1)
    errors: list[tuple] = []
    latencies: list[float] = []
    histories: dict[int, list] = {}
    lock = threading.Lock()

    def learner(i: int, client) -> None:
        barrier.wait()
        out = None
        for t in range(turns):
            t0 = time.perf_counter()
            try:
                out = client.predict(message(phase, i, t), model, level, api_name="/send")
            except Exception as exc:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append((phase, i, t, f"exception: {exc!r}"[:300]))
                continue
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)
                if "⚠️" in str(out[2]):
                    errors.append((phase, i, t, str(out[2])[:300]))
        histories[i] = out[0] if out else []

    threads = [threading.Thread(target=learner, args=(i, c), daemon=True) for i, c in enumerate(clients)]
    for th in threads:
        th.start()
    barrier.wait()
    start = time.perf_counter()
    deadline = time.monotonic() + timeout
    for th in threads:
        th.join(timeout=max(0.0, deadline - time.monotonic()))
    wall = time.perf_counter() - start
    stuck = sum(th.is_alive() for th in threads)
    if stuck:
        errors.append((phase, "-", "-", f"{stuck} session(s) still running after --timeout {timeout:.0f} s"))
    for c in clients:
        try:
            c.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass
    return {"phase": phase, "sessions": sessions, "turns": turns, "wall_s": wall, "errors": errors,
            "latencies": latencies, "histories": histories}


def check_phase(db: sqlite3.Connection, result: dict) -> tuple[list[str], dict]:
    """Verify the phase's conversations in the app's database; return problems and token totals."""
    phase, sessions, turns = result["phase"], result["sessions"], result["turns"]
    problems: list[str] = []
    totals = {"completion_tokens": 0, "prompt_tokens": 0, "replies": 0, "latency_ms": [], "ttft_ms": []}
    found: dict[int, int] = {}
    for (cid,) in db.execute("SELECT id FROM conversations ORDER BY id"):
        first = db.execute("SELECT content FROM turns WHERE conversation_id = ? AND idx = 0", [cid]).fetchone()
        if not first or not first[0].startswith(f"[{phase} "):
            continue
        session = int(first[0].split()[1].split(".")[0])
        if session in found:
            problems.append(f"{phase}: session {session} has two conversations (#{found[session]} and #{cid})")
            continue
        found[session] = cid
        rows = db.execute("SELECT idx, role, content, status, completion_tokens, prompt_tokens, latency_ms, "
                          "created_at, first_token_ms FROM turns WHERE conversation_id = ? ORDER BY idx",
                          [cid]).fetchall()
        if [r[0] for r in rows] != list(range(2 * turns)):
            problems.append(f"{phase} session {session}: {len(rows)} turns logged, expected {2 * turns} "
                            f"(idx 0..{2 * turns - 1})")
        users = [r[2] for r in rows if r[1] == "user"]
        if users != [message(phase, session, t) for t in range(turns)]:
            problems.append(f"{phase} session {session}: its user turns are not its own messages in order")
        replies = [r for r in rows if r[1] == "assistant"]
        bad = [r for r in rows if r[3] != "ok"]
        if bad:
            problems.append(f"{phase} session {session}: {len(bad)} turn(s) not 'ok' ({bad[0][3]})")
        if [r[1] for r in rows] != ["user", "assistant"] * (len(rows) // 2):
            problems.append(f"{phase} session {session}: turns do not alternate user/assistant")
        by_idx = {r[0]: r for r in rows}
        for r in replies:
            if r[3] == "ok":
                totals["completion_tokens"] += r[4] or 0
                totals["prompt_tokens"] += r[5] or 0
                totals["replies"] += 1
                totals["latency_ms"].append(r[6] or 0.0)
                asked = by_idx.get(r[0] - 1)
                if asked is not None and r[8] is not None:
                    # what the learner waits for: their message stored -> the reply's first token
                    # (prompt building, token counting, waiting for the engine, prompt evaluation)
                    queued = (datetime.fromisoformat(r[7]) - datetime.fromisoformat(asked[7])).total_seconds()
                    totals["ttft_ms"].append(queued * 1000 + r[8])
        shown = history_users(result["histories"].get(session))
        if [html.unescape(s) for s in shown] != [message(phase, session, t) for t in range(turns)]:
            problems.append(f"{phase} session {session}: the client was shown {len(shown)} user messages that "
                            "are not exactly its own")
        last_reply = next((r[2] for r in reversed(replies)), None)
        shown_replies = [m for m in result["histories"].get(session) or [] if m.get("role") == "assistant"]
        if last_reply is not None and shown_replies:
            c = shown_replies[-1].get("content")
            c = c if isinstance(c, str) else "".join(p.get("text", "") for p in c if isinstance(p, dict))
            if html.unescape(c) != last_reply:
                problems.append(f"{phase} session {session}: the last reply shown differs from the logged one")
    missing = sorted(set(range(sessions)) - set(found))
    if missing:
        problems.append(f"{phase}: no conversation logged for session(s) {missing}")
    return problems, totals


def _stat_fields(pid: int | str) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2:].split()


def _proc_cpu(pid: int) -> float:
    """utime + stime of ``pid`` (all threads), in seconds."""
    parts = _stat_fields(pid)
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (the app's llama-server), from the parent ids in /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int(_stat_fields(entry.name)[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cpu_seconds(pid: int) -> tuple[float, float, float, float]:
    """(CPU seconds all processes have used, CPU seconds of the app ``pid``, its child processes (the
    engine) and this process, CPU seconds of the children alone, CPU seconds of this process (the
    clients) alone), from /proc; their growth over a phase tells how much of the machine other processes
    took. NaN off Linux. A child that exits during a phase takes its seconds with it; the engine lives for
    the whole run."""
    try:
        tick = os.sysconf("SC_CLK_TCK")
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[:8])
        busy = (user + nice + system + irq + softirq + steal) / tick
        engine = 0.0
        for child in _descendants(pid):
            try:
                engine += _proc_cpu(child)
            except OSError:
                pass
        clients = _proc_cpu(os.getpid())
        return busy, _proc_cpu(pid) + clients + engine, engine, clients
    except (OSError, ValueError, IndexError):
        return float("nan"), float("nan"), float("nan"), float("nan")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Load test of the real app: N concurrent chat sessions through gradio_client vs one "
                    "session, on the default model; prints aggregate tokens/s of both and their ratio.")
    parser.add_argument("--sessions", type=int, default=8, help="concurrent sessions in the load phase (default 8)")
    parser.add_argument("--turns", type=int, default=25, help="messages per session, in both phases (default 25)")
    parser.add_argument("--max-tokens", type=int, default=64,
                        help="reply length cap passed to the app (default 64; the app's own default is 200)")
    parser.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default 0: greedy)")
    parser.add_argument("--seed", type=int, default=1234, help="sampling seed (default 1234)")
    parser.add_argument("--model", default="default", help="model spec every session picks (default: default)")
    parser.add_argument("--level", default="beginner", help="learner level every session picks (default beginner)")
    parser.add_argument("--db", type=Path, default=None,
                        help="the app's SQLite file (must not exist yet; default: a temp dir, deleted afterwards)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat the 1-session and N-session phases this many times, alternating their order "
                             "(default 1); the ratio uses all rounds' tokens and wall time, per-round ratios "
                             "are printed too")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per phase (default 3600)")
    parser.add_argument("--engine", default=None, choices=["llama-server", "in-process"],
                        help="the app's engine (default: the app's own default, llama-server)")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when any turn failed or a logging check failed")
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.turns < 1 or args.rounds < 1:
        parser.error("--sessions, --turns and --rounds must be at least 1")
    if args.db is not None and args.db.exists():
        parser.error(f"--db {args.db} exists already; give a new file so only this run's turns are counted")

    tmpdir = Path(tempfile.mkdtemp(prefix="quimbot-load-"))
    try:
        return run(args, tmpdir)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)  # the app log and empty folders; a --db file lives elsewhere


def run(args: argparse.Namespace, tmpdir: Path) -> int:
    db_path = args.db or tmpdir / "quimbot.db"
    log_path = tmpdir / "app.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "QUIMBOT_DB": str(db_path), "QUIMBOT_RUNS_DIR": str(tmpdir / "runs"),
           "QUIMBOT_EXPORTS_DIR": str(tmpdir / "exports"), "GRADIO_ANALYTICS_ENABLED": "False",
           "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "quimbot.cli", "app", "--port", str(port), "--preload",
           "--max-tokens", str(args.max_tokens), "--temperature", str(args.temperature), "--seed", str(args.seed)]
    if args.engine:
        cmd += ["--engine", args.engine]

    cpus = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = cpus
    print("Quimbot load benchmark: concurrent chat sessions through gradio_client, the real app")
    print(f"machine   : {platform.platform()}, python {platform.python_version()}, "
          f"os.cpu_count()={cpus}, usable cpus={usable}, "
          f"loadavg={'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"app       : {' '.join(cmd[1:])}")
    print(f"store     : {db_path}")
    print(f"workload  : 1 session x {args.turns} turns, then {args.sessions} sessions x {args.turns} turns at once; "
          f"model {args.model}, level {args.level}, max_tokens={args.max_tokens}, "
          f"temperature={args.temperature}, seed={args.seed}")
    print("tokens    : turns.completion_tokens from the app's log (llama-server's usage count; the in-process "
          "engine re-tokenizes the reply)")

    log = open(log_path, "w")
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_http(url, proc, log_path, timeout=300)
        print(f"started   : {url} in {time.perf_counter() - t:.1f} s (model preloaded)")
        warm = run_phase(url, "warmup", 1, 1, args.model, args.level, args.timeout)
        if warm["errors"]:
            print(f"warm-up failed: {warm['errors']}\n{log_path.read_text()[-3000:]}")
            return 1
        print()
        results = []
        for rnd in range(args.rounds):
            order = [("solo", 1), ("class", args.sessions)]
            for kind, n in order if rnd % 2 == 0 else order[::-1]:  # alternate the order to balance drift
                busy0, own0, engine0, clients0 = cpu_seconds(proc.pid)
                r = run_phase(url, f"{kind}{rnd + 1}", n, args.turns, args.model, args.level, args.timeout)
                busy1, own1, engine1, clients1 = cpu_seconds(proc.pid)
                others = max(0.0, (busy1 - busy0) - (own1 - own0)) / r["wall_s"]
                engine = (engine1 - engine0) / r["wall_s"]
                clients = (clients1 - clients0) / r["wall_s"]
                r.update(kind=kind, round=rnd + 1, others=others, engine=engine, clients=clients)
                print(f"  round {rnd + 1}: {n} session(s), {n * args.turns} turns in {r['wall_s']:.1f} s, "
                      f"{len(r['errors'])} error(s); the engine used {engine:.2f} cores, the app "
                      f"{(own1 - own0) / r['wall_s'] - engine - clients:.2f}, these clients {clients:.2f}, "
                      f"other processes {others:.2f}")
                results.append(r)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()

    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    problems = []
    for r in results:
        p, r["totals"] = check_phase(db, r)
        problems += p
        r["tps"] = r["totals"]["completion_tokens"] / r["wall_s"] if r["wall_s"] > 0 else float("nan")
    n_conversations = db.execute("SELECT COUNT(*) FROM conversations").fetchone()[0]
    expected_conversations = 1 + args.rounds * (1 + args.sessions)  # warm-up, then solo + class per round
    if n_conversations != expected_conversations:
        problems.append(f"{n_conversations} conversations in the log, expected {expected_conversations}")
    integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    if integrity != "ok":
        problems.append(f"integrity_check: {integrity}")
    # replies generated again because they asked what the tutor had asked before (tutor.fresh): their
    # tokens are not in the count, their time is
    asked_again = db.execute("SELECT COUNT(*) FROM events WHERE kind = 'asked_again'").fetchone()[0]
    spelled = db.execute("SELECT COUNT(*) FROM events WHERE kind = 'spelling_fixed'").fetchone()[0]
    db.close()

    print()
    hdr = (f"{'phase':<9} {'sessions':>8} {'turns':>6} {'errors':>6} {'wall s':>8} {'tokens':>7} "
           f"{'tok/s':>7} {'turns/s':>7} {'turn s med':>10} {'p95':>6} {'gen ms med':>10} {'others':>6}")
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        lat, gen = r["latencies"], r["totals"]["latency_ms"]
        print(f"{r['phase']:<9} {r['sessions']:>8} {r['sessions'] * r['turns']:>6} {len(r['errors']):>6} "
              f"{r['wall_s']:>8.1f} {r['totals']['completion_tokens']:>7} {r['tps']:>7.1f} "
              f"{len(lat) / r['wall_s']:>7.2f} {statistics.median(lat) if lat else float('nan'):>10.2f} "
              f"{pct(lat, 0.95):>6.2f} {statistics.median(gen) if gen else float('nan'):>10.0f} {r['others']:>6.2f}")
    print()

    def aggregate(kind: str) -> float:
        phases = [r for r in results if r["kind"] == kind]
        return sum(r["totals"]["completion_tokens"] for r in phases) / sum(r["wall_s"] for r in phases)

    solo, group = aggregate("solo"), aggregate("class")
    ratio = group / solo if solo else float("nan")
    errors = sum(len(r["errors"]) for r in results)
    print(f"sessions: {args.sessions}   turns per session: {args.turns}   rounds: {args.rounds}   "
          f"turns: {sum(r['sessions'] * r['turns'] for r in results)}   errors: {errors}")
    print(f"aggregate tokens/s: 1 session {solo:.1f}, {args.sessions} sessions {group:.1f}")
    print(f"ratio ({args.sessions} sessions / 1 session): {ratio:.3f}   (target >= 2.0)")

    def ttft(kind: str) -> float:
        values = [v for r in results if r["kind"] == kind for v in r["totals"]["ttft_ms"]]
        return statistics.median(values) if values else float("nan")

    solo_ttft, class_ttft = ttft("solo"), ttft("class")
    print(f"time to first token, median: 1 session {solo_ttft:.0f} ms, {args.sessions} sessions {class_ttft:.0f} ms; "
          f"ratio {class_ttft / solo_ttft:.2f}   (target <= 3.0; from the log: message stored -> first token)")
    if args.rounds > 1:
        per_round = [next(r["tps"] for r in results if r["round"] == k and r["kind"] == "class")
                     / next(r["tps"] for r in results if r["round"] == k and r["kind"] == "solo")
                     for k in range(1, args.rounds + 1)]
        print(f"ratio per round: {', '.join(f'{x:.3f}' for x in per_round)} "
              f"(median {statistics.median(per_round):.3f})")
    print("tok/s = the phase's completion tokens / its wall time; turn s = one /send call, client side; "
          "gen ms = the app's logged latency_ms (backend.stream call -> last token, waiting for the engine "
          "included); others = CPU used by processes other than the app, its engine and this benchmark during the phase, in cores (from /proc)")
    for r in results:
        for e in r["errors"][:5]:
            print(f"  error: {e}")
    ok = not problems and not errors
    if problems:
        print("CHECKS FAILED:")
        for p in problems[:20]:
            print(f"  {p}")
    else:
        print(f"checks: every turn logged exactly once, in order, in its own session's conversation "
              f"({n_conversations} conversations incl. warm-up), all replies ok, clients shown their own "
              f"messages, integrity_check ok: YES")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    busiest = max(r["others"] for r in results)
    print(f"replies generated again (asked what the tutor asked before, tutor.fresh): {asked_again}")
    print(f"learner misspellings a reply copied, said correctly (tutor.spelling): {spelled}")
    print(f"loadavg now {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    if busiest > 0.2:
        print(f"WARNING: other processes used up to {busiest:.2f} of the {usable} cores during a phase, competing "
              "with the model for them, so tokens/s and the ratio are "
              "noise-dominated. Rerun on an idle machine (or with --rounds 3 and read the per-round ratios).")
    return 1 if (args.strict and not ok) else 0


if __name__ == "__main__":
    sys.exit(main())
