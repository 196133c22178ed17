"""What every subcommand module shares with the command's entry point.

Subcommands (`endpoints`, `clusters`, `profile`, ...) each live in a module of
this package with a `register(subparsers)` function; the entry point
(`command.py`) calls them in order. They import their types from here, never
from `command.py`, so that no subcommand imports the module that imports it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeAlias

__all__ = ["SubcommandHandler", "Subparsers"]

SubcommandHandler: TypeAlias = Callable[[argparse.Namespace], int]
"""What a subcommand's parser stores as ``handler``: parsed arguments in, exit code out."""

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""The object a subcommand's ``register`` function adds its parser to."""
