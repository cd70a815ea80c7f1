"""The nemesis's page-cache loss on a real partition directory: it damages only what lies after
the durable offset, and the offset it reports as the first one removed is exactly where the
storage layer's recovery ends the log."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from bench.torture.nemesis import damage_partition, scan
from logstore.records import encode_batch
from logstore.storage import DataDir

BATCHES = 20
RECORDS_PER_BATCH = 3
#: Where the acknowledged records end: inside the first segment (the damage may then cut
#: whole later segments) or at the second one's start.
ACKNOWLEDGED_ENDS = (12, 30)


@pytest.fixture(scope="module")
def unclean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with one partition of several segments, left as a kill leaves it."""
    path = tmp_path_factory.mktemp("nemesis") / "data"
    with DataDir.open(path, background=False) as store:
        store.create_topic("t", 1, {"flush": "never", "segment_bytes": 4096})
        for batch in range(BATCHES):
            values = [b"%03d-" % batch + b"x" * 100 for _ in range(RECORDS_PER_BATCH)]
            store.append("t", 0, encode_batch(values))
    (path / "t-0" / ".clean_shutdown").unlink()
    (path / "t-0" / "checkpoint.json").write_text(
        json.dumps({"log_start_offset": 0, "recovery_point": 0}))
    return path


@pytest.mark.parametrize("acknowledged_end", ACKNOWLEDGED_ENDS)
@pytest.mark.parametrize("seed", range(25))
def test_recovery_ends_the_log_where_the_nemesis_says(unclean: Path, tmp_path: Path, seed: int,
                                                      acknowledged_end: int) -> None:
    data = tmp_path / "data"
    shutil.copytree(unclean, data)
    assert len(list((data / "t-0").glob("*.log"))) > 1  # the damage may span segments
    before = scan(data / "t-0")
    done = damage_partition(data / "t-0", acknowledged_end, random.Random(seed))
    expected_end = BATCHES * RECORDS_PER_BATCH if done is None else done["offset"]
    assert expected_end >= acknowledged_end
    if done is not None:
        assert done["offset"] in {batch.base_offset for batch in before}
    with DataDir.open(data, background=False) as store:
        assert store.log("t", 0).log_end_offset == expected_end
