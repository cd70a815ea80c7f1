"""A small throw-away filesystem for fault tests: a tmpfs of a few MiB that fills up for real.

As root, the tmpfs is mounted on ``mount_point`` with ``mount -t tmpfs`` and unmounted when the
context ends. Without root, an unprivileged user cannot mount, but it can in a user and mount
namespace of its own: a small holder process (``unshare --user --map-root-user --mount``) mounts
the tmpfs there and stays alive; this process and the brokers it starts reach the tmpfs through
``/proc/<holder>/root/<mount_point>``. When the holder exits, its namespace and the tmpfs go with
it, so nothing outlives the test even if it is killed.

``SmallFs.path`` is where the filesystem is seen; ``remount(read_only=...)`` flips it (with no
broker writing to it); ``fill()`` writes a filler file until the filesystem is completely full;
``reserve(n)`` sets n bytes aside that ``free("reserve")`` gives back.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

#: Commands run in the holder's namespace: one per line on stdin, answered "rc=N" on stdout.
_HOLDER_SCRIPT = 'while read -r line; do eval "$line"; echo "rc=$?"; done'
_COMMAND_TIMEOUT_S = 10.0


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}")


class SmallFs:
    def __init__(self, mount_point: Path, size_mib: int) -> None:
        self.mount_point = mount_point
        self.size_mib = size_mib
        self.holder: subprocess.Popen[str] | None = None
        self.mounted = False

    @property
    def path(self) -> Path:
        """Where this process (and a broker it starts) sees the filesystem."""
        if self.holder is None:
            return self.mount_point
        return Path(f"/proc/{self.holder.pid}/root") / self.mount_point.relative_to("/")

    # -- mounting -------------------------------------------------------------------------------

    def mount(self, *, read_only: bool = False) -> None:
        self.mount_point.mkdir(parents=True, exist_ok=True)
        options = f"size={self.size_mib}m,mode=0755" + (",ro" if read_only else "")
        command = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(self.mount_point)]
        if os.geteuid() == 0:
            _run(command)
        else:
            self.holder = subprocess.Popen(
                ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", _HOLDER_SCRIPT],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
            self._in_holder(command)
        self.mounted = True

    def _in_holder(self, command: list[str]) -> None:
        assert self.holder is not None and self.holder.stdin is not None and self.holder.stdout
        self.holder.stdin.write(" ".join(f"'{part}'" for part in command) + "\n")
        self.holder.stdin.flush()
        output = []
        while True:  # bounded: the holder answers every line, or exits (EOF)
            line = self.holder.stdout.readline()
            if not line:
                raise RuntimeError(f"namespace holder exited: {''.join(output)}")
            if line.startswith("rc="):
                break
            output.append(line)
        if line.strip() != "rc=0":
            raise RuntimeError(f"{' '.join(command)} failed in the namespace: {''.join(output)}")

    def remount(self, *, read_only: bool) -> None:
        # the mount's own flag (a "bind" remount): also allowed in a user namespace, where the
        # filesystem itself cannot be remounted
        command = ["mount", "-o", "remount,bind," + ("ro" if read_only else "rw"), str(self.mount_point)]
        if self.holder is None:
            _run(command)
        else:
            self._in_holder(command)

    def unmount(self) -> None:
        if self.holder is not None:
            holder, self.holder = self.holder, None
            with suppress(OSError):
                assert holder.stdin is not None
                holder.stdin.close()  # the loop ends, the holder exits, its namespace goes away
            try:
                holder.wait(_COMMAND_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                holder.kill()
                holder.wait()
        elif self.mounted:
            try:
                _run(["umount", str(self.mount_point)])
            except RuntimeError:
                _run(["umount", "-l", str(self.mount_point)])  # still busy: detach it anyway
        self.mounted = False

    # -- filling --------------------------------------------------------------------------------

    def fill(self, name: str = "filler", chunk: int = 4096, max_bytes: int = 1 << 30) -> int:
        """Write ``name`` until the filesystem is full (ENOSPC); returns the bytes written."""
        written = 0
        block = b"\xa5" * chunk
        with open(self.path / name, "ab", buffering=0) as file:
            while written < max_bytes:
                try:
                    written += file.write(block[:chunk])
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    if chunk == 1:
                        return written
                    chunk //= 2
        raise AssertionError(f"{self.path} did not fill up within {max_bytes} bytes")

    def reserve(self, nbytes: int, name: str = "reserve") -> None:
        """Set ``nbytes`` aside in a file, to free them later with ``free(name)``."""
        with open(self.path / name, "wb") as file:
            file.write(b"\x5a" * nbytes)

    def free(self, name: str = "filler") -> None:
        os.unlink(self.path / name)


@contextmanager
def small_fs(mount_point: Path, size_mib: int, *, read_only: bool = False) -> Iterator[SmallFs]:
    """A tmpfs of ``size_mib`` MiB on ``mount_point``, gone when the block ends."""
    fs = SmallFs(mount_point, size_mib)
    try:
        fs.mount(read_only=read_only)
        yield fs
    finally:
        fs.unmount()
