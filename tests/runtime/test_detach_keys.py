"""Detach-key parsing and the scanner that finds the sequence in chunked stdin."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.containers.detach_keys import DEFAULT_DETACH_KEYS, DetachScanner, parse_detach_keys
from runtime.errors import InvalidArgument


def test_parse_notation():
    assert parse_detach_keys("") == DEFAULT_DETACH_KEYS == b"\x10\x11"
    assert parse_detach_keys("ctrl-p,ctrl-q") == b"\x10\x11"
    assert parse_detach_keys("CTRL-A,x,ctrl-@,ctrl-_,ctrl-\\") == b"\x01x\x00\x1f\x1c"
    for bad in ("ctrl-", "ctrl-ab", "foo", "a,,b", "ctrl-1"):
        with pytest.raises(InvalidArgument, match=r"Invalid detach keys \(.*\) provided"):
            parse_detach_keys(bad)
    with pytest.raises(InvalidArgument, match="Invalid escape keys"):
        parse_detach_keys("nope", "escape")


def _run(scanner: DetachScanner, chunks: list[bytes]) -> tuple[bytes, bool]:
    out = b""
    for chunk in chunks:
        data, detached = scanner.feed(chunk)
        out += data
        if detached:
            return out, True
    return out, False


def test_scanner_holds_a_prefix_and_releases_it_when_broken():
    s = DetachScanner(b"\x10\x11")
    assert s.feed(b"ab\x10") == (b"ab", False)
    assert s.feed(b"\x10") == (b"\x10", False)      # broken, and a new prefix begins
    assert s.feed(b"c") == (b"\x10c", False)
    assert s.feed(b"\x10\x11tail") == (b"", True)


def _reference(data: bytes, keys: bytes) -> tuple[bytes, bool]:
    """Where the sequence first occurs, everything before it is delivered (or all of it)."""
    at = data.find(keys)
    if at < 0:
        # A trailing prefix of the keys is still held back.
        for n in range(min(len(keys) - 1, len(data)), 0, -1):
            if data.endswith(keys[:n]):
                return data[:-n], False
        return data, False
    return data[:at], True


@given(st.binary(max_size=40), st.lists(st.integers(1, 8), max_size=10),
       st.sampled_from([b"\x10\x11", b"ab", b"aab", b"x"]))
def test_chunking_does_not_matter(data: bytes, cuts: list[int], keys: bytes):
    chunks, rest = [], data
    for n in cuts:
        chunks.append(rest[:n])
        rest = rest[n:]
    chunks.append(rest)
    assert _run(DetachScanner(keys), chunks) == _run(DetachScanner(keys), [data])
    if keys != b"aab":   # a self-overlapping sequence: the scanner, like dockerd's, restarts
        assert _run(DetachScanner(keys), [data]) == _reference(data, keys)
