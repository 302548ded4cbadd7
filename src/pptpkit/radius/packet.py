"""RADIUS packets: the framing (RFC 2865 3, 5; RFC 2865 5.26 vendor attributes) and the
attributes by name through pptpkit's dictionary (pyrad's ``Dictionary`` and value codecs).

Two levels:

* :class:`RawPacket` / :class:`RawAttribute`: the bytes, decoded with :class:`pptpkit.wire.Reader`
  (a packet is 20..4096 octets, so every list here is bounded by that), raising only
  :class:`~pptpkit.errors.DecodeError`.
* :class:`Attribute`: one attribute by dictionary name with a typed value (``int``, ``str``,
  ``bytes``, :class:`ipaddress.IPv4Address`); :func:`encode_attributes` and
  :func:`decode_attributes` convert, applying the hiding (User-Password, MS-CHAP-MPPE-Keys) and
  the salt encryption (MS-MPPE-*-Key, Tunnel-Password) that the dictionary flags, with
  :mod:`pptpkit.radius.crypto`.  An attribute that does not decode as its type stays, marked
  ``malformed``, with its raw value: nothing a server sends is dropped unseen.

pyrad is untyped and raises what it likes (``ValueError``, ``TypeError``, ``struct.error``,
``UnicodeDecodeError`` ...); every call into it is wrapped here, so nothing but a
:class:`~pptpkit.errors.PptpkitError` leaves this module.
"""

from __future__ import annotations

import enum
import functools
import io
import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final

from pptpkit.errors import DecodeError, PptpkitError
from pptpkit.radius import crypto
from pptpkit.wire import Reader, Writer

__all__ = [
    "HEADER_SIZE",
    "MAX_PACKET_SIZE",
    "MICROSOFT",
    "Attribute",
    "AttributeEncodeError",
    "AttributeValue",
    "Code",
    "RawAttribute",
    "RawPacket",
    "decode_attributes",
    "dictionary",
    "encode_attributes",
]

HEADER_SIZE: Final = 20
# RFC 2865 3: "The maximum length is 4096"; also the receive buffer size of the adapter.
MAX_PACKET_SIZE: Final = 4096
VENDOR_SPECIFIC: Final = 26
MICROSOFT: Final = 311
_MAX_VALUE: Final = 253

AttributeValue = int | str | bytes | ipaddress.IPv4Address | ipaddress.IPv6Address


class Code(enum.IntEnum):
    """RADIUS packet codes (RFC 2865 3, RFC 2866, RFC 5997, RFC 5176)."""

    ACCESS_REQUEST = 1
    ACCESS_ACCEPT = 2
    ACCESS_REJECT = 3
    ACCOUNTING_REQUEST = 4
    ACCOUNTING_RESPONSE = 5
    ACCESS_CHALLENGE = 11
    STATUS_SERVER = 12
    DISCONNECT_REQUEST = 40
    DISCONNECT_ACK = 41
    DISCONNECT_NAK = 42
    COA_REQUEST = 43
    COA_ACK = 44
    COA_NAK = 45


class AttributeEncodeError(PptpkitError):
    """A request attribute we were asked to send cannot be encoded (a caller's mistake)."""


@dataclass(frozen=True, slots=True)
class RawAttribute:
    """One top-level attribute: its type and value as on the wire (a VSA keeps its vendor
    header in ``value``)."""

    type: int
    value: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class RawPacket:
    code: int
    identifier: int
    authenticator: bytes
    attributes: tuple[RawAttribute, ...] = ()

    def encode(self) -> bytes:
        w = Writer()
        body = Writer()
        for attr in self.attributes:
            if len(attr.value) > _MAX_VALUE:
                raise AttributeEncodeError(f"attribute {attr.type}: {len(attr.value)} octets > 253")
            body.u8(attr.type).u8(len(attr.value) + 2).raw(attr.value)
        length = HEADER_SIZE + len(body)
        if length > MAX_PACKET_SIZE:
            raise AttributeEncodeError(f"packet of {length} octets exceeds 4096")
        if len(self.authenticator) != 16 or not 0 <= self.identifier <= 255:
            raise AttributeEncodeError("bad identifier or authenticator")
        w.u8(self.code).u8(self.identifier).u16(length).raw(self.authenticator).raw(body.getvalue())
        return w.getvalue()

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> RawPacket:
        """RFC 2865 3: octets past the Length field are padding and ignored; a packet shorter
        than its Length, or an attribute that overruns it, is malformed."""
        r = Reader(data)
        code, identifier, length = r.u8(), r.u8(), r.u16()
        if length < HEADER_SIZE or length > MAX_PACKET_SIZE:
            raise DecodeError(f"RADIUS Length {length} outside 20..4096")
        if length > len(data):
            raise DecodeError(f"RADIUS Length {length} exceeds the {len(data)} octets received")
        r = Reader(data, 4, length)
        authenticator = r.take(16)
        attributes: list[RawAttribute] = []
        while not r.at_end():
            kind, alen = r.u8(), r.u8()
            if alen < 2:
                raise DecodeError(f"attribute {kind} with length {alen} < 2")
            attributes.append(RawAttribute(kind, r.take(alen - 2)))
        return cls(code=code, identifier=identifier, authenticator=authenticator,
                   attributes=tuple(attributes))


@dataclass(frozen=True, slots=True)
class Attribute:
    """One attribute by name.  ``vendor``/``type`` locate it on the wire; ``malformed`` means
    the value did not decode as its dictionary type and ``value`` is the raw octets.  Values of
    encrypted attributes (keys, passwords) are kept out of ``repr``."""

    name: str
    value: AttributeValue
    tag: int | None = None
    type: int = 0
    vendor: int = 0
    malformed: bool = False
    secret: bool = field(default=False, compare=False)

    def __repr__(self) -> str:
        value = "<hidden>" if self.secret else repr(self.value)
        extra = "" if self.tag is None else f", tag={self.tag}"
        extra += ", malformed" if self.malformed else ""
        return f"Attribute({self.name!r}, {value}{extra})"


# -- the dictionary --------------------------------------------------------------------------


@functools.cache
def dictionary() -> Any:
    """pptpkit's dictionary (``dictionary.pptpkit`` beside this module), read once."""
    from pyrad.dictionary import Dictionary

    text = resources.files("pptpkit.radius").joinpath("dictionary.pptpkit").read_text()
    return Dictionary(io.StringIO(text))


def _definition(name: str) -> Any:
    try:
        return dictionary().attributes[name]
    except KeyError:
        raise AttributeEncodeError(f"unknown RADIUS attribute {name!r}") from None


def _wire_key(definition: Any) -> tuple[int, int]:
    """(vendor id or 0, type)."""
    if definition.vendor:
        return int(dictionary().vendors.GetForward(definition.vendor)), int(definition.code)
    return 0, int(definition.code)


# -- encoding --------------------------------------------------------------------------------


def _encode_value(definition: Any, value: AttributeValue) -> bytes:
    values = definition.values
    if isinstance(value, str) and definition.type == "integer":
        if not values.HasForward(value):
            raise AttributeEncodeError(f"{definition.name}: no value named {value!r}")
        return bytes(values.GetForward(value))
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        value = str(value)
    try:
        from pyrad import tools

        return bytes(tools.EncodeAttr(definition.type, value))
    except Exception as exc:  # pyrad raises ValueError, TypeError, struct.error, netaddr's ...
        raise AttributeEncodeError(f"{definition.name}: cannot encode {type(value).__name__}") from exc


def encode_attributes(
    attributes: Iterable[Attribute | tuple[str, AttributeValue]],
    *,
    secret: bytes,
    authenticator: bytes,
    salt: Callable[[], bytes],
) -> list[RawAttribute]:
    """The wire form of ``attributes`` (names from pptpkit's dictionary), one VSA per vendor
    attribute.  ``authenticator`` is the Request Authenticator the hiding uses (User-Password;
    Access-Request only); ``salt`` gives a fresh 2-octet salt per salt-encrypted value."""
    out: list[RawAttribute] = []
    for item in attributes:
        if isinstance(item, Attribute):
            name, value, tag = item.name, item.value, item.tag
        else:
            (name, value), tag = item, None
        definition = _definition(name)
        data = _encode_value(definition, value)
        if definition.encrypt == 1:
            try:
                data = crypto.hide_password(data, secret, authenticator)
            except crypto.RadiusCryptoError as exc:
                raise AttributeEncodeError(f"{name}: {exc}") from None
        elif definition.encrypt == 2:
            try:
                data = crypto.salt_encrypt(data, secret, authenticator, salt())
            except crypto.RadiusCryptoError as exc:
                raise AttributeEncodeError(f"{name}: {exc}") from None
        if definition.has_tag:
            # RFC 2868 3: integers carry the tag in their first octet; other types carry it
            # when it is set, or when the value itself starts with an octet <= 0x1F.
            t = 0 if tag is None else tag
            if not 0 <= t <= 0x1F:
                raise AttributeEncodeError(f"{name}: tag {t} outside 0..31")
            if definition.type == "integer":
                data = bytes([t]) + data[1:]
            elif t or definition.encrypt == 2 or (data and data[0] <= 0x1F):
                data = bytes([t]) + data
        vendor, kind = _wire_key(definition)
        if vendor:
            data = vendor.to_bytes(4, "big") + bytes([kind, len(data) + 2]) + data
            kind = VENDOR_SPECIFIC
        if len(data) > _MAX_VALUE:
            raise AttributeEncodeError(f"{name}: {len(data)} octets do not fit an attribute")
        out.append(RawAttribute(kind, data))
    return out


# -- decoding --------------------------------------------------------------------------------


def _split_vsa(value: bytes) -> tuple[int, list[tuple[int, bytes]]] | None:
    """(vendor, [(type, value)]) for an RFC 2865 5.26 VSA; None when its sub-attributes do not
    add up (then it is kept whole, as an unknown Vendor-Specific)."""
    if len(value) < 6:
        return None
    vendor = int.from_bytes(value[:4], "big")
    subs: list[tuple[int, bytes]] = []
    pos = 4
    while pos < len(value):
        if pos + 2 > len(value):
            return None
        kind, length = value[pos], value[pos + 1]
        if length < 2 or pos + length > len(value):
            return None
        subs.append((kind, value[pos + 2 : pos + length]))
        pos += length
    return vendor, subs


def _decode_value(definition: Any, data: bytes) -> AttributeValue:
    from pyrad import tools

    if definition.type == "integer" and len(data) != 4:
        raise DecodeError(f"{definition.name}: integer of {len(data)} octets")
    if definition.type == "ipaddr":
        if len(data) != 4:
            raise DecodeError(f"{definition.name}: IPv4 address of {len(data)} octets")
        return ipaddress.IPv4Address(data)
    if definition.type == "ipv6addr":
        if len(data) != 16:
            raise DecodeError(f"{definition.name}: IPv6 address of {len(data)} octets")
        return ipaddress.IPv6Address(data)
    if definition.type == "octets":
        return bytes(data)
    if definition.type == "string":
        # RFC 2865 5: "text" is UTF-8, but servers send Latin-1 too; keep such bytes raw rather
        # than guess, so nothing is lost.
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"{definition.name}: not UTF-8") from exc
    try:
        decoded = tools.DecodeAttr(definition.type, data)
    except Exception as exc:  # see the module docstring: pyrad raises many types
        raise DecodeError(f"{definition.name}: does not decode as {definition.type}") from exc
    if isinstance(decoded, int | str | bytes):
        return decoded
    return str(decoded)


def _unknown_name(vendor: int, kind: int) -> str:
    return f"Vendor-{vendor}-Attr-{kind}" if vendor else f"Attr-{kind}"


def _decode_one(
    vendor: int, kind: int, data: bytes, secret: bytes, request_authenticator: bytes
) -> Attribute:
    d = dictionary()
    key: int | tuple[int, int] = (vendor, kind) if vendor else kind
    if not d.attrindex.HasBackward(key):
        return Attribute(_unknown_name(vendor, kind), bytes(data), type=kind, vendor=vendor)
    name = str(d.attrindex.GetBackward(key))
    definition = d.attributes[name]
    tag: int | None = None
    secret_value = bool(definition.encrypt)
    try:
        if definition.has_tag:
            if definition.type == "integer":
                if len(data) != 4:
                    raise DecodeError(f"{name}: tagged integer of {len(data)} octets")
                tag, data = data[0], b"\0" + data[1:]
            elif data and (data[0] <= 0x1F or definition.encrypt == 2):
                tag, data = data[0], data[1:]
        if definition.encrypt == 1:
            data = crypto.unhide_password(data, secret, request_authenticator, strip=False)
        elif definition.encrypt == 2:
            data = crypto.salt_decrypt(data, secret, request_authenticator)
        value = _decode_value(definition, data)
    except PptpkitError:
        return Attribute(name, bytes(data), tag=tag, type=kind, vendor=vendor, malformed=True,
                         secret=secret_value)
    return Attribute(name, value, tag=tag, type=kind, vendor=vendor, secret=secret_value)


def decode_attributes(
    raw: Sequence[RawAttribute], *, secret: bytes, request_authenticator: bytes
) -> tuple[Attribute, ...]:
    """Every attribute of a received packet by name, in order; encrypted values decrypted with
    ``secret`` and the Request Authenticator of the request being answered (RFC 2548 2.4)."""
    out: list[Attribute] = []
    for attr in raw:
        if attr.type == VENDOR_SPECIFIC:
            split = _split_vsa(attr.value)
            if split is None:
                out.append(Attribute("Vendor-Specific", attr.value, type=VENDOR_SPECIFIC, malformed=True))
                continue
            vendor, subs = split
            out.extend(_decode_one(vendor, kind, data, secret, request_authenticator) for kind, data in subs)
        else:
            out.append(_decode_one(0, attr.type, attr.value, secret, request_authenticator))
    return tuple(out)
