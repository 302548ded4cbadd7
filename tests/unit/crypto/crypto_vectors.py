"""Loader for the published test vectors stored under tests/vectors/.

Format: one ``name = value`` per line, ``#`` starts a comment line; a value in double quotes is
text, anything else is hex octets (spaces allowed).
"""

from __future__ import annotations

from pathlib import Path

VECTOR_DIR = Path(__file__).resolve().parents[2] / "vectors"


def load_vectors(name: str) -> dict[str, bytes | str]:
    values: dict[str, bytes | str] = {}
    for lineno, line in enumerate((VECTOR_DIR / name).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{name}:{lineno}: no '='")
        key, value = key.strip(), value.strip()
        if key in values:
            raise ValueError(f"{name}:{lineno}: duplicate {key}")
        if len(value) >= 2 and value[0] == value[-1] == '"':
            values[key] = value[1:-1]
        else:
            values[key] = bytes.fromhex(value)
    return values


class VectorFile:
    """Typed access to one vector file: ``v.b("name")`` for octets, ``v.s("name")`` for text."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._values = load_vectors(name)

    def b(self, key: str) -> bytes:
        value = self._values[key]
        assert isinstance(value, bytes), f"{self.name}: {key} is not hex"
        return value

    def s(self, key: str) -> str:
        value = self._values[key]
        assert isinstance(value, str), f"{self.name}: {key} is not text"
        return value

    def keys(self) -> list[str]:
        return list(self._values)


def rc4_reference(key: bytes, data: bytes) -> bytes:
    """A deliberately naive RC4, a second path independent of pycryptodome."""
    s = list(range(256))
    j = 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) & 0xFF
        s[i], s[j] = s[j], s[i]
    i = j = 0
    out = bytearray()
    for byte in data:
        i = (i + 1) & 0xFF
        j = (j + s[i]) & 0xFF
        s[i], s[j] = s[j], s[i]
        out.append(byte ^ s[(s[i] + s[j]) & 0xFF])
    return bytes(out)
