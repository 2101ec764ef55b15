"""Fault injection: errors, throttling, dropped bodies and stalls, without changing data."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from tests.devserver.export_calls import call, insert, parse
from tests.fixtures.devserver import RunningDevServer

Factory = Callable[..., RunningDevServer]


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("500", 500, "InternalServerError"),
        ("503", 503, "ServiceUnavailable"),
        ("429", 429, "RateLimited"),
    ],
)
def test_error_faults_answer_with_json_errors(
    devserver_factory: Factory, kind: str, status: int, code: str
) -> None:
    server = devserver_factory(fail_rate=1.0)
    server.transact([insert("t", n=1)])
    server.settings(fault_kinds=[kind])
    response = call(server, "GET", "/api/list_snapshot")
    assert response.status_code == status
    assert response.json()["code"] == code
    # The devserver's own endpoints are never faulted.
    assert len(server.truth()) == 1


def test_a_dropped_connection_sends_headers_and_part_of_the_body(
    devserver_factory: Factory,
) -> None:
    server = devserver_factory()
    server.transact([insert("t", n=i, text="x" * 200) for i in range(20)])
    whole = call(server, "GET", "/api/list_snapshot").content
    server.settings(fail_rate=1.0, fault_kinds=["drop"])
    with httpx.Client(headers={"Authorization": f"Convex {server.key}"}) as client:
        with client.stream("GET", server.url + "/api/list_snapshot") as response:
            assert response.status_code == 200
            assert int(response.headers["content-length"]) == len(whole)
            received = b""
            with pytest.raises(httpx.RemoteProtocolError):
                for chunk in response.iter_raw():
                    received += chunk
        assert 0 < len(received) < len(whole)
        assert whole.startswith(received)
    server.settings(fail_rate=0.0)
    assert call(server, "GET", "/api/list_snapshot").content == whole


def test_a_stall_answers_normally_after_sleeping(devserver_factory: Factory) -> None:
    server = devserver_factory(fail_rate=1.0, stall_seconds=0.05)
    server.settings(fault_kinds=["stall"])
    assert parse(call(server, "GET", "/api/test_streaming_export_connection")) is None


def test_faults_are_seeded_and_leave_data_alone(devserver_factory: Factory) -> None:
    def outcomes(seed: int) -> list[str]:
        server = devserver_factory(fail_rate=0.5, fault_seed=seed, stall_seconds=0.0)
        server.transact([insert("t", n=1)])
        seen = []
        for _ in range(40):
            try:
                response = call(server, "GET", "/api/list_snapshot")
            except httpx.RemoteProtocolError:
                seen.append("drop")
                continue
            if response.status_code == 200:
                assert [v["n"] for v in response.json()["values"]] == ["1"]
            seen.append(str(response.status_code))
        return seen

    first, second = outcomes(5), outcomes(5)
    assert first == second
    counts = Counter(first)
    assert counts["200"] > 0
    assert set(counts) - {"200"} <= {"500", "503", "429", "drop"}
    assert len(set(counts) - {"200"}) >= 3
