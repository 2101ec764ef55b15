"""Convex document ids and tablet ids, encoded exactly as the real server does (contract §5).

A document id is ``varint(table_number) ‖ internal_id(16) ‖ footer(2)`` in lowercase
Crockford base32 (RFC-4648 bit order, no padding). The footer is the Fletcher-16 checksum
(both sums mod 256) of the bytes before it, XOR the id version 0, little-endian. The
internal id is 14 random bytes followed by the big-endian day count since the epoch.

Within one table, ascending id *strings* sort exactly like the internal ids: every id of a
table has the same varint prefix and length, and the alphabet is in ASCII order. The
snapshot walk relies on that (see :func:`encode_document_id` with another table number).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_RFC_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_TO_CONVEX = str.maketrans(_RFC_ALPHABET, ALPHABET)
_DECODE = {char: value for value, char in enumerate(ALPHABET)}

INTERNAL_ID_LEN = 16
_FOOTER_LEN = 2
_VERSION = 0
_MIN_BINARY_LEN = 1 + INTERNAL_ID_LEN + _FOOTER_LEN
_MAX_BINARY_LEN = 5 + INTERNAL_ID_LEN + _FOOTER_LEN
MAX_TABLE_NUMBER = 2**32 - 1
FIRST_USER_TABLE_NUMBER = 10001
"""User tables of deployments created after about Dec 2023 start here (32-character ids)."""

MIN_INTERNAL_ID = bytes(INTERNAL_ID_LEN)


class InvalidId(ValueError):
    """A string that is not a canonical Convex document id."""


@dataclass(frozen=True, slots=True)
class DocumentId:
    """A decoded document id."""

    table_number: int
    internal_id: bytes


def _encoded_len(binary_len: int) -> int:
    return (binary_len * 8 + 4) // 5


_MIN_TEXT_LEN = _encoded_len(_MIN_BINARY_LEN)
_MAX_TEXT_LEN = _encoded_len(_MAX_BINARY_LEN)


def _varint(number: int) -> bytes:
    out = bytearray()
    while number >= 0x80:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def fletcher16(data: bytes) -> int:
    """Fletcher-16 with both running sums taken mod 256 (Convex's variant)."""
    c0 = c1 = 0
    for byte in data:
        c0 = (c0 + byte) & 0xFF
        c1 = (c1 + c0) & 0xFF
    return (c1 << 8) | c0


def base32_encode(data: bytes) -> str:
    """Lowercase Crockford base32, RFC-4648 bit order, no padding."""
    return base64.b32encode(data).decode("ascii").rstrip("=").translate(_TO_CONVEX)


def base32_decode(text: str) -> bytes:
    """Strict inverse of :func:`base32_encode`: one text form per byte string.

    Raises:
        InvalidId: a character outside the alphabet, an impossible length, or non-zero
            padding bits (a non-canonical spelling).
    """
    bits = 0
    nbits = 0
    out = bytearray()
    for char in text:
        value = _DECODE.get(char)
        if value is None:
            raise InvalidId(f"character {char!r} is not in the id alphabet")
        bits = (bits << 5) | value
        nbits += 5
        if nbits >= 8:
            nbits -= 8
            out.append((bits >> nbits) & 0xFF)
            bits &= (1 << nbits) - 1
    if nbits >= 5 or bits != 0:
        raise InvalidId("base32 text is not canonical")
    return bytes(out)


def encode_document_id(table_number: int, internal_id: bytes) -> str:
    """The text form of a document id.

    Raises:
        ValueError: the table number is outside 1..2^32-1 or the internal id is not 16 bytes.
    """
    if not 0 < table_number <= MAX_TABLE_NUMBER:
        raise ValueError(f"table number {table_number} is out of range")
    if len(internal_id) != INTERNAL_ID_LEN:
        raise ValueError("an internal id is 16 bytes")
    body = _varint(table_number) + internal_id
    footer = fletcher16(body) ^ _VERSION
    return base32_encode(body + footer.to_bytes(2, "little"))


def decode_document_id(text: str) -> DocumentId:
    """Parse and verify a document id (length, alphabet, canonical bits, varint, checksum).

    Raises:
        InvalidId: ``text`` is not a valid, canonical Convex id.
    """
    if not _MIN_TEXT_LEN <= len(text) <= _MAX_TEXT_LEN:
        raise InvalidId(f"invalid id length {len(text)}")
    data = base32_decode(text)
    number = 0
    pos = 0
    while True:
        if pos >= 5:
            raise InvalidId("table number is too large")
        if pos >= len(data):
            raise InvalidId("truncated table number")
        byte = data[pos]
        number |= (byte & 0x7F) << (7 * pos)
        pos += 1
        if byte < 0x80:
            break
    if number == 0 or number > MAX_TABLE_NUMBER:
        raise InvalidId("invalid table number")
    if len(data) != pos + INTERNAL_ID_LEN + _FOOTER_LEN:
        raise InvalidId(f"invalid id length {len(text)}")
    internal_id = data[pos : pos + INTERNAL_ID_LEN]
    footer = int.from_bytes(data[pos + INTERNAL_ID_LEN :], "little")
    if footer != fletcher16(data[: pos + INTERNAL_ID_LEN]) ^ _VERSION:
        raise InvalidId("id checksum does not match")
    return DocumentId(number, internal_id)


def is_document_id(text: str) -> bool:
    """Whether ``text`` decodes as a document id (cheap rejection of most strings)."""
    if not _MIN_TEXT_LEN <= len(text) <= _MAX_TEXT_LEN:
        return False
    try:
        decode_document_id(text)
    except InvalidId:
        return False
    return True


def new_internal_id(random_bytes: bytes, days_since_epoch: int) -> bytes:
    """14 random bytes followed by the 2-byte big-endian day count, as Convex does."""
    return random_bytes[:14] + (days_since_epoch & 0xFFFF).to_bytes(2, "big")


MIN_DOCUMENT_ID = encode_document_id(1, MIN_INTERNAL_ID)
"""The smallest id (table number 1, all-zero internal id): the cursor of a fresh table."""


def encode_tablet_id(tablet_id: bytes) -> str:
    """A tablet id as it appears in a list_snapshot cursor: unpadded base64url (22 chars)."""
    return base64.urlsafe_b64encode(tablet_id).decode("ascii").rstrip("=")


def decode_tablet_id(text: str) -> bytes:
    """Inverse of :func:`encode_tablet_id`.

    Raises:
        InvalidId: not 22 base64url characters encoding 16 bytes canonically.
    """
    if len(text) != 22:
        raise InvalidId("a tablet id is 22 base64url characters")
    try:
        raw = base64.urlsafe_b64decode(text + "==")
    except (binascii.Error, ValueError) as exc:
        raise InvalidId("tablet id is not base64url") from exc
    if len(raw) != INTERNAL_ID_LEN or encode_tablet_id(raw) != text:
        raise InvalidId("tablet id is not canonical")
    return raw
