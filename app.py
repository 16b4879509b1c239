"""Run the chat app: ``python app.py`` is the same as ``quimbot app`` (see ``--help``)."""

import sys

from tutor.cli import main

if __name__ == "__main__":
    sys.exit(main(["app", *sys.argv[1:]]))
