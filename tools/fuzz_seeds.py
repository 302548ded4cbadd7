"""Write the fuzzers' seed corpora (tests/fuzz/corpus/TARGET/) from real exchanges.

Run from the checkout: ``python tools/fuzz_seeds.py``.  Every seed is something a real peer
sent: the frames two PPP sessions exchange (MS-CHAPv2 + stateful MPPE, and PAP/CHAP/EAP), the
control messages of a connection and a call, GRE packets the engine builds, MPPE bodies, HDLC
streams, call-manager messages, and the config files the tests already carry.  Multi-input
targets get a whole conversation in one seed, each input behind a two-octet length (see
``tests/fuzz/targets.py``).  Deterministic: the same tree writes the same files.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests"), str(ROOT / "tests" / "unit" / "ppp"),
                str(ROOT / "tests" / "fuzz")]
CORPUS = ROOT / "tests" / "fuzz" / "corpus"


def framed(pieces: list[bytes]) -> bytes:
    return b"".join(len(p).to_bytes(2, "big") + p for p in pieces)


def write(target: str, seeds: list[bytes]) -> None:
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        (folder / hashlib.sha1(seed).hexdigest()[:16]).write_bytes(seed)


def ppp_conversations() -> dict[str, list[list[bytes]]]:
    from session_harness import SessionPair, client_config, server_config
    from targets import session_cases

    out: dict[str, list[list[bytes]]] = {"to_server": [], "to_client": []}
    for method, mppe in session_cases():
        pair = SessionPair(client_config(mppe=mppe, ipv6=True),  # type: ignore[arg-type]
                           server_config(method, mppe=mppe, ipv6=True))  # type: ignore[arg-type]
        pair.start()
        pair.run(until=pair.now + 5)
        for i in range(3):
            pair.send("client", bytes([0x45]) + bytes(19) + bytes([i]))
            pair.send("server", bytes([0x45]) + bytes(19) + bytes([i]))
        pair.pump()
        out["to_server"].append(list(pair.wires["cs"].frames))
        out["to_client"].append(list(pair.wires["sc"].frames))
    return out


def control_conversation() -> tuple[list[bytes], list[bytes]]:
    from pptpkit.control import CallRequested, ControlConfig, ControlConnection, Role

    client = ControlConnection(ControlConfig(role=Role.CLIENT), now=0.0, rng=random.Random(1))
    server = ControlConnection(ControlConfig(role=Role.SERVER), now=0.0, rng=random.Random(2))
    to_server: list[bytes] = []
    to_client: list[bytes] = []

    def pump() -> None:
        for _ in range(4):
            data = client.data_to_send()
            if data:
                to_server.append(data)
                server.receive_data(data, 0.0)
            while (event := server.next_event()) is not None:
                if isinstance(event, CallRequested):
                    server.accept_call(0.0, event.call_id)
            data = server.data_to_send()
            if data:
                to_client.append(data)
                client.receive_data(data, 0.0)
            while client.next_event() is not None:
                pass

    pump()
    call_id = client.open_call(0.0)
    pump()
    client.set_link_info(0.0, call_id, send_accm=0, receive_accm=0)
    pump()
    client.clear_call(0.0, call_id)
    pump()
    client.stop(0.0)
    pump()
    return to_server, to_client


def main() -> None:
    from pptpkit.compat.callmgr.codec import Message, MsgType, encode_message
    from pptpkit.control import decode_message
    from pptpkit.control.messages import ControlStreamFramer
    from pptpkit.crypto.mppe import MppeConfig, MppeEncryptor
    from pptpkit.gre import encode_gre
    from pptpkit.ppp.hdlc import encode_frame

    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    to_server, to_client = control_conversation()
    messages: list[bytes] = []
    for blob in to_server + to_client:
        framer = ControlStreamFramer()
        framer.feed(blob)
        while (frame := framer.next_frame()) is not None:
            decode_message(frame)
            messages.append(frame)
    write("control_messages", messages)
    write("control_fresh_server", [framed(to_server)])
    write("control_established_server", [framed(to_server[2:]), framed(messages[2:])])
    write("control_established_client", [framed(to_client[2:])])

    gre = [encode_gre(7, b"\xff\x03\xc0\x21\x01\x01\x00\x04", 1, None), encode_gre(7, b"", None, 5),
           encode_gre(7, b"\x21" + bytes(20), 2, 1), encode_gre(1, b"\x21abc", 1, None)]
    write("gre_packet", gre)
    write("gre_call", [framed([encode_gre(1, bytes([i]) * 8, i, i) for i in range(1, 12)]),
                       framed([encode_gre(1, b"x", s, None) for s in (1, 3, 2, 600, 601, 602, 603, 5)])])
    ip = bytes([0x45, 0, 0, 0, 0, 0, 0, 0, 64, 47, 0, 0, 192, 0, 2, 2, 192, 0, 2, 1])
    write("gre_demux", [framed([ip + encode_gre(7, b"x", 1, None), ip + encode_gre(8, b"y", 2, 1),
                                ip + encode_gre(9, b"z", 1, None)])])

    ppp = ppp_conversations()
    write("ppp_session_server", [bytes([i]) + framed(c) for i, c in enumerate(ppp["to_server"])])
    write("ppp_session_client", [bytes([i]) + framed(c) for i, c in enumerate(ppp["to_client"])])
    write("hdlc_stream", [framed([b"".join(encode_frame(f) for f in c[:20])]) for c in ppp["to_server"][:3]])

    # Authentication packets: the protocol's information fields from the PPP conversations.
    from pptpkit.ppp.frame import decode_frame

    auth_protocols = {0xC023: 0, 0xC223: 1, 0xC227: 4}
    auth: dict[bool, list[bytes]] = {True: [], False: []}
    for to_server_side, conversations in ((True, ppp["to_server"]), (False, ppp["to_client"])):
        for conversation in conversations:
            infos = [bytes(info) for proto, info in map(decode_frame, conversation)
                     if proto in auth_protocols]
            for method_index in range(5):
                if infos:
                    auth[to_server_side].append(bytes([method_index]) + framed(infos))
    write("auth_authenticator", auth[True])
    write("auth_peer", auth[False])

    bodies = []
    for stateless in (True, False):
        enc = MppeEncryptor(MppeConfig(start_key=bytes(range(16)), stateless=stateless))
        bodies.append(framed([enc.encrypt(0x21, bytes([0x45]) + bytes(30)) for _ in range(6)]))
    write("mppe_decrypt", bodies)

    write("callmgr_codec", [encode_message(Message(MsgType.FRAME, frame=b"\xff\x03\xc0\x21")),
                            encode_message(Message(MsgType.OPEN)),
                            encode_message(Message(MsgType.FAILED, data={"kind": "x", "reason": "y"})),
                            encode_message(Message(MsgType.HANGUP))])
    vectors = ROOT / "tests" / "vectors"
    write("pptpd_conf", [p.read_bytes()[:4096] for p in sorted((vectors / "pptpdconf").glob("*.conf"))])
    write("pppd_options", [p.read_bytes()[:4096] for p in sorted((vectors / "pppdopts").glob("*.options"))])
    write("chap_secrets", [b"# client server secret addresses\nalice pptpd \"a b\" *\n"
                           b"bob * 'x\\ty' 192.0.2.10 -- extra\ncarol pptpd @literal -\n"])
    total = sum(f.stat().st_size for f in CORPUS.rglob("*") if f.is_file())
    print(f"wrote {sum(1 for f in CORPUS.rglob('*') if f.is_file())} seeds, {total} bytes, to {CORPUS}")


if __name__ == "__main__":
    main()
