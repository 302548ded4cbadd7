"""Bounded reading and writing of wire formats.

Every decoder in pptpkit reads through :class:`Reader`, so a length field from a peer can never
make us read past the end of what was received or past the end of the structure it belongs to.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from pptpkit.errors import DecodeError

U8: Final = struct.Struct("!B")
U16: Final = struct.Struct("!H")
U32: Final = struct.Struct("!I")


class Reader:
    """Reads big-endian fields from a buffer without ever passing ``end``.

    ``restrict_to(n)`` narrows the readable window to the next ``n`` bytes (for a length-prefixed
    structure); inside it, reads past the window raise :class:`DecodeError`.
    """

    __slots__ = ("_buf", "_end", "_pos")

    def __init__(self, data: bytes | bytearray | memoryview, start: int = 0, end: int | None = None) -> None:
        self._buf = memoryview(data).cast("B")
        self._pos = start
        self._end = len(self._buf) if end is None else min(end, len(self._buf))
        if start < 0 or start > self._end:
            raise DecodeError("reader start beyond end of data")

    @property
    def position(self) -> int:
        return self._pos

    def remaining(self) -> int:
        return self._end - self._pos

    def at_end(self) -> bool:
        return self._pos >= self._end

    def _need(self, n: int) -> int:
        if n < 0 or self._pos + n > self._end:
            have = self._end - self._pos
            raise DecodeError(f"truncated: need {n} bytes at offset {self._pos}, have {have}")
        p = self._pos
        self._pos = p + n
        return p

    def u8(self) -> int:
        p = self._need(1)
        return self._buf[p]

    def u16(self) -> int:
        p = self._need(2)
        return int(U16.unpack_from(self._buf, p)[0])

    def u32(self) -> int:
        p = self._need(4)
        return int(U32.unpack_from(self._buf, p)[0])

    def unpack(self, st: struct.Struct) -> tuple[int | bytes, ...]:
        p = self._need(st.size)
        return st.unpack_from(self._buf, p)

    def take(self, n: int) -> bytes:
        p = self._need(n)
        return bytes(self._buf[p : p + n])

    def view(self, n: int) -> memoryview:
        p = self._need(n)
        return self._buf[p : p + n]

    def rest(self) -> bytes:
        return self.take(self.remaining())

    def skip(self, n: int) -> None:
        self._need(n)

    def peek_u8(self) -> int:
        if self._pos >= self._end:
            raise DecodeError(f"truncated: need 1 byte at offset {self._pos}")
        return self._buf[self._pos]

    @contextmanager
    def restrict_to(self, n: int) -> Iterator[Reader]:
        """Yield a reader over the next ``n`` bytes; on exit this reader skips past them.

        The inner structure must consume exactly its ``n`` bytes unless the caller reads the rest
        explicitly; :meth:`check_end` on the inner reader enforces that.
        """
        p = self._need(n)
        yield Reader(self._buf, p, p + n)

    def check_end(self) -> None:
        if self._pos != self._end:
            raise DecodeError(f"{self._end - self._pos} unexpected trailing bytes at offset {self._pos}")


class Writer:
    """Appends big-endian fields to a growing buffer."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def u8(self, v: int) -> Writer:
        self._buf += U8.pack(v)
        return self

    def u16(self, v: int) -> Writer:
        self._buf += U16.pack(v)
        return self

    def u32(self, v: int) -> Writer:
        self._buf += U32.pack(v)
        return self

    def pack(self, st: struct.Struct, *values: int | bytes) -> Writer:
        self._buf += st.pack(*values)
        return self

    def raw(self, data: bytes | bytearray | memoryview) -> Writer:
        self._buf += data
        return self

    def fixed_string(self, text: str | bytes, size: int) -> Writer:
        """A NUL-padded fixed-size field, as RFC 2637 uses for host names and phone numbers."""
        raw = text.encode("latin-1") if isinstance(text, str) else text
        if len(raw) > size:
            raise ValueError(f"string of {len(raw)} bytes does not fit a {size}-byte field")
        self._buf += raw + b"\0" * (size - len(raw))
        return self

    def __len__(self) -> int:
        return len(self._buf)

    def getvalue(self) -> bytes:
        return bytes(self._buf)


def decode_fixed_string(raw: bytes) -> str:
    """A NUL-padded field as text; bytes after the first NUL are padding (peers leave garbage)."""
    return raw.split(b"\0", 1)[0].decode("latin-1")
