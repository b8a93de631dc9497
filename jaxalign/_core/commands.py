"""The registry of ``jaxalign`` subcommands, so that any layer can add one.

``jaxalign.cli`` builds its parser from :data:`COMMANDS`; modules of
jaxalign register theirs when imported (``jaxalign.studies.commands``, and
fine-tuning's), outside packages through the entry-point group
:data:`ENTRY_POINT_GROUP`. It lives in ``_core`` (which imports nothing of
jaxalign) so that a module below the CLI can register without importing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

__all__ = ["COMMANDS", "Command", "ENTRY_POINT_GROUP", "register_command"]


@dataclass(frozen=True)
class Command:
    """A subcommand: ``add_arguments(parser)`` declares its flags, ``run(args) -> exit code`` does it.

    ``check(args)``, optional, runs before any work (paths, writable
    outputs) and raises FileNotFoundError / ValueError / OSError for bad
    input (exit code 2). ``epilog``: examples shown by ``--help``.
    """

    name: str
    help: str
    description: str
    add_arguments: Callable
    run: Callable
    check: Callable | None = None
    epilog: str = ""


COMMANDS: dict[str, Command] = {}
"""Subcommands by name, in the order ``--help`` lists them (see :func:`register_command`)."""

#: Entry-point group through which other packages add subcommands.
ENTRY_POINT_GROUP = "jaxalign.commands"


def register_command(command: Command) -> Command:
    """Add a subcommand to ``jaxalign`` (a module of jaxalign, or a plug-in).

    Inside jaxalign a module registers its command when imported and is
    listed in ``jaxalign.cli._COMMAND_MODULES``; an outside package declares an entry
    point in the group ``jaxalign.commands`` whose object is a
    :class:`Command` (or a callable returning one). Names must be unique.
    """
    if not isinstance(command, Command):
        raise TypeError(f"register_command takes a Command, got {type(command).__name__}")
    if command.name in COMMANDS and COMMANDS[command.name] is not command:
        raise ValueError(f"jaxalign command {command.name!r} is registered twice")
    COMMANDS[command.name] = command
    return command
