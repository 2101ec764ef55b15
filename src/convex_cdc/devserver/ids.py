"""Convex document ids and tablet ids, encoded exactly as the real server does.

The format is summarised in docs/convex-export-api.md §11.

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
import itertools
from dataclasses import dataclass

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_ALPHABET_CHARS = frozenset(ALPHABET)
_PAIRS = tuple(first + second for first in ALPHABET for second in ALPHABET)
"""Two characters for each 10-bit value."""
_TO_DIGITS = bytes(
    ord("0123456789abcdefghijklmnopqrstuv"[ALPHABET.index(chr(byte))])
    if chr(byte) in _ALPHABET_CHARS
    else ord("!")
    for byte in range(256)
)

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
    # The second sum adds up the running first sums; both only matter mod 256.
    return ((sum(itertools.accumulate(data)) & 0xFF) << 8) | (sum(data) & 0xFF)


def base32_encode(data: bytes) -> str:
    """Lowercase Crockford base32, RFC-4648 bit order, no padding."""
    length = (len(data) * 8 + 4) // 5
    value = int.from_bytes(data, "big") << (length * 5 - len(data) * 8)
    if length % 2:
        value <<= 5  # a whole number of character pairs; the extra one is cut off below
    top = 5 * (length + length % 2) - 10
    pairs = [_PAIRS[(value >> shift) & 0x3FF] for shift in range(top, -1, -10)]
    return "".join(pairs)[:length]


def base32_decode(text: str) -> bytes:
    """Strict inverse of :func:`base32_encode`: one text form per byte string.

    Raises:
        InvalidId: a character outside the alphabet, an impossible length, or non-zero
            padding bits (a non-canonical spelling).
    """
    # The alphabet in order is int()'s base-32 digits spelled differently, so int() does
    # the decoding in C. Every other character becomes "!", which int() refuses.
    try:
        value = int(text.encode("ascii").translate(_TO_DIGITS), 32)
    except (UnicodeEncodeError, ValueError):
        if not text:
            return b""
        char = next(char for char in text if char not in _ALPHABET_CHARS)
        raise InvalidId(f"character {char!r} is not in the id alphabet") from None
    spare = len(text) * 5 % 8  # bits past the last whole byte: fewer than 5, all zero
    if spare >= 5 or value & ((1 << spare) - 1):
        raise InvalidId("base32 text is not canonical")
    return (value >> spare).to_bytes(len(text) * 5 // 8, "big")


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
