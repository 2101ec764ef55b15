"""Document ids follow Convex's id format (docs/convex-export-api.md §11)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convex_cdc.devserver.ids import (
    ALPHABET,
    InvalidId,
    decode_document_id,
    decode_tablet_id,
    encode_document_id,
    encode_tablet_id,
)
from tests.fixtures.devserver import RunningDevServer


def test_the_encoding_matches_convex_reference_vectors() -> None:
    internal = [251]
    for _ in range(15):
        internal.append(internal[-1] * 251 % 256)
    # Convex's own stability test vector (table 1017) and the contract's minimum id.
    assert encode_document_id(1017, bytes(internal)) == "z43zp6c3e75gkmz1kfwj6mbbx5sw281h"
    assert encode_document_id(1, bytes(16)) == "0400000000000000000000000000248"


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=2**32 - 1), st.binary(min_size=16, max_size=16))
def test_ids_round_trip(table_number: int, internal: bytes) -> None:
    text = encode_document_id(table_number, internal)
    assert 31 <= len(text) <= 37
    decoded = decode_document_id(text)
    assert (decoded.table_number, decoded.internal_id) == (table_number, internal)


def test_server_ids_are_32_character_real_ids_in_table_10001(
    devserver: RunningDevServer,
) -> None:
    ids = devserver.transact(
        [{"op": "insert", "table": "t", "fields": {"n": i}} for i in range(300)]
    )["ids"]
    other = devserver.transact([{"op": "insert", "table": "u", "fields": {}}])["ids"][0]
    assert len(set(ids)) == 300
    for doc_id in ids:
        assert len(doc_id) == 32
        assert set(doc_id) <= set(ALPHABET)
        assert decode_document_id(doc_id).table_number == 10001
    assert decode_document_id(other).table_number == 10002
    # The last two internal-id bytes are today's day count since the epoch.
    days = {int.from_bytes(decode_document_id(doc_id).internal_id[14:], "big") for doc_id in ids}
    assert len(days) == 1
    assert 19_000 < days.pop() < 40_000
    # Within a table, string order is the internal-id (by_id) order.
    by_text = sorted(ids)
    by_internal = sorted(ids, key=lambda doc_id: decode_document_id(doc_id).internal_id)
    assert by_text == by_internal


def _corruptions(doc_id: str, rng: random.Random) -> list[str]:
    position = rng.randrange(len(doc_id))
    changed = ALPHABET[(ALPHABET.index(doc_id[position]) + 1) % 32]
    swapped = doc_id[:position] + changed + doc_id[position + 1 :]
    return [
        swapped,
        doc_id[:-1],
        doc_id + "0",
        doc_id.upper(),
        doc_id[:5] + "u" + doc_id[6:],  # 'u' is not in the alphabet
        doc_id[:-1] + ALPHABET[ALPHABET.index(doc_id[-1]) ^ 1],  # padding bits set
    ]


def test_corrupted_ids_are_rejected(devserver: RunningDevServer) -> None:
    ids = devserver.transact([{"op": "insert", "table": "t", "fields": {}} for _ in range(50)])[
        "ids"
    ]
    rng = random.Random(7)
    for doc_id in ids:
        for bad in _corruptions(doc_id, rng):
            with pytest.raises(InvalidId):
                decode_document_id(bad)
    for bad in ("", "0" * 30, "0" * 38, "z" * 32):
        with pytest.raises(InvalidId):
            decode_document_id(bad)


def test_tablet_ids_are_22_char_base64url() -> None:
    rng = random.Random(3)
    tablets = [rng.randbytes(16) for _ in range(50)]
    texts = [encode_tablet_id(tablet) for tablet in tablets]
    assert all(len(text) == 22 and "=" not in text for text in texts)
    assert [decode_tablet_id(text) for text in texts] == tablets
    for bad in ("A" * 21, "A" * 23, "A" * 21 + "B", "+" * 22):
        with pytest.raises(InvalidId):
            decode_tablet_id(bad)
