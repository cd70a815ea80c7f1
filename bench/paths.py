"""argparse types for the path options of ``scripts/bench`` and ``scripts/torture``.

Every option that names a path goes through one of these, so that a path which does not exist
yet behaves the same everywhere and never ends a run in a traceback (least of all at the end of a
long one, when a result is written):

- ``folder``: a folder the run writes into (``--work-dir``, ``--recovery-dir``, ``--charts``):
  created with its parents when missing;
- ``output_file``: a file the run writes (``--json``, ``--history``): its folder is created;
- ``input_file``: a file the run reads: it must exist.

A path that cannot be used (a file where a folder should be, no permission) is refused by argparse
with one line naming the option and the reason (exit 2), before anything runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def folder(text: str) -> Path:
    """A folder, created with its parents when it does not exist yet."""
    path = Path(text).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a folder") from None
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot create the folder {text!r}: {exc.strerror}") from None
    return path


def output_file(text: str) -> Path:
    """A file to write; the folder it goes in is created when it does not exist yet."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; name a file in it")
    folder(str(path.parent))
    return path


def input_file(text: str) -> Path:
    """A file to read, or a folder of them; it must exist."""
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text!r} does not exist")
    return path
