"""Hostile clients against the real ``pptpkit server`` in the modes the first review left out
(issue 14 item 6): the ``--ppp-program`` bridge, ``--noauth``, ``--mppe-optional``, PAP and EAP,
stateful MPPE.  Each test keeps a legitimate session pinging through the server while a client
in the same namespace attacks it with traffic crafted from the library's own codecs, then
asserts that the server survived with bounded work and log and that the pings went through.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import require_binary, require_root
from netns import NetnsLab, pids_in
from pptpkit.control import (
    CallEstablished,
    CallInfo,
    ConnectionEstablished,
    ControlConfig,
    ControlConnection,
    Role,
)
from pptpkit.gre.packet import encode_gre
from pptpkit.ppp.frame import decode_frame, frame_header
from pptpkit.ppp.packet import Code, Packet
from pptpkit.ppp.session_config import MppePolicy, Outcome
from pptpkit.pptp.client import CallRefusedError, PptpClient, PptpClientConfig
from serverlab import (
    LOCAL_IP,
    SERVER,
    Pinger,
    Server,
    Tap,
    connect,
    echo_request,
    in_ns,
    run_in,
    two_namespaces,
)

pytestmark = [pytest.mark.root]

HOSTILE = "192.0.2.3"


@pytest.fixture
def lab() -> Iterator[NetnsLab]:
    require_root()
    require_binary("ping")
    with NetnsLab("pkh") as lab:
        yield lab


def hostile_namespaces(lab: NetnsLab) -> tuple[str, str]:
    """Server and client namespaces; the client has a second address for the attacker."""
    srv, cli = two_namespaces(lab)
    lab.ip(cli, "addr", "add", f"{HOSTILE}/24", "dev", "veth-b")
    return srv, cli


class RawControl:
    """A hand-driven control connection (the client engine on a plain TCP stream) from
    ``source``: the attacker decides when, and whether, it reads."""

    def __init__(self, source: str = HOSTILE) -> None:
        self.source = source
        self.engine = ControlConnection(ControlConfig(role=Role.CLIENT), now=0.0)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> RawControl:
        self.reader, self.writer = await asyncio.open_connection(SERVER, 1723, local_addr=(self.source, 0))
        self._flush()
        await self._until(ConnectionEstablished)
        return self

    def _flush(self) -> None:
        assert self.writer is not None
        self.writer.write(self.engine.data_to_send())

    async def _until(self, kind: type, timeout: float = 10) -> object:
        assert self.reader is not None
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            event = self.engine.next_event()
            while event is not None:
                if isinstance(event, kind):
                    return event
                event = self.engine.next_event()
            data = await asyncio.wait_for(self.reader.read(65536), max(0.01, end - loop.time()))
            assert data, "the server closed the control connection"
            self.engine.receive_data(data, loop.time())
            self._flush()

    async def call(self) -> CallInfo:
        self.engine.open_call(asyncio.get_running_loop().time())
        self._flush()
        event = await self._until(CallEstablished)
        assert isinstance(event, CallEstablished)
        return event.call

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class GreSender:
    """Raw GRE from ``source`` to the server's call ``call_id``, numbered by us, never acking."""

    def __init__(self, call_id: int, source: str = HOSTILE, first_seq: int = 1) -> None:
        import socket

        self.call_id, self.seq = call_id, first_seq
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_GRE)
        self.sock.bind((source, 0))

    def send(self, frame: bytes) -> None:
        self.sock.sendto(encode_gre(self.call_id, frame, self.seq & 0xFFFFFFFF, None), (SERVER, 0))
        self.seq += 1

    async def flood(self, frames: list[bytes], per_tick: int = 50) -> None:
        """Send ``frames`` in bursts, yielding to the loop between them (the live session's
        packets go through the same loop)."""
        for i, frame in enumerate(frames):
            self.send(frame)
            if i % per_tick == per_tick - 1:
                await asyncio.sleep(0.005)

    def close(self) -> None:
        self.sock.close()


def log_growth(server: Server, before: int) -> int:
    return len(server.log()) - before


# -- program mode -------------------------------------------------------------------------------

OPTIONS = ("name pptpd\nrefuse-pap\nrefuse-chap\nrefuse-mschap\nrequire-mschap-v2\nrequire-mppe-128\n"
           "ms-dns 203.0.113.53\nnodefaultroute\nnobsdcomp\nnovj\nnovjccomp\n")


def program_server(lab: NetnsLab, srv: str, workdir: Path, *extra: str) -> Server:
    """Program mode with ``pptpkit ppp`` as every call's pppd."""
    etc = workdir / "etc"
    etc.mkdir()
    (etc / "options.pptpd").write_text(OPTIONS)
    (etc / "chap-secrets").write_text('alice pptpd "alice pw" *\n')
    return Server(lab, srv, workdir, "--ppp-program", sys.executable, "--ppp-arg=-m", "--ppp-arg=pptpkit",
                  "--ppp-arg=ppp", "--option", str(etc / "options.pptpd"), "--localip", LOCAL_IP,
                  "--remoteip", "198.51.100.10-250", *extra, builtin=False,
                  env={**os.environ, "PPTPKIT_PPP_ETC": str(etc)})


def children(server: Server) -> int:
    """Processes in the server's namespace besides the server itself."""
    return len([p for p in pids_in(server.ns) if p not in (server.proc.pid, os.getpid())])


def test_program_mode_call_flood_is_capped(lab: NetnsLab, tmp_path: Path) -> None:
    """A client opening every call it can must not fork a program per call beyond the
    operator's limits (pptpd: one pppd per connection, ``connections`` of them); calls cleared
    while their program starts leave nothing behind; the live session keeps pinging."""
    srv, cli = hostile_namespaces(lab)
    server = program_server(lab, srv, tmp_path, "--connections", "8", "--max-per-source", "4")

    async def main() -> None:
        alice = await connect("alice", "alice pw", tun="pka%d")
        base = children(server)
        pinger = await Pinger(count=60).start()
        hostile: list[PptpClient] = []
        opened = refused = 0
        peak = 0
        for _ in range(4):
            c = PptpClient(PptpClientConfig(server=SERVER, local_address=HOSTILE))
            try:
                await c.connect()
            except Exception:  # refused at the connection limit: what we want
                break
            hostile.append(c)
            for _ in range(16):
                try:
                    await asyncio.wait_for(c.open_call(), 10)
                    opened += 1
                except (CallRefusedError, TimeoutError):
                    refused += 1
                peak = max(peak, children(server) - base)
        # Calls cleared mid-spawn: open and hang up at once, many times.
        churn = PptpClient(PptpClientConfig(server=SERVER, local_address=HOSTILE))
        try:
            await churn.connect()
            for _ in range(20):
                task = asyncio.ensure_future(churn.open_call())
                await asyncio.sleep(0.01)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        except Exception:  # refused at the limit: fine
            pass
        await asyncio.sleep(1)
        peak = max(peak, children(server) - base)
        received, text = await pinger.received()
        for c in hostile:
            await c.close()
        await churn.close()
        print(f"opened {opened} refused {refused} peak programs {peak}", file=sys.stderr)
        assert peak <= 4, f"{peak} programs for one source (opened {opened}, refused {refused})"
        assert received >= 57, text
        # Everything the attacker started is gone once it hung up.
        end = asyncio.get_running_loop().time() + 15
        while children(server) > base:
            assert asyncio.get_running_loop().time() < end, f"{children(server)} > {base}"
            await asyncio.sleep(0.2)
        await alice.close()

    run_in(cli, main)
    assert "Traceback" not in server.log()
    assert server.proc.poll() is None


def test_program_mode_garbage_into_the_bridge_from_a_client_that_never_reads(
        lab: NetnsLab, tmp_path: Path) -> None:
    """Garbage, escape-heavy and oversized frames into one call's HDLC bridge from a client that
    never reads its control connection nor acknowledges GRE: the bridge and the program take
    it, the log stays small, the live session keeps pinging."""
    import random

    srv, cli = hostile_namespaces(lab)
    server = program_server(lab, srv, tmp_path)

    async def main() -> None:
        alice = await connect("alice", "alice pw", tun="pka%d")
        control = await RawControl().open()
        call = await control.call()
        assert call.peer_call_id is not None
        base = children(server)
        log_before = len(server.log())
        pinger = await Pinger(count=50).start()
        rnd = random.Random(14)
        frames: list[bytes] = []
        for i in range(3000):
            kind = i % 4
            if kind == 0:
                frames.append(rnd.randbytes(rnd.randint(1, 1400)))
            elif kind == 1:
                frames.append(b"\x7e\x7d" * 700)  # every octet escaped: twice the size in HDLC
            elif kind == 2:
                # An LCP Configure-Request with garbage options, and a huge Echo-Request.
                frames.append(b"\xff\x03\xc0\x21\x01\x01\x00\x40" + rnd.randbytes(60))
            else:
                frames.append(b"\xff\x03\xc0\x21\x09\x02\x05\xdc" + rnd.randbytes(1492))
        # And a few frames far beyond any MRU (fragmented IP on the way).
        frames += [rnd.randbytes(9000) for _ in range(20)]
        gre = GreSender(call.peer_call_id)
        try:
            await gre.flood(frames)
        finally:
            gre.close()
        received, text = await pinger.received()
        assert received >= 48, text
        assert children(server) <= base + 1
        grown = log_growth(server, log_before)
        assert grown < 20_000, f"{grown} bytes of log"
        control.close()
        # Gone after the attacker's connection closed.
        end = asyncio.get_running_loop().time() + 15
        while children(server) >= base:
            assert asyncio.get_running_loop().time() < end, server.log()[-3000:]
            await asyncio.sleep(0.2)
        rc_ok = await Pinger(count=3, interval=0.2).start()
        assert (await rc_ok.received())[0] == 3
        await alice.close()

    run_in(cli, main)
    assert "Traceback" not in server.log()
    assert server.proc.poll() is None


# -- --mppe-optional ------------------------------------------------------------------------------

CCP, IP = 0x80FD, 0x0021


def ppp(protocol: int, body: bytes) -> bytes:
    return frame_header(protocol) + body


async def icmp_in_echos(ns: str) -> int:
    _, out = await in_ns(ns, "nstat", "-az", "IcmpInEchos")
    for line in out.splitlines():
        if line.startswith("IcmpInEchos"):
            return int(line.split()[1])
    return 0


def test_mppe_optional_cannot_be_downgraded_once_mppe_is_up(lab: NetnsLab, tmp_path: Path) -> None:
    """With --mppe-optional a client that negotiated MPPE sends clear IP (dropped), then
    renegotiates CCP and rejects MPPE: the session must not go on in clear text (an injected
    CCP packet would otherwise strip the encryption off a live session)."""
    srv, cli = hostile_namespaces(lab)
    server = Server(lab, srv, tmp_path, "--mppe-optional")

    async def main() -> None:
        alice = await connect("alice", "alice pw", tun="pka%d", mppe=MppePolicy(required=False))
        assert alice.up.mppe == "MPPE 128-bit stateless"
        taps: list[Tap] = []
        bob = await connect("bob", "bobpw", tun="pkb%d", mppe=MppePolicy(required=False), tap=taps,
                            local_address=HOSTILE)
        assert bob.up.mppe == "MPPE 128-bit stateless"
        tap = taps[0]
        await server.await_log("session up: user 'bob'")
        # From the server's side, so that the server's IcmpInEchos counts only bob's packets.
        pinger = await Pinger("198.51.100.10", count=40, ns=srv).start()
        before = await icmp_in_echos(srv)
        clear = ppp(IP, echo_request("198.51.100.50", LOCAL_IP))
        for _ in range(20):
            tap.inject(clear)
        await asyncio.sleep(0.5)
        assert await icmp_in_echos(srv) == before, "clear IP delivered while MPPE is up"

        # The downgrade: bob's own CCP falls silent; we restart CCP asking for nothing and
        # reject every MPPE option the server offers.
        def is_ccp(frame: bytes) -> bool:
            try:
                return decode_frame(frame)[0] == CCP
            except Exception:
                return False

        tap.block = is_ccp

        def reject_mppe(frame: bytes) -> None:
            if not is_ccp(frame):
                return
            pkt = Packet.decode(decode_frame(frame)[1])
            if pkt.code == Code.CONFIGURE_REQUEST and pkt.data:
                tap.inject(ppp(CCP, Packet(code=Code.CONFIGURE_REJECT, identifier=pkt.identifier,
                                           data=pkt.data).encode()))
            elif pkt.code == Code.CONFIGURE_REQUEST:
                tap.inject(ppp(CCP, Packet(code=Code.CONFIGURE_ACK, identifier=pkt.identifier).encode()))

        tap.observe = reject_mppe
        tap.inject(ppp(CCP, Packet(code=Code.CONFIGURE_REQUEST, identifier=200).encode()))
        for _ in range(30):
            tap.inject(clear)
            await asyncio.sleep(0.1)
        assert await icmp_in_echos(srv) == before, "clear IP delivered after a CCP downgrade"
        received, text = await pinger.received()
        assert received >= 38, text
        down = await asyncio.wait_for(asyncio.shield(bob.link.closed), 10)
        assert down.outcome is Outcome.PEER_TERMINATED, down
        await bob.client.close()
        await alice.close()

    run_in(cli, main)
    assert "Traceback" not in server.log()


# -- stateful MPPE ----------------------------------------------------------------------------------

MPPE = 0x00FD


def test_stateful_mppe_reset_flood_and_forged_counts_cost_bounded_work(
        lab: NetnsLab, tmp_path: Path) -> None:
    """--mppe-stateful: a client floods CCP Reset-Requests (each one used to be answered with a
    Reset-Ack), then sends MPPE packets with jumping coherency counts and the FLUSHED bit in a
    loop.  The server answers resets at a bounded rate, stays up, and the live session pings."""
    import random

    srv, cli = hostile_namespaces(lab)
    server = Server(lab, srv, tmp_path, "--mppe-stateful")

    async def main() -> None:
        stateful = MppePolicy(required=True, stateful=True)
        alice = await connect("alice", "alice pw", tun="pka%d", mppe=stateful)
        assert alice.up.mppe == "MPPE 128-bit stateful"
        taps: list[Tap] = []
        bob = await connect("bob", "bobpw", tun="pkb%d", mppe=stateful, tap=taps, local_address=HOSTILE)
        tap = taps[0]
        acks = 0

        def count(frame: bytes) -> None:
            nonlocal acks
            protocol, info = decode_frame(frame)
            if protocol == CCP and Packet.decode(info).code == Code.RESET_ACK:
                acks += 1

        tap.observe = count
        pinger = await Pinger(count=40).start()
        log_before = len(server.log())
        started = asyncio.get_running_loop().time()
        for i in range(5000):
            tap.inject(ppp(CCP, Packet(code=Code.RESET_REQUEST, identifier=i & 0xFF).encode()))
            if i % 50 == 49:
                await asyncio.sleep(0.005)
        rnd = random.Random(3)
        for i in range(3000):
            cc = rnd.randrange(4096)
            flags = 0x90 | (0x80 if i % 2 else 0x00)  # encrypted, flushed (A and D bits)
            tap.inject(ppp(MPPE, bytes(((flags & 0xF0) | (cc >> 8), cc & 0xFF)) + rnd.randbytes(60)))
            if i % 50 == 49:
                await asyncio.sleep(0.005)
        elapsed = asyncio.get_running_loop().time() - started
        await asyncio.sleep(0.5)
        received, text = await pinger.received()
        assert received >= 38, text
        # A bounded answer rate: not one Reset-Ack per Reset-Request.
        assert acks <= 20 + 20 * elapsed, f"{acks} Reset-Acks in {elapsed:.1f} s"
        assert log_growth(server, log_before) < 10_000
        await bob.close()
        rc = await Pinger(count=3, interval=0.2).start()
        assert (await rc.received())[0] == 3
        await alice.close()

    run_in(cli, main)
    assert "Traceback" not in server.log()


# -- --noauth ---------------------------------------------------------------------------------------

IPCP = 0x8021


def ipcp_request(identifier: int, address: str) -> bytes:
    import ipaddress

    option = bytes((3, 6)) + ipaddress.IPv4Address(address).packed
    return ppp(IPCP, Packet(code=Code.CONFIGURE_REQUEST, identifier=identifier, data=option).encode())


def test_noauth_clients_cannot_take_foreign_addresses_skip_ahead_or_drain_the_pool(
        lab: NetnsLab, tmp_path: Path) -> None:
    """--noauth: data and IPCP before LCP are dropped; IPCP never acks another session's
    address, ours or an outside one; one address cannot take more than --max-per-source
    sessions (the pool's only guard when nobody authenticates)."""
    srv, cli = hostile_namespaces(lab)
    server = Server(lab, srv, tmp_path, "--noauth", "--no-mppe", "--max-per-source", "3")
    no_mppe = MppePolicy(bits_40=False, bits_128=False)

    async def main() -> None:
        alice = await connect("alice", "x", tun="pka%d", mppe=no_mppe)
        assert str(alice.up.local_address) == "198.51.100.10"
        pinger = await Pinger("198.51.100.10", count=40, ns=srv).start()
        before = await icmp_in_echos(srv)
        # Straight to IPCP and data on a fresh call, without LCP.
        control = await RawControl().open()
        call = await control.call()
        assert call.peer_call_id is not None
        gre = GreSender(call.peer_call_id)
        try:
            for _ in range(50):
                gre.send(ipcp_request(1, "198.51.100.10"))
                gre.send(ppp(IP, echo_request("198.51.100.10", LOCAL_IP)))
        finally:
            gre.close()
        control.close()
        # A session that came up properly asks for foreign addresses in a renegotiation.
        taps: list[Tap] = []
        mallory = await connect("mallory", "x", tun="pkm%d", mppe=no_mppe, tap=taps, local_address=HOSTILE)
        mine = str(mallory.up.local_address)
        assert mine != "198.51.100.10"
        acked: list[bytes] = []

        def watch(frame: bytes) -> None:
            protocol, info = decode_frame(frame)
            if protocol == IPCP:
                pkt = Packet.decode(info)
                if pkt.code == Code.CONFIGURE_ACK:
                    acked.append(pkt.data)

        taps[0].observe = watch
        for i, foreign in enumerate(("198.51.100.10", LOCAL_IP, "203.0.113.99", "0.0.0.0")):
            for _ in range(5):
                taps[0].inject(ipcp_request(100 + i, foreign))
            await asyncio.sleep(0.3)
        import ipaddress

        for data in acked:
            if data[:2] == b"\x03\x06":
                assert str(ipaddress.IPv4Address(data[2:6])) == mine, acked
        # The pool: one address gets --max-per-source sessions, no more.
        more = []
        for n in range(3):
            try:
                more.append(await connect("m", "x", tun=f"pk{n}m%d", mppe=no_mppe, local_address=HOSTILE))
            except Exception:  # refused at the per-source cap: what we want
                break
        assert len(more) <= 2
        received, text = await pinger.received()
        assert received >= 38, text
        assert await icmp_in_echos(srv) == before
        for s in more:
            await s.close()
        await alice.close()
        if not mallory.link.finished:
            await mallory.close()

    run_in(cli, main)
    assert "Traceback" not in server.log()


# -- PAP and EAP ------------------------------------------------------------------------------------

PAP, EAP, LCP = 0xC023, 0xC227, 0xC021


def auth_garbage() -> list[bytes]:
    """Malformed and oversized PAP Authenticate-Requests and EAP Responses (Nak loops,
    Identity floods) for a server that has not finished LCP, or already has."""
    frames = [
        ppp(PAP, b"\x01\x01\x00\x04"),                                  # no Peer-ID length
        ppp(PAP, b"\x01\x02\x00\x06\xff\x00"),                          # Peer-ID beyond Length
        ppp(PAP, b"\x01\x03\xff\xff" + bytes(40)),                      # Length beyond the frame
        ppp(PAP, Packet(code=1, identifier=4, data=b"\xff" + b"A" * 255 + b"\xff" + b"B" * 255).encode()),
        ppp(EAP, b"\x02\x05\x00\x06\x03\x04"),                          # Nak asking for MD5
        ppp(EAP, b"\x02\x06\x00\x05\x03"),                              # Nak with no type
        ppp(EAP, Packet(code=2, identifier=7, data=b"\x01" + b"I" * 1400).encode()),  # huge Identity
        ppp(EAP, b"\x01\x08\x00\x05\x01"),                              # a Request, to the server
        ppp(EAP, b"\x02\x09\x00\xff\x19"),                              # Length beyond the frame
    ]
    return frames * 40


@pytest.mark.parametrize("method", ["pap", "eap"])
def test_pap_and_eap_take_malformed_huge_and_repeated_attempts(
        lab: NetnsLab, tmp_path: Path, method: str) -> None:
    """--require-pap / --require-eap: garbage authentication before LCP is done and during
    authentication, then repeated attempts with a wrong password after success: the server
    stays up, its log bounded, the attacker's own session fails or survives cleanly, the live
    session pings."""
    srv, cli = hostile_namespaces(lab)
    server = Server(lab, srv, tmp_path, f"--require-{method}", "--require-mschap-v2", "--mppe-optional")

    async def main() -> None:
        alice = await connect("alice", "alice pw", tun="pka%d")
        assert alice.up.mppe == "MPPE 128-bit stateless"
        pinger = await Pinger(count=40).start()
        log_before = len(server.log())
        sent_early = False

        def early(tap: Tap, frame: bytes) -> None:
            nonlocal sent_early
            # At the server's first LCP Configure-Request: LCP is not done yet.
            if not sent_early and decode_frame(frame)[0] == LCP:
                sent_early = True
                for garbage in auth_garbage():
                    tap.inject(garbage)

        from pptpkit.auth.methods import AuthMethod
        from pptpkit.auth.policy import AuthPolicy

        wanted = AuthMethod.PAP if method == "pap" else AuthMethod.EAP
        taps: list[Tap] = []
        bob = await connect("bob", "bobpw", tun="pkb%d", tap=taps, observe=early, local_address=HOSTILE,
                            mppe=MppePolicy(),
                            auth_policy=AuthPolicy(refuse=frozenset(set(AuthMethod) - {wanted})))
        assert sent_early
        assert bob.up.auth_method is wanted
        # After success: garbage again, and repeated attempts with a wrong password.
        for garbage in auth_garbage():
            taps[0].inject(garbage)
        wrong = Packet(code=1, identifier=9, data=b"\x03bob\x05wrong").encode()
        for _ in range(300):
            taps[0].inject(ppp(PAP, wrong))
        await asyncio.sleep(0.5)
        received, text = await pinger.received()
        assert received >= 38, text
        assert log_growth(server, log_before) < 20_000
        if not bob.link.finished:
            await bob.close()
        else:
            await bob.client.close()
        await alice.close()

    run_in(cli, main)
    assert "Traceback" not in server.log()
