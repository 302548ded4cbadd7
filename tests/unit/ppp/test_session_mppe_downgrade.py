"""MPPE once on stays on: a CCP renegotiation cannot take a session to clear text.

Found by a hostile client against ``pptpkit server --mppe-optional`` (issue 14): after MPPE came
up, one CCP Configure-Request without options restarted CCP, a Configure-Reject of the server's
MPPE option reopened it without MPPE, and the server then accepted (and sent) clear IP.  pppd
ends the link when CCP goes down under MPPE; we let CCP renegotiate MPPE again, but the data
path stays closed meanwhile and a CCP that comes back without MPPE in both directions ends it.
"""

from __future__ import annotations

from session_harness import SessionPair, client_config, server_config

from pptpkit.ppp.frame import decode_frame
from pptpkit.ppp.packet import Code, Packet
from pptpkit.ppp.session import PppSession
from pptpkit.ppp.session_config import LinkDown, MppePolicy, Outcome

CCP = 0x80FD
CLEAR_IP = b"\x00\x21" + bytes.fromhex("4500001c00000000400100000a0000010a000002") + b"\x08" + bytes(7)


def ccp_packets(frames: list[bytes]) -> list[Packet]:
    out = []
    for frame in frames:
        protocol, info = decode_frame(frame)
        if protocol == CCP:
            out.append(Packet.decode(info))
    return out


def test_ccp_renegotiation_without_mppe_ends_an_optional_mppe_session() -> None:
    pair = SessionPair(client_config(mppe=MppePolicy()), server_config(mppe=MppePolicy()))
    pair.start()
    pair.run(until=1.0)
    server: PppSession = pair.server
    assert pair.link_up("server") is not None and server.mppe == "MPPE 128-bit stateless"
    now = pair.now
    assert server.receive_frame(CLEAR_IP, now) is None  # clear IP under MPPE: dropped
    server.frames_to_send()
    # CCP restarts from the peer's side, asking for nothing.
    request = Packet(code=Code.CONFIGURE_REQUEST, identifier=77)
    server.receive_frame(b"\x80\xfd" + request.encode(), now)
    sent = ccp_packets(server.frames_to_send())
    ours = next(p for p in sent if p.code == Code.CONFIGURE_REQUEST)
    assert server.receive_frame(CLEAR_IP, now) is None  # nor while CCP renegotiates
    assert server.send_packet(CLEAR_IP[2:], now) is None  # and nothing leaves in clear
    # The peer rejects MPPE: CCP would open without it.
    reject = Packet(code=Code.CONFIGURE_REJECT, identifier=ours.identifier, data=ours.data)
    server.receive_frame(b"\x80\xfd" + reject.encode(), now)
    again = next(p for p in ccp_packets(server.frames_to_send()) if p.code == Code.CONFIGURE_REQUEST)
    assert again.data == b""
    ack = Packet(code=Code.CONFIGURE_ACK, identifier=again.identifier)
    server.receive_frame(b"\x80\xfd" + ack.encode(), now)
    assert server.receive_frame(CLEAR_IP, now) is None
    assert server.send_packet(CLEAR_IP[2:], now) is None
    assert server.outcome is Outcome.MPPE_REFUSED


def test_ccp_renegotiating_mppe_again_keeps_the_session() -> None:
    pair = SessionPair(client_config(mppe=MppePolicy()), server_config(mppe=MppePolicy()))
    pair.start()
    pair.run(until=1.0)
    server: PppSession = pair.server
    request = Packet(code=Code.CONFIGURE_REQUEST, identifier=99, data=bytes((18, 6, 1, 0, 0, 0x40)))
    server.receive_frame(b"\x80\xfd" + request.encode(), pair.now)
    pair.run(until=3.0)
    assert server.outcome is None and server.mppe == "MPPE 128-bit stateless"
    assert not [e for e in pair.of_type("server", LinkDown)]
    assert server.send_packet(CLEAR_IP[2:], pair.now) is not None
