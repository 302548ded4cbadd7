"""PPP protocol numbers (the Protocol field of a PPP frame)."""

from __future__ import annotations

from enum import IntEnum


class PppProtocol(IntEnum):
    """Protocol numbers we know; an open enum (see :func:`pptpkit.enums.open_enum`)."""

    IP = 0x0021
    VJ_COMPRESSED_TCP = 0x002D
    VJ_UNCOMPRESSED_TCP = 0x002F
    IPV6 = 0x0057
    COMPRESSED_DATAGRAM = 0x00FD
    IPCP = 0x8021
    IPV6CP = 0x8057
    CCP = 0x80FD
    LCP = 0xC021
    PAP = 0xC023
    LQR = 0xC025
    CHAP = 0xC223
    EAP = 0xC227


def is_network_control(protocol: int) -> bool:
    """Protocols 0x8000-0xbfff are network control protocols (NCPs), per RFC 1661."""
    return 0x8000 <= protocol <= 0xBFFF
