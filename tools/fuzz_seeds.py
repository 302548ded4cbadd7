"""Write the fuzzers' seed corpora (tests/fuzz/corpus/TARGET/) from real exchanges.

Run from the checkout: ``python tools/fuzz_seeds.py``.  Every seed is something a real peer
sent: the frames two PPP sessions exchange (MS-CHAPv2 + stateful MPPE, and PAP/CHAP/EAP), the
control messages of a connection and a call, GRE packets the engine builds, MPPE bodies, HDLC
streams, call-manager messages, and the config files the tests already carry.  Multi-input
targets get a whole conversation in one seed, each input behind a two-octet length (see
``tests/fuzz/targets.py``).  Deterministic: the same tree writes the same files.  Seeds named
``regression-*`` are inputs a fuzzer found, kept by hand, and left alone.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests"), str(ROOT / "tests" / "unit" / "ppp"),
                str(ROOT / "tests" / "fuzz")]
CORPUS = ROOT / "tests" / "fuzz" / "corpus"


def framed(pieces: list[bytes]) -> bytes:
    return b"".join(len(p).to_bytes(2, "big") + p for p in pieces)


def opped(pieces: list[bytes], op: int = 0) -> bytes:
    """Inputs for the control targets: each behind an op octet (``targets.ops``)."""
    return b"".join(bytes([op]) + len(p).to_bytes(2, "big") + p for p in pieces)


def _code_offset(frame: bytes) -> int | None:
    """Where the code octet of an LCP/NCP packet is in a PPP frame (address/control and a
    compressed protocol field allowed), or None for other protocols."""
    at = 2 if frame[:2] == b"\xff\x03" else 0
    if at >= len(frame):
        return None
    if frame[at] & 1:
        proto, at = frame[at], at + 1
    else:
        proto, at = int.from_bytes(frame[at : at + 2], "big"), at + 2
    return at if proto in (0xC021, 0x8021, 0x8057, 0x80FD) and at < len(frame) else None


def write(target: str, seeds: list[bytes]) -> None:
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        (folder / hashlib.sha1(seed).hexdigest()[:16]).write_bytes(seed)


def control_conversation() -> tuple[list[bytes], list[bytes], int, int]:
    """What each side of ``targets.control_pair()`` receives: the Start exchange, a call, its
    link info, an echo each way, the call cleared, the connection stopped; and how many of
    each side's receptions set up the call (``targets.control_establish``)."""
    from targets import control_establish, control_pair

    from pptpkit.control import CallRequested

    server, client = control_pair()
    to_server, to_client = control_establish(server, client)
    set_up = len(to_server), len(to_client)
    now = 0.0

    def pump() -> None:
        for _ in range(4):
            data = client.data_to_send()
            if data:
                to_server.append(data)
                server.receive_data(data, now)
            while (event := server.next_event()) is not None:
                if isinstance(event, CallRequested):
                    server.accept_call(now, event.call_id)
            data = server.data_to_send()
            if data:
                to_client.append(data)
                client.receive_data(data, now)
            while client.next_event() is not None:
                pass

    call_id = next(iter(client.calls))
    client.set_link_info(now, call_id, send_accm=0, receive_accm=0)
    pump()
    for _ in range(2):  # idle long enough for each side's Echo-Request
        now += 61.0
        client.handle_timer(now)
        server.handle_timer(now)
        pump()
    client.clear_call(now, call_id)
    pump()
    client.stop(now)
    pump()
    return to_server, to_client, *set_up


def main() -> None:
    from pptpkit.compat.callmgr.codec import Message, MsgType, encode_message
    from pptpkit.control import decode_message
    from pptpkit.control.messages import ControlStreamFramer
    from pptpkit.crypto.mppe import MppeConfig, MppeEncryptor
    from pptpkit.gre import encode_gre
    from pptpkit.ppp.hdlc import encode_frame

    # Everything recorded is rewritten; inputs kept by hand (``regression-*``: what a fuzzer
    # once found) stay.
    for old in CORPUS.glob("*/*"):
        if not old.name.startswith("regression-"):
            old.unlink()
    to_server, to_client, set_up_server, set_up_client = control_conversation()
    messages: list[bytes] = []
    for blob in to_server + to_client:
        framer = ControlStreamFramer()
        framer.feed(blob)
        while (frame := framer.next_frame()) is not None:
            decode_message(frame)
            messages.append(frame)
    write("control_messages", messages)
    write("control_fresh_server", [opped(to_server)])
    write("control_fresh_client", [opped(to_client)])
    # The established targets' engines already have the Start exchange and the call behind them.
    # Op 0x10: the client opens a second call first; 0x2n clears one; 0x35 sets link info.
    write("control_established_server", [opped(to_server[set_up_server:]), opped(messages),
                                         opped(to_server[set_up_server:], 0x35)])
    write("control_established_client", [opped(to_client[set_up_client:]),
                                         opped(to_client[set_up_client:], 0x10),
                                         opped(to_client[set_up_client:], 0x21)])

    gre = [encode_gre(7, b"\xff\x03\xc0\x21\x01\x01\x00\x04", 1, None), encode_gre(7, b"", None, 5),
           encode_gre(7, b"\x21" + bytes(20), 2, 1), encode_gre(1, b"\x21abc", 1, None)]
    write("gre_packet", gre)
    write("gre_call", [framed([encode_gre(1, bytes([i]) * 8, i, i) for i in range(1, 12)]),
                       framed([encode_gre(1, b"x", s, None) for s in (1, 3, 2, 600, 601, 602, 603, 5)])])
    ip = bytes([0x45, 0, 0, 0, 0, 0, 0, 0, 64, 47, 0, 0, 192, 0, 2, 2, 192, 0, 2, 1])
    options = bytes([0x46]) + ip[1:] + b"\x01\x01\x01\x00"  # IHL 6: one word of options
    other = ip[:12] + bytes([192, 0, 2, 3]) + ip[16:]  # a peer with no call
    write("gre_demux", [framed([ip + encode_gre(7, b"x", 1, None), ip + encode_gre(8, b"y", 2, 1),
                                ip + encode_gre(9, b"z", 1, None), options + encode_gre(7, b"w", 2, 1),
                                other + encode_gre(7, b"v", 3, None), ip + encode_gre(7, b"", None, 4)])])

    # PPP: octet 0 the session case, octet 1 how many recorded frames the target replays
    # first, then the rest of the conversation (and, at full depth, a few frames a peer may
    # send an open link) as the fuzzer's own frames.
    from targets import ppp_conversations, session_cases

    from pptpkit.ppp.frame import decode_frame

    late = [b"\xc0\x21\x09\x07\x00\x08\x00\x00\x00\x00",  # LCP Echo-Request
            b"\x80\xfd\x0e\x05\x00\x04",  # CCP Reset-Request
            b"\x80\xfd\x0f\x05\x00\x04",  # CCP Reset-Ack
            b"\xc0\x21\x08\x08\x00\x06\x80\x21",  # LCP Protocol-Reject of IPCP
            b"\xc0\x21\x05\x09\x00\x04"]  # LCP Terminate-Request
    for target, side in (("ppp_session_server", 0), ("ppp_session_client", 1)):
        seeds = []
        for case, conversation in enumerate(ppp_conversations()):
            frames = conversation[side]
            for depth in sorted({0, len(frames) // 3, 2 * len(frames) // 3, len(frames)}):
                rest = frames[depth:] or [*frames[-3:], *late]
                seeds.append(bytes([case, depth]) + framed(rest))
            # The peer's Configure-Acks of our requests turned into a Nak and a Reject of the
            # same options: the identifier must match our request, which blind mutation
            # rarely finds, and without these no input reaches our handling of either.
            for index, frame in enumerate(frames):
                at = _code_offset(frame)
                if at is not None and frame[at] == 2:
                    for code in (3, 4):
                        changed = frame[:at] + bytes([code]) + frame[at + 1 :]
                        seeds.append(bytes([case, index]) + framed([changed, *frames[index + 1 :]]))
        write(target, seeds)
    streams = [[encode_frame(f) for f in c[0][:20]] for c in ppp_conversations()[:3]]
    write("hdlc_stream", [bytes([0xFF]) + framed([b"".join(s)]) for s in streams]
          + [bytes([0]) + framed([*streams[0][:4], streams[0][4][:7], streams[0][4][7:]])])

    # Authentication: each recorded conversation's packets of its own method, behind the
    # method's index, so the deterministic engines of the targets accept them.
    from pptpkit.auth.methods import AuthMethod

    methods = list(AuthMethod)
    auth: dict[int, list[bytes]] = {0: [], 1: []}
    for (method, _), conversation in zip(session_cases(), ppp_conversations(), strict=True):
        assert isinstance(method, AuthMethod)
        for side in (0, 1):
            infos = [bytes(info) for proto, info in map(decode_frame, conversation[side])
                     if proto == method.protocol]
            auth[side].append(bytes([methods.index(method)]) + framed(infos))
    write("auth_authenticator", auth[0])
    write("auth_peer", auth[1])

    bodies = []
    for stateless in (True, False):
        enc = MppeEncryptor(MppeConfig(start_key=bytes(range(16)), stateless=stateless))
        bodies.append(framed([enc.encrypt(0x21, bytes([0x45]) + bytes(30)) for _ in range(6)]))
    write("mppe_decrypt", bodies)
    # mppe_link: a mode octet, then (op, argument) pairs; op % 6: 0/1 deliver, 2 lose 1+arg,
    # 3 Reset-Request reaches the sender, 4 forge, 5 replay corrupted.
    deliver, lose, reset = b"\x00\x10", b"\x02\x02", b"\x03\x00"
    ops = deliver * 3 + lose + deliver * 2 + reset + deliver * 3 + b"\x02\xff" + reset + deliver * 2
    write("mppe_link", [bytes([mode]) + ops for mode in (0x00, 0x01, 0x02, 0x04, 0x06, 0x08, 0x0a, 0x84)]
          + [b"\x00" + deliver + b"\x04\x03abc" + deliver + b"\x05\x01" + reset + deliver])

    write("callmgr_codec", [encode_message(Message(MsgType.FRAME, frame=b"\xff\x03\xc0\x21")),
                            encode_message(Message(MsgType.OPEN)),
                            encode_message(Message(MsgType.FAILED, data={"kind": "x", "reason": "y"})),
                            encode_message(Message(MsgType.HANGUP)),
                            encode_message(Message(MsgType.OPENED, data={
                                "call_id": 1, "peer_call_id": 2, "peer_window": 64, "connect_speed": 10**8,
                                "peer": {"protocol_version": 256, "framing_capabilities": 3,
                                         "bearer_capabilities": 3, "max_channels": 0,
                                         "firmware_revision": 1, "host_name": "h", "vendor": "v"}})),
                            encode_message(Message(MsgType.CLOSED, data={
                                "reason": "r", "by": "peer", "connection_lost": False}))])
    vectors = ROOT / "tests" / "vectors"
    write("pptpd_conf", [p.read_bytes()[:4096] for p in sorted((vectors / "pptpdconf").glob("*.conf"))])
    write("pppd_options", [p.read_bytes()[:4096] for p in sorted((vectors / "pppdopts").glob("*.options"))])
    write("chap_secrets", [b"# client server secret addresses\nalice pptpd \"a b\" *\n"
                           b"bob * 'x\\ty' 192.0.2.10 -- extra\ncarol pptpd @literal -\n"])
    total = sum(f.stat().st_size for f in CORPUS.rglob("*") if f.is_file())
    print(f"wrote {sum(1 for f in CORPUS.rglob('*') if f.is_file())} seeds, {total} bytes, to {CORPUS}")


if __name__ == "__main__":
    main()
