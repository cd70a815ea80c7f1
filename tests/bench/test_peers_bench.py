"""The side-by-side benchmark (``scripts/bench --quick``) runs end to end against real servers
and reports sane numbers for every system and workload. Never a speed assertion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE_WORKLOADS = {"produce", "produce-4", "consume", "latency-2000", "group-1", "group-2",
                  "group-4"}
FSYNC_WORKLOADS = {"produce", "produce-4", "latency-2000"}


def run_bench(*args: str, tmp_path: Path, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LOGSTORE_BENCH_DIR": str(tmp_path / "work")}
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_quick_run_measures_every_system_and_workload_with_positive_numbers(tmp_path: Path) -> None:
    completed = run_bench("--quick", "--json", "tmp.json", "--no-progress", tmp_path=tmp_path)
    assert completed.returncode == 0, completed.stderr[-5000:]
    assert "records/s" in completed.stdout
    assert "Goals" in completed.stdout

    document = json.loads((tmp_path / "tmp.json").read_text())
    results = [r for r in document["results"] if r["suite"] == "peers"]
    seen = {(r["params"]["tier"], r["params"]["system"], r["params"]["workload"]) for r in results}
    for system in ("logstore", "redis", "nats"):
        for workload in PAGE_WORKLOADS:
            assert ("page", system, workload) in seen, (system, workload)
    for system in ("logstore", "redis"):
        for workload in FSYNC_WORKLOADS:
            assert ("fsync", system, workload) in seen, (system, workload)
    assert {r["params"]["workload"] for r in results if r["params"]["system"] == "grpc"} == {
        "ceiling-upload", "ceiling-produce", "ceiling-download", "ceiling-consume"}
    apis = {(r["params"]["system"], r["params"]["variant"]) for r in results}
    assert {("logstore", "send"), ("logstore", "send_batch"), ("logstore", "poll"),
            ("logstore", "poll_columns")} <= apis

    for result in results:
        name = result["name"]
        assert result["records_per_second"] > 0, name
        assert result["mb_per_second"] > 0, name
        assert all(sample > 0 for sample in result["samples_seconds_per_op"]), name
        if result["params"]["kind"] == "latency":
            for key in ("p50_ms", "p99_ms", "p999_ms"):
                assert result["params"][key] > 0, (name, key)
            assert result["params"]["cdf_ms"], name
            assert sum(result["params"]["histogram"]) > 0, name
        if result["params"]["system"] == "logstore" and result["params"]["kind"] != "latency":
            ratios = result["params"]["ratios"]
            assert set(ratios) >= {"grpc"}, name
            assert all(value > 0 for value in ratios.values()), name

    peers = document["peers"]
    assert set(peers["systems"]) == {"logstore", "redis", "nats"}
    assert peers["systems"]["redis"]["server"]["version"]
    assert peers["systems"]["nats"]["server"]["version"]
    assert len(peers["goals"]) == 7
    assert all(goal["value"] is not None and goal["value"] > 0 for goal in peers["goals"])
    assert "Issue 16 scorecard" in completed.stdout
    scorecard = {row["key"]: row for row in peers["issue16"]}
    for key in ("consume-vs-redis", "poll-rate", "send-batch-vs-redis", "send-rate",
                "produce-1k-vs-ceiling", "consume-1k-vs-ceiling"):
        assert scorecard[key]["value"] is not None and scorecard[key]["value"] > 0, key
    assert list((tmp_path / "work").iterdir()) == []  # every server directory is gone


def test_only_refuses_an_unknown_system(tmp_path: Path) -> None:
    completed = run_bench("--quick", "--only", "logstore,kafka", tmp_path=tmp_path, timeout=60)
    assert completed.returncode != 0
    assert "logstore,redis,nats" in completed.stderr


def test_the_1k_consume_row_is_set_against_the_download_ceiling_by_cpu_per_mib() -> None:
    from bench.common import Result
    from bench.peers.report import cpu_against_ceiling

    def result(kind: str, system: str, size: int, client_ns: float, server_ns: float,
               direction: str = "download") -> Result:
        params = {"kind": kind, "system": system, "tier": "page", "size": size,
                  "workload": "consume" if kind == "consume" else f"ceiling-{direction}",
                  "direction": direction, "variant": "poll_columns",
                  "client_cpu_ns_per_record": client_ns, "server_cpu_ns_per_record": server_ns}
        return Result("peers", kind, kind, "run", 1000, 1000 * size, [1.0], params=params)

    ceiling = result("ceiling", "grpc", 1 << 20, 0.6e6, 0.4e6)  # a "record" is 1 MiB
    consume = result("consume", "logstore", 1024, 0.75e6 / 1024, 0.5e6 / 1024)
    [line] = cpu_against_ceiling([ceiling, consume])
    assert "download ceiling 0.60 + 0.40 ms" in line
    assert "consume 1 KiB poll_columns 0.75 + 0.50 ms (80% of the ceiling by CPU)" in line
    assert cpu_against_ceiling([consume]) == []

    shaped = result("ceiling", "grpc", 4 << 20, 4 * 0.7e6, 4 * 0.55e6, direction="consume")
    [line] = cpu_against_ceiling([ceiling, shaped, consume])
    assert "(80% of the ceiling by CPU); the consumer-shaped ceiling 0.70 + 0.55 ms " \
           "(consume at 100% of it by CPU)" in line


def test_every_variant_takes_its_turn_at_running_first() -> None:
    from bench.peers.harness import _turns
    from bench.peers.plan import Variant

    variants = [Variant("poll_columns", "poll_columns()"), Variant("poll", "poll() records")]
    firsts = [_turns(variants, run)[0].key for run in range(4)]
    assert firsts == ["poll_columns", "poll", "poll_columns", "poll"]
    assert sorted(v.key for v in _turns(variants, 1)) == ["poll", "poll_columns"]


def test_consume_split_sorts_a_clients_threads_into_main_reader_and_grpc() -> None:
    from bench.peers.consume_split import split

    names = {"10": "MainThread", "11": "logstore-subscribe-t-0"}  # 12 is a thread gRPC started
    before = {"10": 1.0, "11": 0.5}
    after = {"10": 1.25, "11": 1.0, "12": 0.75}  # 12 started after the first snapshot
    assert split(before, after, names) == {"main": 0.25, "reader": 0.5, "grpc": 0.75}
