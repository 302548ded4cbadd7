"""The settings of one control connection (RFC 2637 section 2.1/2.2 fields and our timers).

:class:`ControlConfig` is validated when it is built, so the engine never meets a value it
cannot put on the wire; :class:`Role` says which end of RFC 2637 we play.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from pptpkit.control.messages import BearerCapability, BearerType, FramingCapability, FramingType, check_text
from pptpkit.errors import ConfigError

__all__ = ["U16_MAX", "U32_MAX", "ControlConfig", "Role", "check_u16", "check_u32"]

U16_MAX: Final = 0xFFFF
U32_MAX: Final = 0xFFFFFFFF


class Role(enum.Enum):
    CLIENT = "client"
    """The PNS, originator of the TCP connection (pptp-linux's role)."""
    SERVER = "server"
    """The PAC, receiver of the TCP connection (pptpd's role)."""


def check_u16(name: str, value: int) -> None:
    if not 0 <= value <= U16_MAX:
        raise ConfigError(f"{name} must be 0..65535, not {value}")


def check_u32(name: str, value: int) -> None:
    if not 0 <= value <= U32_MAX:
        raise ConfigError(f"{name} must be 0..4294967295, not {value}")


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{name} must be a positive number of seconds, not {value}")


@dataclass(frozen=True, kw_only=True, slots=True)
class ControlConfig:
    """Configuration of one control connection.

    Timeouts are seconds.  ``echo_interval`` None disables our keepalive (we still answer the
    peer's Echo-Requests).  ``max_channels`` None means 0 for the client (RFC: a PNS SHOULD send
    0) and ``max_calls`` for the server.  ``window`` is our Packet Receive Window, sent in the
    OCRQ/OCRP/ICRP; ``connect_speed`` is what the server reports in the OCRP.

    ``peer_message_rate``/``peer_message_burst``: a token bucket for what a peer can send at
    will without moving the protocol on (Echo-Requests, unknown message types, messages out of
    place).  Within it they are answered and reported as usual; beyond it they are dropped
    unanswered and unreported, only counted (``stats.rate_limited``), so a peer cannot make us
    work or log more than this per second.  After ``flood_limit`` such drops the connection is
    closed as a flood.  A real peer sends one Echo-Request a minute.
    """

    role: Role
    host_name: str = "local"
    vendor: str = "pptpkit"
    firmware_revision: int = 1
    framing_capabilities: int = FramingCapability.ASYNC | FramingCapability.SYNC
    bearer_capabilities: int = BearerCapability.ANALOG | BearerCapability.DIGITAL
    max_channels: int | None = None
    window: int = 64
    processing_delay: int = 0
    minimum_bps: int = 300
    maximum_bps: int = 100_000_000
    bearer_type: int = BearerType.ANY
    framing_type: int = FramingType.ANY
    connect_speed: int = 100_000_000
    echo_interval: float | None = 60.0
    echo_max_wait: float = 60.0
    start_timeout: float = 10.0
    start_reply_timeout: float = 60.0
    call_reply_timeout: float = 60.0
    stop_reply_timeout: float = 10.0
    max_calls: int = 64
    accept_incoming_calls: bool = False
    peer_message_rate: float = 20.0
    peer_message_burst: int = 40
    flood_limit: int = 1000

    def __post_init__(self) -> None:
        if not isinstance(self.role, Role):
            raise ConfigError(f"role must be a Role, not {self.role!r}")
        for name in ("host_name", "vendor"):
            try:
                check_text(getattr(self, name), 64, name)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        for name in ("firmware_revision", "processing_delay"):
            check_u16(name, getattr(self, name))
        for name in ("framing_capabilities", "bearer_capabilities", "minimum_bps", "maximum_bps",
                     "bearer_type", "framing_type", "connect_speed"):
            check_u32(name, getattr(self, name))
        if self.max_channels is not None:
            check_u16("max_channels", self.max_channels)
        if not 1 <= self.window <= U16_MAX:
            raise ConfigError(f"window must be 1..65535, not {self.window}")
        if self.minimum_bps > self.maximum_bps:
            raise ConfigError("minimum_bps exceeds maximum_bps")
        if self.echo_interval is not None:
            _positive("echo_interval", self.echo_interval)
        for name in ("echo_max_wait", "start_timeout", "start_reply_timeout", "call_reply_timeout",
                     "stop_reply_timeout"):
            _positive(name, getattr(self, name))
        if not 1 <= self.max_calls <= U16_MAX:
            raise ConfigError(f"max_calls must be 1..65535, not {self.max_calls}")
        if not self.peer_message_rate > 0 or self.peer_message_burst < 1 or self.flood_limit < 1:
            raise ConfigError("peer_message_rate must be positive, peer_message_burst and flood_limit "
                              "at least 1")

    @property
    def effective_max_channels(self) -> int:
        if self.max_channels is not None:
            return self.max_channels
        return 0 if self.role is Role.CLIENT else self.max_calls
