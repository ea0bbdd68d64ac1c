"""bench/heartbeat.py reads wrk's report: units and optional lines included."""

from __future__ import annotations

import pytest

from bench.heartbeat import parse_wrk

REPORT = """Running 10s test @ http://127.0.0.1:41871
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    68.12ms   40.20ms   1.02s    91.00%
    Req/Sec   475.10     80.30   610.00     70.00%
  Latency Distribution
     50%  640.00us
     75%   80.10ms
     90%  110.00ms
     99%    1.25s
  4751 requests in 10.01s, 1.70MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec:    474.63
Transfer/sec:    173.80KB
"""


def test_a_report_becomes_numbers():
    run = parse_wrk(REPORT)
    assert run.requests == 4751
    assert run.seconds == pytest.approx(10.01)
    assert run.rps == pytest.approx(4751 / 10.01)
    assert run.p50_ms == pytest.approx(0.64)
    assert run.p99_ms == pytest.approx(1250.0)
    assert run.non_2xx == 7
    assert run.socket_errors == 3


def test_a_clean_run_has_no_error_lines_and_minutes_are_minutes():
    clean = "\n".join(
        line
        for line in REPORT.replace("10.01s", "1.50m").splitlines()
        if "errors" not in line and "Non-2xx" not in line
    )
    run = parse_wrk(clean)
    assert run.seconds == pytest.approx(90.0)
    assert (run.non_2xx, run.socket_errors) == (0, 0)


def test_a_report_without_latency_distribution_is_refused():
    without = REPORT.split("  Latency Distribution")[0] + "  4751 requests in 10.01s, 1.70MB read\n"
    with pytest.raises(ValueError, match="--latency"):
        parse_wrk(without)
