"""PPTP's data channel: the enhanced GRE codec and the per-call sequencing engine."""

from pptpkit.gre.call import GreCall, GreCallConfig, GreStats
from pptpkit.gre.demux import DemuxStats, GreDemux, GreHandler
from pptpkit.gre.packet import GRE_PROTOCOL_PPP, GrePacket, encode_gre, strip_ipv4_header

__all__ = [
    "GRE_PROTOCOL_PPP",
    "DemuxStats",
    "GreCall",
    "GreCallConfig",
    "GreDemux",
    "GreHandler",
    "GrePacket",
    "GreStats",
    "encode_gre",
    "strip_ipv4_header",
]
