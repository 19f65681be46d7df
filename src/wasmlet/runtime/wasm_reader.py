"""Reading the wasm binary format: LEB128 integers, bytes and names from a range of a
module's bytes. Hand-written because the checks that use it (registry/module_limits.py,
runtime/module_info.py) read a handful of fields, which no maintained Python library
exposes without parsing or compiling the whole module."""

from __future__ import annotations


class WasmReader:
    """LEB128 integers and bytes from one section; IndexError past its end."""

    def __init__(self, data: bytes | memoryview, pos: int = 0, end: int | None = None) -> None:
        self.data, self.pos = data, pos
        self.end = len(data) if end is None else end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise IndexError("read past the end of the section")
        self.pos += 1
        return self.data[self.pos - 1]

    def uleb(self) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise ValueError("LEB128 integer too long")

    def sleb(self) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return result - (1 << shift) if b & 0x40 else result
            if shift > 63:
                raise ValueError("LEB128 integer too long")

    def skip(self, n: int) -> None:
        if self.pos + n > self.end:
            raise IndexError("read past the end of the section")
        self.pos += n

    def name(self) -> str:
        """A length-prefixed UTF-8 string."""
        n = self.uleb()
        if self.pos + n > self.end:
            raise IndexError("name past the end of the section")
        text = bytes(self.data[self.pos : self.pos + n]).decode("utf-8")
        self.pos += n
        return text
