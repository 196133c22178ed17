"""The `destination` command: `serve` and the operator subcommands (see `command.py`)."""

from destination.cli.command import main

__all__ = ["main"]
