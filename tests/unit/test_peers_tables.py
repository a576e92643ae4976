"""The peers bench's tables and goals from its rows (benchmarks/protocols.py), without servers:
a run of batch 32 alone (`--batches 32`) has no batch-1 comparison and still gets its goals
against Triton; the docs' table has every contender and concurrency."""

from __future__ import annotations

from benchmarks import protocols


def row(protocol: str, batch: int, concurrency: int, p50: float, rps: float, cpu: float | None = 1.0) -> dict:
    return {"protocol": protocol, "batch": batch, "concurrency": concurrency, "p50_ms": p50, "p95_ms": 2 * p50,
            "p99_ms": 3 * p50, "requests_per_s": rps, "server_cpu_ms_per_request": cpu}


def rows_for(batch: int) -> list[dict]:
    out = []
    for protocol, speed in (("v2-binary", 1.0), ("v2-grpc", 0.8), ("triton-v2-binary", 0.5), ("triton-grpc", 0.5)):
        for c in protocols.CONCURRENCY[batch]:
            out.append(row(protocol, batch, c, p50=2.0 / speed, rps=100 * speed * c))
    return out


def test_batch_32_alone_has_goals_against_triton_and_no_batch_1_comparison(capsys):
    rows = rows_for(32)
    comparison = protocols.peer_comparison(rows, ["triton"])
    assert comparison == {"ratios": {}, "goals": {}}
    goals = protocols.against_triton(rows, 32)
    assert goals["v2-binary c16 req/s >= 1.3x triton-v2-binary's"] == 2.0
    assert goals["v2-binary c1 p50 <= 1x triton-v2-binary's"] == 0.5
    assert protocols.goal_met("v2-binary c16 req/s >= 1.3x triton-v2-binary's", 2.0)
    protocols.print_peers_table(rows, 32, "batch 32")
    table = capsys.readouterr().out
    assert "| v2-binary | 2.000 / 4.000 / 6.000 | 1,600, 6.0 | 1.00 |" in table
    assert table.count("\n| ") == 5  # the header and one line per contender


def test_batch_1_compares_ours_with_each_peer():
    comparison = protocols.peer_comparison(rows_for(1), ["triton"])
    assert comparison["ratios"]["v2-binary/triton-v2-binary c64 req/s"] == 2.0
    assert comparison["goals"]["v2-binary c16 req/s >= 1.5x best peer (triton-v2-binary)"] == 2.0
