"""PPTP's data channel: the enhanced GRE codec and the per-call sequencing engine."""

from .call import GreCall, GreCallConfig, GreStats
from .packet import GRE_PROTOCOL_PPP, GrePacket, encode_gre, strip_ipv4_header

__all__ = [
    "GRE_PROTOCOL_PPP",
    "GreCall",
    "GreCallConfig",
    "GrePacket",
    "GreStats",
    "encode_gre",
    "strip_ipv4_header",
]
