"""``pptpkit probe``: why does my VPN not connect?  Each layer of a PPTP connection tried in
turn, each result timed, and one verdict line per problem with its usual fix.

The steps (:func:`run_probe`):

1. **TCP**: a bare connect to the control port, timed (the round trip of the handshake), closed
   at once.  It needs no privilege, so an unprivileged user still learns whether the server is
   reachable before being told that the rest needs root.
2. **Control connection**: Start-Control-Connection with :class:`~pptpkit.pptp.client.PptpClient`;
   the server's reply (host name, vendor, firmware, protocol version, framing and bearer
   capabilities, maximum channels) is reported.  The client opens the raw GRE socket first, so
   this is where a missing CAP_NET_RAW shows.
3. **Call and GRE**: an Outgoing-Call-Request, then PPP on the call through
   :class:`~pptpkit.io.link.PppLink` with no data plane (no TUN, no route: the probe changes
   nothing on the host).  The server's first GRE packet proves the path towards us; the
   server acknowledging our GRE sequence numbers (:attr:`GreStats.acks_new`), or LCP opening at
   all, proves the path towards it.
4. **LCP**: the Authentication-Protocol of every Configure-Request the server sends (its first
   choice, and what it falls back to after our Nak) and of every Nak we send, read off the frames
   as they pass (a tap on both directions, nothing injected).
5. **Authentication, MPPE** (with ``--user``): the session as ``pptpkit connect`` runs it, up to
   IPCP; the negotiated MPPE.  Without credentials the link is closed as soon as LCP is open,
   before any authentication packet, so a probe cannot lock an account.
6. **MTU**: the kernel's path MTU towards the server (``IP_MTU`` of a connected UDP socket: no
   packet is sent), and LCP Echo-Requests padded to growing sizes sent over the tunnel once it
   is up.  The GRE socket does not set DF (the kernel fragments), so a size that gets no answer
   while smaller ones do means big packets or their fragments are lost on the way: the MTU
   trouble users see as "ping works, web pages hang".

Failures are classified by :mod:`pptpkit.vpn.connect`'s own functions (:func:`control_failure`,
:func:`call_failure`, :func:`gre_path_failure`, :func:`classify_link_down`), so the probe's exit
status and wording are those ``pptpkit connect`` would give for the same server.  The verdicts
(:func:`verdicts`, :func:`probe_status`) are pure functions of the :class:`ProbeReport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal

from pptpkit.auth.base import PeerConfig
from pptpkit.auth.methods import AuthMethod
from pptpkit.control import PPTP_PORT, PeerInfo
from pptpkit.errors import ConfigError, DecodeError, ExitStatus, PptpkitError, os_error_text
from pptpkit.io.grechannel import acquire_gre_socket, release_gre_socket
from pptpkit.io.gresock import GreSocket
from pptpkit.io.link import PppLink
from pptpkit.ppp.frame import decode_frame, encode_frame
from pptpkit.ppp.fsm import FsmConfig
from pptpkit.ppp.lcp import DEFAULT_MRU, LcpOption
from pptpkit.ppp.packet import Code, Packet, decode_options
from pptpkit.ppp.protocols import PppProtocol
from pptpkit.ppp.session_config import (
    Authenticated,
    AuthenticationFailed,
    LinkParameters,
    LinkUp,
    MppePolicy,
    SessionConfig,
    SessionEvent,
    SessionRole,
)
from pptpkit.pptp.client import (
    CallRefusedError,
    ControlConnectionError,
    PptpCall,
    PptpClient,
    PptpClientConfig,
)
from pptpkit.vpn.connect import (
    Failure,
    call_failure,
    classify_link_down,
    control_failure,
    gre_path_failure,
)

__all__ = [
    "DEFAULT_ECHO_SIZES",
    "EchoResult",
    "ProbeConfig",
    "ProbeReport",
    "Step",
    "Verdict",
    "echo_ip_size",
    "probe_status",
    "run_probe",
    "verdicts",
]

log = logging.getLogger(__name__)

#: LCP packet sizes (header included) of the padded Echo-Requests, smallest first; sizes above
#: the server's MRU are left out and the MRU itself is added.  1460 + 40 is a full 1500-byte
#: Ethernet packet, so the sizes around it show whether fragments get through.
DEFAULT_ECHO_SIZES: Final = (100, 576, 1000, 1300, 1400, 1460)

#: IP (20) + GRE with sequence and acknowledgment numbers (16) + PPP address, control and
#: protocol (4): what an LCP packet costs on the path.
_ENCAPSULATION: Final = 40

#: An echo size is sent this often (the first time and once again) before it counts as lost.
_ECHO_ROUNDS: Final = 2
_ECHO_WAIT: Final = 1.5
#: Linux's IP_MTU socket option (not in the socket module).
_IP_MTU: Final = 14
#: Our placeholder identity when no --user is given: LCP needs one to accept the server's
#: Authentication-Protocol.  It never leaves: without credentials the tap passes LCP frames
#: only (a PAP client speaks first, in the same turn LCP opens).
_NOBODY: Final = "pptpkit-probe"
_NOBODY_PASSWORD: Final = "-"

StepName = Literal["tcp", "control", "call", "gre", "lcp", "auth", "mppe", "mtu"]


def echo_ip_size(lcp_size: int) -> int:
    """The size of the IP packet that carries an LCP packet of ``lcp_size`` bytes over GRE."""
    return lcp_size + _ENCAPSULATION


@dataclass(frozen=True, kw_only=True)
class ProbeConfig:
    """What to probe.  ``username``/``password``: authenticate too (both or neither).
    ``mppe``: the MPPE policy of the probing session (default: any key length, not required);
    ``timeout``: seconds each step may take; ``lcp_restart``: LCP's retransmission interval;
    ``echo_sizes``: see :data:`DEFAULT_ECHO_SIZES`."""

    server: str
    port: int = PPTP_PORT
    username: str | None = None
    password: str | None = None
    mppe: MppePolicy = field(default_factory=MppePolicy)
    timeout: float = 10.0
    lcp_restart: float = 1.0
    echo_sizes: tuple[int, ...] = DEFAULT_ECHO_SIZES

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 0xFFFF:
            raise ConfigError(f"port must be 1..65535, not {self.port}")
        if (self.username is None) != (self.password is None):
            raise ConfigError("give both a user name and a password, or neither")
        if not 0 < self.timeout <= 600:
            raise ConfigError("timeout must be in (0, 600] seconds")
        if not self.echo_sizes or not all(8 <= s <= 0xFFFF for s in self.echo_sizes):
            raise ConfigError("echo sizes must be 8..65535 bytes")
        self.session_config()

    @property
    def authenticate(self) -> bool:
        return self.username is not None

    def session_config(self) -> SessionConfig:
        """Our session the way ``pptpkit connect`` configures it, without keepalives (the MTU
        step sends its own echoes)."""
        return SessionConfig(
            role=SessionRole.CLIENT,
            peer=PeerConfig(username=self.username or _NOBODY, password=self.password or _NOBODY_PASSWORD),
            mru=DEFAULT_MRU,
            echo_interval=0.0,
            fsm=FsmConfig(restart_interval=self.lcp_restart),
            request_dns=True,
            mppe=self.mppe,
        )


@dataclass(kw_only=True)
class Step:
    """One line of the report: ``ok`` None when the step was not run or could not tell."""

    name: StepName
    ok: bool | None
    ms: float | None
    detail: str


@dataclass(frozen=True, kw_only=True)
class EchoResult:
    """One padded LCP Echo-Request: ``size`` is the LCP packet (header included)."""

    size: int
    answered: bool
    ms: float | None = None


@dataclass(kw_only=True)
class ProbeReport:
    """Everything the probe found; :func:`verdicts` reads it.

    ``failure``: the first failure, classified as ``pptpkit connect`` would (None: none).
    ``gre_in``/``gre_out``: GRE seen from the server / ours acknowledged by it (None: unknown).
    ``auth_requested``: the Authentication-Protocol of each of the server's Configure-Requests
    (pppd names), ``auth_naked``: what we suggested in our Naks.  ``mppe``: as negotiated
    (None: not known, needs credentials).  ``path_mtu``: the kernel's, towards the server.
    """

    server: str
    port: int
    steps: list[Step] = field(default_factory=list)
    failure: Failure | None = None
    server_info: dict[str, Any] | None = None
    gre_in: bool | None = None
    gre_out: bool | None = None
    auth_requested: list[str] = field(default_factory=list)
    auth_naked: list[str] = field(default_factory=list)
    auth_method: str | None = None
    authenticated: bool | None = None
    mppe: str | None = None
    mppe_wanted: bool = False
    mru: int | None = None
    peer_mru: int | None = None
    path_mtu: int | None = None
    echoes: list[EchoResult] = field(default_factory=list)

    def step(self, name: StepName, ok: bool | None, detail: str, ms: float | None = None) -> None:
        self.steps.append(Step(name=name, ok=ok, ms=None if ms is None else round(ms, 3), detail=detail))

    def fail(self, failure: Failure) -> None:
        if self.failure is None:
            self.failure = failure

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["failure"] = (None if self.failure is None else
                          {"code": int(self.failure.code), "message": self.failure.message})
        found = verdicts(self)
        out["verdicts"] = [{"status": int(v.status), "severity": v.severity, "problem": v.problem,
                            "fix": v.fix} for v in found]
        out["status"] = int(probe_status(found))
        return out


# -- verdicts (pure) -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """One finding: ``severity`` "fail" (sets the exit status), "warn" (worth knowing, status
    unchanged) or "ok"."""

    status: ExitStatus
    severity: Literal["fail", "warn", "ok"]
    problem: str
    fix: str = ""


#: A Linux NAT needs the helper attached explicitly since kernel 4.7 (docs/client.md).
_NAT_FIX: Final = ("behind a Linux NAT router attach the pptp conntrack helper (nf_conntrack_pptp: "
                   "nft 'tcp dport 1723 ct helper set \"pptp\"'), on other routers turn on \"PPTP "
                   "passthrough\"")
_GRE_FIX: Final = ("let IP protocol 47 (GRE) through both ways, in every firewall on the path "
                   f"(not only TCP 1723); {_NAT_FIX}")

_FIXES: Final[dict[ExitStatus, str]] = {
    ExitStatus.NOT_PERMITTED: "run the probe as root, or give it CAP_NET_RAW (the GRE steps need a "
                              "raw socket)",
    ExitStatus.CONTROL_UNREACHABLE: "check the address and that the server runs and listens on this "
                                    "port; a firewall on the way must let TCP to the port through",
    ExitStatus.CONNECT_FAILED: "the server said no: look at its log (connection or call limits, "
                               "allowed client addresses)",
    ExitStatus.HANGUP: "the server hung up: look at its log",
    ExitStatus.GRE_BLOCKED: _GRE_FIX,
    ExitStatus.AUTH_FAILED: "check the user name and the password (the server's chap-secrets or "
                            "RADIUS entry for this user)",
    ExitStatus.NEGOTIATION_FAILED: "run with -v to see the LCP/IPCP exchange and compare it with the "
                                   "server's options",
    ExitStatus.PEER_DEAD: "the server stopped answering: look at its log",
}

_MPPE_FIX: Final = ("make both ends agree on MPPE: it needs MS-CHAP or MS-CHAPv2 (the keys come "
                    "from it) and the same key length allowed on both sides (require-mppe-128 on "
                    "the server, connect --require-mppe-128 or --no-mppe on the client)")


def _failure_verdict(report: ProbeReport, failure: Failure) -> Verdict:
    code = failure.code
    fix = _FIXES.get(code, "run with -v for the details")
    if code is ExitStatus.NEGOTIATION_FAILED and "mppe" in failure.message.lower():
        fix = _MPPE_FIX
    elif code is ExitStatus.GRE_BLOCKED and report.gre_in:
        fix = ("let GRE (IP protocol 47) out towards the server: the server's GRE arrives but none of "
               f"ours is acknowledged; {_NAT_FIX}")
    return Verdict(status=code, severity="fail", problem=failure.message, fix=fix)


def _mtu_verdict(report: ProbeReport) -> Verdict | None:
    """Lost echoes above answered ones: the path loses big packets (or their fragments)."""
    answered = [e.size for e in report.echoes if e.answered]
    lost = [e.size for e in report.echoes if not e.answered]
    if not report.echoes or not lost:
        return None
    if not answered:
        return Verdict(status=ExitStatus.OK, severity="warn",
                       problem=f"the server answered none of {len(lost)} LCP Echo-Requests (some "
                               "servers ignore them), so the MTU could not be checked")
    best = max(answered)
    worst = min(s for s in lost if s > best) if any(s > best for s in lost) else min(lost)
    mtu = f"path MTU {report.path_mtu}" if report.path_mtu else "path MTU unknown"
    return Verdict(
        status=ExitStatus.FATAL, severity="fail",
        problem=f"big packets through the tunnel are lost: {best} bytes get through, {worst} do not "
                f"({echo_ip_size(best)} and {echo_ip_size(worst)} bytes on the path, {mtu})",
        fix=f"lower the tunnel MTU to {best} or less (pptpkit connect --mtu {max(576, best)}, pppd "
            "mtu/mru on the server), clamp TCP MSS, or let IP fragments through the firewalls on "
            "the path")


def verdicts(report: ProbeReport) -> list[Verdict]:
    """The findings of ``report``, the failure (if any) first."""
    found: list[Verdict] = []
    if report.failure is not None:
        found.append(_failure_verdict(report, report.failure))
    mtu = _mtu_verdict(report)
    if mtu is not None:
        found.append(mtu)
    if report.failure is None and report.authenticated and report.mppe is not None \
            and not report.mppe.lower().startswith("mppe"):
        found.append(Verdict(
            status=ExitStatus.OK, severity="warn",
            problem=f"the link came up without encryption ({report.mppe}): a client that requires "
                    "MPPE (Windows by default, connect --require-mppe-128) fails with status 10",
            fix="allow MPPE on the server (require-mppe-128) unless the tunnel is meant to be "
                "unencrypted"))
    if report.failure is None and report.authenticated is None and report.gre_out:
        found.append(Verdict(status=ExitStatus.OK, severity="warn",
                             problem="authentication and MPPE were not tried",
                             fix="give --user and --password-file to check them too"))
    if not any(v.severity == "fail" for v in found):
        found.insert(0, Verdict(status=ExitStatus.OK, severity="ok",
                                problem="everything probed works"))
    return found


def probe_status(found: list[Verdict]) -> ExitStatus:
    """The exit status: the first failure's, else 0."""
    for verdict in found:
        if verdict.severity == "fail":
            return verdict.status
    return ExitStatus.OK


# -- the asyncio part ------------------------------------------------------------------------------


def _auth_names(packet: Packet) -> list[str]:
    names: list[str] = []
    with contextlib.suppress(DecodeError, ValueError):
        for option in decode_options(packet.data):
            if option.type == LcpOption.AUTH_PROTOCOL:
                method = AuthMethod.from_option_data(option.data)
                names.append(method.pppd_name if method is not None else f"0x{option.data.hex()}")
    return names


def _lcp_packet(frame: bytes) -> Packet | None:
    try:
        protocol, info = decode_frame(frame)
        if protocol != PppProtocol.LCP:
            return None
        return Packet.decode(info)
    except DecodeError:
        return None


class _Tap:
    """Both directions of the call's PPP frames, read and passed on unchanged.  Also the
    transport PppLink sends through (it forwards to the call)."""

    def __init__(self, call: PptpCall, report: ProbeReport, link_ref: list[PppLink], *,
                 lcp_only: bool) -> None:
        self.call = call
        self.lcp_only = lcp_only
        self.report = report
        self.link_ref = link_ref
        self.loop = asyncio.get_running_loop()
        self.first_gre = asyncio.Event()
        self.first_at: float | None = None
        #: identifier -> (size, sent at) of our padded echoes still unanswered.
        self.echo_pending: dict[int, tuple[int, float]] = {}
        self.echo_answered: dict[int, float] = {}
        self.echo_arrived = asyncio.Event()

    # transport (to the server)
    def send_frame(self, frame: bytes) -> bool:
        packet = _lcp_packet(frame)
        if packet is None and self.lcp_only:
            return False
        if packet is not None and packet.code == Code.CONFIGURE_NAK:
            self.report.auth_naked += _auth_names(packet)
        return self.call.send_frame(frame)

    def close(self) -> Any:
        return self.call.close()

    # from the server
    def frame_in(self, frame: bytes) -> None:
        if self.first_at is None:
            self.first_at = self.loop.time()
            self.first_gre.set()
        packet = _lcp_packet(frame)
        if packet is not None:
            if packet.code == Code.CONFIGURE_REQUEST:
                self.report.auth_requested += _auth_names(packet) or ["none"]
            elif packet.code == Code.ECHO_REPLY and packet.identifier in self.echo_pending:
                size, _ = self.echo_pending[packet.identifier]
                if len(packet.data) + 4 == size:
                    _, sent = self.echo_pending.pop(packet.identifier)
                    self.echo_answered[size] = self.loop.time() - sent
                    self.echo_arrived.set()
        if self.link_ref:
            self.link_ref[0].frame_received(frame)

    def send_echo(self, identifier: int, size: int, magic: int) -> None:
        # Magic number first (RFC 1661 5.8), then padding up to the size asked for.
        data = magic.to_bytes(4, "big") + bytes(i & 0xFF for i in range(size - 8))
        self.echo_pending[identifier] = (size, self.loop.time())
        self.call.send_frame(encode_frame(PppProtocol.LCP, Packet(
            code=Code.ECHO_REQUEST, identifier=identifier, data=data).encode()))


def path_mtu(server: str) -> int | None:
    """The kernel's path MTU towards ``server`` (a learned PMTU, else the route's or the
    interface's); no packet is sent."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((server, 9))
        return int(sock.getsockopt(socket.IPPROTO_IP, _IP_MTU))
    return None


def _peer_dict(peer: PeerInfo) -> dict[str, Any]:
    version = peer.protocol_version
    return {
        "host_name": peer.host_name, "vendor": peer.vendor,
        "firmware_revision": peer.firmware_revision,
        "protocol_version": f"{version >> 8}.{version & 0xFF}",
        "framing_capabilities": _bits(peer.framing_capabilities, ("async", "sync")),
        "bearer_capabilities": _bits(peer.bearer_capabilities, ("analog", "digital")),
        "max_channels": peer.max_channels,
    }


def _bits(value: int, names: tuple[str, ...]) -> list[str]:
    return [name for bit, name in enumerate(names) if value & (1 << bit)] or ["none"]


def _ms(start: float, end: float) -> float:
    return (end - start) * 1000.0


class _Prober:
    def __init__(self, config: ProbeConfig, gre_socket: GreSocket | None) -> None:
        self.config = config
        self.gre_socket = gre_socket
        self.loop = asyncio.get_running_loop()
        self.report = ProbeReport(server=config.server, port=config.port,
                                  mppe_wanted=config.mppe.required)
        self.params: LinkParameters | None = None
        self.lcp_up = asyncio.Event()
        self.auth_event: Authenticated | None = None
        self.auth_at: float | None = None
        self.up: LinkUp | None = None
        self.up_event = asyncio.Event()

    async def run(self) -> ProbeReport:
        cfg, report = self.config, self.report
        gre = self.gre_socket
        owned: GreSocket | None = None
        if gre is None:
            try:
                gre = owned = acquire_gre_socket(self.loop)
            except OSError as exc:
                # Reported first (it is what stops the probe), but TCP is still tried: it
                # needs no privilege and tells the user something about the server.
                error = ControlConnectionError(f"cannot open a raw GRE socket: {exc}")
                error.__cause__ = exc
                report.fail(control_failure(error, cfg.server, cfg.port))
                if await self._tcp():
                    report.step("control", None, "not run: the GRE steps need root (CAP_NET_RAW)")
                return report
        try:
            if not await self._tcp():
                return report
            report.path_mtu = path_mtu(cfg.server)
            client = PptpClient(PptpClientConfig(
                server=cfg.server, port=cfg.port, connect_timeout=cfg.timeout,
                call_timeout=cfg.timeout, host_name="probe", echo_interval=None,
                close_when_idle=False), gre_socket=gre)
            try:
                call = await self._control(client)
                if call is not None:
                    await self._ppp(call)
            finally:
                with contextlib.suppress(PptpkitError, OSError):
                    await client.close()
        finally:
            if owned is not None:
                release_gre_socket(owned)
        return report

    async def _tcp(self) -> bool:
        cfg, report = self.config, self.report
        start = self.loop.time()
        try:
            async with asyncio.timeout(cfg.timeout):
                _, writer = await asyncio.open_connection(cfg.server, cfg.port)
        except TimeoutError:
            text = f"no answer within {cfg.timeout:g} s (a firewall dropping TCP {cfg.port}?)"
        except OSError as exc:
            text = os_error_text(exc)
        else:
            ms = _ms(start, self.loop.time())
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            report.step("tcp", True, f"TCP {cfg.server}:{cfg.port} connects", ms)
            return True
        report.step("tcp", False, text, _ms(start, self.loop.time()))
        report.fail(control_failure(ControlConnectionError(text), cfg.server, cfg.port))
        return False

    async def _control(self, client: PptpClient) -> PptpCall | None:
        cfg, report = self.config, self.report
        start = self.loop.time()
        try:
            peer = await client.connect()
        except ControlConnectionError as exc:
            failure = control_failure(exc, cfg.server, cfg.port)
            report.step("control", False, failure.message, _ms(start, self.loop.time()))
            report.fail(failure)
            return None
        report.server_info = _peer_dict(peer)
        report.step("control", True,
                    f"Start-Control-Connection-Reply: {peer.vendor or '?'} {peer.host_name or '?'}",
                    _ms(start, self.loop.time()))
        start = self.loop.time()
        try:
            call = await client.open_call()
        except (CallRefusedError, ControlConnectionError) as exc:
            failure = call_failure(exc, cfg.server)
            report.step("call", False, failure.message, _ms(start, self.loop.time()))
            report.fail(failure)
            return None
        report.step("call", True, f"call connected (our call ID {call.call_id}, the server's "
                                  f"{call.peer_call_id})", _ms(start, self.loop.time()))
        return call

    def _on_event(self, link: PppLink, event: SessionEvent) -> None:
        if isinstance(event, LinkParameters):
            self.params = event
            self.lcp_up.set()
            if not self.config.authenticate:
                # Before the server's first authentication packet can be answered.
                link.close("probe done")
        elif isinstance(event, Authenticated) and not event.we_authenticated_peer:
            self.report.authenticated = True
            self.auth_event = event
            self.auth_at = self.loop.time()
        elif isinstance(event, AuthenticationFailed) and not event.we_authenticated_peer:
            self.report.authenticated = False
        elif isinstance(event, LinkUp):
            self.up = event
            self.up_event.set()

    async def _wait(self, event: asyncio.Event, link: PppLink, timeout: float) -> bool:
        """True when ``event`` is set before the link ends or ``timeout`` passes."""
        waiter: asyncio.Future[Any] = asyncio.ensure_future(event.wait())
        closed: asyncio.Future[Any] = asyncio.ensure_future(asyncio.shield(link.closed))
        try:
            await asyncio.wait({waiter, closed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            closed.cancel()
        return event.is_set()

    async def _ppp(self, call: PptpCall) -> None:
        cfg, report = self.config, self.report
        holder: list[PppLink] = []
        tap = _Tap(call, report, holder, lcp_only=not cfg.authenticate)
        link = PppLink(cfg.session_config(), tap, None, on_event=self._on_event,
                       name=f"probe call {call.call_id}")
        holder.append(link)
        call.on_close = lambda info: link.lower_down(info.reason)
        start = self.loop.time()
        link.start()
        call.on_frame = tap.frame_in
        try:
            await self._negotiate(call, link, tap, start)
        finally:
            if not link.closed.done():
                await link.aclose("probe done", timeout=1.0)

    async def _negotiate(self, call: PptpCall, link: PppLink, tap: _Tap, start: float) -> None:
        cfg, report = self.config, self.report
        await self._wait(tap.first_gre, link, cfg.timeout)
        stats = call.stats
        report.gre_in = tap.first_at is not None or stats.acks_received > 0
        if tap.first_at is not None:
            report.step("gre", True, "GRE from the server arrives", _ms(start, tap.first_at))
        opened = await self._wait(self.lcp_up, link, max(0.0, start + cfg.timeout - self.loop.time()))
        report.gre_out = True if opened or stats.acks_new > 0 else (False if report.gre_in else None)
        server = cfg.server
        if not opened:
            blocked = gre_path_failure(stats, server)
            if blocked is not None:
                report.step("gre", False, blocked.message, _ms(start, self.loop.time()))
                report.fail(blocked)
            else:
                self._link_failure(link, "LCP did not open")
            return
        params = self.params
        assert params is not None
        report.step("gre", True, f"the server acknowledges our GRE ({stats.acks_new} acks)",
                    _ms(start, self.loop.time()))
        report.mru, report.peer_mru = params.local_mru, params.peer_mru
        report.auth_method = None if params.auth_self is None else params.auth_self.pppd_name
        asked = ", then ".join(report.auth_requested) or "nothing"
        report.step("lcp", True, f"LCP open: the server asks for {asked}; we authenticate with "
                                 f"{report.auth_method or 'nothing'}; MRU ours {params.local_mru}, "
                                 f"the server's {params.peer_mru}", _ms(start, self.loop.time()))
        if not cfg.authenticate:
            report.step("auth", None, "not tried (no --user)")
            return
        auth_start = self.loop.time()
        await self._wait(self.up_event, link, cfg.timeout)
        done = self.auth_event
        if done is not None:
            report.step("auth", True, f"authenticated as {done.username} with {done.method.pppd_name}",
                        _ms(auth_start, self.auth_at or auth_start))
        up = self.up
        if up is None:
            self._link_failure(link, "the link did not come up")
            return
        report.authenticated = True
        report.mppe = up.mppe
        encrypted = up.mppe.lower().startswith("mppe")
        report.step("mppe", True if encrypted or not cfg.mppe.allowed else None,
                    f"{up.mppe}; addresses {up.local_address} -> {up.peer_address}, MTU {up.mtu}")
        await self._echoes(tap, link, params)

    def _link_failure(self, link: PppLink, what: str) -> None:
        """The link ended (or did not open) before it was up: connect's classification."""
        report = self.report
        if link.closed.done():
            down = link.closed.result()
            failure = classify_link_down(down, server=self.config.server, was_up=False)
        else:
            failure = Failure(code=ExitStatus.NEGOTIATION_FAILED,
                              message=f"{what} within {self.config.timeout:g} s")
        if failure is None:
            return
        name: StepName = ("auth" if failure.code in (ExitStatus.AUTH_FAILED,) or report.authenticated
                          is False else "mppe" if "mppe" in failure.message.lower() else "lcp")
        report.step(name, False, failure.message)
        report.fail(failure)

    async def _echoes(self, tap: _Tap, link: PppLink, params: LinkParameters) -> None:
        report, cfg = self.report, self.config
        limit = params.peer_mru
        sizes = sorted({s for s in cfg.echo_sizes if s <= limit} | {limit})
        ids = {size: 0xC0 + i for i, size in enumerate(sizes)}
        start = self.loop.time()
        for _ in range(_ECHO_ROUNDS):
            for size in sizes:
                if size not in tap.echo_answered:
                    tap.send_echo(ids[size], size, params.local_magic)
            deadline = self.loop.time() + min(_ECHO_WAIT, cfg.timeout)
            while tap.echo_pending and not link.closed.done():
                tap.echo_arrived.clear()
                left = deadline - self.loop.time()
                if left <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(tap.echo_arrived.wait(), left)
            if not tap.echo_pending:
                break
        report.echoes = [EchoResult(size=s, answered=s in tap.echo_answered,
                                    ms=None if s not in tap.echo_answered
                                    else round(tap.echo_answered[s] * 1000, 3)) for s in sizes]
        answered = [e.size for e in report.echoes if e.answered]
        lost = [e.size for e in report.echoes if not e.answered]
        detail = (f"LCP echoes of {', '.join(map(str, sizes))} bytes: "
                  + ("all answered" if not lost else f"no answer to {', '.join(map(str, lost))}")
                  + (f"; kernel path MTU {report.path_mtu}" if report.path_mtu else ""))
        report.step("mtu", not lost if answered else None, detail, _ms(start, self.loop.time()))


async def run_probe(config: ProbeConfig, *, gre_socket: GreSocket | None = None) -> ProbeReport:
    """Probe ``config.server``; never raises for what the server or the path does (that is in
    the report), only for local trouble the report cannot describe.  ``gre_socket``: a raw GRE
    socket to use (default: the process's shared one)."""
    return await _Prober(config, gre_socket).run()

