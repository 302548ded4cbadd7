"""The sans-IO engine for one PPTP call's GRE data channel (RFC 2637 sections 4.2 - 4.4).

One :class:`GreCall` per call.  The adapter feeds it received packets and PPP frames to send,
drains the encoded datagrams and delivered payloads, and calls :meth:`GreCall.handle_timer`
at :meth:`GreCall.get_timer`.  It never touches a socket or a clock.

Sequence numbers are 32-bit and wrap; every comparison is serial-number arithmetic (RFC 1982
style: ``b`` is newer than ``a`` when ``(b - a) mod 2**32`` is in ``1 .. 2**31 - 1``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from pptpkit.errors import ConfigError, PptpkitError
from pptpkit.gre.packet import (
    GRE_PROTOCOL_PPP,
    HDR_ONE,
    HDR_SEQ_ACK,
    MAX_PAYLOAD,
    W_DATA,
    W_DATA_ACK,
    Buffer,
    GrePacket,
    data_run,
    encode_gre,
)
from pptpkit.speedups import EXT

#: The run parse of GreCall.receive_run: compiled, or its pure twin.
_data_run: Final = EXT.gre_data_run if EXT is not None else data_run
_MASK: Final = 0xFFFFFFFF
_HALF: Final = 0x80000000
_MAX_HELD: Final = 4096
_MAX_QUEUE: Final = 65535
# RFC 6298's gain for the smoothed round-trip time.
_RTT_GAIN: Final = 0.125
#: Packets in a row, far off the expected sequence numbers, before the receiver believes them.
SEQ_RESYNC_RUN: Final = 4


@dataclass(frozen=True, kw_only=True, slots=True)
class GreCallConfig:
    """Settings of one call's data channel.

    ``call_id`` is ours (the peer puts it in the packets it sends us); ``peer_call_id`` is the
    peer's (we put it in ours).  ``peer_window`` is the Packet Receive Window Size the peer
    sent in its call message (0 is treated as 1: taken literally it would forbid sending at
    all); ``our_window`` is the one we advertised, used only to count peers that overrun it
    (``GreStats.window_overruns``), since known peers ignore it and dropping would only hurt.

    ``respect_peer_window`` (default True) holds packets back once ``peer_window`` are
    unacknowledged.  It is a switch because pptp-linux advertises a window of 3 but sends an
    ack-only packet only after 0.5 s without reverse traffic, so on a one-way flow strict
    enforcement caps throughput at about 3 packets per 0.5 s; turning it off sends everything at
    once, as pptp-linux and the Linux kernel themselves do.  Held packets wait in a queue of at
    most ``send_queue`` packets (drop-tail); if no ack advances the window for ``ack_timeout``
    seconds the outstanding packets are written off as lost (there is no retransmission in
    PPTP) and the queue moves on, so lost acks cannot stall the call for good.

    ``ack_delay``: how long received data may stay unacknowledged before an ack-only packet
    goes out (data we send in the meantime carries the ack for free).  ``reorder_timeout`` and
    ``reorder_buffer``: how long and how many packets after a gap are held waiting for the
    missing one.  ``nobuffer`` (as pptp-linux's --nobuffer): never hold; deliver anything newer
    than the last delivered packet at once and drop anything older.  ``first_seq``: our first
    sequence number (the RFC says 0, pptp-linux uses 1; we accept either from the peer).

    ``max_seq_jump``: how far from the last delivered number a received one may be (ahead, or
    behind) and still be taken on its own.  GRE is not authenticated, so anyone who knows the
    call ID can send a packet numbered far ahead; taken as is it would move the receive counter
    and every real packet after it would count as too old (two forged packets killed a live
    session).  A packet beyond the bound is dropped and counted (``stats.seq_jumps_refused``),
    unless :data:`SEQ_RESYNC_RUN` of them arrive in a row, numbered one after the other, with
    nothing delivered in between: that is a peer whose numbering really moved on (a long
    outage), and the receiver resynchronises to it (``stats.seq_resyncs``).  The same holds
    for numbers far behind, so a receiver pushed off its peer's numbering finds it again.
    """

    call_id: int
    peer_call_id: int
    peer_window: int = 64
    our_window: int = 64
    ack_delay: float = 0.1
    reorder_timeout: float = 0.1
    reorder_buffer: int = 32
    send_queue: int = 64
    ack_timeout: float = 1.0
    nobuffer: bool = False
    respect_peer_window: bool = True
    first_seq: int = 0
    max_seq_jump: int = 512

    def __post_init__(self) -> None:
        for name in ("call_id", "peer_call_id", "peer_window", "our_window"):
            value = getattr(self, name)
            if not 0 <= value <= 0xFFFF:
                raise ConfigError(f"{name} must be 0..65535, got {value}")
        if not 1 <= self.reorder_buffer <= _MAX_HELD:
            raise ConfigError(f"reorder_buffer must be 1..{_MAX_HELD}, got {self.reorder_buffer}")
        if not 0 <= self.send_queue <= _MAX_QUEUE:
            raise ConfigError(f"send_queue must be 0..{_MAX_QUEUE}, got {self.send_queue}")
        if not 0 <= self.first_seq <= _MASK:
            raise ConfigError(f"first_seq must be a 32-bit value, got {self.first_seq}")
        if not self.ack_delay >= 0:
            raise ConfigError(f"ack_delay must be >= 0, got {self.ack_delay}")
        if not self.reorder_timeout >= 0:
            raise ConfigError(f"reorder_timeout must be >= 0, got {self.reorder_timeout}")
        if not self.ack_timeout > 0:
            raise ConfigError(f"ack_timeout must be > 0, got {self.ack_timeout}")
        if not max(self.reorder_buffer, 1) <= self.max_seq_jump < _HALF // 2:
            raise ConfigError(f"max_seq_jump must be reorder_buffer..{_HALF // 2 - 1}, "
                              f"got {self.max_seq_jump}")


@dataclass(slots=True)
class GreStats:
    """Per-call counters; the engine updates this object in place (copy it for a snapshot).

    ``lost`` counts sequence numbers that delivery skipped (gap given up on); a packet that
    turns up after that is counted again as ``too_old``.  ``reordered`` counts packets that
    arrived after a higher-numbered one and were still delivered.  ``acks_sent`` counts
    ack-only packets (every data packet carries an ack as well).  ``srtt`` is the smoothed
    time from sending a sequence number to the first ack covering it (None before a sample).
    ``seq_jumps_refused``/``seq_resyncs``: packets numbered implausibly far from the stream,
    and the times such a run was believed (see :class:`GreCallConfig` ``max_seq_jump``).
    """

    sent: int = 0
    received: int = 0
    delivered: int = 0
    lost: int = 0
    reordered: int = 0
    duplicates: int = 0
    too_old: int = 0
    window_drops: int = 0
    malformed: int = 0
    wrong_call_id: int = 0
    acks_sent: int = 0
    acks_received: int = 0
    #: Acks that acknowledged something new: zero while packets arrive means ours do not.
    acks_new: int = 0
    bogus_acks: int = 0
    stale_acks: int = 0
    ack_timeouts: int = 0
    window_overruns: int = 0
    rtt_samples: int = 0
    srtt: float | None = None
    seq_jumps_refused: int = 0
    seq_resyncs: int = 0


class GreCall:
    """Sequencing, acknowledgement, flow control and reordering for one call.

    Output comes two ways: :meth:`send` returns the datagrams it can transmit at once, and
    :meth:`receive` / :meth:`handle_timer` return payloads ready for PPP, in order.  Datagrams
    that become due later (ack-only packets, queued data released by an ack or a timeout) are
    collected for :meth:`datagrams_to_send`, which the adapter drains after every call.
    """

    __slots__ = (
        "_ack_deadline",
        "_ack_sent",
        "_held",
        "_jump_mark",
        "_jump_next",
        "_jump_run",
        "_out",
        "_queue",
        "_rtt_seq",
        "_rtt_time",
        "_rx_highest",
        "_rx_last",
        "_rx_started",
        "_tx_acked",
        "_tx_next",
        "_tx_progress",
        "_window",
        "config",
        "stats",
    )

    def __init__(self, config: GreCallConfig) -> None:
        self.config = config
        self.stats = GreStats()
        self._window = max(1, config.peer_window)
        self._tx_next = config.first_seq
        # Serial "highest acknowledged": one below the first number, so nothing is in flight.
        self._tx_acked = (config.first_seq - 1) & _MASK
        self._tx_progress = 0.0
        # Shared empty tuple until the window first closes: a deque costs 600-odd bytes per
        # call, and most calls (or peers that keep the window open) never queue anything.
        self._queue: deque[bytes] | tuple[()] = ()
        self._rtt_seq: int | None = None
        self._rtt_time = 0.0
        self._rx_started = False
        self._rx_last = 0
        self._rx_highest = 0
        self._ack_sent: int | None = None
        self._ack_deadline: float | None = None
        # seq -> (payload, arrival time); insertion order is arrival order, which the reorder
        # timeout relies on.
        self._held: dict[int, tuple[bytes, float]] = {}
        self._out: list[bytes] = []
        # A run of far-off packets: the number expected next, its length, and _rx_last when it
        # began (a delivery since then means the real stream is elsewhere).
        self._jump_next = 0
        self._jump_run = 0
        self._jump_mark = 0

    # ------------------------------------------------------------------ introspection

    @property
    def in_flight(self) -> int:
        """Data packets sent and not yet acknowledged (or written off)."""
        return (self._tx_next - 1 - self._tx_acked) & _MASK

    @property
    def queued(self) -> int:
        """Data packets waiting for the peer's window to open."""
        return len(self._queue)

    @property
    def held(self) -> int:
        """Received packets held in the reorder buffer."""
        return len(self._held)

    @property
    def next_seq(self) -> int:
        return self._tx_next

    @property
    def last_delivered(self) -> int | None:
        return self._rx_last if self._rx_started else None

    @property
    def ack_pending(self) -> bool:
        """Received data that no packet of ours has acknowledged yet."""
        return self._rx_started and self._ack_sent != self._rx_highest

    # ------------------------------------------------------------------ sending

    def send(self, payload: bytes, now: float) -> list[bytes]:
        """Queue one PPP frame; returns the datagrams to transmit now (usually one).

        Returns an empty list when the frame waits for the window (or was dropped because the
        wait queue is full; ``stats.window_drops``).  Raises ``ValueError`` for a payload over
        65535 bytes, which is a caller bug.
        """
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"GRE payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
        if self.config.respect_peer_window and (
            self._queue or (self._tx_next - 1 - self._tx_acked) & _MASK >= self._window
        ):
            if len(self._queue) >= self.config.send_queue:
                self.stats.window_drops += 1
            else:
                queue = self._queue
                if not isinstance(queue, deque):
                    queue = self._queue = deque()
                queue.append(payload)
            return []
        return [self._transmit(payload, now)]

    def send_header(self, payload: Buffer, now: float) -> bytes | None:
        """:meth:`send` for the common case, without joining the datagram: the GRE header of
        the one datagram ``header + payload`` that :meth:`send` would return, with the same
        state changes (the adapter hands both parts to the kernel, which gathers them).  None,
        with nothing changed, whenever :meth:`send` would not transmit at once (the window is
        closed, packets are queued) or would raise: then :meth:`send` decides."""
        n = len(payload)
        if n > MAX_PAYLOAD or (self.config.respect_peer_window and (
                self._queue or (self._tx_next - 1 - self._tx_acked) & _MASK >= self._window)):
            return None
        return self._header(n, now)

    def send_run(self, payloads: Sequence[Buffer], now: float) -> tuple[int, int, int]:
        """:meth:`send_header` for the first ``k`` of ``payloads`` at once: ``(k, seq, ack)``,
        where those ``k`` go out as data packets numbered ``seq``, ``seq + 1``, ... (32 bits,
        wrapping), each acknowledging ``ack`` (-1: no ack field), with the same state changes
        as ``k`` calls of :meth:`send_header`.  ``k`` stops where :meth:`send_header` would
        return None (the window fills, packets are queued, a payload too long); the adapter
        hands the rest, in order, to the per-packet path."""
        k = len(payloads)
        if k and max(map(len, payloads)) > MAX_PAYLOAD:
            k = next(i for i, p in enumerate(payloads) if len(p) > MAX_PAYLOAD)
        seq = self._tx_next
        if self.config.respect_peer_window:
            if self._queue:
                return 0, seq, -1
            room = self._window - ((seq - 1 - self._tx_acked) & _MASK)
            if room < k:
                k = max(room, 0)
        if not k:
            return 0, seq, -1
        if seq == (self._tx_acked + 1) & _MASK:
            self._tx_progress = now
        self._tx_next = (seq + k) & _MASK
        if self._rtt_seq is None:
            self._rtt_seq = seq
            self._rtt_time = now
        self.stats.sent += k
        if self._rx_started:
            ack = self._rx_highest
            self._ack_sent = ack
            self._ack_deadline = None
            return k, seq, ack
        return k, seq, -1

    def _transmit(self, payload: bytes, now: float) -> bytes:
        return self._header(len(payload), now) + payload

    def _header(self, n: int, now: float) -> bytes:
        """The header of the next data packet (``n`` octets of payload), and its bookkeeping."""
        seq = self._tx_next
        if seq == (self._tx_acked + 1) & _MASK:
            # The window was empty: the ack timeout counts from the first packet in flight.
            self._tx_progress = now
        self._tx_next = (seq + 1) & _MASK
        if self._rtt_seq is None:
            self._rtt_seq = seq
            self._rtt_time = now
        self.stats.sent += 1
        if self._rx_started:
            ack = self._rx_highest
            self._ack_sent = ack
            self._ack_deadline = None
            return HDR_SEQ_ACK.pack(W_DATA_ACK, GRE_PROTOCOL_PPP, n, self.config.peer_call_id, seq, ack)
        return HDR_ONE.pack(W_DATA, GRE_PROTOCOL_PPP, n, self.config.peer_call_id, seq)

    @property
    def has_datagrams(self) -> bool:
        """Whether :meth:`datagrams_to_send` has anything (lets adapters skip the call)."""
        return bool(self._out)

    def datagrams_to_send(self) -> list[bytes]:
        """Datagrams produced outside :meth:`send`: ack-only packets and released queue."""
        out = self._out
        self._out = []
        return out

    # ------------------------------------------------------------------ receiving

    def receive_datagram(self, data: Buffer, now: float) -> list[bytes]:
        """Decode and process one GRE packet; a malformed one is counted and dropped."""
        payload = self.receive_next(data, now)
        if payload is not None:
            return [payload]
        try:
            packet = GrePacket.decode(data)
        except PptpkitError:
            self.stats.malformed += 1
            return []
        return self.receive(packet, now)

    def receive_next(self, data: Buffer, now: float) -> bytes | None:
        """:meth:`receive_datagram` for the common case: the data packet right after the last
        delivered, for this call, nothing held for reordering.  Returns its payload (a copy:
        ``data`` may be a reused buffer), with exactly the state changes and counters of the
        general path; None, with nothing changed, for anything else (first packet, gap,
        duplicate, ack-only, malformed, another call), which :meth:`receive_datagram` then
        decodes and takes through :meth:`receive`, the spec.  The header is checked by the
        run parser (:func:`~pptpkit.gre.packet.data_run`, compiled when built) on a run of
        one, no :class:`GrePacket`."""
        rx_last = self._rx_last
        if self._held or not self._rx_started or rx_last != self._rx_highest:
            return None
        acked = self._ack_sent
        config = self.config
        payloads, acks, overruns = _data_run((data,), config.call_id, (rx_last + 1) & _MASK,
                                             -1 if acked is None else acked, config.our_window)
        if not payloads:
            return None
        seq = (rx_last + 1) & _MASK
        stats = self.stats
        stats.received += 1
        self._rx_last = self._rx_highest = seq
        stats.window_overruns += overruns
        stats.delivered += 1
        if acks:
            ack = acks[0]
            if ack == self._tx_acked:
                stats.acks_received += 1  # nothing new acknowledged: _on_ack would stop here
            else:
                self._on_ack(ack, now)
        if self._ack_deadline is None and self._ack_sent != seq:
            if config.ack_delay > 0:
                self._ack_deadline = now + config.ack_delay
            else:
                self._send_ack_only()
        return payloads[0]

    def receive_run(self, packets: Sequence[Buffer], now: float) -> list[bytes]:
        """:meth:`receive_next` over a run of packets: the payloads of the longest prefix that
        :meth:`receive_next` would take one by one (in-order data packets of this call, nothing
        held), with exactly the state changes and counters of those calls, acks carried
        included; the packet after the prefix is the caller's (untouched) for
        :meth:`receive_datagram`.  Only when nothing in the run can move what the next
        packet's checks read: with the ack delay on (no ack-only packet sent at once) and no
        send queue (no ack can release queued data, whose header reads the receive state).
        Otherwise it takes nothing and the packets go through :meth:`receive_next` one by one."""
        out: list[bytes] = []
        config = self.config
        delay = config.ack_delay
        if (self._held or not self._rx_started or self._rx_last != self._rx_highest or delay <= 0
                or self._queue):
            return out
        stats = self.stats
        rx = self._rx_last
        acked = self._ack_sent
        # The parse, the numbering and the window check of every packet are one call (in C
        # when it is built); only the acks are taken in Python, in order.
        out, acks, overruns = _data_run(packets, config.call_id, (rx + 1) & _MASK,
                                        -1 if acked is None else acked, config.our_window)
        k = len(out)
        if k:
            rx = (rx + k) & _MASK
            self._rx_last = self._rx_highest = rx
            stats.received += k
            stats.delivered += k
            stats.window_overruns += overruns
            same_acks = 0
            for ack in acks:
                if ack == self._tx_acked:
                    same_acks += 1
                else:
                    self._on_ack(ack, now)
            stats.acks_received += same_acks
            # One by one, the first packet not numbered _ack_sent would arm the ack delay.
            if self._ack_deadline is None and (k > 1 or self._ack_sent != rx):
                self._ack_deadline = now + delay
        return out

    def count_malformed(self) -> None:
        """Count a packet for this call that the adapter could not decode."""
        self.stats.malformed += 1

    def receive(self, packet: GrePacket, now: float) -> list[bytes]:
        """Process one decoded packet; returns the payloads now deliverable, in order."""
        if packet.call_id != self.config.call_id:
            self.stats.wrong_call_id += 1
            return []
        seq = packet.seq
        if seq is None:
            if packet.ack is not None:
                self._on_ack(packet.ack, now)
            return []
        self.stats.received += 1
        delivered = self._on_data(seq, packet.payload, now)
        # The ack after the data: queued packets the ack releases then carry an ack that
        # already covers this packet.
        if packet.ack is not None:
            self._on_ack(packet.ack, now)
        if self._ack_deadline is None and self._ack_sent != self._rx_highest:
            if self.config.ack_delay > 0:
                self._ack_deadline = now + self.config.ack_delay
            else:
                self._send_ack_only()
        return delivered

    def _on_ack(self, ack: int, now: float) -> None:
        stats = self.stats
        stats.acks_received += 1
        advance = (ack - self._tx_acked) & _MASK
        if advance == 0:
            return
        if advance >= _HALF:
            # Older than what we already know: a reordered packet; harmless.
            stats.stale_acks += 1
            return
        if advance > (self._tx_next - 1 - self._tx_acked) & _MASK:
            stats.bogus_acks += 1
            return
        self._tx_acked = ack
        stats.acks_new += 1
        self._tx_progress = now
        rtt_seq = self._rtt_seq
        if rtt_seq is not None and (ack - rtt_seq) & _MASK < _HALF:
            sample = now - self._rtt_time
            srtt = stats.srtt
            stats.srtt = sample if srtt is None else srtt + _RTT_GAIN * (sample - srtt)
            stats.rtt_samples += 1
            self._rtt_seq = None
        if self._queue:
            self._release_queue(now)

    def _release_queue(self, now: float) -> None:
        queue = self._queue
        if not isinstance(queue, deque):
            return
        while queue and (self._tx_next - 1 - self._tx_acked) & _MASK < self._window:
            self._out.append(self._transmit(queue.popleft(), now))

    def _on_data(self, seq: int, payload: bytes, now: float) -> list[bytes]:
        stats = self.stats
        if not self._rx_started:
            # The first packet sets the baseline whatever its number: peers start at 0 or 1,
            # and assuming a gap before it would stall the call's first frame.
            self._rx_started = True
            self._rx_last = self._rx_highest = seq
            stats.delivered += 1
            return [payload]
        dist = (seq - self._rx_last) & _MASK
        if dist == 0:
            stats.duplicates += 1
            return []
        max_jump = self.config.max_seq_jump
        if dist >= _HALF:
            if (self._rx_last - seq) & _MASK > max_jump:
                return self._far_off(seq, payload)
            stats.too_old += 1
            return []
        if dist > max_jump:
            return self._far_off(seq, payload)
        held = self._held
        if seq in held:
            stats.duplicates += 1
            return []
        if 0 < (seq - self._rx_highest) & _MASK < _HALF:
            self._rx_highest = seq
        else:
            stats.reordered += 1
        acked = self._ack_sent
        if acked is not None and self.config.our_window < (seq - acked) & _MASK < _HALF:
            stats.window_overruns += 1
        if dist == 1:
            self._rx_last = seq
            stats.delivered += 1
            out = [payload]
            if held:
                self._drain(out)
            return out
        if self.config.nobuffer:
            stats.lost += dist - 1
            self._rx_last = self._rx_highest = seq
            stats.delivered += 1
            return [payload]
        held[seq] = (payload, now)
        if len(held) > self.config.reorder_buffer:
            base = self._rx_last
            lowest = min(held, key=lambda k: (k - base) & _MASK)
            out = []
            self._release_through(lowest, out)
            return out
        return []

    def _far_off(self, seq: int, payload: bytes) -> list[bytes]:
        """A packet numbered far from the stream: refused, unless it completes a run."""
        stats = self.stats
        if self._jump_run and seq == self._jump_next and self._rx_last == self._jump_mark:
            self._jump_run += 1
        else:
            self._jump_run = 1
            self._jump_mark = self._rx_last
        self._jump_next = (seq + 1) & _MASK
        if self._jump_run < SEQ_RESYNC_RUN:
            stats.seq_jumps_refused += 1
            return []
        # The peer's numbering really is here now.  What was held belongs to the old stream.
        stats.seq_resyncs += 1
        out: list[bytes] = []
        if self._held:
            base = self._rx_last
            furthest = max(self._held, key=lambda k: (k - base) & _MASK)
            self._release_through(furthest, out)
        self._jump_run = 0
        self._rx_last = self._rx_highest = seq
        stats.delivered += 1
        out.append(payload)
        return out

    def _drain(self, out: list[bytes]) -> None:
        held = self._held
        nxt = (self._rx_last + 1) & _MASK
        while nxt in held:
            out.append(held.pop(nxt)[0])
            self._rx_last = nxt
            self.stats.delivered += 1
            nxt = (nxt + 1) & _MASK

    def _release_through(self, target: int, out: list[bytes]) -> None:
        """Give up on every gap up to ``target``: deliver held packets through it, then drain."""
        base = self._rx_last
        limit = (target - base) & _MASK
        held = self._held
        offsets = sorted(off for k in held if (off := (k - base) & _MASK) <= limit)
        prev = 0
        for off in offsets:
            out.append(held.pop((base + off) & _MASK)[0])
            self.stats.lost += off - prev - 1
            prev = off
        self.stats.delivered += len(offsets)
        self._rx_last = target
        self._drain(out)

    # ------------------------------------------------------------------ acks and timers

    def _send_ack_only(self) -> None:
        ack = self._rx_highest
        self._out.append(encode_gre(self.config.peer_call_id, b"", None, ack))
        self._ack_sent = ack
        self._ack_deadline = None
        self.stats.acks_sent += 1

    def _reorder_deadline(self) -> float | None:
        if not self._held:
            return None
        first = next(iter(self._held.values()))
        return first[1] + self.config.reorder_timeout

    def _stall_deadline(self) -> float | None:
        if not self._queue:
            return None
        return self._tx_progress + self.config.ack_timeout

    def get_timer(self) -> float | None:
        """Absolute time of the next deadline (ack delay, reorder timeout, stalled window)."""
        best = self._ack_deadline
        if not self._held and not self._queue:
            return best  # the per-packet case: only the ack delay can be armed
        for deadline in (self._reorder_deadline(), self._stall_deadline()):
            if deadline is not None and (best is None or deadline < best):
                best = deadline
        return best

    def handle_timer(self, now: float) -> list[bytes]:
        """Run every expired deadline; returns payloads released by a reorder timeout.

        Ack-only packets and queued data released here go to :meth:`datagrams_to_send`.
        Calling it early is harmless.
        """
        out: list[bytes] = []
        deadline = self._reorder_deadline()
        if deadline is not None and now >= deadline:
            self._expire_held(now, out)
        if self._ack_deadline is not None and now >= self._ack_deadline:
            self._ack_deadline = None
            if self.ack_pending:
                self._send_ack_only()
        deadline = self._stall_deadline()
        if deadline is not None and now >= deadline:
            self.stats.ack_timeouts += 1
            self._tx_acked = (self._tx_next - 1) & _MASK
            self._rtt_seq = None  # its ack may never come; do not let it skew the estimate
            self._tx_progress = now
            self._release_queue(now)
        return out

    def _expire_held(self, now: float, out: list[bytes]) -> None:
        timeout = self.config.reorder_timeout
        base = self._rx_last
        furthest = -1
        for seq, (_payload, arrived) in self._held.items():
            if arrived + timeout > now:
                break  # arrival order: everything after this is younger
            off = (seq - base) & _MASK
            if off > furthest:
                furthest = off
        if furthest >= 0:
            self._release_through((base + furthest) & _MASK, out)
