"""BoundedBuffer: guest output up to a limit, dropped or refused beyond it."""

from __future__ import annotations

import errno

from wasmlet.runtime.capture import BoundedBuffer


def test_collects_writes_under_the_limit() -> None:
    buf = BoundedBuffer(10)
    assert buf.write(b"abc") is None
    assert buf.write(b"defg") is None
    assert buf.size == 7
    assert buf.getvalue() == b"abcdefg"
    assert buf.dropped == 0
    assert not buf.overflowed


def test_empty_buffer_is_empty_bytes() -> None:
    assert BoundedBuffer(0).getvalue() == b""
    assert BoundedBuffer(5).getvalue() == b""


def test_exactly_at_the_limit_drops_nothing() -> None:
    buf = BoundedBuffer(4)
    buf.write(b"abcd")
    assert buf.getvalue() == b"abcd"
    assert buf.dropped == 0


def test_excess_is_dropped_and_noted() -> None:
    buf = BoundedBuffer(5)
    assert buf.write(b"abc") is None
    assert buf.write(b"defgh") is None  # reported as fully written: logs are best effort
    assert buf.write(b"xyz") is None
    assert buf.size == 5
    assert buf.dropped == 3 + 3
    assert buf.getvalue() == b"abcde\n[... 6 bytes dropped]"
    assert not buf.overflowed


def test_zero_limit_drops_everything() -> None:
    buf = BoundedBuffer(0)
    buf.write(b"hello")
    assert buf.size == 0
    assert buf.getvalue() == b"\n[... 5 bytes dropped]"


def test_fail_when_full_refuses_with_efbig() -> None:
    buf = BoundedBuffer(5, fail_when_full=True)
    assert buf.write(b"abc") is None
    assert buf.write(b"defgh") == -errno.EFBIG
    assert buf.overflowed
    # Nothing of the refused write is kept, nor counted as dropped.
    assert buf.getvalue() == b"abc"
    assert buf.dropped == 0
    # A write that still fits is accepted.
    assert buf.write(b"de") is None
    assert buf.getvalue() == b"abcde"


def test_clear_resets_everything() -> None:
    buf = BoundedBuffer(3, fail_when_full=True)
    buf.write(b"ab")
    buf.write(b"cdef")
    assert buf.overflowed
    buf.clear()
    assert (buf.size, buf.dropped, buf.overflowed) == (0, 0, False)
    assert buf.getvalue() == b""
    assert buf.write(b"xyz") is None
    assert buf.getvalue() == b"xyz"

    lossy = BoundedBuffer(2)
    lossy.write(b"abcd")
    lossy.clear()
    assert lossy.dropped == 0
    lossy.write(b"z")
    assert lossy.getvalue() == b"z"
