"""Interop: a Node.js client (@grpc/grpc-js + @grpc/proto-loader) that encodes its own batch
produces to the broker and fetches it back; Python decodes the same bytes identically.

``npm install`` runs into tests/server/interop when its node_modules is missing (pinned versions
in package.json and package-lock.json; node_modules is git-ignored).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from logstore.records import decode_records, validate_batch
from tests.broker_fixture import ROOT
from tests.server.helpers import connect, describe, read_all, unique_topic

INTEROP = Path(__file__).resolve().parent / "interop"
PROTO_DIR = ROOT / "proto"
NPM_TIMEOUT_S = 300
SCRIPT_TIMEOUT_S = 60

EXPECTED = [  # (key, value, timestamp delta) as the script encodes them
    (None, "hello from node", 0),
    ("k1", "h\u00e9llo w\u00f6rld \u2713", 5),
    ("k2", "", 3),
    ("k3", None, 10),
]


@pytest.fixture(scope="module")
def node_modules() -> Path:
    for tool in ("node", "npm"):
        assert shutil.which(tool), f"{tool} is not installed (scripts/install-peers installs it)"
    modules = INTEROP / "node_modules"
    if not (modules / "@grpc" / "grpc-js").is_dir() or not (modules / "@grpc" / "proto-loader").is_dir():
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=INTEROP, check=True, timeout=NPM_TIMEOUT_S, capture_output=True,
        )
    return modules


@pytest.fixture(scope="module")
def node_run(node_modules, module_broker) -> dict:
    """Run the script once against the module's broker; its parsed JSON output."""
    topic = unique_topic("from-node")
    completed = subprocess.run(
        ["node", str(INTEROP / "produce_fetch.js"), module_broker.address, topic, str(PROTO_DIR)],
        cwd=INTEROP, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode()


def _rows(records) -> list[tuple]:
    """(offset, key, value, timestamp) of records decoded by the script (dicts) or by Python."""
    if records and isinstance(records[0], dict):
        return [(r["offset"], r["key"], r["value"], r["timestamp"]) for r in records]
    return [(r.offset, _text(r.key), _text(r.value), r.timestamp) for r in records]


def test_node_client_produces_and_fetches_its_own_batch(node_run):
    rows = _rows(node_run["records"])

    assert (node_run["base_offset"], node_run["last_offset"], node_run["next_offset"]) == (0, 3, 4)
    base = rows[0][3]
    assert [(o, k, v, t - base) for o, k, v, t in rows] == [(i, k, v, d) for i, (k, v, d) in enumerate(EXPECTED)]


def test_python_validates_the_node_encoded_batch(node_run):
    data = bytes.fromhex(node_run["batch_hex"])

    header = validate_batch(data)

    assert (header.record_count, header.last_offset_delta, header.batch_length) == (4, 3, len(data))
    assert header.max_timestamp - header.base_timestamp == 10


def test_python_decodes_the_node_encoded_batch_identically(node_run):
    records = decode_records(bytes.fromhex(node_run["batch_hex"]))

    assert _rows(records) == _rows(node_run["records"])


def test_python_fetches_what_node_produced(node_run, module_broker):
    with connect(module_broker.address) as stub:
        records = read_all(stub, node_run["topic"])
        partition = describe(stub, node_run["topic"]).partitions[0]

    assert partition.log_end_offset == 4
    assert _rows(records) == _rows(node_run["records"])
