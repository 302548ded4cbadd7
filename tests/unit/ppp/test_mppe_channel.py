"""The MPPE sub-engine alone: stateful loss -> Reset-Request, its retransmission and limit, the
peer's Reset-Request and Ack.  The CCP engine is a recorder (it only queues packets)."""

from __future__ import annotations

from collections import Counter
from typing import Any, cast

from pptpkit.crypto.mppe import MppeConfig, MppeDecryptor, MppeEncryptor
from pptpkit.ppp.ccp import CcpEngine
from pptpkit.ppp.mppe import MppeChannel
from pptpkit.ppp.session_config import MppePolicy

KEY = bytes(range(16))
HEADER = b"\xff\x03\x00\xfd"


class RecordingCcp:
    def __init__(self) -> None:
        self.requests = 0
        self.acks: list[int] = []

    def send_reset_request(self) -> int:
        self.requests += 1
        return self.requests

    def send_reset_ack(self, identifier: int) -> None:
        self.acks.append(identifier)


Parts = tuple[MppeChannel, RecordingCcp, MppeEncryptor, Counter[str]]


def channel() -> Parts:
    """Our channel (stateful), its CCP recorder, the peer's encryptor, the drop counter."""
    cfg = MppeConfig(start_key=KEY, key_bits=128, stateless=False)
    ccp = RecordingCcp()
    dropped: Counter[str] = Counter()
    policy = MppePolicy(stateful=True, reset_interval=1.0, reset_max=3)
    ch = MppeChannel(cast(CcpEngine, ccp), policy, dropped, MppeEncryptor(cfg), MppeDecryptor(cfg),
                     "MPPE 128-bit stateful")
    return ch, ccp, MppeEncryptor(cfg), dropped


def body(sealed: bytes) -> bytes:
    return sealed[len(HEADER):]


def test_in_order_packets_pass_and_a_loss_asks_for_one_reset() -> None:
    ch, ccp, peer, dropped = channel()
    packets = [peer.encrypt_frame(HEADER, 0x21, bytes([0x45]) + bytes(19) + bytes([i])) for i in range(4)]
    assert ch.unseal(body(packets[0]), 0.0) == (0x21, bytes([0x45]) + bytes(19) + b"\x00")
    # packets[1] is lost: the next two are dropped, and one Reset-Request goes out.
    assert ch.unseal(body(packets[2]), 0.1) is None
    assert ch.unseal(body(packets[3]), 0.2) is None
    assert ccp.requests == 1 and ch.reset_deadline == 1.1
    assert dropped["mppe_loss"] == 1 and sum(dropped.values()) == 2


def test_an_unanswered_reset_is_retried_up_to_the_limit() -> None:
    ch, ccp, peer, dropped = channel()
    frames = [peer.encrypt_frame(HEADER, 0x21, b"\x45" + bytes(19)) for _ in range(3)]
    ch.unseal(body(frames[0]), 0.0)
    ch.unseal(body(frames[2]), 0.0)  # frames[1] lost
    for t in (1.0, 2.0, 3.0, 4.0):
        ch.handle_timer(t)
    assert ccp.requests == 3 and ch.reset_deadline is None
    assert dropped["mppe_reset_gave_up"] == 1


def test_an_ack_ends_the_retries() -> None:
    ch, ccp, peer, _ = channel()
    frames = [peer.encrypt_frame(HEADER, 0x21, b"\x45" + bytes(19)) for _ in range(3)]
    ch.unseal(body(frames[0]), 0.0)
    ch.unseal(body(frames[2]), 0.0)
    ch.peer_acked_reset(ccp.requests)
    assert ch.reset_deadline is None
    ch.handle_timer(5.0)
    assert ccp.requests == 1


def test_the_peer_asking_for_a_reset_restarts_our_sender_and_is_acked() -> None:
    ch, ccp, _, _ = channel()
    enc = ch.encryptor
    assert enc is not None
    enc.encrypt_frame(HEADER, 0x21, b"\x45" + bytes(19))
    ch.peer_asked_reset(9, 0.0)
    assert ccp.acks == [9]
    # The next packet we send is flushed (the peer can resynchronise on it).
    assert enc.encrypt_frame(HEADER, 0x21, b"\x45" + bytes(19))[len(HEADER)] & 0x80


def test_a_reset_request_flood_is_answered_at_a_bounded_rate() -> None:
    """Found by a hostile client (issue 14): every Reset-Request was answered, so a peer made
    us send one Reset-Ack per packet it sent.  Now a burst, then RESET_RATE per second."""
    from pptpkit.ppp.mppe import RESET_BURST, RESET_RATE

    ch, ccp, _, dropped = channel()
    for i in range(1000):
        ch.peer_asked_reset(i & 0xFF, 10.0)
    assert len(ccp.acks) == RESET_BURST
    assert dropped["mppe_reset_flood"] == 1000 - RESET_BURST
    # A second later the bucket has refilled by RESET_RATE.
    for i in range(1000):
        ch.peer_asked_reset(i & 0xFF, 11.0)
    assert len(ccp.acks) == RESET_BURST + RESET_RATE
    # A peer asking once a second (a real one retransmitting) is always answered.
    before = len(ccp.acks)
    for t in range(100):
        ch.peer_asked_reset(1, 20.0 + t)
    assert len(ccp.acks) == before + 100


def test_not_negotiated_in_a_direction() -> None:
    cfg = MppeConfig(start_key=KEY)
    dropped: Counter[str] = Counter()
    ch = MppeChannel(cast(Any, RecordingCcp()), MppePolicy(), dropped, MppeEncryptor(cfg), None, "send only")
    assert ch.unseal(b"\x90\x00\x00\x00", 0.0) is None and dropped["mppe_not_negotiated"] == 1
    assert ch.stats[1] is None
