"""Cutting one broker off with nftables, for isolation tests: a table of its own, dropping every
packet to or from the broker's listen address and its etcd alias, removed by ``heal()`` (and by
the context manager on any exit). Loopback addresses only."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager


def _nft(*args: str) -> None:
    subprocess.run(["nft", *args], check=True, capture_output=True, timeout=10)


@contextmanager
def isolated(*addresses: str) -> Iterator[None]:
    """Drop all traffic to and from ``addresses`` (127.x.y.z) while the block runs."""
    for address in addresses:
        assert address.startswith("127."), f"loopback only, not {address}"
    table = f"logstore_test_{os.getpid()}"
    _nft("add", "table", "inet", table)
    try:
        _nft("add", "chain", "inet", table, "out", "{ type filter hook output priority 0; }")
        for address in addresses:
            _nft("add", "rule", "inet", table, "out", "ip", "daddr", address, "drop")
            _nft("add", "rule", "inet", table, "out", "ip", "saddr", address, "drop")
        yield
    finally:
        _nft("delete", "table", "inet", table)
