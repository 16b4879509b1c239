"""The one command-line entry, ``quimbot``: it assembles the sub-commands that each package offers."""
