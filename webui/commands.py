"""The web UI's sub-command of ``quimbot``: ``app``, which serves the Gradio chat and tester views."""

from __future__ import annotations

import argparse
import faulthandler
import os
import signal
import sys

from core.errors import QuimbotError
from tutor.commands import SPEC_HELP, add_generation, add_paths
from tutor.config import DEFAULT_HOST, DEFAULT_PORT, settings_from_args


def register(sub) -> None:
    """Add ``app`` to the ``quimbot`` sub-commands."""
    p = sub.add_parser("app", help="open the chat app in the browser",
                       description="Start the Gradio chat app. It listens on 127.0.0.1 unless --host says otherwise.")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=int(os.environ.get("QUIMBOT_PORT", DEFAULT_PORT)),
                   help=f"port (env QUIMBOT_PORT, default {DEFAULT_PORT})")
    p.add_argument("--model", default="default", help="model selected at start; " + SPEC_HELP)
    p.add_argument("--extra-model", action="append", metavar="SPEC",
                   help="add a spec to the model picker (repeatable; env QUIMBOT_MODELS adds more)")
    p.add_argument("--preload", action="store_true", help="load the start model before serving")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a host name the app answers to besides its own address (reverse proxy, DNS name); "
                   "env QUIMBOT_ALLOWED_HOSTS adds more")
    p.add_argument("--engine", choices=["llama-server", "in-process", "vllm"],
                   help="what serves the models (env QUIMBOT_ENGINE; default llama-server: llama.cpp's server in "
                   "a supervised child process, with parallel slots; in-process: llama-cpp-python inside the app, "
                   "one reply at a time; vllm: hf: checkpoints through one vLLM server with every LoRA)")
    add_generation(p)
    p.add_argument("--testers-file", metavar="PATH",
                   help="tester accounts, one NAME:HASH per line (make one with `quimbot testers hash NAME`; env "
                   "QUIMBOT_TESTERS adds NAME:PASSWORD or NAME:HASH pairs); with "
                   "accounts the tester view at /tester asks for a login, without them it is served only on "
                   "localhost")
    add_paths(p)
    p.set_defaults(func=cmd_app)


def port_in_use(host: str, port: int) -> None:
    """Refuse to start when the port is taken, before loading anything, with a message that says what to do."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise QuimbotError(f"Port {port} on {host} is already in use ({exc.strerror}): another Quimbot app or "
                               "server is running there. Stop it, or pick another port with --port.") from None


def cmd_app(args: argparse.Namespace) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if hasattr(signal, "SIGUSR1"):  # `kill -USR1 PID` prints every thread's stack to stderr: a stuck app explains itself
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    if os.environ.get("QUIMBOT_ALLOW_HUB") != "1":  # read by huggingface_hub when it is imported
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from webui.app import launch

    settings = settings_from_args(args)
    settings.host, settings.port = args.host, args.port
    settings.allowed_hosts += [h.lower() for h in args.allowed_host]
    port_in_use(settings.host, settings.port)
    from tutor.backends import GenerationOptions
    from tutor.backends.registry import configure_engine

    engine = configure_engine(settings, args.engine, say=lambda text: print(text, file=sys.stderr))
    print(f"quimbot: engine {engine}", file=sys.stderr)

    options = GenerationOptions(temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens,
                                seed=args.seed)
    launch(settings, default_model=args.model, preload=args.preload, testers_file=args.testers_file,
           options=options)
    return 0


