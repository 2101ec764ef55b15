"""The devserver's own API: transactions, truth, settings and the workload endpoint."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.devserver.export_calls import call, delete, error, insert, parse, replace, snapshot_pages
from tests.fixtures.devserver import DevServerRequestFailed, RunningDevServer

Factory = Callable[..., RunningDevServer]


def test_a_transaction_applies_all_writes_at_one_ts(devserver: RunningDevServer) -> None:
    created = devserver.transact(
        [insert("t", n=1), insert("t", "comp", big=2**62, raw={"$bytes": "AQI="}, f=2.0)]
    )
    assert isinstance(created["ts"], int)
    assert len(created["ids"]) == 2
    first, second = created["ids"]
    changed = devserver.transact([replace("t", first, n=2), delete("t", second, "comp")])
    assert changed["ids"] == [first, second]
    assert changed["ts"] > created["ts"]
    truth = devserver.truth()
    assert [(doc["component"], doc["table"], doc["_id"]) for doc in truth] == [("", "t", first)]
    assert truth[0]["fields"] == {"n": 2}
    assert truth[0]["_ts"] == changed["ts"]
    assert isinstance(truth[0]["_creationTime"], float)


def test_truth_keeps_export_json_values(devserver: RunningDevServer) -> None:
    devserver.transact(
        [insert("t", i=-(2**63), f=1.0, nan={"$float": "AAAAAAAA+H8="}, b={"$bytes": "AQI="})]
    )
    [doc] = devserver.truth()
    assert doc["fields"] == {
        "b": {"$bytes": "AQI="},
        "f": 1.0,
        "i": -(2**63),
        "nan": {"$float": "AAAAAAAA+H8="},
    }
    assert isinstance(doc["fields"]["f"], float)


def test_a_bad_transaction_applies_nothing(devserver: RunningDevServer) -> None:
    kept = devserver.transact([insert("t", n=1)])
    before = devserver.truth()
    bad_batches = [
        [insert("t", n=2), delete("t", "0400000000000000000000000000248")],
        [insert("t", n=2), replace("missing", kept["ids"][0], n=3)],
        [insert("new_table", n=2), insert("t", _hidden=1)],
        [insert("t", n=2), insert("bad-name", n=1)],
        [insert("t", n=2), {"op": "upsert", "table": "t", "fields": {}}],
        [insert("t", n=2), delete("t", kept["ids"][0]), delete("t", kept["ids"][0])],
    ]
    for writes in bad_batches:
        response = call(devserver, "POST", "/_devserver/transaction", json={"writes": writes})
        assert response.status_code == 400, writes
        error(response)
    assert devserver.truth() == before
    columns = parse(call(devserver, "GET", "/api/get_table_column_names"))["byComponent"]
    assert [table["name"] for table in columns[""]] == ["t"]
    with pytest.raises(DevServerRequestFailed):
        devserver.transact([replace("t", "nope", n=1)])


def test_malformed_bodies_are_400(devserver: RunningDevServer) -> None:
    for body in (b"", b"[]", b'{"writes": 1}', b'{"writes": [1]}', b"{nan}"):
        response = call(devserver, "POST", "/_devserver/transaction", content=body)
        assert response.status_code == 400


def test_settings_can_be_read_and_changed(devserver: RunningDevServer) -> None:
    current = devserver.settings()
    assert current["snapshot_page_size"] == 1024
    assert current["deltas_row_limit"] == 128
    changed = devserver.settings(snapshot_page_size=2, retention_seconds=60)
    assert changed["snapshot_page_size"] == 2
    assert changed["retention_seconds"] == 60.0
    devserver.transact([insert("t", n=i) for i in range(3)])
    assert [len(page["values"]) for page in snapshot_pages(devserver)] == [2, 1]
    for bad in (
        {"nope": 1},
        {"snapshot_page_size": 0},
        {"fail_rate": 2},
        {"deltas_row_limit": "x"},
    ):
        response = call(devserver, "POST", "/_devserver/settings", json=bad)
        assert response.status_code == 400, bad
    assert devserver.settings()["snapshot_page_size"] == 2


def test_the_workload_endpoint_runs_transactions(devserver_factory: Factory) -> None:
    server = devserver_factory(seed="demo", docs=300, workload_seed=3)
    before = server.truth()
    assert len(before) > 200
    result = server.workload(5)
    assert result["transactions"] == 5
    deltas = parse(
        call(server, "POST", "/api/document_deltas", json={"cursor": max(d["_ts"] for d in before)})
    )
    assert deltas["values"]
    assert max(value["_ts"] for value in deltas["values"]) <= result["ts"]
    assert (
        error(call(server, "POST", "/_devserver/workload", params={"transactions": -1}))[0] == 400
    )


def test_the_same_workload_seed_gives_the_same_data(devserver_factory: Factory) -> None:
    first = devserver_factory(seed="demo", docs=200, workload_seed=11)
    second = devserver_factory(seed="demo", docs=200, workload_seed=11)

    def shape(server: RunningDevServer) -> list[tuple[str, str, str, object]]:
        return [(d["component"], d["table"], d["_id"], d["fields"]) for d in server.truth()]

    assert shape(first) == shape(second)
