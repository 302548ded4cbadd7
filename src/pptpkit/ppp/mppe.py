"""The MPPE sub-layer of a PPP session: keys from CCP's result, the two ciphers, and resets.

Once CCP opens with MPPE (RFC 3078 section 2), a session needs three things it did not need
before: the start keys, derived from what authentication left behind (MS-CHAPv2's
NT-Response and password hash, RFC 3079 section 3; MS-CHAPv1's challenge, section 2); one
cipher per direction (:mod:`pptpkit.crypto.mppe`, the packet transform); and, in stateful
mode, the resynchronisation dance of RFC 3078 section 3.3: a receiver that lost its place sends
a CCP Reset-Request (RFC 1962 section 2.3), retries it on a timer, and the sender that receives
one starts over and answers Reset-Ack.  :class:`MppeChannel` is all of that as one sans-IO
sub-engine: the session owns one per CCP incarnation, hands it data frames and the CCP reset
events, and merges its timer with the others.  It sends nothing itself; the CCP engine it was
given queues the Reset-Request and Reset-Ack packets, which the session collects as usual.

Per packet the session calls :meth:`MppeChannel.seal` and :meth:`MppeChannel.unseal`, which
are thin: the cipher objects do the work, and the reset path runs only when a packet was lost.
"""

from __future__ import annotations

from collections import Counter
from typing import Final

from pptpkit.auth.base import KeyMaterial, MppeStartKeys, MsChapV1HashKeys, MsChapV2Keys
from pptpkit.crypto.mppe import (
    Buffer,
    MppeConfig,
    MppeDecryptor,
    MppeEncryptor,
    MppeStats,
    key_length,
    mschapv1_start_key,
    mschapv1_start_key_from_hash,
    mschapv2_start_keys,
)
from pptpkit.crypto.mschap import hash_nt_password_hash
from pptpkit.ppp.ccp import CcpEngine, CcpResult, MppeParams
from pptpkit.ppp.session_config import MppePolicy

__all__ = ["RESET_BURST", "RESET_RATE", "MppeChannel", "describe"]

#: The drop counter's name for packets MPPE refused, by reason (``mppe_<reason>``).
_DROP_PREFIX: Final = "mppe_"
#: Reset-Requests honoured (and acked) per second, and in a burst.  A real peer has one
#: outstanding and retransmits it once a second; a flood is answered at this rate, the rest
#: dropped unanswered as if lost (the peer retransmits), so a peer cannot make us send one
#: Reset-Ack per packet it sends.
RESET_RATE: Final = 8.0
RESET_BURST: Final = 16.0


def describe(result: CcpResult) -> str:
    """``"MPPE 128-bit stateless"`` and the like (both directions, or each when they differ)."""
    def one(p: MppeParams) -> str:
        return f"MPPE {p.key_bits}-bit {'stateless' if p.stateless else 'stateful'}"

    rx, tx = result.rx, result.tx
    if rx is None and tx is None:
        return "none"
    if rx == tx:
        assert rx is not None
        return one(rx)
    return f"send {one(tx) if tx else 'none'}, receive {one(rx) if rx else 'none'}"


class MppeChannel:
    """Both directions of MPPE for one CCP incarnation, with the stateful reset machinery.

    Build it with :meth:`start` when CCP opens.  ``encryptor``/``decryptor`` are None in a
    direction without MPPE.  ``dropped`` is the session's drop counter (reasons are counted
    under ``mppe_...``).
    """

    __slots__ = (
        "_ccp", "_dropped", "_policy", "_reset_id", "_reset_stamp", "_reset_tokens", "_reset_tries",
        "decryptor", "encryptor", "reset_deadline", "text",
    )

    def __init__(self, ccp: CcpEngine, policy: MppePolicy, dropped: Counter[str],
                 encryptor: MppeEncryptor | None, decryptor: MppeDecryptor | None, text: str) -> None:
        self._ccp = ccp
        self._policy = policy
        self._dropped = dropped
        self.encryptor = encryptor
        self.decryptor = decryptor
        self.text = text
        #: When the outstanding Reset-Request is retransmitted (None: none outstanding).
        self.reset_deadline: float | None = None
        self._reset_id: int | None = None
        self._reset_tries = 0
        # The peer's Reset-Requests: a token bucket (RESET_RATE, RESET_BURST).
        self._reset_tokens = RESET_BURST
        self._reset_stamp: float | None = None

    @classmethod
    def start(cls, ccp: CcpEngine, policy: MppePolicy, keys: KeyMaterial,
              *, is_server: bool, dropped: Counter[str]) -> MppeChannel | None:
        """The channel for CCP's agreed result, keyed from the authentication's ``keys``; None
        when CCP agreed on no MPPE at all."""
        result = ccp.result
        if result is None or (result.tx is None and result.rx is None):
            return None
        rekey = policy.flushed_means_rekey
        encryptor = decryptor = None
        # The start keys depend only on the key length: both directions at one length (the
        # usual case) share one derivation.
        derived: dict[int, tuple[bytes, bytes]] = {}

        def start_keys(params: MppeParams) -> tuple[bytes, bytes]:
            pair = derived.get(params.key_bits)
            if pair is None:
                pair = derived[params.key_bits] = _start_keys(keys, params, is_server)
            return pair

        if result.tx is not None:
            encryptor = MppeEncryptor(MppeConfig(
                start_key=start_keys(result.tx)[0], key_bits=result.tx.key_bits,
                stateless=result.tx.stateless, flushed_means_rekey=rekey))
        if result.rx is not None:
            decryptor = MppeDecryptor(MppeConfig(
                start_key=start_keys(result.rx)[1], key_bits=result.rx.key_bits,
                stateless=result.rx.stateless, flushed_means_rekey=rekey))
        return cls(ccp, policy, dropped, encryptor, decryptor, describe(result))

    @property
    def stats(self) -> tuple[MppeStats | None, MppeStats | None]:
        """``(tx, rx)`` counters (None: no MPPE that way)."""
        enc, dec = self.encryptor, self.decryptor
        return (enc.stats if enc is not None else None, dec.stats if dec is not None else None)

    # -- per packet ---------------------------------------------------------------------------------

    def unseal(self, info: Buffer, now: float) -> tuple[int, bytes] | None:
        """An MPPE packet (protocol 0x00FD's information field) as ``(protocol, payload)``, or
        None when it was dropped (counted).  A stateful receiver that lost its place asks for a
        reset here; the caller then collects the CCP engine's output."""
        dec = self.decryptor
        if dec is None:
            self._dropped["mppe_not_negotiated"] += 1
            return None
        result = dec.decrypt(info)
        if dec.reset_requested:
            self._request_reset(now)
        if result is None:
            # A lost place (stateful) always ends here, so this is also when a Reset-Request
            # may have been queued; the session collects CCP's output after a None.
            self._dropped[_DROP_PREFIX + (dec.last_drop.name.lower() if dec.last_drop else "drop")] += 1
        return result

    # -- resets (RFC 3078 section 3.3, RFC 1962 section 2.3) ------------------------------------------

    def _request_reset(self, now: float) -> None:
        dec = self.decryptor
        if dec is None or not dec.take_reset_request():
            return
        if self.reset_deadline is not None:
            return  # one is already on its way; its retransmission covers this loss too
        self._reset_tries = 0
        self._transmit_reset(now)

    def _transmit_reset(self, now: float) -> None:
        self._reset_id = self._ccp.send_reset_request()
        self._reset_tries += 1
        self.reset_deadline = now + self._policy.reset_interval if self._reset_id is not None else None

    def handle_timer(self, now: float) -> None:
        """The Reset-Request went unanswered: send it again, up to ``reset_max`` times."""
        if self.reset_deadline is None or now < self.reset_deadline:
            return
        self.reset_deadline = None
        dec = self.decryptor
        if dec is None or not dec.discarding:
            self._reset_id = None
            return
        if self._reset_tries >= self._policy.reset_max:
            self._dropped["mppe_reset_gave_up"] += 1
            self._reset_id = None
            return
        self._transmit_reset(now)

    def peer_asked_reset(self, identifier: int, now: float) -> None:
        """The peer's Reset-Request: start our sending side over, and answer Reset-Ack.
        (RFC 3078 needs no Ack, but RFC 1962 has one, and pppd sends it and waits for it.)
        Beyond :data:`RESET_RATE` per second the request is dropped unanswered (counted)."""
        stamp = self._reset_stamp
        if stamp is not None and now > stamp:
            self._reset_tokens = min(RESET_BURST, self._reset_tokens + (now - stamp) * RESET_RATE)
        self._reset_stamp = now if stamp is None or now > stamp else stamp
        if self._reset_tokens < 1:
            self._dropped["mppe_reset_flood"] += 1
            return
        self._reset_tokens -= 1
        if self.encryptor is not None:
            self.encryptor.reset()
        self._ccp.send_reset_ack(identifier)

    def peer_acked_reset(self, identifier: int) -> None:
        if self._reset_id is not None and identifier == self._reset_id:
            self.reset_deadline = None
            self._reset_id = None

    def peer_rejected_reset(self) -> None:
        """The peer Code-Rejects Reset-Request: stop asking."""
        self.reset_deadline = None
        self._reset_id = None


def _start_keys(keys: KeyMaterial, params: MppeParams, is_server: bool) -> tuple[bytes, bytes]:
    """(send, receive) start keys for ``params`` from the authentication's keys."""
    if isinstance(keys, MsChapV2Keys):
        return mschapv2_start_keys(hash_nt_password_hash(keys.nt_password_hash), keys.nt_response,
                                   is_server=is_server, key_bits=params.key_bits)
    if isinstance(keys, MppeStartKeys):
        # Already oriented for this end and 16 octets; shorter keys are their prefixes.
        n = key_length(params.key_bits)
        return keys.send[:n], keys.recv[:n]
    if isinstance(keys, MsChapV1HashKeys):
        key = mschapv1_start_key(keys.nt_password_hash_hash, keys.challenge, params.key_bits)
    else:
        key = mschapv1_start_key_from_hash(keys.nt_password_hash, keys.challenge, params.key_bits)
    return key, key
