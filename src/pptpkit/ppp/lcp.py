"""LCP (RFC 1661): link options, authentication-protocol choice, magic numbers and keepalive.

:class:`LcpEngine` negotiates MRU, ACCM, Authentication-Protocol, Magic-Number, PFC and
ACFC, rejects every other option, and in Opened answers Echo-Request, sends keepalive
echoes, tolerates Discard-Request/Identification/Time-Remaining and exchanges
Protocol-Reject with the session.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from types import MappingProxyType
from typing import Final

from pptpkit.auth.methods import DEFAULT_SERVER_ORDER, AuthMethod
from pptpkit.errors import ConfigError, DecodeError
from pptpkit.ppp.fsm import ACK, REJECT, ControlProtocol, Event, FsmConfig, Judgement, NegotiationFailed, nak
from pptpkit.ppp.packet import HEADER_SIZE, Code, Option, Packet
from pptpkit.ppp.protocols import PppProtocol

# What the acked-option tables hold outside a negotiation: shared, read-only, so an opened
# layer keeps no per-session copy of options it has already turned into its result.
_NO_OPTIONS: Final[Mapping[int, bytes]] = MappingProxyType({})

_U16: Final = struct.Struct("!H")
_U32: Final = struct.Struct("!I")

DEFAULT_MRU: Final = 1500
#: pppd refuses to send smaller packets than this; a smaller MRU request is Nak'ed up to it.
MIN_MRU: Final = 128
_LCP: Final = int(PppProtocol.LCP)


class LcpOption(IntEnum):
    MRU = 1
    ACCM = 2
    AUTH_PROTOCOL = 3
    QUALITY_PROTOCOL = 4
    MAGIC_NUMBER = 5
    PFC = 7
    ACFC = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class LcpConfig:
    """LCP settings.

    ``auth_require``: methods we ask the peer to authenticate with, most preferred first
    (empty: we do not authenticate the peer).  ``auth_accept``: methods we agree to
    authenticate ourselves with, most preferred first (empty: refuse to authenticate).
    ``accm``: the async map to request (None: do not request one).  ``magic_source``
    returns 32-bit random numbers (inject a deterministic one in tests).  ``echo_interval``
    seconds between keepalive Echo-Requests once Opened (0: off), ``echo_failure``
    unanswered echoes before the link is declared dead (0: never).  ``loopback_fail``: how
    many times our own magic number may come back before the link is declared looped back.
    """

    mru: int = DEFAULT_MRU
    accm: int | None = 0
    auth_require: tuple[AuthMethod, ...] = ()
    auth_accept: tuple[AuthMethod, ...] = DEFAULT_SERVER_ORDER
    magic: bool = True
    magic_source: Callable[[], int] | None = None
    pfc: bool = True
    acfc: bool = True
    echo_interval: float = 0.0
    echo_failure: int = 3
    loopback_fail: int = 10
    fsm: FsmConfig = field(default_factory=FsmConfig)

    def __post_init__(self) -> None:
        if not MIN_MRU <= self.mru <= 0xFFFF:
            raise ConfigError(f"mru {self.mru} must be between {MIN_MRU} and 65535")
        if self.accm is not None and not 0 <= self.accm <= 0xFFFFFFFF:
            raise ConfigError("accm must be a 32-bit value")
        for name in ("auth_require", "auth_accept"):
            methods = getattr(self, name)
            if len(set(methods)) != len(methods) or not all(isinstance(m, AuthMethod) for m in methods):
                raise ConfigError(f"{name} must list distinct AuthMethod values")
        if not 0 <= self.echo_interval <= 86400:
            raise ConfigError(f"echo_interval {self.echo_interval} must be between 0 and 86400 seconds")
        if not 0 <= self.echo_failure <= 1000:
            raise ConfigError(f"echo_failure {self.echo_failure} must be between 0 and 1000")
        if not 1 <= self.loopback_fail <= 1000:
            raise ConfigError(f"loopback_fail {self.loopback_fail} must be between 1 and 1000")


@dataclass(frozen=True, slots=True, kw_only=True)
class LcpResult:
    """What LCP agreed, valid while Opened.

    ``local_*`` describe what we receive (our request as acked), ``peer_*`` what the peer
    receives (its request as we acked it): send at most ``peer_mru`` bytes, compress the
    protocol field only if ``peer_pfc`` and address/control only if ``peer_acfc``.
    ``auth_peer`` is the method the peer must authenticate to us with, ``auth_self`` the one
    we must authenticate to the peer with (None: no authentication that way).
    """

    local_mru: int
    peer_mru: int
    local_accm: int
    peer_accm: int
    local_magic: int
    peer_magic: int
    local_pfc: bool
    peer_pfc: bool
    local_acfc: bool
    peer_acfc: bool
    auth_peer: AuthMethod | None
    auth_self: AuthMethod | None


# --- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtocolRejected:
    """The peer Protocol-Rejected ``rejected_protocol`` (stop running it, e.g. IPV6CP/CCP)."""

    rejected_protocol: int
    information: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class EchoTimeout:
    """Keepalive failure: ``unanswered`` Echo-Requests went unanswered; LCP is closing."""

    unanswered: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopbackDetected(NegotiationFailed):
    """Our own magic number kept coming back: the link is looped back; LCP is closing."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthNegotiationFailed(NegotiationFailed):
    """No authentication method both sides accept; LCP is closing."""


# --- option bodies ---------------------------------------------------------------------------


def _u16_option(kind: int, value: int) -> Option:
    return Option(type=kind, data=_U16.pack(value))


def _u32_option(kind: int, value: int) -> Option:
    return Option(type=kind, data=_U32.pack(value))


def _u32(data: bytes) -> int:
    return int(_U32.unpack(data)[0])


def _u16(data: bytes) -> int:
    return int(_U16.unpack(data)[0])


_FIXED_LENGTH: Final[dict[int, int]] = {
    LcpOption.MRU: 2,
    LcpOption.ACCM: 4,
    LcpOption.MAGIC_NUMBER: 4,
    LcpOption.PFC: 0,
    LcpOption.ACFC: 0,
}


def _random_magic() -> int:
    return secrets.randbits(32)


class LcpEngine(ControlProtocol):
    """The LCP automaton with its options, echo keepalive and Protocol-Reject."""

    extra_codes = frozenset(range(Code.PROTOCOL_REJECT, Code.TIME_REMAINING + 1))

    __slots__ = (
        '_accm', '_acfc', '_acked_local', '_acked_peer', '_auth', '_auth_tried', '_echo_deadline',
        '_echo_enabled', '_echo_pending', '_last_nak_magic', '_loops', '_magic', '_magic_source', '_mru',
        '_pfc', '_result', 'config',
    )

    def __init__(self, config: LcpConfig | None = None) -> None:
        self.config = config or LcpConfig()
        super().__init__(PppProtocol.LCP, self.config.fsm)
        self._magic_source = self.config.magic_source or _random_magic
        self._magic: int | None = None
        self._last_nak_magic: int | None = None
        self._loops = 0
        self._mru: int | None = None
        self._accm: int | None = None
        self._pfc = False
        self._acfc = False
        self._auth_tried: list[AuthMethod] = []
        self._auth: AuthMethod | None = None
        self._acked_local: Mapping[int, bytes] = _NO_OPTIONS
        self._acked_peer: Mapping[int, bytes] = _NO_OPTIONS
        self._result: LcpResult | None = None
        self._echo_deadline: float | None = None
        self._echo_pending = 0
        self._echo_enabled = True
        self.reset_negotiation()

    # --- public API -------------------------------------------------------------------------

    @property
    def result(self) -> LcpResult | None:
        """The negotiated link parameters while Opened, else None."""
        return self._result

    @property
    def magic(self) -> int | None:
        """The magic number of our current request (None when not negotiating one)."""
        return self._magic

    def send_protocol_reject(self, protocol: int, packet: bytes | bytearray | memoryview) -> bool:
        """Tell the peer we do not run ``protocol``; ``packet`` is the information field we got.

        Only legal in Opened (RFC 1661 5.7); returns False (and sends nothing) otherwise.
        """
        if not self.is_open:
            self.counters["protocol_reject_not_opened"] += 1
            return False
        data = self.fit(_U16.pack(protocol & 0xFFFF) + bytes(packet), HEADER_SIZE)
        self.send(Packet(code=Code.PROTOCOL_REJECT, identifier=self.new_identifier(), data=data))
        return True

    def get_timer(self) -> float | None:
        timers = [t for t in (super().get_timer(), self._echo_deadline) if t is not None]
        return min(timers) if timers else None

    def handle_timer(self, now: float) -> None:
        super().handle_timer(now)
        if self._echo_deadline is not None and now >= self._echo_deadline and self.is_open:
            self._echo_tick(now)

    # --- option handling ----------------------------------------------------------------------

    def reset_negotiation(self) -> None:
        cfg = self.config
        self._mru = cfg.mru if cfg.mru != DEFAULT_MRU else None
        self._accm = cfg.accm
        self._pfc = cfg.pfc
        self._acfc = cfg.acfc
        self._magic = self._new_magic() if cfg.magic else None
        self._last_nak_magic = None
        self._loops = 0
        self._auth_tried = []
        self._auth = cfg.auth_require[0] if cfg.auth_require else None

    def build_request(self) -> list[Option]:
        opts: list[Option] = []
        if self._mru is not None:
            opts.append(_u16_option(LcpOption.MRU, self._mru))
        if self._accm is not None:
            opts.append(_u32_option(LcpOption.ACCM, self._accm))
        if self._auth is not None:
            opts.append(Option(type=LcpOption.AUTH_PROTOCOL, data=self._auth.option_data))
        if self._magic is not None:
            opts.append(_u32_option(LcpOption.MAGIC_NUMBER, self._magic))
        if self._pfc:
            opts.append(Option(type=LcpOption.PFC))
        if self._acfc:
            opts.append(Option(type=LcpOption.ACFC))
        return opts

    def judge_option(self, option: Option) -> Judgement:
        kind, data = option.type, option.data
        expected = _FIXED_LENGTH.get(kind)
        if expected is not None and len(data) != expected:
            return REJECT
        if kind == LcpOption.MRU:
            return ACK if _u16(data) >= MIN_MRU else nak(_u16_option(LcpOption.MRU, MIN_MRU))
        if kind in (LcpOption.ACCM, LcpOption.PFC, LcpOption.ACFC):
            return ACK
        if kind == LcpOption.MAGIC_NUMBER:
            return self._judge_magic(_u32(data))
        if kind == LcpOption.AUTH_PROTOCOL:
            return self._judge_auth(data)
        return REJECT

    def _judge_magic(self, value: int) -> Judgement:
        if self._magic is not None and value == self._magic:
            # Our own number came back: perhaps a loop.  RFC 1661 6.4: Nak with a different
            # number; if that Nak comes back to us too, the loop is all but certain.
            self._count_loop()
            suggestion = self._new_magic(avoid=(value,))
            self._last_nak_magic = suggestion
            return nak(_u32_option(LcpOption.MAGIC_NUMBER, suggestion))
        if value == 0:
            return nak(_u32_option(LcpOption.MAGIC_NUMBER, self._new_magic(avoid=(self._magic or 0,))))
        return ACK

    def _judge_auth(self, data: bytes) -> Judgement:
        accept = self.config.auth_accept
        if not accept:
            return REJECT
        method = AuthMethod.from_option_data(data)
        if method is not None and method in accept:
            return ACK
        return nak(Option(type=LcpOption.AUTH_PROTOCOL, data=accept[0].option_data))

    def peer_request_acked(self, options: Sequence[Option]) -> None:
        self._acked_peer = {o.type: o.data for o in options}

    def our_request_acked(self, options: Sequence[Option]) -> None:
        self._acked_local = {o.type: o.data for o in options}

    def our_request_naked(self, options: Sequence[Option]) -> None:
        for option in options:
            kind, data = option.type, option.data
            if kind == LcpOption.MRU and len(data) == 2:
                value = _u16(data)
                if MIN_MRU <= value <= max(self.config.mru, DEFAULT_MRU):
                    self._mru = value
            elif kind == LcpOption.ACCM and len(data) == 4 and self._accm is not None:
                # The peer needs more characters escaped than we asked for: add them.
                self._accm |= _u32(data)
            elif kind == LcpOption.MAGIC_NUMBER and len(data) == 4 and self._magic is not None:
                value = _u32(data)
                if self._last_nak_magic is not None and value == self._last_nak_magic:
                    self._count_loop()
                self._magic = self._new_magic(avoid=(value, self._magic))
            elif kind == LcpOption.AUTH_PROTOCOL and self._auth is not None:
                self._next_auth(AuthMethod.from_option_data(data))

    def our_request_rejected(self, options: Sequence[Option]) -> None:
        for option in options:
            kind = option.type
            if kind == LcpOption.MRU:
                self._mru = None
            elif kind == LcpOption.ACCM:
                self._accm = None
            elif kind == LcpOption.MAGIC_NUMBER:
                self._magic = None
            elif kind == LcpOption.PFC:
                self._pfc = False
            elif kind == LcpOption.ACFC:
                self._acfc = False
            elif kind == LcpOption.AUTH_PROTOCOL and self._auth is not None:
                self.fail(AuthNegotiationFailed(protocol=_LCP, reason="peer refused to authenticate"))

    def _next_auth(self, suggested: AuthMethod | None) -> None:
        """The peer Nak'ed our method: take its suggestion if we allow it, else our next one."""
        assert self._auth is not None
        self._auth_tried.append(self._auth)
        candidates = [m for m in self.config.auth_require if m not in self._auth_tried]
        if not candidates:
            reason = "no authentication method acceptable to the peer"
            self.fail(AuthNegotiationFailed(protocol=_LCP, reason=reason))
            return
        self._auth = suggested if suggested in candidates else candidates[0]

    def _count_loop(self) -> None:
        self._loops += 1
        self.counters["loopback_suspected"] += 1
        if self._loops >= self.config.loopback_fail:
            self.fail(LoopbackDetected(protocol=_LCP, reason="loopback detected"))

    def _new_magic(self, avoid: tuple[int | None, ...] = ()) -> int:
        value = 0
        for _ in range(16):
            value = self._magic_source() & 0xFFFFFFFF
            if value and value not in avoid:
                return value
        # A broken or constant source: still never return zero or a number to avoid.
        while not value or value in avoid:
            value = (value + 0x9E3779B9) & 0xFFFFFFFF
        return value

    # --- up/down ----------------------------------------------------------------------------

    def layer_up(self) -> None:
        local, peer = self._acked_local, self._acked_peer
        auth_peer = local.get(LcpOption.AUTH_PROTOCOL)
        auth_self = peer.get(LcpOption.AUTH_PROTOCOL)
        self._result = LcpResult(
            local_mru=_u16(local[LcpOption.MRU]) if LcpOption.MRU in local else DEFAULT_MRU,
            peer_mru=_u16(peer[LcpOption.MRU]) if LcpOption.MRU in peer else DEFAULT_MRU,
            local_accm=_u32(local[LcpOption.ACCM]) if LcpOption.ACCM in local else 0xFFFFFFFF,
            peer_accm=_u32(peer[LcpOption.ACCM]) if LcpOption.ACCM in peer else 0xFFFFFFFF,
            local_magic=_u32(local[LcpOption.MAGIC_NUMBER]) if LcpOption.MAGIC_NUMBER in local else 0,
            peer_magic=_u32(peer[LcpOption.MAGIC_NUMBER]) if LcpOption.MAGIC_NUMBER in peer else 0,
            local_pfc=LcpOption.PFC in local,
            peer_pfc=LcpOption.PFC in peer,
            local_acfc=LcpOption.ACFC in local,
            peer_acfc=LcpOption.ACFC in peer,
            auth_peer=AuthMethod.from_option_data(auth_peer) if auth_peer is not None else None,
            auth_self=AuthMethod.from_option_data(auth_self) if auth_self is not None else None,
        )
        self.peer_mru = self._result.peer_mru
        self._acked_local = self._acked_peer = _NO_OPTIONS
        self._echo_pending = 0
        self._echo_enabled = True
        interval = self.config.echo_interval
        self._echo_deadline = self._now + interval if interval > 0 else None

    def layer_down(self) -> None:
        self._result = None
        self._echo_deadline = None
        self.peer_mru = DEFAULT_MRU

    # --- echo and the other LCP-only codes ------------------------------------------------------

    def _echo_tick(self, now: float) -> None:
        cfg = self.config
        if cfg.echo_failure and self._echo_pending >= cfg.echo_failure:
            self._echo_deadline = None
            self.emit(EchoTimeout(unanswered=self._echo_pending))
            self.close(now, "Peer not responding")
            return
        self._echo_deadline = now + cfg.echo_interval
        if not self._echo_enabled:
            return
        self._echo_pending += 1
        self.counters["tx_echo_request"] += 1
        self.send(Packet(code=Code.ECHO_REQUEST, identifier=self.new_identifier(), data=self._magic_bytes()))

    def peer_alive(self) -> None:
        """Data came from the peer: it is alive whatever happened to our Echo-Requests.  (On a
        lossy path three lost echoes in a row are common enough to cut busy sessions; pppd's
        lcp-echo-adaptive makes the same call.)"""
        self._echo_pending = 0

    def _magic_bytes(self) -> bytes:
        return _U32.pack(self._result.local_magic if self._result is not None else 0)

    def _is_own_magic(self, data: bytes) -> bool:
        if len(data) < 4:
            raise DecodeError("LCP echo/discard packet shorter than its magic number")
        own = self._result.local_magic if self._result is not None else 0
        return own != 0 and _u32(data[:4]) == own

    def receive_extra(self, packet: Packet) -> bool:
        code = packet.code
        if code == Code.PROTOCOL_REJECT:
            self._receive_protocol_reject(packet)
        elif code in (Code.ECHO_REQUEST, Code.ECHO_REPLY, Code.DISCARD_REQUEST):
            self.counters[f"rx_{Code(code).name.lower()}"] += 1
            if self.is_open and self._is_own_magic(packet.data):
                self._count_loop()
                return True
            if code == Code.ECHO_REPLY and self.is_open:
                self._echo_pending = 0
            self.fire(Event.RXR, packet)
        else:
            # Identification and Time-Remaining (RFC 1570) are informational: count them and
            # do not Code-Reject them, as pppd does.
            self.counters[f"rx_{Code(code).name.lower()}"] += 1
        return True

    def send_echo_reply(self) -> None:
        trigger = self._trigger
        if trigger is None or trigger.code != Code.ECHO_REQUEST:
            return
        data = self.fit(self._magic_bytes() + trigger.data[4:], HEADER_SIZE)
        self.send(Packet(code=Code.ECHO_REPLY, identifier=trigger.identifier, data=data))

    def _receive_protocol_reject(self, packet: Packet) -> None:
        if len(packet.data) < 2:
            raise DecodeError("Protocol-Reject shorter than the rejected protocol number")
        if not self.is_open:
            # RFC 1661 5.7: only meaningful in Opened; elsewhere silently discarded.
            self.counters["rx_protocol_reject_not_opened"] += 1
            return
        protocol = _u16(packet.data[:2])
        if protocol == _LCP:
            self.fire(Event.RXJ_MINUS, packet)
            return
        self.emit(ProtocolRejected(rejected_protocol=protocol, information=packet.data[2:]))
        self.fire(Event.RXJ_PLUS, packet)

    def code_rejected(self, code: int) -> None:
        if code == Code.ECHO_REQUEST:
            # The peer does not do echo: keepalive cannot work, so stop rather than time out.
            self._echo_enabled = False
            self._echo_pending = 0
