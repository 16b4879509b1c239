"""Quimbot's chat tutor as a library: backends, sessions, the SQLite store and the CLI."""

__version__ = "0.1.0"
