"""A stand-in for the `vllm` command, for tests on a machine with no GPU: `fake_vllm.py serve BASE ...`
answers on the given port like vLLM's OpenAI-compatible server (GET /health, GET /v1/models, POST
/v1/chat/completions, streamed), serving the base as its --served-model-name and every
--lora-modules NAME=PATH under NAME. It writes its own argv to FAKE_VLLM_ARGV_LOG, so a test can
check how the supervisor started it."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fakes import FakeOpenAI, _Handler, _Server  # noqa: E402


class FakeVLLM(FakeOpenAI):
    def __init__(self, port: int, models: list[str]):
        super().__init__("ok", models=models, reply=lambda messages: "Oh, you went there? What did you see?")
        self._port = port

    def start(self) -> "FakeVLLM":
        handler = type("FakeVLLMHandler", (_Handler,), {"fake": self})
        self._httpd = _Server(("127.0.0.1", self._port), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def route(self, handler, request, n_chat):
        if request.method == "GET" and request.path == "/health":
            handler.send_json(200, {})
        else:
            super().route(handler, request, n_chat)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--served-model-name", default=None)
    parser.add_argument("--enable-lora", action="store_true")
    parser.add_argument("--lora-modules", nargs="*", default=[])
    args, _ = parser.parse_known_args()
    log = os.environ.get("FAKE_VLLM_ARGV_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(json.dumps(sys.argv[1:]) + "\n")
    if args.lora_modules and not args.enable_lora:
        sys.exit("error: --lora-modules needs --enable-lora")  # vLLM refuses this too
    names = [args.served_model_name or args.model] + [m.split("=", 1)[0] for m in args.lora_modules]
    server = FakeVLLM(args.port, names).start()
    server._thread.join()


if __name__ == "__main__":
    main()
