"""CCP (RFC 1962) negotiating MPPE (RFC 3078 option 18) the way pppd does.

Every other compressor (MPPC, Deflate, BSD-Compress, Predictor, Stac ...) is refused.  Each
direction is negotiated on its own: our Configure-Request says how the peer must encrypt
what it sends us (``rx``), the peer's request how we encrypt what we send (``tx``).

pppd's dance: a request offers every allowed key length plus H (stateless) unless stateful
mode is allowed; the answer Naks with exactly one key length (the strongest both allow) and
H if stateful mode is refused; the next request carries that and is acked.  A peer offering
no key length gets our full set in the Nak to choose from.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

from pptpkit.errors import ConfigError
from pptpkit.ppp.fsm import ACK, REJECT, ControlProtocol, FsmConfig, Judgement, NegotiationFailed, nak
from pptpkit.ppp.packet import Code, Option, Packet
from pptpkit.ppp.protocols import PppProtocol

_U32: Final = struct.Struct("!I")
_CCP: Final = int(PppProtocol.CCP)

MPPE_H: Final = 0x01000000
MPPE_M: Final = 0x00000080
MPPE_S: Final = 0x00000040
MPPE_L: Final = 0x00000020
MPPE_D: Final = 0x00000010
MPPC_C: Final = 0x00000001
KEY_BITS_MASK: Final = MPPE_S | MPPE_M | MPPE_L
_KNOWN: Final = MPPE_H | KEY_BITS_MASK
#: Key-length bits, strongest first, with their key sizes in bits.
KEY_LENGTHS: Final = ((MPPE_S, 128), (MPPE_M, 56), (MPPE_L, 40))


class CcpOption(IntEnum):
    OUI = 0
    PREDICTOR_1 = 1
    PREDICTOR_2 = 2
    STAC_LZS = 17
    MPPE = 18
    BSD_COMPRESS = 21
    DEFLATE_DRAFT = 24
    DEFLATE = 26


@dataclass(frozen=True, slots=True, kw_only=True)
class CcpConfig:
    """MPPE policy in pppd's terms.

    ``mppe_40/56/128``: key lengths we allow (all False is pppd's ``nomppe``).
    ``mppe_stateful``: stateful mode allowed (pppd ``mppe-stateful``); otherwise stateless
    only.  ``mppe_required``: pppd ``require-mppe``: a link without MPPE in both directions
    is a failure (:class:`MppeFailed`).
    """

    mppe_40: bool = True
    mppe_56: bool = False
    mppe_128: bool = True
    mppe_stateful: bool = False
    mppe_required: bool = False
    fsm: FsmConfig = field(default_factory=FsmConfig)

    def __post_init__(self) -> None:
        if self.mppe_required and not self.key_bits:
            raise ConfigError("MPPE required but no key length allowed")

    @property
    def key_bits(self) -> int:
        """The key-length bits (S/M/L) we allow."""
        bits = MPPE_S if self.mppe_128 else 0
        bits |= MPPE_M if self.mppe_56 else 0
        return bits | (MPPE_L if self.mppe_40 else 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class MppeParams:
    key_bits: int
    stateless: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class CcpResult:
    """MPPE per direction (None: no MPPE that way): ``rx`` for what we receive, ``tx`` for
    what we send."""

    rx: MppeParams | None
    tx: MppeParams | None


@dataclass(frozen=True, slots=True, kw_only=True)
class MppeFailed(NegotiationFailed):
    """MPPE is required and cannot be agreed; CCP is closing, the session should end the link."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ResetRequested:
    """The peer sent a Reset-Request (its decompressor lost sync): flush our compressor."""

    identifier: int
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ResetAcked:
    identifier: int
    data: bytes


def mppe_params(bits: int) -> MppeParams | None:
    """The setting an acked option 18 stands for; the strongest key length if several."""
    for bit, size in KEY_LENGTHS:
        if bits & bit:
            return MppeParams(key_bits=size, stateless=bool(bits & MPPE_H))
    return None


def _mppe_option(bits: int) -> Option:
    return Option(type=CcpOption.MPPE, data=_U32.pack(bits))


class CcpEngine(ControlProtocol):
    extra_codes = frozenset({Code.RESET_REQUEST, Code.RESET_ACK})

    __slots__ = ('_hinted', '_offer', '_result', '_rx_bits', '_tx_bits', 'config')

    def __init__(self, config: CcpConfig | None = None) -> None:
        self.config = config or CcpConfig()
        super().__init__(PppProtocol.CCP, self.config.fsm)
        self._offer: int | None = None
        self._hinted = False
        self._rx_bits: int | None = None
        self._tx_bits: int | None = None
        self._result: CcpResult | None = None
        self.reset_negotiation()

    @property
    def result(self) -> CcpResult | None:
        """The agreed MPPE settings while Opened (None when MPPE was required and missing)."""
        return self._result

    def send_reset_request(self, data: bytes = b"") -> int | None:
        """Ask the peer to reset its compressor; the Identifier used, or None if not Opened."""
        if not self.is_open:
            return None
        identifier = self.new_identifier()
        self.send(Packet(code=Code.RESET_REQUEST, identifier=identifier, data=data))
        return identifier

    def send_reset_ack(self, identifier: int, data: bytes = b"") -> bool:
        """Answer a Reset-Request (MPPE itself does not use Reset-Ack, RFC 3078 7.1)."""
        if not self.is_open:
            return False
        self.send(Packet(code=Code.RESET_ACK, identifier=identifier & 0xFF, data=data))
        return True

    # --- option handling ------------------------------------------------------------------

    def _full_offer(self) -> int | None:
        keys = self.config.key_bits
        if not keys:
            return None
        return keys | (0 if self.config.mppe_stateful else MPPE_H)

    def _failed(self, reason: str) -> None:
        self.fail(MppeFailed(protocol=_CCP, reason=reason))

    def reset_negotiation(self) -> None:
        self._offer = self._full_offer()
        self._hinted = False

    def build_request(self) -> list[Option]:
        return [] if self._offer is None else [_mppe_option(self._offer)]

    def judge_option(self, option: Option) -> Judgement:
        if option.type != CcpOption.MPPE or len(option.data) != 4:
            return REJECT
        allowed = self.config.key_bits
        if not allowed:
            return REJECT
        bits = int(_U32.unpack(option.data)[0])
        wanted = bits & KEY_BITS_MASK
        if not wanted:
            # Give the peer our choices; it picks and asks again (pppd does the same).
            full = self._full_offer()
            assert full is not None
            return nak(_mppe_option(full))
        common = wanted & allowed
        if not common:
            if self.config.mppe_required:
                self._failed("no MPPE key length acceptable to both sides")
            return REJECT
        chosen = next(bit for bit, _ in KEY_LENGTHS if common & bit)
        stateless = bool(bits & MPPE_H) or not self.config.mppe_stateful
        answer = chosen | (MPPE_H if stateless else 0)
        return ACK if answer == bits else nak(_mppe_option(answer))

    def request_hints(self, options: Sequence[Option]) -> list[Option]:
        if not self.config.mppe_required or self._hinted or any(o.type == CcpOption.MPPE for o in options):
            return []
        self._hinted = True
        full = self._full_offer()
        return [] if full is None else [_mppe_option(full)]

    def peer_request_acked(self, options: Sequence[Option]) -> None:
        self._tx_bits = next((int(_U32.unpack(o.data)[0]) for o in options if o.type == CcpOption.MPPE), None)

    def our_request_acked(self, options: Sequence[Option]) -> None:
        self._rx_bits = next((int(_U32.unpack(o.data)[0]) for o in options if o.type == CcpOption.MPPE), None)

    def our_request_naked(self, options: Sequence[Option]) -> None:
        for option in options:
            if option.type != CcpOption.MPPE or len(option.data) != 4 or self._offer is None:
                continue
            bits = int(_U32.unpack(option.data)[0])
            keys = bits & KEY_BITS_MASK
            acceptable = (
                not bits & ~_KNOWN
                and keys
                and not keys & ~self.config.key_bits
                and (bits & MPPE_H or self.config.mppe_stateful)
            )
            if acceptable:
                self._offer = bits
            elif self.config.mppe_required:
                self._failed("peer suggested MPPE settings we refuse")
            else:
                self._offer = None

    def our_request_rejected(self, options: Sequence[Option]) -> None:
        if any(o.type == CcpOption.MPPE for o in options):
            self._offer = None
            if self.config.mppe_required:
                self._failed("MPPE required but peer refused")

    def layer_up(self) -> None:
        rx = mppe_params(self._rx_bits) if self._rx_bits is not None else None
        tx = mppe_params(self._tx_bits) if self._tx_bits is not None else None
        if self.config.mppe_required and (rx is None or tx is None):
            self._result = None
            self._failed("MPPE required but not negotiated in both directions")
            return
        self._result = CcpResult(rx=rx, tx=tx)

    def layer_down(self) -> None:
        self._result = None
        self._rx_bits = self._tx_bits = None

    def receive_extra(self, packet: Packet) -> bool:
        if not self.is_open:
            self.counters["rx_reset_not_opened"] += 1
            return True
        if packet.code == Code.RESET_REQUEST:
            self.counters["rx_reset_request"] += 1
            self.emit(ResetRequested(identifier=packet.identifier, data=packet.data))
        else:
            self.counters["rx_reset_ack"] += 1
            self.emit(ResetAcked(identifier=packet.identifier, data=packet.data))
        return True
