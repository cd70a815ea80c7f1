"""Small file-system helpers: crash-safe replacement of a file, and directory fsync.

Crash safety by construction: a file is replaced by writing a new one beside it, fsyncing it,
renaming it over the old one and fsyncing the directory, so a reader finds either the old or the
new content, never a mix.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

from logstore.errors import DiskFullError, StorageError


def storage_error(exc: OSError, action: str, path: str | os.PathLike[str]) -> StorageError:
    """The typed error for a failed file operation: DiskFullError when the disk is full."""
    kind = DiskFullError if exc.errno in (errno.ENOSPC, errno.EDQUOT) else StorageError
    return kind(f"cannot {action}: {exc.strerror or exc}", errno=exc.errno, path=str(path))


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, sync: bool = True) -> None:
    target = Path(path)
    temporary = target.with_name(target.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if sync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        remove_quietly(temporary)  # e.g. a full disk: leave no half-written file behind
        raise
    os.close(fd)
    os.replace(temporary, target)
    if sync:
        fsync_dir(target.parent)


def atomic_write_json(path: str | os.PathLike[str], value: Any, *, sync: bool = True) -> None:
    data = json.dumps(value, indent=2, sort_keys=True).encode() + b"\n"
    atomic_write_bytes(path, data, sync=sync)


def read_json(path: str | os.PathLike[str]) -> Any:
    with open(path, "rb") as file:
        return json.loads(file.read())


def remove_quietly(path: str | os.PathLike[str]) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
