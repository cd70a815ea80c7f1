"""A PartitionLog driven by random appends (timestamps out of order), reads, time lookups, rolls,
reopenings, truncations, crashes (with the active .log cut at a random byte) and clean closes
after which the active .log loses its tail at a batch boundary, checked after every step against
a list model."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from logstore.errors import OffsetOutOfRangeError
from logstore.records import decode_records, encode_batch, iter_headers
from logstore.storage import LogConfig, ManualClock, PartitionLog

from .helpers import T0, read_all

CONFIG = LogConfig(segment_bytes=4096, index_interval_bytes=256, segment_index_bytes=64)

values = st.binary(min_size=0, max_size=300)
records = st.tuples(values, st.integers(-50, 50))  # a value and its timestamp - T0
batches = st.lists(st.lists(records, min_size=1, max_size=4), min_size=1, max_size=3)


class PartitionLogMachine(RuleBasedStateMachine):
    """Model: the records as (offset, value), their timestamps, every batch as (base_offset,
    next_offset), log start."""

    @initialize()
    def open(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="logstore-sm-"))
        self.clock = ManualClock()
        self.log = PartitionLog.open(self.directory, config=CONFIG, clock=self.clock)
        self.records: list[tuple[int, bytes]] = []
        self.timestamps: dict[int, int] = {}
        self.batches: list[tuple[int, int]] = []
        self.start = 0
        self.end = 0

    def teardown(self) -> None:
        if hasattr(self, "log"):
            if not self.log.closed:
                self.log.close()
            shutil.rmtree(self.directory, ignore_errors=True)

    def _reopen(self) -> None:
        self.log = PartitionLog.open(self.directory, config=CONFIG, clock=self.clock)

    def _keep_below(self, end: int) -> None:
        self.records = [(o, v) for o, v in self.records if o < end]
        self.batches = [(b, n) for b, n in self.batches if n <= end]
        self.end = end

    @rule(payload=batches)
    def append(self, payload: list[list[tuple[bytes, int]]]) -> None:
        data = b"".join(
            encode_batch([v for v, _ in batch], timestamps=[T0 + t for _, t in batch]) for batch in payload
        )
        result = self.log.append(data)
        assert result.base_offset == self.end
        for batch in payload:
            self.batches.append((self.end, self.end + len(batch)))
            for i, (value, t) in enumerate(batch):
                self.records.append((self.end + i, value))
                self.timestamps[self.end + i] = T0 + t
            self.end += len(batch)
        assert result.log_end_offset == self.end

    @precondition(lambda self: self.end > self.start)
    @rule(data=st.data())
    def read(self, data) -> None:
        offset = data.draw(st.integers(self.start, self.end - 1))
        max_bytes = data.draw(st.sampled_from([0, 1, 500, 1 << 20]))
        result = self.log.read(offset, max_bytes)
        got = decode_records(result.data)
        base, _ = next(b for b in self.batches if b[0] <= offset < b[1])
        assert got[0].offset == base  # whole batches, from the one holding the offset
        expected = dict(self.records)
        assert all(expected[r.offset] == r.value for r in got)

    @rule(data=st.data())
    def read_out_of_range(self, data) -> None:
        offset = data.draw(st.one_of(st.integers(self.end + 1, self.end + 10),
                                     st.integers(-5, self.start - 1) if self.start else st.just(-1)))
        try:
            self.log.read(offset)
        except OffsetOutOfRangeError as error:
            assert (error.log_start_offset, error.log_end_offset) == (self.start, self.end)
        else:
            raise AssertionError(f"read({offset}) outside [{self.start}, {self.end}] succeeded")

    @rule(t=st.integers(-55, 55))
    def offset_for_timestamp(self, t: int) -> None:
        want = next(
            (o for o, _ in self.records if o >= self.start and self.timestamps[o] >= T0 + t), None
        )
        assert self.log.offset_for_timestamp(T0 + t) == want

    @rule()
    def roll(self) -> None:
        self.log.roll()

    @rule()
    def close_and_reopen(self) -> None:
        self.log.close()
        self._reopen()

    @rule(data=st.data())
    def crash_and_cut_the_active_log(self, data) -> None:
        self.log.abandon()
        active = max(self.directory.glob("*.log"))
        base = int(active.name.split(".")[0])
        raw = active.read_bytes()
        cut = data.draw(st.integers(0, len(raw)), label="cut")
        os.truncate(active, cut)
        whole = [h.next_offset for h in iter_headers(raw) if h.end_position <= cut]
        recovered_end = whole[-1] if whole else base
        self._keep_below(max(recovered_end, self.start))
        self._reopen()

    @rule(data=st.data())
    def close_and_lose_the_active_tail_at_a_batch_boundary(self, data) -> None:
        """A copy, a restore, a disk that lied: the indexes still name the lost batches."""
        self.log.close()
        active = max(self.directory.glob("*.log"))
        base = int(active.name.split(".")[0])
        headers = list(iter_headers(active.read_bytes()))
        keep = data.draw(st.integers(0, len(headers)), label="batches kept")
        os.truncate(active, headers[keep - 1].end_position if keep else 0)
        self._keep_below(max(headers[keep - 1].next_offset if keep else base, self.start))
        self._reopen()

    @precondition(lambda self: self.end > self.start)
    @rule(data=st.data())
    def truncate(self, data) -> None:
        offset = data.draw(st.integers(self.start, self.end - 1))
        self.log.truncate_to(offset)
        base = next(b for b, n in self.batches if b <= offset < n)
        self._keep_below(max(base, self.start))

    @precondition(lambda self: self.end > self.start)
    @rule(data=st.data())
    def delete_records_before(self, data) -> None:
        offset = data.draw(st.integers(self.start, self.end))
        assert self.log.delete_records_before(offset) == offset
        self.start = offset

    @invariant()
    def offsets_match_the_model(self) -> None:
        if not hasattr(self, "log"):
            return
        assert (self.log.log_start_offset, self.log.log_end_offset) == (self.start, self.end)

    @invariant()
    def every_readable_record_matches_the_model(self) -> None:
        if not hasattr(self, "log"):
            return
        assert read_all(self.log) == [(o, v) for o, v in self.records if o >= self.start]


PartitionLogMachine.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPartitionLog = PartitionLogMachine.TestCase
