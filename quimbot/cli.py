"""The ``quimbot`` command line: one entry that assembles the sub-commands each package offers.

- ``app`` from webui.commands (the Gradio UI);
- testers, chat, conversations, flags, ``export stage2``, backup and models from tutor.commands;
- data, eval, train and the model exports (``export gguf`` ...) from the training stages' commands.

Every command has ``--help``. A QuimbotError ends the command with its message and exit code 2."""

from __future__ import annotations

import argparse
import sys

from core.errors import QuimbotError
from train.data import commands as data_commands
from train.evaluate import commands as evaluate_commands
from train.export import commands as export_commands
from train.fit import commands as fit_commands
from tutor import __version__
from tutor import commands as tutor_commands
from webui import commands as webui_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quimbot",
        description="Quimbot: train and test conversational English tutors. "
        "Chat with any checkpoint, log every turn, flag poor replies.",
    )
    parser.add_argument("--version", action="version", version=f"quimbot {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # The order here is the order `quimbot --help` lists the commands in.
    webui_commands.register(sub)
    export = tutor_commands.register(sub)
    export_commands.register(export, tutor_commands.add_paths)
    data_commands.register(sub)
    evaluate_commands.register(sub)
    fit_commands.register(sub)
    tutor_commands.register_models(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except QuimbotError as exc:
        print(f"quimbot: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
