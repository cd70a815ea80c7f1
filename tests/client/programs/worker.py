"""A ``TaskQueue`` worker pool whose handler takes ``--work-ms`` per record and appends
``partition offset`` to ``DONE_FILE`` once a record is done; run (and sent SIGTERM or SIGKILL) by
``tests/client/test_tasks.py``.

    python -m tests.client.programs.worker SERVER GROUP TOPIC DONE_FILE [--workers N] [--lock-ms MS]
        [--hang-after N]

``--hang-after N``: once N records are done, every later handler call blocks (until the process
is killed), so a SIGKILL certainly finds records held and not acknowledged.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

from logstore.client import ShareRecord, TaskQueue


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("server")
    parser.add_argument("group")
    parser.add_argument("topic")
    parser.add_argument("done_file")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work-ms", type=float, default=100.0)
    parser.add_argument("--lock-ms", type=int, default=30_000)
    parser.add_argument("--hang-after", type=int, default=0)
    args = parser.parse_args()
    lock = threading.Lock()
    done = open(args.done_file, "a", buffering=1)  # noqa: SIM115 - open for the whole run

    finished = [0]
    hang = threading.Event()

    def handle(record: ShareRecord) -> None:
        if args.hang_after and finished[0] >= args.hang_after:
            hang.wait()  # never set: held until SIGKILL
        time.sleep(args.work_ms / 1000)
        with lock:
            done.write(f"{record.partition} {record.offset}\n")
            finished[0] += 1

    queue = TaskQueue(args.server, args.group, [args.topic], handle, workers=args.workers,
                      commit_interval_ms=100, lock_ms=args.lock_ms, max_pending=args.workers)
    queue.run()  # SIGTERM: finish what runs, acknowledge it, leave the group
    done.close()
    print("stopped", queue.metrics(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
