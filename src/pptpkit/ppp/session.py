"""One PPP session: LCP, authentication, IPCP/IPV6CP and CCP/MPPE joined into one sans-IO engine.

Drive it like every engine (docs/conventions.md, docs/engine-api.md)::

    session = PppSession(config, now)
    session.open(now)                           # the PPTP call is up
    ip = session.receive_frame(frame, now)      # a frame from GRE; an IP packet or None
    frame = session.send_packet(ip, now)        # an IP packet to send; a frame or None
    frames = session.send_packets(ips, now)     # a batch of them (e.g. one TSO read's segments)
    session.frames_to_send(); session.next_event(); session.get_timer(); session.handle_timer(now)

Phases follow RFC 1661 3.2: nothing of the network phase (no NCP packet, no data) happens
before authentication succeeded, NCP packets arriving before are silently discarded, and
every way the session can end ends in exactly one :class:`LinkDown` with an
:class:`Outcome`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Final

from pptpkit.auth.base import (
    AuthEngine,
    AuthFailed,
    AuthSucceeded,
    ExternalVerdict,
    KeyMaterial,
    Role,
    VerifyRequest,
)
from pptpkit.auth.factory import create_engine
from pptpkit.auth.methods import PROTO_CHAP, PROTO_EAP, PROTO_PAP, AuthMethod
from pptpkit.auth.secrets import AddressPolicy
from pptpkit.crypto.mppe import (
    MPPE_OVERHEAD,
    MppeStats,
)
from pptpkit.errors import DecodeError
from pptpkit.ppp.ccp import (
    CcpConfig,
    CcpEngine,
    MppeFailed,
    ResetAcked,
    ResetRequested,
)
from pptpkit.ppp.frame import decode_frame, frame_header
from pptpkit.ppp.fsm import (
    CodeRejected,
    ControlProtocol,
    LayerDown,
    LayerFinished,
    LayerUp,
    NegotiationFailed,
    State,
    TerminateReceived,
)
from pptpkit.ppp.ipcp import IpcpConfig, IpcpEngine
from pptpkit.ppp.ipv6cp import Ipv6cpConfig, Ipv6cpEngine
from pptpkit.ppp.lcp import (
    AuthNegotiationFailed,
    EchoTimeout,
    LcpConfig,
    LcpEngine,
    LoopbackDetected,
    ProtocolRejected,
)
from pptpkit.ppp.mppe import MppeChannel
from pptpkit.ppp.packet import Code
from pptpkit.ppp.protocols import PppProtocol, is_network_control
from pptpkit.ppp.session_config import (
    AccmChanged,
    Authenticated,
    AuthenticationFailed,
    Ipv6Down,
    Ipv6Up,
    LinkDown,
    LinkParameters,
    LinkUp,
    NetworkDown,
    Outcome,
    Phase,
    PhaseChanged,
    SessionConfig,
    SessionEvent,
    VerificationNeeded,
)

__all__ = ["PppSession", "SessionStats"]

_IP: Final = int(PppProtocol.IP)
_IPV6: Final = int(PppProtocol.IPV6)
_MPPE: Final = int(PppProtocol.COMPRESSED_DATAGRAM)
_LCP: Final = int(PppProtocol.LCP)
_LCP_HEADER: Final = frame_header(_LCP)
_IPCP: Final = int(PppProtocol.IPCP)
_IPV6CP: Final = int(PppProtocol.IPV6CP)
_CCP: Final = int(PppProtocol.CCP)
_AUTH_PROTOCOLS: Final = frozenset({PROTO_PAP, PROTO_CHAP, PROTO_EAP})
#: Codes that travel from the authenticated peer to the authenticator (PAP Authenticate-
#: Request, CHAP Response, EAP Response); every other code goes the other way.
_TO_AUTHENTICATOR: Final = {PROTO_PAP: 1, PROTO_CHAP: 2, PROTO_EAP: 2}
#: Stop looping over sub-engine events after this many in one input: a bound on the work a
#: single frame can cause (each engine already caps its own queues).
_MAX_EVENTS_PER_INPUT: Final = 4096
# NCP packets kept while IPCP/IPV6CP wait for CCP (a peer sends one or two of each per restart).
_MAX_HELD_NCP_PACKETS: Final = 8

# pppd's wording of the Terminate-Request reasons, so that logs on both ends read the same.
REASON_AUTH_PEER_FAILED: Final = "Authentication failed"
REASON_AUTH_SELF_FAILED: Final = "Failed to authenticate ourselves to peer"
REASON_MPPE_REFUSED: Final = "MPPE required but peer refused"
REASON_MPPE_UNAVAILABLE: Final = "MPPE required but not available"
REASON_NO_NCP: Final = "No network protocols running"


@dataclass(slots=True)
class SessionStats:
    """Counters of one session.  ``rx_frames``/``rx_octets``: every frame fed in;
    ``rx_packets``/``rx_packet_octets``: IP packets delivered; ``tx_*`` the same outwards;
    ``dropped``: frames or packets dropped, by reason (a bounded set of names)."""

    rx_frames: int = 0
    rx_octets: int = 0
    rx_packets: int = 0
    rx_packet_octets: int = 0
    tx_frames: int = 0
    tx_octets: int = 0
    tx_packets: int = 0
    tx_packet_octets: int = 0
    control_frames_in: int = 0
    control_frames_out: int = 0
    dropped: Counter[str] = field(default_factory=Counter)


# LcpConfig derived from a SessionConfig, per SessionConfig object: a server hands the same
# configuration to every session, so the sessions share one derived config too.  Keyed by
# id() with the config itself kept alongside, so an id reused after a config is freed cannot
# match; bounded, oldest dropped first.
_LCP_CONFIGS: dict[int, tuple[SessionConfig, LcpConfig]] = {}
_MAX_LCP_CONFIGS: Final = 64


def _lcp_config(config: SessionConfig) -> LcpConfig:
    hit = _LCP_CONFIGS.get(id(config))
    if hit is not None and hit[0] is config:
        return hit[1]
    policy = config.auth_policy
    lcp = LcpConfig(
        mru=config.mru,
        accm=config.accm,
        auth_require=policy.offered_methods(),
        auth_accept=policy.peer_preference() if config.peer is not None else (),
        magic_source=config.magic_source,
        pfc=config.pfc,
        acfc=config.acfc,
        echo_interval=config.echo_interval,
        echo_failure=config.echo_failure,
        fsm=config.fsm,
    )
    if len(_LCP_CONFIGS) >= _MAX_LCP_CONFIGS:
        del _LCP_CONFIGS[next(iter(_LCP_CONFIGS))]
    _LCP_CONFIGS[id(config)] = (config, lcp)
    return lcp


class PppSession:
    """A PPP session in either role, sans-IO.  See the module docstring and docs/engine-api.md."""

    __slots__ = (
        '_addresses', '_auth_method', '_auth_peer_engine', '_auth_pending', '_authenticator', '_auths',
        '_beyond_lcp',
        '_ccp',
        '_ccp_settled', '_ctl_acfc', '_events', '_finished', '_ipcp',
        '_ipv6_up', '_ipv6cp', '_keys', '_keys_are_server', '_last_data', '_lcp', '_link_up_sent',
        '_mppe', '_mppe_required', '_ncp_early', '_ncps', '_ncps_gone', '_ncps_held', '_network_reached',
        '_now', '_opened',
        '_out', '_outcome', '_phase', '_reason', '_rx4',
        '_rx6', '_rx_alive', '_rx_clear', '_tx4', '_tx6', '_username', 'config', 'idle_timeout',
        'mppe_policy', 'stats',
    )

    def __init__(self, config: SessionConfig, now: float = 0.0) -> None:
        self.config = config
        self.stats = SessionStats()
        self._lcp = LcpEngine(_lcp_config(config))
        self._phase = Phase.DEAD
        self._now = now
        self._out: list[bytes] = []
        self._events: list[SessionEvent] = []
        self._outcome: Outcome | None = None
        self._reason = ""
        self._finished = False
        self._opened = False
        self._network_reached = False
        self._ctl_acfc = False
        # Authentication state of the current LCP incarnation.
        self._authenticator: AuthEngine | None = None
        self._auth_peer_engine: AuthEngine | None = None
        self._auth_pending = 0
        self._auth_method: AuthMethod | None = None
        self._username = ""
        self._addresses: AddressPolicy | None = None
        self._keys: KeyMaterial | None = None
        self._keys_are_server = False
        # Network phase.
        self._ipcp: IpcpEngine | None = None
        self._ipv6cp: Ipv6cpEngine | None = None
        self._ccp: CcpEngine | None = None
        # The sub-engines that exist, in the order their output and events are taken (the
        # authenticator, then the peer; IPCP, IPV6CP, CCP): rebuilt by _engines_changed()
        # whenever one comes or goes, so that the per-input passes (_step, _collect,
        # get_timer) walk only live engines instead of testing six attributes each time.
        self._auths: tuple[AuthEngine, ...] = ()
        self._ncps: tuple[ControlProtocol, ...] = ()
        self._beyond_lcp: tuple[AuthEngine | ControlProtocol, ...] = ()
        self._ccp_settled = False
        self._mppe_required = False
        self._ncps_held = False
        self._ncp_early: list[tuple[int, bytes]] | None = None
        # A tuple: at most two protocols ever go in, and an empty tuple is shared.
        self._ncps_gone: tuple[int, ...] = ()
        # The MPPE sub-engine of the current CCP incarnation (None: no MPPE).
        self._mppe: MppeChannel | None = None
        self._link_up_sent = False
        self._ipv6_up = False
        self._last_data = now
        #: Seconds without data before the session ends (0: never); starts as the config's, and
        #: may be changed per session (RADIUS Idle-Timeout) - the next timer check uses it.
        self.idle_timeout = config.idle_timeout
        #: The MPPE policy CCP starts with; may be narrowed per session before the network phase
        #: (RADIUS MS-MPPE-Encryption-Policy/-Types), when it is read.
        self.mppe_policy = config.mppe
        # Data from the peer since the last timer run: LCP keepalive takes it as an answer.
        self._rx_alive = False
        # The per-packet path reads only these (see _update_data_path).
        self._tx4: bytes | None = None
        self._tx6: bytes | None = None
        self._rx4 = False
        self._rx6 = False
        self._rx_clear = False

    # --- public API -------------------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def outcome(self) -> Outcome | None:
        """Why the session ended or is ending (None while it runs)."""
        return self._outcome

    @property
    def finished(self) -> bool:
        """True once :class:`LinkDown` was queued; the session then ignores input."""
        return self._finished

    @property
    def lcp(self) -> LcpEngine:
        """The LCP engine (read-only use: ``result``, ``counters`` incl. echo statistics)."""
        return self._lcp

    @property
    def mppe_stats(self) -> tuple[MppeStats | None, MppeStats | None]:
        """``(tx, rx)`` MPPE counters of the current CCP incarnation (None: no MPPE that way)."""
        mppe = self._mppe
        return mppe.stats if mppe is not None else (None, None)

    @property
    def mppe_channel(self) -> MppeChannel | None:
        """The MPPE sub-engine of the current CCP incarnation (None: no MPPE)."""
        return self._mppe

    @property
    def mppe(self) -> str:
        """The MPPE in force, e.g. ``"MPPE 128-bit stateless"``, or ``"none"``."""
        return self._mppe.text if self._mppe is not None else "none"

    def open(self, now: float) -> None:
        """The lower layer (the PPTP call) is up: start LCP (we speak first, as pptpd wants)."""
        if self._opened:
            return
        self._opened = True
        self._now = now
        self._set_phase(Phase.ESTABLISH)
        self._lcp.open(now)
        self._lcp.up(now)
        self._process(now)

    def close(self, now: float, reason: str = "User request") -> None:
        """Administrative close: LCP Terminate-Request carrying ``reason``, then LinkDown."""
        if self._finished:
            return
        self._now = now
        if not self._opened:
            self._finish(Outcome.LOCAL_CLOSE, reason)
            return
        self._terminate(Outcome.LOCAL_CLOSE, reason, now)
        self._process(now)

    def lower_down(self, now: float) -> None:
        """The lower layer went away (call cleared, GRE gone): the session ends at once."""
        if self._finished:
            return
        self._now = now
        self._collect()
        self._network_down("lower layer down", now)
        self._stop_auth()
        self._lcp.down(now)
        self._drain_engine_events_silently()
        self._out.clear()
        outcome = self._outcome or Outcome.LOWER_LAYER_DOWN
        self._finish(outcome, self._reason or "lower layer down")

    def receive_frame(self, frame: bytes | bytearray | memoryview, now: float) -> bytes | None:
        """One PPP frame (no HDLC framing, as carried in GRE).  Returns an IP or IPv6 packet for
        the data plane, or None when the frame was control traffic or dropped."""
        stats = self.stats
        stats.rx_frames += 1
        stats.rx_octets += len(frame)
        if self._finished:
            stats.dropped["finished"] += 1
            return None
        mppe = self._mppe
        # The stateless common case in one backend call (frame decode, key change, decryption);
        # None changed nothing and means the general path below decides.
        opened = fast.open_frame(frame) if mppe is not None and (fast := mppe.fast_rx) is not None else None
        if opened is None:
            try:
                protocol, info = decode_frame(frame)
            except DecodeError:
                stats.dropped["malformed_frame"] += 1
                return None
            if protocol != _MPPE:
                if protocol not in (_IP, _IPV6):
                    stats.control_frames_in += 1
                    self._now = now
                    self._control(protocol, info, now)
                    self._process(now)
                    return None
                if not self._rx_clear:
                    # MPPE required or in force: a clear datagram is never delivered.
                    stats.dropped["clear_data_refused"] += 1
                    return None
                if (self._rx4 if protocol == _IP else self._rx6) and len(info):
                    self._last_data = now
                    self._rx_alive = True
                    stats.rx_packets += 1
                    stats.rx_packet_octets += len(info)
                    return bytes(info)
                stats.dropped["data_not_open"] += 1
                return None
            if mppe is None:
                stats.dropped["mppe_not_negotiated"] += 1
                return None
            opened = mppe.unseal(info, now)
            if opened is None:
                # A lost packet may have queued a CCP Reset-Request: collect it now.
                self._collect()
                return None
        protocol, payload = opened
        if (protocol == _IP and self._rx4) or (protocol == _IPV6 and self._rx6):
            self._last_data = now
            self._rx_alive = True
            stats.rx_packets += 1
            stats.rx_packet_octets += len(payload)
            return payload
        stats.dropped["mppe_inner_protocol"] += 1
        return None

    def receive_frames(self, frames: Sequence[bytes | bytearray | memoryview], now: float
                       ) -> tuple[list[bytes], int]:
        """:meth:`receive_frame` for a run of frames, the stateless MPPE case in one backend call
        (:meth:`~pptpkit.crypto.mppe.MppeDecryptor.open_frames`): ``(IP packets, frames
        taken)``, the packets of the longest prefix of ``frames`` that the per-frame fast path
        would open, in order, with exactly its state changes and counters.  The frame after the
        prefix (and what follows it) is the caller's, for :meth:`receive_frame`; ``([], 0)``
        whenever there is no fast path (stateful, no MPPE, finished)."""
        mppe = self._mppe
        if self._finished or mppe is None or (fast := mppe.fast_rx) is None:
            return [], 0
        payloads, protocols, frame_octets, payload_octets = fast.open_frames(frames)
        k = len(payloads)
        if not k:
            return payloads, 0
        stats = self.stats
        stats.rx_frames += k
        stats.rx_octets += frame_octets
        # The per-packet case: every packet of the run is of one open protocol (list.count
        # runs in C); a run that mixes in anything else is sorted packet by packet.
        if (self._rx4 and protocols.count(_IP) == k) or (self._rx6 and protocols.count(_IPV6) == k):
            self._last_data = now
            self._rx_alive = True
            stats.rx_packets += k
            stats.rx_packet_octets += payload_octets
            return payloads, k
        packets: list[bytes] = []
        for protocol, payload in zip(protocols, payloads, strict=True):
            if (protocol == _IP and self._rx4) or (protocol == _IPV6 and self._rx6):
                self._last_data = now
                self._rx_alive = True
                stats.rx_packets += 1
                stats.rx_packet_octets += len(payload)
                packets.append(payload)
            else:
                stats.dropped["mppe_inner_protocol"] += 1
        return packets, k

    def send_packet(self, packet: bytes | bytearray | memoryview, now: float) -> bytes | None:
        """An IP/IPv6 packet from the data plane as a PPP frame ready for GRE, or None when it
        must not be sent (link not up, protocol not open, MPPE required but not on)."""
        stats = self.stats
        if not packet:
            stats.dropped["tx_empty"] += 1
            return None
        version = packet[0] >> 4
        if version == 4:
            header, protocol = self._tx4, _IP
        elif version == 6:
            header, protocol = self._tx6, _IPV6
        else:
            stats.dropped["tx_not_ip"] += 1
            return None
        if header is None:
            stats.dropped["tx_not_open"] += 1
            return None
        self._last_data = now
        stats.tx_packets += 1
        stats.tx_packet_octets += len(packet)
        mppe = self._mppe
        enc = mppe.encryptor if mppe is not None else None
        frame = enc.encrypt_frame(header, protocol, packet) if enc is not None else header + packet
        stats.tx_frames += 1
        stats.tx_octets += len(frame)
        return frame

    def send_packets(self, packets: Sequence[bytes], now: float) -> list[bytes]:
        """:meth:`send_packet` of each packet in turn: the frames of those it would send, in
        order, with the same drops, counters and MPPE state.  A run of packets of one open IP
        version is taken at once (one encryptor call for the run: the stateless batch is one
        backend call); a packet that would be dropped goes through :meth:`send_packet`, which
        counts it."""
        out: list[bytes] = []
        n = len(packets)
        mppe = self._mppe
        enc = mppe.encryptor if mppe is not None else None
        stats = self.stats
        i = 0
        while i < n:
            packet = packets[i]
            version = packet[0] >> 4 if packet else 0
            header = self._tx4 if version == 4 else self._tx6 if version == 6 else None
            if header is None:
                frame = self.send_packet(packet, now)
                if frame is not None:
                    out.append(frame)
                i += 1
                continue
            j = i + 1
            while j < n and (q := packets[j]) and q[0] >> 4 == version:
                j += 1
            run = packets if j - i == n else packets[i:j]
            k = j - i
            octets = sum(map(len, run))
            self._last_data = now
            stats.tx_packets += k
            stats.tx_packet_octets += octets
            if enc is not None:
                frames = enc.encrypt_frames(header, _IP if version == 4 else _IPV6, run)
                stats.tx_octets += octets + k * (len(header) + MPPE_OVERHEAD)
            else:
                frames = [header + p for p in run]
                stats.tx_octets += octets + k * len(header)
            stats.tx_frames += k
            if out:
                out.extend(frames)
            else:
                out = frames
            i = j
        return out

    @property
    def tx_overhead(self) -> int:
        """Octets a data frame sent now adds to its packet (PPP header, MPPE's 4 octets): a
        frame of ``n`` octets from :meth:`send_packet` carries a packet of ``n - tx_overhead``."""
        header = self._tx4 or self._tx6
        if header is None:
            return 0
        mppe = self._mppe
        return len(header) + (MPPE_OVERHEAD if mppe is not None and mppe.encryptor is not None else 0)

    def frames_to_send(self) -> list[bytes]:
        """Control frames (LCP, authentication, NCPs, CCP) queued for the peer, oldest first."""
        self._collect()
        out = self._out
        self._out = []
        return out

    def next_event(self) -> SessionEvent | None:
        return self._events.pop(0) if self._events else None

    def get_timer(self) -> float | None:
        """The earliest deadline of every sub-engine and of the session's own timers."""
        if self._finished:
            return None
        best: float | None = None
        for engine in self._engines():
            t = engine.get_timer()
            if t is not None and (best is None or t < best):
                best = t
        reset = self._mppe.reset_deadline if self._mppe is not None else None
        for t in (reset, self._idle_deadline()):
            if t is not None and (best is None or t < best):
                best = t
        return best

    def complete_verification(self, verdict: ExternalVerdict, now: float) -> None:
        """The outside verdict on the peer's credentials (after :class:`VerificationNeeded`).
        A verdict that comes after the session ended or moved on changes nothing."""
        if self._finished or self._authenticator is None:
            return
        self._now = now
        self._authenticator.complete_verification(verdict, now)
        self._process(now)

    def handle_timer(self, now: float) -> None:
        if self._finished:
            return
        self._now = now
        if self._rx_alive:
            self._rx_alive = False
            self._lcp.peer_alive()
        for engine in self._engines():
            t = engine.get_timer()
            if t is not None and now >= t:
                engine.handle_timer(now)
                self._process(now)
                if self._finished:
                    return
        if self._mppe is not None:
            self._mppe.handle_timer(now)
        idle = self._idle_deadline()
        if idle is not None and now >= idle:
            self._terminate(Outcome.IDLE_TIMEOUT, "Link inactive", now)
        self._process(now)

    # --- sub-engines ---------------------------------------------------------------------------

    def _engines(self) -> list[ControlProtocol | AuthEngine]:
        return [self._lcp, *self._beyond_lcp]

    def _engines_changed(self) -> None:
        """After any of the auth or NCP engine attributes was set: the live engines again."""
        self._auths = tuple(e for e in (self._authenticator, self._auth_peer_engine) if e is not None)
        self._ncps = tuple(e for e in (self._ipcp, self._ipv6cp, self._ccp) if e is not None)
        self._beyond_lcp = (*self._auths, *self._ncps)

    def _queue_frame(self, frame: bytes) -> None:
        if len(self._out) >= self.config.max_queued_frames:
            self.stats.dropped["tx_queue_full"] += 1
            return
        self._out.append(frame)
        self.stats.control_frames_out += 1
        self.stats.tx_frames += 1
        self.stats.tx_octets += len(frame)

    def _collect(self) -> None:
        """Move every sub-engine's packets into our queue, framed, in causal order."""
        packets = self._lcp.packets_to_send()
        if packets:
            for packet in packets:
                self._queue_frame(_LCP_HEADER + packet)
        for engine in self._beyond_lcp:
            packets = engine.packets_to_send()
            if packets:
                header = frame_header(engine.protocol, acfc=self._ctl_acfc)
                for packet in packets:
                    self._queue_frame(header + packet)

    def _emit(self, event: SessionEvent) -> None:
        if len(self._events) >= self.config.max_queued_events and not isinstance(event, LinkDown):
            self.stats.dropped["events_queue_full"] += 1
            return
        self._events.append(event)

    def _set_phase(self, phase: Phase) -> None:
        if phase is not self._phase:
            previous, self._phase = self._phase, phase
            self._emit(PhaseChanged(phase=phase, previous=previous))

    # --- input routing ---------------------------------------------------------------------------

    def _control(self, protocol: int, info: memoryview, now: float) -> None:
        phase = self._phase
        if protocol == _LCP:
            self._lcp.receive_packet(info, now)
            return
        if protocol in _AUTH_PROTOCOLS:
            if phase is not Phase.AUTHENTICATE and phase is not Phase.NETWORK:
                self.stats.dropped["auth_wrong_phase"] += 1
                return
            engine = self._auth_engine_for(protocol, info)
            if engine is None:
                self.stats.dropped["auth_not_negotiated"] += 1
                return
            engine.receive(bytes(info), now)
            return
        if is_network_control(protocol) and phase is not Phase.NETWORK:
            peer = self._auth_peer_engine
            if phase is Phase.AUTHENTICATE and peer is not None and peer.network_packet_seen(now):
                # The authenticator is in its network phase: our method took that as its lost
                # Success.  If that ends our authentication phase, this packet is the NCP's.
                self._process(now)
            if self._phase is not Phase.NETWORK:
                # RFC 1661 3.5: NCP packets before the network phase are silently discarded.
                self.stats.dropped["ncp_before_network"] += 1
                return
        ncp: ControlProtocol | None = None
        if protocol == _IPCP:
            ncp = self._ipcp
        elif protocol == _IPV6CP:
            ncp = self._ipv6cp
        elif protocol == _CCP:
            ncp = self._ccp
        if ncp is not None:
            if self._ncps_held and ncp is not self._ccp:
                self._hold_ncp_packet(protocol, info)
                return
            ncp.receive_packet(info, now)
            return
        # Not a protocol we run (IPV6CP/CCP turned off, LQR, VJ, anything else).
        if self._lcp.send_protocol_reject(protocol, info):
            self.stats.dropped["protocol_rejected"] += 1
        else:
            self.stats.dropped["unknown_protocol_not_opened"] += 1

    def _auth_engine_for(self, protocol: int, info: memoryview) -> AuthEngine | None:
        if not len(info):
            return None
        to_authenticator = info[0] == _TO_AUTHENTICATOR[protocol]
        engine = self._authenticator if to_authenticator else self._auth_peer_engine
        if engine is None or engine.protocol != protocol:
            return None
        return engine

    # --- event processing ------------------------------------------------------------------------

    def _process(self, now: float) -> None:
        """Act on every sub-engine event until all are quiet, then collect their packets."""
        for _ in range(_MAX_EVENTS_PER_INPUT):
            if not self._step(now):
                break
        self._collect()

    def _step(self, now: float) -> bool:
        event = self._lcp.next_event()
        if event is not None:
            self._collect()
            self._on_lcp_event(event, now)
            return True
        for auth in self._auths:
            auth_event = auth.next_event()
            if auth_event is not None:
                self._collect()
                self._on_auth_event(auth, auth_event, now)
                return True
        for ncp in self._ncps:
            event = ncp.next_event()
            if event is not None:
                self._collect()
                self._on_ncp_event(ncp, event, now)
                return True
        return False

    def _drain_engine_events_silently(self) -> None:
        for engine in self._engines():
            for _ in range(_MAX_EVENTS_PER_INPUT):
                if engine.next_event() is None:
                    break

    def _on_lcp_event(self, event: object, now: float) -> None:
        if isinstance(event, LayerUp):
            self._lcp_up(now)
        elif isinstance(event, LayerDown):
            self._network_down("LCP down", now)
            self._stop_auth()
            self._ctl_acfc = False
            if self._outcome is None and self._lcp.state in (State.REQ_SENT, State.ACK_SENT):
                # The peer sent a Configure-Request in Opened: RFC 1661 renegotiation goes back
                # to Link Establishment and then through authentication again (pppd does too).
                self._set_phase(Phase.ESTABLISH)
            else:
                self._set_phase(Phase.TERMINATE)
        elif isinstance(event, TerminateReceived):
            if self._outcome is None:
                text = event.reason.decode("utf-8", "replace") or "terminated by peer"
                self._outcome, self._reason = Outcome.PEER_TERMINATED, text
            if self._phase is not Phase.DEAD:
                self._set_phase(Phase.TERMINATE)
        elif isinstance(event, LayerFinished):
            outcome = self._outcome or Outcome.NEGOTIATION_FAILED
            self._finish(outcome, self._reason or "LCP negotiation failed")
        elif isinstance(event, EchoTimeout):
            self._set_outcome(Outcome.PEER_DEAD, f"No response to {event.unanswered} echo-requests")
            self._set_phase(Phase.TERMINATE)
        elif isinstance(event, LoopbackDetected):
            self._set_outcome(Outcome.LOOPBACK, event.reason)
            self._set_phase(Phase.TERMINATE)
        elif isinstance(event, AuthNegotiationFailed):
            self._set_outcome(Outcome.PEER_AUTH_FAILED, event.reason)
            self._set_phase(Phase.TERMINATE)
        elif isinstance(event, NegotiationFailed):
            self._set_outcome(Outcome.NEGOTIATION_FAILED, event.reason)
            self._set_phase(Phase.TERMINATE)
        elif isinstance(event, ProtocolRejected):
            self._protocol_rejected(event.rejected_protocol, now)

    def _lcp_up(self, now: float) -> None:
        result = self._lcp.result
        assert result is not None
        self._ctl_acfc = result.peer_acfc
        self._emit(
            LinkParameters(
                local_mru=result.local_mru,
                peer_mru=result.peer_mru,
                local_magic=result.local_magic,
                peer_magic=result.peer_magic,
                local_pfc=result.local_pfc,
                peer_pfc=result.peer_pfc,
                local_acfc=result.local_acfc,
                peer_acfc=result.peer_acfc,
                auth_peer=result.auth_peer,
                auth_self=result.auth_self,
            )
        )
        self._emit(AccmChanged(send_accm=result.peer_accm, recv_accm=result.local_accm))
        self._keys = None
        self._username = ""
        self._addresses = None
        self._auth_method = None
        self._auth_pending = 0
        cfg = self.config
        if result.auth_peer is not None:
            assert cfg.authenticator is not None  # LCP only asks when the policy says so
            self._authenticator = create_engine(result.auth_peer, Role.AUTHENTICATOR, cfg.authenticator, now)
            self._auth_pending += 1
        if result.auth_self is not None:
            assert cfg.peer is not None  # LCP only agrees when we have a PeerConfig
            self._auth_peer_engine = create_engine(result.auth_self, Role.PEER, cfg.peer, now)
            self._auth_pending += 1
        self._engines_changed()
        if not self._auth_pending:
            self._network_phase(now)
            return
        self._set_phase(Phase.AUTHENTICATE)
        for engine in (self._authenticator, self._auth_peer_engine):
            if engine is not None:
                engine.start(now)

    def _stop_auth(self) -> None:
        for engine in (self._authenticator, self._auth_peer_engine):
            if engine is not None:
                engine.stop()
                engine.packets_to_send()
        self._authenticator = self._auth_peer_engine = None
        self._engines_changed()

    def _on_auth_event(self, engine: AuthEngine, event: object, now: float) -> None:
        checked_peer = engine is self._authenticator
        if isinstance(event, VerifyRequest):
            self._emit(VerificationNeeded(method=event.method, username=event.username,
                                          credentials=event.credentials))
        elif isinstance(event, AuthSucceeded):
            if event.repeat:
                return
            self._emit(
                Authenticated(
                    method=event.method,
                    username=event.username,
                    peer_name=event.peer_name,
                    we_authenticated_peer=checked_peer,
                )
            )
            if checked_peer or self._auth_method is None:
                self._auth_method = event.method
                self._username = event.username
            if checked_peer:
                self._addresses = event.addresses
            if event.key_material is not None and (checked_peer or self._keys is None):
                self._keys = event.key_material
                self._keys_are_server = checked_peer
            self._auth_pending -= 1
            if self._auth_pending == 0 and self._phase is Phase.AUTHENTICATE:
                self._network_phase(now)
        elif isinstance(event, AuthFailed):
            self._emit(
                AuthenticationFailed(
                    method=event.method,
                    username=event.username,
                    reason=event.reason,
                    we_authenticated_peer=checked_peer,
                )
            )
            if checked_peer:
                self._terminate(Outcome.PEER_AUTH_FAILED, REASON_AUTH_PEER_FAILED, now)
            else:
                self._terminate(Outcome.AUTH_TOPEER_FAILED, REASON_AUTH_SELF_FAILED, now)

    # --- network phase ---------------------------------------------------------------------------

    def _network_phase(self, now: float) -> None:
        cfg = self.config
        self._set_phase(Phase.NETWORK)
        self._network_reached = True
        policy = self.mppe_policy
        keyed = self._keys is not None
        self._mppe_required = policy.required
        if policy.required and not keyed:
            self._terminate(Outcome.MPPE_REFUSED, REASON_MPPE_UNAVAILABLE, now)
            return
        self._ncps_gone = ()
        peer_address = cfg.peer_address
        if self._addresses is not None:
            single = self._addresses.single_address()
            if isinstance(single, IPv4Address):
                peer_address = single
        self._ipcp = IpcpEngine(
            IpcpConfig(
                local_address=cfg.local_address,
                peer_address=peer_address,
                dns_servers=cfg.dns_servers,
                nbns_servers=cfg.nbns_servers,
                request_dns=cfg.request_dns,
                request_nbns=cfg.request_nbns,
                fsm=cfg.fsm,
            )
        )
        if cfg.ipv6:
            self._ipv6cp = Ipv6cpEngine(
                Ipv6cpConfig(interface_id=cfg.ipv6_interface_id, id_source=cfg.ipv6_id_source, fsm=cfg.fsm)
            )
        self._ccp_settled = not cfg.ccp
        if cfg.ccp:
            # Without MS-CHAP keys there is nothing to encrypt with: offer no MPPE, as pppd
            # does, and still run CCP so that compressors the peer offers can be rejected.
            use = keyed and policy.allowed
            self._ccp = CcpEngine(
                CcpConfig(
                    mppe_40=use and policy.bits_40,
                    mppe_56=use and policy.bits_56,
                    mppe_128=use and policy.bits_128,
                    mppe_stateful=policy.stateful,
                    mppe_required=policy.required,
                    fsm=cfg.fsm,
                )
            )
        # Like pppd (auth.c start_networks), a side that requires MPPE opens IPCP and IPV6CP
        # only once CCP is up: a pppd peer in that mode answers earlier Configure-Requests with
        # Terminate-Ack, so sending them costs a whole restart interval before the link is up.
        self._ncps_held = self._mppe_required and self._ccp is not None
        self._engines_changed()
        for ncp in self._ncps:
            ncp.peer_mru = self._lcp.peer_mru
            if not self._ncps_held or ncp is self._ccp:
                ncp.open(now)
            ncp.up(now)

    def _network_down(self, reason: str, now: float) -> None:
        """Leave the network phase: every NCP down, MPPE forgotten, data stopped."""
        for ncp in (self._ipcp, self._ipv6cp, self._ccp):
            if ncp is not None:
                ncp.down(now)
                ncp.packets_to_send()
                self._drain(ncp)
        self._ipcp = self._ipv6cp = None
        self._ccp = None
        self._engines_changed()
        self._ncp_early = None
        self._mppe_off()
        if self._ipv6_up:
            self._ipv6_up = False
            self._emit(Ipv6Down())
        if self._link_up_sent:
            self._link_up_sent = False
            self._emit(NetworkDown(reason=reason))
        self._update_data_path()

    @staticmethod
    def _drain(engine: ControlProtocol) -> None:
        for _ in range(_MAX_EVENTS_PER_INPUT):
            if engine.next_event() is None:
                return

    def _on_ncp_event(self, ncp: ControlProtocol, event: object, now: float) -> None:
        if isinstance(event, MppeFailed):
            self._terminate(Outcome.MPPE_REFUSED, REASON_MPPE_REFUSED, now)
            return
        if isinstance(event, ResetRequested):
            if self._mppe is not None:
                self._mppe.peer_asked_reset(event.identifier, now)
            elif self._ccp is not None:
                self._ccp.send_reset_ack(event.identifier)
            return
        if isinstance(event, ResetAcked):
            if self._mppe is not None:
                self._mppe.peer_acked_reset(event.identifier)
            return
        if isinstance(event, CodeRejected):
            if ncp is self._ccp and event.code == Code.RESET_REQUEST and self._mppe is not None:
                self._mppe.peer_rejected_reset()
            return
        if isinstance(event, LayerUp):
            if ncp is self._ccp:
                self._ccp_opened()
                mppe = self._mppe
                if self._mppe_required and (mppe is None or mppe.encryptor is None or mppe.decryptor is None):
                    self._terminate(Outcome.MPPE_REFUSED, REASON_MPPE_REFUSED, now)
                    return
                self._release_held_ncps(now)
            elif ncp is self._ipv6cp:
                result = self._ipv6cp.result if self._ipv6cp is not None else None
                self._ipv6_up = True
                self._emit(
                    Ipv6Up(
                        local_id=result.local_id if result else None,
                        peer_id=result.peer_id if result else None,
                    )
                )
            elif ncp is self._ipcp and not self._address_authorized(now):
                return
            self._update_data_path()
            self._maybe_link_up()
        elif isinstance(event, LayerDown):
            if ncp is self._ccp:
                if self._mppe is not None:
                    # MPPE once on stays required (pppd ends the link instead): a CCP
                    # renegotiation, which one injected packet can start, must not take a live
                    # session to clear text under --mppe-optional.
                    self._mppe_required = True
                self._mppe_off()
                self._ccp_settled = False
            elif ncp is self._ipv6cp and self._ipv6_up:
                self._ipv6_up = False
                self._emit(Ipv6Down())
            data_stops = ncp is self._ipcp or (ncp is self._ccp and self._mppe_required)
            if data_stops and self._link_up_sent:
                self._link_up_sent = False
                self._emit(NetworkDown(reason=f"{_name(ncp.protocol)} down"))
            self._update_data_path()
        elif isinstance(event, LayerFinished):
            self._ncp_finished(ncp, now)

    def _hold_ncp_packet(self, protocol: int, info: memoryview) -> None:
        # A peer that does not wait for CCP (pptpkit's client, Windows) sends its IPCP
        # Configure-Request at once.  Answered by a closed IPCP, it would get a Terminate-Ack and
        # retry only after a whole restart interval; kept, it is answered as soon as CCP is up.
        early = self._ncp_early
        if early is None:
            early = self._ncp_early = []
        if len(early) < _MAX_HELD_NCP_PACKETS:
            early.append((protocol, bytes(info)))
        else:
            self.stats.dropped["ncp_held_overflow"] += 1

    def _release_held_ncps(self, now: float) -> None:
        if not self._ncps_held:
            return
        self._ncps_held = False
        for held in (self._ipcp, self._ipv6cp):
            if held is not None and held.protocol not in self._ncps_gone:
                held.open(now)
        early, self._ncp_early = self._ncp_early, None
        for protocol, info in early or ():
            self._control(protocol, memoryview(info), now)

    def _ncp_finished(self, ncp: ControlProtocol, now: float) -> None:
        if ncp.protocol not in self._ncps_gone:
            self._ncps_gone += (ncp.protocol,)
        if ncp is self._ccp:
            if self._mppe_required and self._outcome is None:
                if ncp.counters["timed_out"] and not ncp.counters["rx_packets"]:
                    # Not a refusal: nothing came back (a lossy path, a busy peer), which a
                    # retry can mend; pppd reports it as a plain negotiation failure too.
                    self._terminate(Outcome.NEGOTIATION_FAILED, "no answer to CCP Configure-Request", now)
                else:
                    self._terminate(Outcome.MPPE_REFUSED, "MPPE required but peer negotiation failed", now)
                return
            self._ccp_settled = True
            self._maybe_link_up()
        self._check_ncps(now)

    def _check_ncps(self, now: float) -> None:
        running = [
            n for n in (self._ipcp, self._ipv6cp) if n is not None and n.protocol not in self._ncps_gone
        ]
        if not running and self._phase is Phase.NETWORK and self._outcome is None:
            self._terminate(Outcome.NEGOTIATION_FAILED, REASON_NO_NCP, now)

    def _protocol_rejected(self, protocol: int, now: float) -> None:
        ncp = {_IPCP: self._ipcp, _IPV6CP: self._ipv6cp, _CCP: self._ccp}.get(protocol)
        if ncp is None or self._phase is not Phase.NETWORK:
            return
        # The peer does not run this protocol at all: stop it quietly, as if its lower layer
        # were gone, rather than send Terminate-Requests for a protocol it just refused.
        ncp.down(now)
        ncp.packets_to_send()
        self._drain(ncp)
        if ncp is self._ipv6cp and self._ipv6_up:
            self._ipv6_up = False
            self._emit(Ipv6Down())
        self._ncp_finished(ncp, now)
        self._update_data_path()

    def _address_authorized(self, now: float) -> bool:
        """pppd refuses a peer address its secrets entry does not allow (auth_ip_addr)."""
        policy = self._addresses
        ipcp = self._ipcp
        if policy is None or ipcp is None or ipcp.result is None:
            return True
        address = ipcp.result.peer_address
        if address is None or policy.permits(address):
            return True
        self._terminate(
            Outcome.NEGOTIATION_FAILED, f"Peer is not authorized to use remote address {address}", now
        )
        return False

    # --- MPPE --------------------------------------------------------------------------------------

    def _ccp_opened(self) -> None:
        ccp = self._ccp
        assert ccp is not None
        self._ccp_settled = True
        self._mppe_off()
        if ccp.result is None or self._keys is None:
            return
        self._mppe = MppeChannel.start(ccp, self.mppe_policy, self._keys, is_server=self._keys_are_server,
                                       dropped=self.stats.dropped)

    def _mppe_off(self) -> None:
        self._mppe = None

    # --- data path ---------------------------------------------------------------------------------

    def _update_data_path(self) -> None:
        """Recompute what the per-packet methods read, whenever a layer changes state."""
        result = self._lcp.result
        in_network = self._phase is Phase.NETWORK and result is not None and self._outcome is None
        ipcp_open = in_network and self._ipcp is not None and self._ipcp.is_open
        ipv6_open = in_network and self._ipv6cp is not None and self._ipv6cp.is_open
        mppe = self._mppe
        self._rx_clear = (mppe is None or mppe.decryptor is None) and not self._mppe_required
        self._rx4 = ipcp_open
        self._rx6 = ipv6_open
        if result is None or not self._link_up_ready():
            self._tx4 = self._tx6 = None
            return
        acfc, pfc = result.peer_acfc, result.peer_pfc
        if mppe is not None and mppe.encryptor is not None:
            # Encrypted frames all travel as protocol 0x00FD; the real protocol is inside.
            self._tx4 = frame_header(_MPPE, acfc=acfc, pfc=pfc) if ipcp_open else None
            self._tx6 = frame_header(_MPPE, acfc=acfc, pfc=pfc) if ipv6_open else None
        else:
            self._tx4 = frame_header(_IP, acfc=acfc, pfc=pfc) if ipcp_open else None
            self._tx6 = frame_header(_IPV6, acfc=acfc, pfc=pfc) if ipv6_open else None

    def _link_up_ready(self) -> bool:
        if not self._ccp_settled:
            return False
        if self._mppe_required:
            mppe = self._mppe
            return mppe is not None and mppe.encryptor is not None and mppe.decryptor is not None
        return True

    def _maybe_link_up(self) -> None:
        ipcp = self._ipcp
        if self._link_up_sent or ipcp is None or not ipcp.is_open or self._phase is not Phase.NETWORK:
            return
        if self._outcome is not None or not self._link_up_ready():
            return
        self._update_data_path()
        ip = ipcp.result
        v6 = self._ipv6cp.result if self._ipv6cp is not None and self._ipv6cp.is_open else None
        lcp = self._lcp.result
        assert lcp is not None and ip is not None
        mtu = min(lcp.peer_mru, lcp.local_mru)
        if self._mppe is not None and self._mppe.encryptor is not None:
            mtu -= MPPE_OVERHEAD
        self._link_up_sent = True
        self._emit(
            LinkUp(
                local_address=ip.local_address,
                peer_address=ip.peer_address,
                dns_servers=ip.dns_servers,
                nbns_servers=ip.nbns_servers,
                local_ipv6_id=v6.local_id if v6 else None,
                peer_ipv6_id=v6.peer_id if v6 else None,
                mtu=mtu,
                mppe=self.mppe,
                auth_method=self._auth_method,
                username=self._username,
            )
        )

    def _idle_deadline(self) -> float | None:
        idle = self.idle_timeout
        if not idle or not self._link_up_sent:
            return None
        return self._last_data + idle

    # --- ending ----------------------------------------------------------------------------------

    def _set_outcome(self, outcome: Outcome, reason: str) -> None:
        if self._outcome is None:
            self._outcome, self._reason = outcome, reason

    def _terminate(self, outcome: Outcome, reason: str, now: float) -> None:
        """End the session for ``outcome``: network down, LCP Terminate-Request with ``reason``."""
        self._collect()
        self._set_outcome(outcome, reason)
        self._network_down(reason, now)
        self._set_phase(Phase.TERMINATE)
        self._lcp.close(now, reason)

    def _finish(self, outcome: Outcome, reason: str) -> None:
        if self._finished:
            return
        self._collect()
        self._outcome = outcome
        self._reason = reason
        self._network_down(reason, self._now)
        self._stop_auth()
        self._set_phase(Phase.DEAD)
        self._finished = True
        self._update_data_path()
        # pppd sets EXIT_OK once the network came up (np_up); a later peer termination keeps it.
        peer_after_up = outcome is Outcome.PEER_TERMINATED and self._network_reached
        status = 0 if peer_after_up else outcome.exit_status
        self._emit(LinkDown(outcome=outcome, reason=reason, exit_status=status))


def _name(protocol: int) -> str:
    try:
        return PppProtocol(protocol).name
    except ValueError:
        return f"0x{protocol:04x}"

