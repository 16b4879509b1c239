"""``python -m quimbot`` is the ``quimbot`` command."""

import sys

from quimbot.cli import main

sys.exit(main())
