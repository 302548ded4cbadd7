"""IPV6CP (RFC 5072): Interface-Identifier negotiation; IPv6 compression is rejected."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

from pptpkit.errors import ConfigError
from pptpkit.ppp.fsm import ACK, REJECT, ControlProtocol, FsmConfig, Judgement, nak
from pptpkit.ppp.packet import Option
from pptpkit.ppp.protocols import PppProtocol

ID_SIZE: Final = 8
ZERO_ID: Final = bytes(ID_SIZE)
#: The universal/local bit of the first octet; RFC 5072 4.1 requires it clear in identifiers
#: we make up.
_U_BIT: Final = 0x02


class Ipv6cpOption(IntEnum):
    INTERFACE_IDENTIFIER = 1
    IPV6_COMPRESSION_PROTOCOL = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Ipv6cpConfig:
    """``interface_id``: our identifier (None: a random one; all-zero: ask the peer for one).
    ``id_source`` returns 8 random bytes (inject a deterministic one in tests)."""

    interface_id: bytes | None = None
    id_source: Callable[[], bytes] | None = None
    fsm: FsmConfig = field(default_factory=FsmConfig)

    def __post_init__(self) -> None:
        if self.interface_id is not None and len(self.interface_id) != ID_SIZE:
            raise ConfigError("interface_id must be 8 bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class Ipv6cpResult:
    """The interface identifiers agreed (None where the option was rejected or absent)."""

    local_id: bytes | None
    peer_id: bytes | None


class Ipv6cpEngine(ControlProtocol):
    __slots__ = ('_last_nak_id', '_local_acked', '_ours', '_peer_acked', '_result', '_source', 'config')

    def __init__(self, config: Ipv6cpConfig | None = None) -> None:
        self.config = config or Ipv6cpConfig()
        super().__init__(PppProtocol.IPV6CP, self.config.fsm)
        self._source = self.config.id_source or (lambda: secrets.token_bytes(ID_SIZE))
        self._ours: bytes | None = None
        self._last_nak_id: bytes | None = None
        self._local_acked: bytes | None = None
        self._peer_acked: bytes | None = None
        self._result: Ipv6cpResult | None = None
        self.reset_negotiation()

    @property
    def result(self) -> Ipv6cpResult | None:
        return self._result

    def _random_id(self, avoid: tuple[bytes | None, ...]) -> bytes:
        value = ZERO_ID
        for attempt in range(16):
            raw = bytes(self._source())[:ID_SIZE].ljust(ID_SIZE, b"\0")
            value = bytes((raw[0] & ~_U_BIT & 0xFF,)) + raw[1:]
            if value != ZERO_ID and value not in avoid:
                return value
            value = attempt.to_bytes(ID_SIZE, "big")
        # A broken source: count upwards from the last try until the value is usable.
        number = int.from_bytes(value, "big")
        while value == ZERO_ID or value in avoid:
            number = (number + 1) % (1 << 56)
            value = number.to_bytes(ID_SIZE, "big")
        return value

    def reset_negotiation(self) -> None:
        configured = self.config.interface_id
        self._ours = configured if configured is not None else self._random_id(())
        self._last_nak_id = None

    def build_request(self) -> list[Option]:
        if self._ours is None:
            return []
        return [Option(type=Ipv6cpOption.INTERFACE_IDENTIFIER, data=self._ours)]

    def judge_option(self, option: Option) -> Judgement:
        if option.type != Ipv6cpOption.INTERFACE_IDENTIFIER or len(option.data) != ID_SIZE:
            return REJECT
        theirs = option.data
        ours = self._ours or ZERO_ID
        if theirs == ZERO_ID and ours == ZERO_ID:
            # RFC 5072 4.1: neither side can make one up, so no unique identifier exists.
            return REJECT
        if theirs != ZERO_ID and theirs != ours:
            return ACK
        suggestion = self._random_id((ours, theirs))
        self._last_nak_id = suggestion
        return nak(Option(type=Ipv6cpOption.INTERFACE_IDENTIFIER, data=suggestion))

    def peer_request_acked(self, options: Sequence[Option]) -> None:
        self._peer_acked = next(
            (o.data for o in options if o.type == Ipv6cpOption.INTERFACE_IDENTIFIER), None
        )

    def our_request_acked(self, options: Sequence[Option]) -> None:
        self._local_acked = next(
            (o.data for o in options if o.type == Ipv6cpOption.INTERFACE_IDENTIFIER), None
        )

    def our_request_naked(self, options: Sequence[Option]) -> None:
        for option in options:
            if option.type != Ipv6cpOption.INTERFACE_IDENTIFIER or len(option.data) != ID_SIZE:
                continue
            suggested = option.data
            if suggested != ZERO_ID and suggested != self._last_nak_id:
                self._ours = suggested
            else:
                # Our own Nak came back (or a useless zero): choose a fresh tentative one.
                self._ours = self._random_id((suggested, self._ours))

    def our_request_rejected(self, options: Sequence[Option]) -> None:
        if any(o.type == Ipv6cpOption.INTERFACE_IDENTIFIER for o in options):
            self._ours = None

    def layer_up(self) -> None:
        self._result = Ipv6cpResult(local_id=self._local_acked, peer_id=self._peer_acked)

    def layer_down(self) -> None:
        self._result = None
        self._local_acked = self._peer_acked = None
