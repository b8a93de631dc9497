"""Files written whole or not at all, and folders checked before long work.

One home for the atomic write that the feature cache and the study results
both need (an interrupted sweep must leave either a complete file or none,
so that it resumes where it stopped), and for the writable-folder check every
command runs before it computes anything.

Atomic write: the content goes to a temporary file in the target's folder
(same file system, so the rename is atomic), is flushed and fsynced, then
renamed onto the final name with ``os.replace``. Temporary files are named
``.<name>.<host>-<pid>.<random>.tmp``, so that :func:`remove_orphans` can
tell the leftovers of a killed writer on this host (its process is gone)
from a live writer's file or another machine's on a shared folder.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "TMP_NAME",
    "atomic_write",
    "atomic_write_text",
    "host_tag",
    "pid_alive",
    "remove_orphans",
    "writable_dir",
]

#: What :func:`atomic_write` names its temporary files (host and pid of the writer).
TMP_NAME = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)\.[^.]+\.tmp$")


def host_tag() -> str:
    """This machine's name with anything but ``[A-Za-z0-9_]`` replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (True when it cannot tell)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):  # exists (another user's), or cannot tell
        return True
    return True


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(f)`` on a temporary binary file, then rename it to ``path``.

    On any error (or KeyboardInterrupt) the temporary file is removed and
    ``path`` is left as it was. The folder must exist.
    """
    path = Path(path)
    tag = f"{host_tag()}-{os.getpid()}"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{tag}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """:func:`atomic_write` of a string."""
    data = text.encode(encoding)
    return atomic_write(path, lambda f: f.write(data))


def remove_orphans(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed writers on this host left in ``folder``; return them.

    Only files named by :func:`atomic_write` whose host is this one and
    whose process id no longer exists are removed (a live writer's file, or
    another machine's on a shared folder, is left alone).
    """
    host, removed = host_tag(), []
    for tmp in Path(folder).glob(".*.tmp"):
        m = TMP_NAME.match(tmp.name)
        if m is None or m["host"] != host or pid_alive(int(m["pid"])):
            continue
        try:
            tmp.unlink()
            removed.append(tmp)
        except FileNotFoundError:
            pass
    return removed


def writable_dir(path, what: str = "output folder") -> Path:
    """Create the folder ``path`` if needed and check that files can be written there.

    A probe file is created and deleted, so the answer holds for this user on
    this file system (permission bits alone do not tell: read-only mounts,
    root, ACLs). Call it before long work whose results go there.

    Raises
    ------
    NotADirectoryError
        ``path`` or one of its parents is a file.
    PermissionError
        The folder cannot be created or written to.
    """
    p = Path(os.fspath(path)).expanduser()
    if p.exists() and not p.is_dir():
        raise NotADirectoryError(f"{what} {p} exists and is not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as error:
        raise NotADirectoryError(f"{what} {p} cannot be created: a parent is a file ({error})") from None
    except OSError as error:
        raise PermissionError(f"{what} {p} cannot be created ({error})") from None
    try:
        fd, probe = tempfile.mkstemp(dir=p, prefix=".write-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise PermissionError(f"{what} {p} is not writable ({error})") from None
    return p
