"""PPP frames as PPTP carries them inside enhanced GRE: no flags, no FCS, no byte stuffing.

A frame is ``[ff 03] protocol information``.  On receive we accept every legal spelling at
any time, whatever was negotiated (RFC 1661 6.5/6.6 require accepting the uncompressed
forms, and accepting the compressed ones early costs nothing): address/control present or
omitted, protocol in one octet or two.  On send the caller says what the peer agreed to.

This sits on the data path, so decoding returns a memoryview into the caller's buffer and a
plain tuple rather than building objects.
"""

from __future__ import annotations

from typing import Final

from pptpkit.errors import DecodeError
from pptpkit.ppp.protocols import PppProtocol

ADDRESS: Final = 0xFF
CONTROL: Final = 0x03
_AC_HEADER: Final = b"\xff\x03"
_LCP: Final = int(PppProtocol.LCP)


def decode_frame(data: bytes | bytearray | memoryview) -> tuple[int, memoryview]:
    """Split a frame into ``(protocol, information)``; the information is a view into ``data``.

    Raises :class:`DecodeError` for a frame too short to hold a protocol field, an address
    octet without its control octet, or a protocol number that breaks the RFC 1661 rule that
    protocol values are odd and their high octet even (a sign of a misparsed frame).
    """
    view = memoryview(data).cast("B")
    n = len(view)
    pos = 0
    if n >= 1 and view[0] == ADDRESS:
        # 0xff can never start a compressed protocol field (0x00ff is reserved), so a leading
        # 0xff is the address octet and must be followed by the UI control octet.
        if n < 2 or view[1] != CONTROL:
            raise DecodeError("PPP address octet 0xff not followed by control 0x03")
        pos = 2
    if pos >= n:
        raise DecodeError("PPP frame without protocol field")
    first = view[pos]
    if first & 1:
        return first, view[pos + 1 :]
    if pos + 1 >= n:
        raise DecodeError("PPP frame truncated inside the protocol field")
    second = view[pos + 1]
    if not second & 1:
        raise DecodeError(f"PPP protocol 0x{first:02x}{second:02x} is not odd")
    return (first << 8) | second, view[pos + 2 :]


def frame_header(protocol: int, *, acfc: bool = False, pfc: bool = False) -> bytes:
    """The bytes that go before the information field.

    ``acfc``/``pfc`` say whether the peer accepted our compression of address/control and of
    the protocol field.  LCP frames are always sent in full (RFC 1661 6.5, 6.6) so that a peer
    that lost its state can still parse them.
    """
    if not 0 < protocol <= 0xFFFF:
        raise ValueError(f"protocol number {protocol} out of range")
    if protocol == _LCP:
        return b"\xff\x03\xc0\x21"
    head = b"" if acfc else _AC_HEADER
    if pfc and protocol < 0x100:
        return head + bytes((protocol,))
    return head + bytes((protocol >> 8, protocol & 0xFF))


def encode_frame(
    protocol: int, information: bytes | bytearray | memoryview, *, acfc: bool = False, pfc: bool = False
) -> bytes:
    """A complete frame for ``information`` (see :func:`frame_header` for the flags)."""
    return frame_header(protocol, acfc=acfc, pfc=pfc) + bytes(information)
