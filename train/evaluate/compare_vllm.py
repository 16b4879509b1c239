"""`quimbot eval compare --vllm`: many checkpoints of one base through one vLLM server.

Instead of loading every checkpoint in turn, one ``vllm serve BASE --enable-lora`` holds the base once
and every checkpoint as a LoRA module (``--lora-modules NAME=PATH``); all prompts of all models are sent
at once, and vLLM batches requests for different adapters together. The replies are then scored and
reported exactly as ``train.evaluate.compare.compare`` does for any other engine (same prompts, greedy, same
report files, perplexity from training by checkpoint step).

    quimbot eval compare --vllm hf:default hf:runs/r/checkpoint-50 hf:runs/r/checkpoint-100
    quimbot eval compare --vllm-url http://gpu-box:8000/v1 hf:runs/r/checkpoint-50 ...   (already running)

Module names are ``<run>-<checkpoint>`` (e.g. ``stage1-checkpoint-50``); the base is served as ``base``.
``QUIMBOT_VLLM`` names the vllm command (default ``vllm``). Requests ask the chat template for no thinking
(``chat_template_kwargs: {"enable_thinking": false}``, which Qwen3's template understands and other
templates ignore), and a ``<think>`` block that still comes back is removed before scoring.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import QuimbotError
from train.data.generate import strip_thinking
from train.evaluate.compare import prompt_messages
from tutor.backends import GenerationOptions
from tutor.config import Settings
from tutor.llama_build import stop_process
from tutor.specs import parse_spec

BASE_NAME = "base"
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the --max-lora-rank values vLLM accepts


class VllmError(QuimbotError):
    """The vLLM server could not be planned, started or used."""


@dataclass
class Served:
    spec: str            # as the user gave it (the report's label)
    name: str            # the model name on the server: "base" or the LoRA module name
    adapter: str | None  # the checkpoint folder, None for the base


@dataclass
class Plan:
    base: str
    models: list[Served]
    max_rank: int

    @property
    def modules(self) -> list[Served]:
        return [m for m in self.models if m.adapter]


def module_name(adapter: Path) -> str:
    """``<run>-<checkpoint>`` (``stage1-checkpoint-50``), safe as a model name."""
    raw = f"{adapter.parent.name}-{adapter.name}" if adapter.parent.name else adapter.name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-") or "adapter"


def plan_models(specs: list[str], settings: Settings) -> Plan:
    """Which base to serve and which checkpoints as LoRA modules; all must share one base."""
    from tutor.backends.hf import split_adapter

    bases: dict[str, list[str]] = {}
    models: list[Served] = []
    taken: set[str] = {BASE_NAME}
    ranks = []
    for spec in specs:
        parsed = parse_spec(spec)
        if parsed.engine != "hf":
            raise VllmError(f"--vllm serves training checkpoints and their base (hf: specs); {spec!r} is "
                            f"{parsed.engine}:. Compare it in a separate run without --vllm.")
        base, adapter = split_adapter(parsed, settings)
        bases.setdefault(str(Path(base).resolve()) if Path(base).exists() else base, []).append(spec)
        if adapter is None:
            models.append(Served(spec, BASE_NAME, None))
            continue
        name, n = module_name(Path(adapter)), 2
        while name in taken:
            name, n = f"{module_name(Path(adapter))}-{n}", n + 1
        taken.add(name)
        config = json.loads((Path(adapter) / "adapter_config.json").read_text())
        ranks.append(int(config.get("r", 16)))
        models.append(Served(spec, name, str(Path(adapter).resolve())))
    if len(bases) != 1:
        listing = "; ".join(f"{b}: {', '.join(s)}" for b, s in bases.items())
        raise VllmError(f"One vLLM server serves one base model, but these specs have {len(bases)} ({listing}). "
                        "Compare each base's checkpoints in its own run.")
    rank = max(ranks, default=16)
    return Plan(base=next(iter(bases)), models=models,
                max_rank=next((r for r in LORA_RANKS if r >= rank), rank))


def vllm_command(plan: Plan, port: int, executable: str | None = None, extra: list[str] | None = None) -> list[str]:
    """``vllm serve BASE --enable-lora --lora-modules NAME=PATH ...`` for a plan."""
    exe = shlex.split(executable or os.environ.get("QUIMBOT_VLLM") or "vllm")
    command = [*exe, "serve", plan.base, "--host", "127.0.0.1", "--port", str(port),
               "--served-model-name", BASE_NAME, "--seed", "0", "--generation-config", "vllm"]
    modules = plan.modules
    if modules:
        command += ["--enable-lora", "--max-loras", str(min(len(modules), 16)), "--max-cpu-loras", str(len(modules)),
                    "--max-lora-rank", str(plan.max_rank), "--lora-modules",
                    *(f"{m.name}={m.adapter}" for m in modules)]
    return command + list(extra or [])


def listed_models(base_url: str, timeout: float = 5.0) -> list[str]:
    import httpx

    response = httpx.get(f"{base_url.rstrip('/')}/models", timeout=timeout)
    response.raise_for_status()
    return [m["id"] for m in response.json().get("data", [])]


def check_served(base_url: str, plan: Plan) -> None:
    """Every model of the plan is listed by the server (a running one may hold other modules)."""
    try:
        names = listed_models(base_url)
    except Exception as exc:  # noqa: BLE001 - httpx and JSON errors alike
        raise VllmError(f"Cannot list the models of the vLLM server at {base_url}: {exc}") from exc
    missing = [m.name for m in plan.models if m.name not in names]
    if missing:
        raise VllmError(f"The server at {base_url} does not serve {', '.join(missing)} (it lists "
                        f"{', '.join(names) or 'nothing'}); start it with vllm_command()'s --served-model-name "
                        "base and --lora-modules NAME=PATH for every checkpoint, or use --vllm to start one.")


@contextlib.contextmanager
def vllm_server(plan: Plan, port: int | None = None, executable: str | None = None,
                extra: list[str] | None = None, timeout: float = 1200.0, log_path: Path | None = None):
    """Start vLLM for ``plan``, wait until it lists every model, yield its base URL; stop it afterwards."""
    if port is None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
    command = vllm_command(plan, port, executable, extra)
    log_path = Path(log_path or Path(os.environ.get("TMPDIR", "/tmp")) / f"quimbot-vllm-{port}.log")
    base_url = f"http://127.0.0.1:{port}/v1"
    with open(log_path, "w") as log:
        try:
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        except FileNotFoundError as exc:
            raise VllmError(f"Cannot run {command[0]!r}: install vLLM on this GPU machine (pip install vllm) or "
                            "set QUIMBOT_VLLM to its command.") from exc
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise VllmError(f"vLLM exited with code {proc.returncode} before it was ready; "
                                    f"{' '.join(command[:4])} ... Log ({log_path}):\n{_tail(log_path)}")
                try:
                    check_served(base_url, plan)
                    break
                except VllmError:
                    if time.monotonic() > deadline:
                        raise VllmError(f"vLLM did not serve every model within {timeout:.0f} s. Log ({log_path}):"
                                        f"\n{_tail(log_path)}") from None
                    time.sleep(1.0)
            yield base_url
        finally:
            stop_process(proc, timeout=60)


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


class VllmReplies:
    """Every reply of every model, asked of one server at once (so vLLM can batch across adapters);
    called like ``train.evaluate.compare.generate_replies`` for one spec at a time."""

    def __init__(self, base_url: str, plan: Plan, prompts: list[dict], options: GenerationOptions,
                 concurrency: int = 64, timeout: float = 600.0, thinking: bool = False):
        import openai

        self.plan = plan
        self.client = openai.OpenAI(base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY") or "not-needed",
                                    timeout=timeout, max_retries=1)
        self.extra = {} if thinking else {"chat_template_kwargs": {"enable_thinking": False}}
        self.pool = ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="vllm-compare")
        self.futures: dict[str, list[Future]] = {}
        conversations = [prompt_messages(p) for p in prompts]
        for served in plan.models:  # interleaved by prompt would not matter: all are in flight together
            self.futures[served.spec] = [self.pool.submit(self._ask, served.name, messages, options)
                                         for messages in conversations]

    def _ask(self, name: str, messages: list[dict], options: GenerationOptions) -> str:
        import openai

        kwargs: dict[str, Any] = dict(model=name, messages=messages, temperature=options.temperature,
                                      top_p=options.top_p, max_tokens=options.max_tokens)
        if options.seed is not None:
            kwargs["seed"] = options.seed
        if options.stop:
            kwargs["stop"] = options.stop
        try:
            response = self.client.chat.completions.create(**kwargs, extra_body=self.extra or None)
        except openai.APIError as exc:
            raise VllmError(f"vLLM failed on model {name!r}: {exc}") from exc
        text = (response.choices[0].message.content or "") if response.choices else ""
        return strip_thinking(text).strip()

    def __call__(self, spec: str, prompts: list[dict], settings: Settings, options: GenerationOptions,
                 batch_size: int = 8, progress: bool = True) -> list[str]:
        futures = self.futures.get(spec)
        if futures is None or len(futures) != len(prompts):
            raise VllmError(f"{spec} was not planned for this vLLM comparison")
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(futures), desc=f"replies {spec} (vLLM)"[:60], unit="reply")
        replies = []
        try:
            for future in futures:
                replies.append(future.result())
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return replies

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.client.close()


def compare_with_vllm(specs: list[str], prompts: list[dict], out_dir: str | Path, *, base_url: str | None = None,
                      settings: Settings | None = None, options: GenerationOptions | None = None, rule=None,
                      concurrency: int = 64, vllm_args: list[str] | None = None, start_timeout: float = 1200.0,
                      progress: bool = True, say: Callable[[str], None] = print) -> dict[str, Any]:
    """``train.evaluate.compare.compare`` with every reply from one vLLM server: the one at ``base_url`` (which must
    list the planned names), or one started here and stopped afterwards."""
    from train.evaluate.compare import compare

    settings = settings or Settings()
    options = options or GenerationOptions.greedy()
    plan = plan_models(specs, settings)
    with contextlib.ExitStack() as stack:
        if base_url is None:
            say(f"starting vLLM: {plan.base} with {len(plan.modules)} LoRA module(s) "
                f"({', '.join(m.name for m in plan.modules)})")
            base_url = stack.enter_context(vllm_server(plan, extra=vllm_args, timeout=start_timeout))
        else:
            check_served(base_url, plan)
        replies = VllmReplies(base_url, plan, prompts, options, concurrency)
        stack.callback(replies.close)
        report = compare(specs, prompts, out_dir, settings, options, rule, progress=progress, generate=replies)
    report["served_by"] = {"engine": "vllm", "base": plan.base, "base_url": base_url,
                           "models": {m.spec: m.name for m in plan.models}}
    (Path(out_dir) / "report.json").write_text(json.dumps({k: v for k, v in report.items() if k != "files"},
                                                          indent=2, ensure_ascii=False))
    return report
