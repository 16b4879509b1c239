"""How much does Quimbot's session layer cost on top of llama-cpp-python?

Compares, on the same prompt and the same loaded GGUF (one ``llama_cpp.Llama`` object shared
by both paths, so model load time is excluded):

  session  ChatService.send(...) with a real on-disk SQLite store (temp dir unless --db) and
           the real system prompt: validation, store writes, history read, token count for
           the context check, backend.stream, reply logging.
  direct   llm.create_chat_completion(stream=True) on the exact messages list the session
           builds (system prompt + user message), with the same sampling arguments that
           LlamaCppBackend.stream passes.

Both use greedy decoding (temperature 0), a fixed seed and a fixed max_tokens, so they
produce the same tokens; the script checks and prints whether the texts are identical.

Fairness:
  * ``llm.reset()`` runs before every trial on both paths. In llama-cpp-python 0.3.x,
    ``Llama.generate`` reuses the KV cache only when ``self.n_tokens > 0`` (longest common
    prefix with ``input_ids[:n_tokens]``); ``reset()`` sets ``n_tokens = 0``, so the prefix
    match is skipped and ``eval`` clears the KV cache from position 0
    (``kv_cache_seq_rm(-1, 0, -1)``): the whole prompt is re-evaluated each trial. The other
    cache, ``Llama.cache`` (``set_cache(LlamaCache)``), is None unless set; the script asserts it.
  * Paths are interleaved (session, direct, session, direct, ...) after warm-up pairs, and
    medians are reported. This is a 2-core shared machine and llama.cpp uses both cores, so
    any other process stalls generation badly (tok/s can drop 30x): a pair where either trial
    ran at under half the best tok/s or over twice the best TTFT seen so far is discarded and
    rerun (both paths together, at most --runs times; --no-redo keeps every pair).
  * Every session trial starts a fresh conversation, so the history does not grow.
  * Tokens are counted the same way on both paths: the number of streamed content pieces
    (one per generated token with llama-cpp's streaming). tokens/s = (pieces - 1) /
    (time of last piece - time of first piece). TTFT = time from the call (``send`` /
    ``create_chat_completion``) to the first non-empty piece.

Targets: session/direct throughput >= 0.9 and session/direct TTFT <= 1.1.

With ``--engine llama-server`` (the app's engine, the default) the same comparison runs against one
supervised llama-server: the session path is ``ChatService.send`` through ``LlamaServerBackend``,
the direct path is a plain streaming HTTP POST of the same messages and sampling fields to the same
server's ``/v1/chat/completions``. Both send ``cache_prompt`` (the server's prompt cache), so both
reuse the system prompt's KV the same way.

Usage:  .venv/bin/python benchmarks/chat_overhead.py [--engine llama-server|in-process] [--runs N]
        [--max-tokens N] [--db PATH]
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402
import llama_cpp  # noqa: E402

import tutor.session as session_mod  # noqa: E402
from tutor.backends import BackendPool, GenerationOptions  # noqa: E402
from tutor.config import Settings  # noqa: E402
from tutor.models import default_gguf_path  # noqa: E402
from tutor.prompts import normalize_level, system_prompt  # noqa: E402
from tutor.session import ChatService, clean_message  # noqa: E402
from tutor.store import Store  # noqa: E402

THROUGHPUT_TARGET = 0.9   # session tok/s / direct tok/s must be >= this
TTFT_TARGET = 1.1         # session TTFT / direct TTFT must be <= this
DEFAULT_MESSAGE = "Yesterday I go to the park with my friend and we eat ice cream. It was very fun!"


# -- one trial per path -----------------------------------------------------------------------

def _result(t0: float, times: list[float], text: str, t_end: float) -> dict:
    n = len(times)
    first = times[0] if times else None
    decode_s = (times[-1] - first) if n > 1 else None
    return {
        "ttft_ms": (first - t0) * 1000 if first is not None else float("nan"),
        "tps": (n - 1) / decode_s if decode_s else float("nan"),
        "total_ms": (t_end - t0) * 1000,
        "tail_ms": (t_end - times[-1]) * 1000 if times else float("nan"),
        "pieces": n,
        "text": text,
    }


def run_direct(llm, messages, options: GenerationOptions) -> dict:
    llm.reset()
    times: list[float] = []
    pieces: list[str] = []
    t0 = time.perf_counter()
    # Same arguments as LlamaCppBackend.stream.
    stream = llm.create_chat_completion(
        messages=messages,
        temperature=options.temperature,
        top_p=options.top_p,
        max_tokens=options.max_tokens,
        seed=options.seed,
        stop=options.stop or None,
        stream=True,
    )
    for piece in stream:
        text = piece["choices"][0].get("delta", {}).get("content") or ""
        if text:
            times.append(time.perf_counter())
            pieces.append(text)
    t_end = time.perf_counter()
    return _result(t0, times, "".join(pieces), t_end)


def run_session(service: ChatService, llm, message: str, level: str, options: GenerationOptions) -> dict:
    """``llm``: the in-process model to reset first, or None for llama-server (its prompt cache stays)."""
    if llm is not None:
        llm.reset()
    times: list[float] = []
    text = ""
    final = None
    t0 = time.perf_counter()
    # conversation_id=None: a fresh conversation each trial, so history never grows.
    for update in service.send(message, conversation_id=None, model_spec="default", level=level,
                               options=options, client="benchmark"):
        if update.done:
            final = update
            break
        if update.text and update.text != text:
            times.append(time.perf_counter())
            text = update.text  # the raw "".join of streamed pieces, not yet stripped
    t_end = time.perf_counter()
    if final is None or final.error:
        raise SystemExit(f"session path failed: {final.error if final else 'no final update'}")
    result = _result(t0, times, text, t_end)
    result["stats"] = final.stats
    return result


# -- where the session's time goes (separate, instrumented trials) ---------------------------

class Timers:
    def __init__(self):
        self.ms: dict[str, float] = defaultdict(float)
        self.marks: dict[str, float] = {}

    def wrap(self, obj, name: str, label: str | None = None, key_fn=None):
        original = getattr(obj, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                key = key_fn(args, kwargs) if key_fn else (label or name)
                self.ms[key] += (time.perf_counter() - t) * 1000

        setattr(obj, name, timed)
        return original


def breakdown(service: ChatService, backend, llm, message: str, level: str,
              options: GenerationOptions, runs: int) -> tuple[list[dict], list]:
    """Run instrumented session trials; return per-trial timings and the messages the session
    handed to the backend (to check they equal the direct path's)."""
    store = service.store
    results = []
    seen_messages = []
    for _ in range(runs):
        timers = Timers()
        restore = []  # (obj, name, original)

        def wrap(obj, name, label=None, key_fn=None):
            restore.append((obj, name, timers.wrap(obj, name, label, key_fn)))

        wrap(session_mod, "clean_message", "clean_message")
        wrap(store, "create_conversation", "store.create_conversation")
        wrap(store, "add_turn", key_fn=lambda a, k: f"store.add_turn({a[1]})")
        wrap(store, "update_turn", "store.update_turn (reply)")
        wrap(store, "turns", "store.turns (history read)")
        wrap(store, "log_event", "store.log_event")
        wrap(session_mod, "system_prompt", "system_prompt")
        wrap(session_mod, "parse_spec", "parse_spec")
        wrap(service.pool, "get", "pool.get")
        wrap(backend, "count_tokens", "backend.count_tokens")

        original_stream = backend.stream

        def stream(messages, opts, _orig=original_stream):
            seen_messages.append(messages)
            timers.marks["stream_called"] = time.perf_counter()
            first = True
            for chunk in _orig(messages, opts):
                if chunk.text:
                    if first:
                        timers.marks["llama_first"] = time.perf_counter()
                        first = False
                    timers.marks["llama_last"] = time.perf_counter()
                elif chunk.completion_tokens is not None:
                    timers.marks["stream_final_chunk"] = time.perf_counter()
                yield chunk

        backend.stream = stream
        restore.append((backend, "stream", None))
        try:
            llm.reset()
            t0 = time.perf_counter()
            res = None
            for update in service.send(message, conversation_id=None, model_spec="default",
                                       level=level, options=options, client="benchmark"):
                if update.done:
                    res = update
            t_end = time.perf_counter()
        finally:
            for obj, name, original in reversed(restore):
                if original is None:
                    # instance attribute shadowing the class method: remove it
                    if name in vars(obj):
                        delattr(obj, name)
                else:
                    if obj is session_mod:
                        setattr(obj, name, original)
                    elif name in vars(obj):
                        delattr(obj, name)
        m = timers.marks
        row = dict(timers.ms)
        row["pre-stream total (send() -> backend.stream call)"] = (m["stream_called"] - t0) * 1000
        row["llama TTFT inside backend.stream"] = (m["llama_first"] - m["stream_called"]) * 1000
        row["tail: last token -> backend final chunk (re-tokenize reply)"] = (
            (m["stream_final_chunk"] - m["llama_last"]) * 1000)
        row["tail: last token -> send() done"] = (t_end - m["llama_last"]) * 1000
        row["_error"] = res.error if res else "no final update"
        results.append(row)
    return results, seen_messages


# -- report --------------------------------------------------------------------------------

def median(values):
    values = [v for v in values if v == v]  # drop NaN
    return statistics.median(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Session-layer overhead vs direct llama-cpp-python: TTFT and decode tokens/s "
                    "on the same prompt and the same loaded GGUF.")
    parser.add_argument("--runs", type=int, default=7, help="measured trials per path (default 7)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up trials per path (default 2)")
    parser.add_argument("--max-tokens", type=int, default=128, help="reply length cap (default 128)")
    parser.add_argument("--db", type=Path, default=None,
                        help="SQLite file for the session's store (default: a file in a temp dir, "
                             "deleted afterwards)")
    parser.add_argument("--message", default=DEFAULT_MESSAGE, help="the learner message")
    parser.add_argument("--level", default="intermediate", help="learner level (system prompt)")
    parser.add_argument("--seed", type=int, default=1234, help="sampling seed (default 1234)")
    parser.add_argument("--breakdown-runs", type=int, default=3,
                        help="extra instrumented session trials to show where the session's time "
                             "goes (default 3; 0 to skip)")
    parser.add_argument("--no-redo", action="store_true",
                        help="keep pairs disturbed by other load (by default a pair where either "
                             "trial ran at < 0.5x the best tok/s or > 2x the best TTFT seen is "
                             "discarded and rerun, at most --runs times)")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when a target is missed or the texts differ")
    parser.add_argument("--engine", choices=["llama-server", "in-process"], default="llama-server",
                        help="the engine both paths use (default llama-server, the app's engine)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.engine == "llama-server":
        return main_server(args)

    cpus = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = cpus
    print("Quimbot chat overhead benchmark: session layer vs direct llama-cpp-python")
    print(f"machine   : {platform.platform()}, python {platform.python_version()}, "
          f"os.cpu_count()={cpus}, usable cpus={usable}, "
          f"loadavg={'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("note      : 2-core shared machine: absolute numbers are noisy; compare the ratios.")

    tmpdir = None
    if args.db is None:
        tmpdir = Path(tempfile.mkdtemp(prefix="quimbot-bench-"))
        db_path = tmpdir / "quimbot.db"
    else:
        db_path = args.db
    try:
        t = time.perf_counter()
        pool = BackendPool(Settings())
        backend = pool.get("default")
        llm = backend.llm
        load_s = time.perf_counter() - t
        assert llm.cache is None, "a llama-cpp prompt cache is set; it would skew the comparison"
        store = Store.open(db_path)
        service = ChatService(store, pool)

        level = normalize_level(args.level)
        options = GenerationOptions(temperature=0.0, max_tokens=args.max_tokens, seed=args.seed)
        cleaned = clean_message(args.message)
        messages, prompt_tokens = service.build_messages(
            backend, system_prompt(level), [], cleaned, options)

        print(f"llama_cpp : {llama_cpp.__version__}, n_threads={llm.n_threads}, n_ctx={llm.n_ctx()}, "
              f"n_batch={llm.n_batch}, chat_format={llm.chat_format}")
        print(f"model     : {default_gguf_path()} (loaded once in {load_s:.2f}s, excluded)")
        print(f"store     : {db_path} (on disk, WAL)")
        print(f"prompt    : {prompt_tokens} tokens (system prompt '{level}' + user message), "
              f"temperature=0, top_p={options.top_p}, seed={options.seed}, max_tokens={options.max_tokens}")
        print(f"trials    : {args.warmup} warm-up + {args.runs} measured per path, interleaved "
              f"session/direct; llm.reset() before each")
        print()

        seen: list[dict] = []
        for _ in range(args.warmup):
            seen.append(run_session(service, llm, args.message, level, options))
            seen.append(run_direct(llm, messages, options))

        def disturbed(pair: list[dict]) -> bool:
            # Relative to the best trial seen so far on either path: a trial at under half the
            # best tok/s or over twice the best TTFT was slowed by other load on the machine.
            best_tps = max(r["tps"] for r in seen)
            best_ttft = min(r["ttft_ms"] for r in seen)
            return any(r["tps"] < 0.5 * best_tps or r["ttft_ms"] > 2 * best_ttft for r in pair)

        sess, direct = [], []
        redos_left = 0 if args.no_redo else args.runs
        redone = 0
        while len(sess) < args.runs:
            s = run_session(service, llm, args.message, level, options)
            d = run_direct(llm, messages, options)
            seen += [s, d]
            line = (f"session TTFT {s['ttft_ms']:7.1f} ms {s['tps']:6.1f} tok/s | "
                    f"direct TTFT {d['ttft_ms']:7.1f} ms {d['tps']:6.1f} tok/s")
            if redos_left and disturbed([s, d]):
                redos_left -= 1
                redone += 1
                print(f"  (redo)  {line}  <- disturbed by other load, pair discarded")
                continue
            sess.append(s)
            direct.append(d)
            print(f"  run {len(sess)}: {line}")
        print()

        texts = {r["text"] for r in sess + direct}
        identical = len(texts) == 1
        ref_text = direct[0]["text"]
        retok = len(llm.tokenize(ref_text.encode("utf-8"), add_bos=False)) if ref_text else 0

        rows = []
        for name, res in (("session", sess), ("direct", direct)):
            ttfts = [r["ttft_ms"] for r in res]
            tpss = [r["tps"] for r in res]
            rows.append((name, median(ttfts), min(ttfts), max(ttfts), median(tpss), min(tpss), max(tpss),
                         median([r["total_ms"] for r in res]), median([r["tail_ms"] for r in res]),
                         res[0]["pieces"]))
        hdr = (f"{'path':<8} {'TTFT ms':>9} {'(min-max)':>15} {'tok/s':>8} {'(min-max)':>13} "
               f"{'total ms':>9} {'tail ms':>8} {'tokens':>7}")
        print(f"Medians over {args.runs} runs")
        print(hdr)
        print("-" * len(hdr))
        for name, ttft, tmin, tmax, tps, pmin, pmax, total, tail, pieces in rows:
            print(f"{name:<8} {ttft:9.1f} {f'({tmin:.1f}-{tmax:.1f})':>15} {tps:8.1f} "
                  f"{f'({pmin:.1f}-{pmax:.1f})':>13} {total:9.1f} {tail:8.1f} {pieces:7d}")
        print()

        tps_ratio = rows[0][4] / rows[1][4]
        ttft_ratio = rows[0][1] / rows[1][1]
        pair_tps = median([s["tps"] / d["tps"] for s, d in zip(sess, direct)])
        pair_ttft = median([s["ttft_ms"] / d["ttft_ms"] for s, d in zip(sess, direct)])
        tps_ok = tps_ratio >= THROUGHPUT_TARGET
        ttft_ok = ttft_ratio <= TTFT_TARGET
        print(f"{'ratio (session/direct)':<24} {'value':>7} {'per-pair med':>13} {'target':>8}  result")
        print(f"{'throughput (tok/s)':<24} {tps_ratio:7.3f} {pair_tps:13.3f} {'>= ' + str(THROUGHPUT_TARGET):>8}  "
              f"{'PASS' if tps_ok else 'MISS'}")
        print(f"{'TTFT':<24} {ttft_ratio:7.3f} {pair_ttft:13.3f} {'<= ' + str(TTFT_TARGET):>8}  "
              f"{'PASS' if ttft_ok else 'MISS'}")
        print()
        print(f"texts identical across all {2 * args.runs} measured trials: {'YES' if identical else 'NO'} "
              f"({rows[1][9]} streamed pieces; re-tokenized with llm.tokenize: {retok} tokens)")
        if not identical:
            for t_ in sorted(texts):
                print(f"  variant: {t_[:120]!r}")
        print(f"reply (direct, first 100 chars): {ref_text[:100]!r}")
        internal = [s["stats"].get("first_token_ms") for s in sess]
        print(f"session's own logged first_token_ms (from backend.stream call), median: "
              f"{median([x for x in internal if x is not None]):.1f} ms")
        print("total ms = call -> stream exhausted; tail ms = last token -> stream exhausted.")
        spread = max(max(r["tps"] for r in sess + direct) / max(min(r["tps"] for r in sess + direct), 1e-9),
                     max(r["ttft_ms"] for r in sess + direct) / min(r["ttft_ms"] for r in sess + direct))
        print(f"pairs discarded as disturbed by other load: {redone}; loadavg now "
              f"{'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
        if spread > 1.5:
            print(f"WARNING: measured trials still vary {spread:.1f}x (max/min); the machine was busy, "
                  "so the ratios are noise-dominated. Rerun when it is idle.")

        if args.breakdown_runs > 0:
            print()
            bd, seen = breakdown(service, backend, llm, args.message, level, options, args.breakdown_runs)
            same_msgs = all(m == messages for m in seen)
            print(f"Session-layer breakdown: medians of {args.breakdown_runs} instrumented session trials "
                  f"(not in the table above)")
            print(f"  messages the session passed to backend.stream == direct path's messages: "
                  f"{'YES' if same_msgs else 'NO'}")
            keys = [k for k in bd[0] if not k.startswith("_")]
            order = [k for k in keys if not k.startswith(("pre-stream", "llama", "tail"))]
            order += [k for k in keys if k.startswith(("pre-stream", "llama", "tail"))]
            for k in order:
                print(f"  {k:<62} {median([r.get(k, 0.0) for r in bd]):8.2f} ms")
            errors = {r['_error'] for r in bd if r['_error']}
            if errors:
                print(f"  errors: {errors}")

        pool.close()
        store.db.conn.close()
        ok = tps_ok and ttft_ok and identical
        return 1 if (args.strict and not ok) else 0
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


# -- the app's engine: llama-server ------------------------------------------------------------

def run_server_direct(http: httpx.Client, base_url: str, messages, options: GenerationOptions) -> dict:
    """The same request LlamaServerBackend makes, as a bare streaming HTTP POST on one kept-alive
    connection (``http``), as the backend's own client keeps one: a new client per request would add
    its set-up and a TCP connect to the direct path's TTFT only."""
    import json

    body = {"model": "default", "messages": messages, "temperature": options.temperature, "top_p": options.top_p,
            "max_tokens": options.max_tokens, "stream": True, "seed": options.seed, "cache_prompt": True,
            "stream_options": {"include_usage": True}}
    times: list[float] = []
    pieces: list[str] = []
    t0 = time.perf_counter()
    with http.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=120) as resp:
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for choice in json.loads(line[6:]).get("choices") or []:
                text = (choice.get("delta") or {}).get("content") or ""
                if text:
                    times.append(time.perf_counter())
                    pieces.append(text)
    return _result(t0, times, "".join(pieces), time.perf_counter())


def main_server(args) -> int:
    from tutor.backends.registry import configure_engine

    print("Quimbot chat overhead benchmark: session layer vs direct HTTP to the same llama-server")
    print(f"machine   : {platform.platform()}, python {platform.python_version()}, os.cpu_count()={os.cpu_count()}, "
          f"loadavg={'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    tmpdir = Path(tempfile.mkdtemp(prefix="quimbot-bench-"))
    try:
        settings = Settings()
        settings.db_path = args.db or tmpdir / "quimbot.db"
        if configure_engine(settings, "llama-server") != "llama-server":
            print("llama-server is not built: run `bash scripts/setup.sh` first")
            return 1
        pool = BackendPool(settings)
        t = time.perf_counter()
        backend = pool.get("default")
        print(f"engine    : {' '.join(backend.server.argv[:1])} (started in {time.perf_counter() - t:.2f}s, excluded)")
        service = ChatService(Store.open(settings.db_path), pool)
        level = normalize_level(args.level)
        options = GenerationOptions(temperature=0.0, max_tokens=args.max_tokens, seed=args.seed)
        messages, prompt_tokens = service.build_messages(backend, system_prompt(level), [],
                                                         clean_message(args.message), options)
        print(f"prompt    : {prompt_tokens} tokens, temperature=0, max_tokens={options.max_tokens}; "
              f"{args.warmup} warm-up + {args.runs} measured pairs, interleaved")
        http = httpx.Client()
        # Every slot once: a fresh conversation goes to a slot not used yet, which evaluates the system prompt.
        for _ in range(max(args.warmup, backend.config.slots)):
            run_session(service, None, args.message, level, options)
            run_server_direct(http, backend.server.base_url, messages, options)
        sess, direct = [], []
        for i in range(args.runs):
            s_ = run_session(service, None, args.message, level, options)
            d_ = run_server_direct(http, backend.server.base_url, messages, options)
            sess.append(s_)
            direct.append(d_)
            print(f"  run {i + 1}: session TTFT {s_['ttft_ms']:7.1f} ms {s_['tps']:6.1f} tok/s | "
                  f"direct TTFT {d_['ttft_ms']:7.1f} ms {d_['tps']:6.1f} tok/s")
        tps_ratio = median([r["tps"] for r in sess]) / median([r["tps"] for r in direct])
        ttft_ratio = median([r["ttft_ms"] for r in sess]) / median([r["ttft_ms"] for r in direct])
        identical = len({r["text"] for r in sess + direct}) == 1
        print()
        print(f"median tok/s: session {median([r['tps'] for r in sess]):.1f}, direct "
              f"{median([r['tps'] for r in direct]):.1f}; median TTFT ms: session "
              f"{median([r['ttft_ms'] for r in sess]):.1f}, direct {median([r['ttft_ms'] for r in direct]):.1f}")
        print(f"throughput ratio (session/direct): {tps_ratio:.3f}  (target >= {THROUGHPUT_TARGET})  "
              f"{'PASS' if tps_ratio >= THROUGHPUT_TARGET else 'MISS'}")
        print(f"TTFT ratio (session/direct):       {ttft_ratio:.3f}  (target <= {TTFT_TARGET})  "
              f"{'PASS' if ttft_ratio <= TTFT_TARGET else 'MISS'}")
        print(f"texts identical across all {2 * args.runs} trials: {'YES' if identical else 'NO'}")
        ok = tps_ratio >= THROUGHPUT_TARGET and ttft_ratio <= TTFT_TARGET and identical
        http.close()
        backend.supervisor.close()
        return 1 if (args.strict and not ok) else 0
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
