"""Quimbot's chat tutor as a library: model backends and the engine, sessions, the SQLite store, the
detector and teaching checks, privacy, tester accounts."""

__version__ = "0.1.0"
