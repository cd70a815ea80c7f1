"""Starting on a data directory that cannot be used, or whose files were damaged while the broker
was down.

A data directory that cannot be used (read-only, missing parent, in use, not a directory, an
unreadable topics.json) makes ``logstore serve`` exit 3 with one clear error line and no
traceback. Damaged derived files (``.index``, ``.timeindex``: garbage, torn, deleted) are rebuilt
from the log and the rebuild is logged; damaged record data is cut at the first bad batch, logged,
and kept aside as ``NNN.log.corrupt-at-POS``. In every case the broker starts and every record
before the damage reads back intact.
"""

from __future__ import annotations

import gc
import json
import os
import random
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from logstore.api.v1 import records_pb2
from logstore.records import encode_batch
from logstore.records.layout import HEADER_SIZE
from logstore.storage import DataDir
from tests.broker_fixture import BrokerProcess
from tests.faults.fs import small_fs
from tests.server.helpers import (
    TIMEOUT_S,
    connect,
    create_topic,
    fetch_partition,
    produce,
    read_all,
    values,
)

EXIT_STORAGE = 3
EXIT_TIMEOUT_S = 30.0
BATCHES = 60
RECORDS_PER_BATCH = 5
BASE_TIMESTAMP = 1_700_000_000_000


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[list[BrokerProcess]]:
    """Brokers a test starts; each is killed at teardown."""
    started: list[BrokerProcess] = []
    yield started
    for broker in started:
        broker.kill()


def _broker(brokers: list[BrokerProcess], data_dir: Path, tmp_path: Path, config: str = "") -> BrokerProcess:
    config_path = None
    if config:
        config_path = tmp_path / f"logstore-{len(brokers)}.toml"
        config_path.write_text(config)
    broker = BrokerProcess(data_dir, config=config_path)
    broker.log_path = tmp_path / f"broker-{len(brokers)}.log"  # beside, never inside, the data
    brokers.append(broker)
    return broker


def _refused_start(broker: BrokerProcess) -> str:
    """Start a broker that must refuse to: returns its output after checking the exit code."""
    broker.start(wait=False)
    assert broker.process is not None
    code = broker.process.wait(EXIT_TIMEOUT_S)
    output = broker.log_path.read_text()
    assert code == EXIT_STORAGE, output
    errors = [json.loads(line) for line in output.splitlines() if '"level": "error"' in line]
    assert len(errors) == 1, output
    assert "Traceback" not in output
    return errors[0]["msg"]


def _batch_values(i: int) -> list[bytes]:
    return [f"b{i}-r{r}:".encode().ljust(100, b"v") for r in range(RECORDS_PER_BATCH)]


TOPIC_CONFIG = {"segment_bytes": "4096", "index_interval_bytes": "0"}


def _fill(address: str, topic: str) -> list[bytes]:
    """Through a broker: a topic with ~10 small segments, an offset- and a time-index entry per
    batch."""
    written: list[bytes] = []
    with connect(address) as stub:
        create_topic(stub, topic, **TOPIC_CONFIG)
        for i in range(BATCHES):
            batch_values = _batch_values(i)
            result = produce(stub, topic, batch_values, timestamps=BASE_TIMESTAMP + 1000 * i)
            assert result.base_offset == len(written)
            written += batch_values
    return written


def _write(data_dir: Path, topic: str) -> list[bytes]:
    """The same files, written in-process with the embedded storage API and closed cleanly
    (faster than starting a broker to write them)."""
    written: list[bytes] = []
    with DataDir.open(data_dir, background=False) as store:
        store.create_topic(topic, 1, TOPIC_CONFIG)
        for i in range(BATCHES):
            batch_values = _batch_values(i)
            store.append(topic, 0, encode_batch(batch_values, timestamps=BASE_TIMESTAMP + 1000 * i))
            written += batch_values
    del store
    gc.collect()  # closed segments keep their read mappings until collected: unmap them now
    return written


def _segments(partition_dir: Path) -> list[Path]:
    return sorted(partition_dir.glob("*.log"))


def _batch_starts(log_file: Path) -> list[tuple[int, int]]:
    """(position, base_offset) of every batch in a .log."""
    data = log_file.read_bytes()
    starts, position = [], 0
    while position + HEADER_SIZE <= len(data):
        base_offset, length = struct.unpack_from("<qi", data, position)
        starts.append((position, base_offset))
        position += length
    return starts


# -- a data directory that cannot be used ---------------------------------------------------------


def test_a_missing_parent_directory_exits_3_with_a_clear_message(brokers, tmp_path):
    broker = _broker(brokers, tmp_path / "not-mounted" / "data", tmp_path)

    message = _refused_start(broker)

    assert "not-mounted" in message and "does not exist" in message, message
    assert not (tmp_path / "not-mounted").exists()


@pytest.mark.parametrize("existing", [True, False], ids=["with-data", "empty"])
def test_a_read_only_data_directory_exits_3_with_a_clear_message(brokers, tmp_path, existing):
    # root ignores mode bits, so read-only means a read-only mount
    with small_fs(tmp_path / "ro", 8) as fs:
        data_dir = fs.path / "data"
        if existing:
            written = _write(data_dir, "kept")
        else:
            data_dir.mkdir()
        fs.remount(read_only=True)

        message = _refused_start(_broker(brokers, data_dir, tmp_path))

        assert "Read-only file system" in message and str(data_dir) in message, message
        if existing:  # and it is all still there once the disk is writable again
            fs.remount(read_only=False)
            broker = _broker(brokers, data_dir, tmp_path).start()
            with connect(broker.address) as stub:
                assert values(read_all(stub, "kept")) == written
            assert broker.stop() == 0


def test_a_data_directory_in_use_by_another_broker_exits_3(brokers, tmp_path):
    first = _broker(brokers, tmp_path / "data", tmp_path).start()

    message = _refused_start(_broker(brokers, tmp_path / "data", tmp_path))

    assert "in use by another process" in message, message
    assert first.running


def test_a_data_directory_that_is_a_file_exits_3(brokers, tmp_path):
    (tmp_path / "data").write_text("not a directory")

    message = _refused_start(_broker(brokers, tmp_path / "data", tmp_path))

    assert "File exists" in message or "Not a directory" in message, message


def test_an_unreadable_topics_file_exits_3_and_says_what_to_do(brokers, tmp_path):
    _write(tmp_path / "data", "kept")
    (tmp_path / "data" / "topics.json").write_text('{"topics": {"kept": ')  # torn

    message = _refused_start(_broker(brokers, tmp_path / "data", tmp_path))

    assert "topics.json is unreadable" in message and "remove it" in message, message


# -- damaged files --------------------------------------------------------------------------------


def _garbage(path: Path) -> None:
    path.write_bytes(random.Random(path.name).randbytes(max(path.stat().st_size, 64)))


def _torn(path: Path) -> None:
    os.truncate(path, path.stat().st_size - 3)  # cut mid-entry


DAMAGE = {  # (suffix, what is done to it) per sealed segment, in order
    "garbage index": (".index", _garbage),
    "garbage time index": (".timeindex", _garbage),
    "torn index": (".index", _torn),
    "torn time index": (".timeindex", _torn),
    "deleted index": (".index", os.unlink),
    "deleted time index": (".timeindex", os.unlink),
}


def test_damaged_indexes_are_rebuilt_logged_and_every_record_reads_back(brokers, tmp_path):
    broker = _broker(brokers, tmp_path / "data", tmp_path)
    written = _write(tmp_path / "data", "t")
    segments = _segments(tmp_path / "data" / "t-0")
    assert len(segments) > len(DAMAGE) + 1
    damaged = {}
    for segment, (name, (suffix, damage)) in zip(segments, DAMAGE.items(), strict=False):
        damage(segment.with_suffix(suffix))
        damaged[name] = int(segment.stem)

    broker.start()
    log_text = broker.log_path.read_text()
    for name, base in damaged.items():
        rebuilt = [line for line in log_text.splitlines() if f"segment {base}" in line and "rebuild" in line]
        assert rebuilt, f"{name} of segment {base}: no rebuild logged"
    with connect(broker.address) as stub:
        assert values(read_all(stub, "t")) == written
        for offset in range(0, len(written), 3):  # index lookups land on the right batch
            fetched = fetch_partition(stub, "t", offset=offset, max_bytes=1)
            first = offset - offset % RECORDS_PER_BATCH
            assert fetched.next_offset == first + RECORDS_PER_BATCH
        for i in range(0, BATCHES, 4):  # time index lookups too
            listed = stub.ListOffsets(
                records_pb2.ListOffsetsRequest(partitions=[records_pb2.ListOffsetsPartition(
                    topic="t", spec=records_pb2.OFFSET_TIMESTAMP, timestamp_ms=BASE_TIMESTAMP + 1000 * i - 1)]),
                timeout=TIMEOUT_S,
            )
            assert listed.offsets[0].offset == i * RECORDS_PER_BATCH
    assert broker.stop() == 0
    assert list((tmp_path / "data").rglob("*.corrupt-at-*")) == []


def test_a_corrupt_byte_in_a_sealed_segment_is_cut_logged_and_quarantined(brokers, tmp_path):
    # no checkpoint after creation: the crash recovers every segment from the first one
    config = "[maintenance]\ncheckpoint_interval_ms = 3600000\n"
    broker = _broker(brokers, tmp_path / "data", tmp_path, config).start()
    written = _fill(broker.address, "t")
    broker.kill()  # an unclean stop: the next start checks the crc of every batch
    segments = _segments(tmp_path / "data" / "t-0")
    victim = segments[len(segments) // 2]
    position, cut_offset = _batch_starts(victim)[2]
    with open(victim, "r+b") as file:  # one byte of the third batch's records, covered by its crc
        file.seek(position + HEADER_SIZE + 7)
        byte = file.read(1)
        file.seek(position + HEADER_SIZE + 7)
        file.write(bytes([byte[0] ^ 0x40]))

    broker.start()

    log_text = broker.log_path.read_text()
    assert "recovery cut" in log_text and f"segment {int(victim.stem)}" in log_text, log_text
    kept = victim.with_name(f"{victim.name}.corrupt-at-{position}")
    assert kept.exists(), sorted(p.name for p in victim.parent.iterdir())
    for later in segments[segments.index(victim) + 1 :]:  # later segments are out of the log too
        assert later.with_name(f"{later.name}.corrupt-at-0").exists()
    with connect(broker.address) as stub:
        assert values(read_all(stub, "t")) == written[:cut_offset]
        result = produce(stub, "t", [b"after"])
        assert result.base_offset == cut_offset
    assert broker.stop() == 0


def test_garbage_after_the_last_batch_is_cut_and_quarantined_even_after_a_clean_stop(brokers, tmp_path):
    broker = _broker(brokers, tmp_path / "data", tmp_path)
    written = _write(tmp_path / "data", "t")
    active = _segments(tmp_path / "data" / "t-0")[-1]
    size = active.stat().st_size
    with open(active, "ab") as file:
        file.write(b"\x07garbage" * 20)

    broker.start()

    assert active.with_name(f"{active.name}.corrupt-at-{size}").exists()
    assert "recovery cut 160 bytes" in broker.log_path.read_text()
    with connect(broker.address) as stub:
        assert values(read_all(stub, "t")) == written
        assert produce(stub, "t", [b"after"]).base_offset == len(written)
    assert broker.stop() == 0
