"""The data plane of one PPTP call on asyncio: a :class:`~pptpkit.gre.GreCall` engine on the
process's raw GRE socket, with its one timer.

Both the client (:mod:`pptpkit.pptp.client`) and the server (:mod:`pptpkit.pptp.server`) run every call
through a :class:`GreChannel`.  The raw GRE socket is per process (per network namespace): the
kernel delivers every GRE packet to every raw GRE socket, so two of them would each see, and
each count as unknown, the other's traffic.  :func:`acquire_gre_socket` /
:func:`release_gre_socket` share one per event loop with a reference count.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from pptpkit.gre import GreCall, GreCallConfig, GreStats
from pptpkit.gre.packet import MAX_PAYLOAD
from pptpkit.io.deadline import Deadline
from pptpkit.io.gresock import Ancillary, GreSocket, source_ancillary
from pptpkit.speedups import EXT, log_choice

__all__ = [
    "MAX_HELD_FRAMES",
    "ChannelStats",
    "FrameInlet",
    "FrameReceiver",
    "FrameSource",
    "GreChannel",
    "acquire_gre_socket",
    "batch_receiver",
    "ipv4_or_none",
    "release_gre_socket",
]

log = logging.getLogger(__name__)


MAX_HELD_FRAMES: Final = 64


class FrameInlet:
    """Where a call's received PPP frames go: to ``sink`` once the layer above is attached, and
    until then into a small queue that attaching drains, in arrival order.

    A call is usable as soon as it is established, but its opener attaches PPP only after it has
    resumed (and built its interface): the peer's first LCP Configure-Request usually lands in
    between. Dropping it costs a whole LCP restart interval (3 s) on every connect. The queue
    is capped (a peer may send anything before we listen); what overflows is counted.
    """

    __slots__ = ("_held", "_sink", "dropped")

    def __init__(self) -> None:
        self._sink: Callable[[bytes], object] | None = None
        self._held: list[bytes] = []
        self.dropped = 0

    @property
    def sink(self) -> Callable[[bytes], object] | None:
        return self._sink

    @sink.setter
    def sink(self, sink: Callable[[bytes], object] | None) -> None:
        self._sink = sink
        if sink is not None and self._held:
            held, self._held = self._held, []
            for frame in held:
                sink(frame)

    @property
    def held(self) -> int:
        return len(self._held)

    def deliver(self, frame: bytes) -> None:
        sink = self._sink
        if sink is not None:
            sink(frame)
        elif len(self._held) < MAX_HELD_FRAMES:
            self._held.append(bytes(frame))  # frames may be views of a reused receive buffer
        else:
            self.dropped += 1


class FrameSource(Protocol):
    """Where a call's frames come in: a :class:`FrameInlet`, or a :class:`GreChannel` itself."""

    @property
    def sink(self) -> Callable[[bytes], object] | None: ...

    @sink.setter
    def sink(self, sink: Callable[[bytes], object] | None) -> None: ...

    @property
    def dropped(self) -> int: ...


class FrameReceiver:
    """A call's receiving side as its users see it: assign ``on_frame`` to attach the layer
    above; frames that came first are handed to it then (see :class:`FrameInlet`)."""

    __slots__ = ()

    inlet: FrameSource

    @property
    def on_frame(self) -> Callable[[bytes], object] | None:
        """Receives PPP frames; frames that came before it was set are handed to it first."""
        return self.inlet.sink

    @on_frame.setter
    def on_frame(self, on_frame: Callable[[bytes], object] | None) -> None:
        self.inlet.sink = on_frame

    @property
    def frames_unclaimed(self) -> int:
        """Frames dropped because nothing took them and the inlet's queue was full."""
        return self.inlet.dropped


def batch_receiver(on_frame: Callable[[bytes], object]) -> Callable[[list[bytes]], object] | None:
    """The batch variant of a frame receiver, or None: a receiver that is the
    ``frame_received`` of an object that also has ``frames_received(frames)`` (a
    :class:`~pptpkit.io.link.PppLink`) gets whole runs through it.  Found by looking, so that
    every opener that attaches ``link.frame_received`` gets it, and every other receiver (the
    inlet's queue, a test's list) keeps its per-frame calls."""
    owner = getattr(on_frame, "__self__", None)
    if owner is None or on_frame != getattr(owner, "frame_received", None):
        return None
    many: Callable[[list[bytes]], object] | None = getattr(owner, "frames_received", None)
    return many


@dataclass(slots=True)
class _Shared:
    sock: GreSocket
    users: int


_shared: dict[asyncio.AbstractEventLoop, _Shared] = {}


def ipv4_or_none(sockname: tuple[Any, ...] | None) -> str | None:
    """The IPv4 address of a socket name, or None (not IPv4, or unknown)."""
    if not sockname:
        return None
    try:
        address = ipaddress.IPv4Address(sockname[0])
    except ValueError:
        try:
            mapped = ipaddress.IPv6Address(sockname[0]).ipv4_mapped
        except ValueError:
            return None
        return None if mapped is None else str(mapped)
    return str(address)


def acquire_gre_socket(loop: asyncio.AbstractEventLoop | None = None) -> GreSocket:
    """The raw GRE socket shared by everything on ``loop`` (opened on first use).

    It is opened in the network namespace current at the first call.  Raises ``OSError``
    (typically ``PermissionError``) when raw sockets are not allowed.
    """
    loop = loop or asyncio.get_running_loop()
    shared = _shared.get(loop)
    if shared is None or shared.sock.closed:
        # The data plane starts here (client and server alike): the one place that says, once
        # per process, when the per-packet path runs without its compiled primitives.
        log_choice(log)
        shared = _Shared(GreSocket(loop=loop), 0)
        _shared[loop] = shared
    shared.users += 1
    return shared.sock


def release_gre_socket(sock: GreSocket) -> None:
    """Drop one reference taken by :func:`acquire_gre_socket`; the last one closes it."""
    for loop, shared in list(_shared.items()):
        if shared.sock is sock:
            shared.users -= 1
            if shared.users <= 0:
                del _shared[loop]
                sock.close()
            return


@dataclass(slots=True)
class ChannelStats:
    """Counters of the adapter, next to the engine's :class:`~pptpkit.gre.GreStats`."""

    frames_after_close: int = 0
    """Frames handed to :meth:`GreChannel.send_frame` after the call ended (dropped)."""
    oversized_frames: int = 0
    """Frames too long for one GRE packet (dropped)."""


class GreChannel:
    """One call's GRE data channel: send PPP frames, receive them through ``on_frame``.

    ``on_frame`` (here or assigned later, also as :attr:`sink`) is called straight from the
    receive path, with no hop in between: the layer above (a :class:`~pptpkit.io.link.PppLink`'s
    ``frame_received``) is attached to the channel itself.  Until it is set, frames wait in a
    :class:`FrameInlet` and are handed over, in order, when it is.

    ``local_address``: send from this address of ours (the one the peer's control connection
    reached), whatever the routing table would pick.  Registers ``(peer_address,
    config.call_id)`` on ``gre_socket`` at once, so packets that
    arrive as soon as the peer learns our call ID are not lost.  Exactly one ``loop.call_at``
    handle is kept armed at the engine's next deadline.  :meth:`close` unregisters and stops the
    timer; GRE still arriving for the call is then counted by the socket as an unknown call.
    """

    __slots__ = (
        '_ancillary', '_closed', '_deadline', '_inlet', '_loop', '_on_frame', '_parts', '_peer',
        '_pktinfo', '_rx_many', '_rx_many_of', '_sock', 'adapter_stats', 'engine', 'local_address',
        'peer_address',
    )

    def __init__(
        self,
        gre_socket: GreSocket,
        peer_address: str,
        config: GreCallConfig,
        *,
        on_frame: Callable[[bytes], object] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        local_address: str | None = None,
    ) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._sock = gre_socket
        self.peer_address = peer_address
        self.local_address = local_address
        self._ancillary: Ancillary | None = (
            None if local_address is None else source_ancillary(local_address))
        # What the compiled GreSocket.send_to takes, prepared once here, not per packet.
        self._peer = int(ipaddress.IPv4Address(peer_address))
        self._pktinfo = None if self._ancillary is None else self._ancillary[0][2]
        # Header and frame handed to the kernel as two parts (no joined copy); a stand-in
        # socket without send_parts gets whole datagrams from the general path.
        self._parts: Callable[[int, bytes, bytes, bytes | None], bool] | None = getattr(
            gre_socket, "send_parts", None)
        self.engine = GreCall(config)
        self.adapter_stats = ChannelStats()
        self._inlet = FrameInlet()
        self._on_frame: Callable[[bytes], object] = self._inlet.deliver
        if on_frame is not None:
            self.sink = on_frame
        self._deadline = Deadline(self._loop, self._on_deadline)
        self._closed = False
        # The batch variant of _on_frame (see batch_receiver), and the receiver it was found for.
        self._rx_many: Callable[[list[bytes]], object] | None = None
        self._rx_many_of: Callable[[bytes], object] | None = None
        # Borrowed views: the engine copies the payload it keeps (one copy per packet, not two).
        gre_socket.register(peer_address, config.call_id, self.receive_packet, borrow=True,
                            batch=self.receive_packets)

    @property
    def stats(self) -> GreStats:
        return self.engine.stats

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def sink(self) -> Callable[[bytes], object] | None:
        """The receiver of PPP frames (None: frames are held until one is set)."""
        return self._inlet.sink

    @sink.setter
    def sink(self, sink: Callable[[bytes], object] | None) -> None:
        inlet = self._inlet
        # First the held frames (the inlet drains them into ``sink``), then the fast path.
        inlet.sink = sink
        self._on_frame = inlet.deliver if sink is None else sink

    @property
    def dropped(self) -> int:
        """Frames lost because nothing received them and the hold queue was full."""
        return self._inlet.dropped

    def send_frame(self, frame: bytes) -> bool:
        """Send one PPP frame (no HDLC); False when it was dropped."""
        if self._closed:
            self.adapter_stats.frames_after_close += 1
            return False
        if len(frame) > MAX_PAYLOAD:
            self.adapter_stats.oversized_frames += 1
            return False
        engine = self.engine
        parts = self._parts
        if parts is not None:
            header = engine.send_header(frame, self._loop.time())
            if header is not None:
                # The per-packet case: the window is open, one datagram goes out now.
                parts(self._peer, header, frame, self._pktinfo)
                if engine.has_datagrams:
                    self._flush()
                else:
                    self._deadline.arm(engine.get_timer())
                return True
        out = engine.send(frame, self._loop.time())
        for datagram in out:
            self._transmit(datagram)
        if engine.has_datagrams:
            self._flush()
        else:
            # The per-packet case: nothing else to send, only the deadline may have moved.
            self._deadline.arm(engine.get_timer())
        return bool(out)

    def send_frames(self, frames: Sequence[bytes]) -> int:
        """:meth:`send_frame` for a batch: the first ``k`` frames the engine can send at once
        (:meth:`~pptpkit.gre.GreCall.send_run`: window open, nothing queued) go out together
        (:meth:`~pptpkit.io.gresock.GreSocket.send_many`: one ``sendmmsg``), each accepted as
        :meth:`send_frame` would; returns ``k``.  ``frames[k:]`` are untouched: the caller
        hands them, in order, to :meth:`send_frame`, which decides (queue, drop, count)."""
        # Looked up per batch, not bound per channel: an idle session keeps no extra object.
        # A stand-in socket without send_many gets the frames one by one.
        many: Callable[[int, int, int, int, Sequence[bytes], bytes | None], int] | None = getattr(
            self._sock, "send_many", None)
        if self._closed or many is None:
            return 0
        engine = self.engine
        k, seq, ack = engine.send_run(frames, self._loop.time())
        if not k:
            return 0
        many(self._peer, engine.config.peer_call_id, seq, ack, frames if k == len(frames) else frames[:k],
             self._pktinfo)
        if engine.has_datagrams:
            self._flush()
        else:
            self._deadline.arm(engine.get_timer())
        return k

    def _transmit(self, datagram: bytes) -> None:
        ancillary = self._ancillary
        if EXT is not None:
            self._sock.send_to(self._peer, datagram, None if ancillary is None else ancillary[0][2])
        elif ancillary is None:
            self._sock.send(self.peer_address, datagram)
        else:
            self._sock.send_from(self.peer_address, datagram, ancillary)

    def receive_packet(self, data: bytes | bytearray | memoryview, now: float) -> None:
        """Process one GRE packet (GRE header on) for this call, as the socket would.

        ``data`` may be a view into a buffer that is reused after the call returns.

        For packets that reached us before the channel existed (the client buffers those while
        the Outgoing-Call-Reply is on its way); ignored once the channel is closed.
        """
        if self._closed:
            return
        engine = self.engine
        payload = engine.receive_next(data, now)
        if payload is not None:
            # The per-packet case: the next in-order data packet, one frame.
            if engine.has_datagrams:
                self._flush()
            else:
                self._deadline.arm(engine.get_timer())
            if not self._closed:
                self._on_frame(payload)
            return
        frames = engine.receive_datagram(data, now)
        if engine.has_datagrams:
            self._flush()
        else:
            self._deadline.arm(engine.get_timer())
        on_frame = self._on_frame
        for frame in frames:
            if self._closed:
                return
            on_frame(frame)

    def receive_packets(self, packets: list[bytes], now: float) -> None:
        """:meth:`receive_packet` for a run of packets of this call, in order (the socket's
        batch handler): the engine takes the in-order prefix in one call
        (:meth:`GreCall.receive_run`), the deadline is armed (or acks flushed) once, and the
        prefix's frames go to the receiver in one call when it has a batch variant
        (:func:`batch_receiver`); the first packet the engine does not take, and every one
        after it, go through :meth:`receive_packet`.

        Versus feeding the packets one by one the state, counters, frames and their order are
        the same; what differs is when: the whole prefix is taken before its first frame is
        delivered, so a frame the layer above sends while handling one (a control reply)
        carries an ack covering the whole prefix rather than only the packets before it.
        """
        if self._closed:
            return
        engine = self.engine
        frames = engine.receive_run(packets, now)
        k = len(frames)
        if k:
            if engine.has_datagrams:
                self._flush()
            else:
                self._deadline.arm(engine.get_timer())
            on_frame = self._on_frame
            if on_frame is not self._rx_many_of:
                self._rx_many_of = on_frame
                self._rx_many = batch_receiver(on_frame)
            many = self._rx_many
            if many is not None:
                if not self._closed:
                    many(frames)
            else:
                for frame in frames:
                    if self._closed:
                        return
                    on_frame(frame)
        if k < len(packets):
            receive = self.receive_packet
            for data in packets[k:]:
                receive(data, now)

    def _flush(self) -> None:
        for datagram in self.engine.datagrams_to_send():
            self._transmit(datagram)
        self._deadline.arm(self.engine.get_timer())

    def _on_deadline(self, now: float) -> None:
        if self._closed:
            return
        frames = self.engine.handle_timer(now)
        self._flush()
        for frame in frames:
            if self._closed:
                return
            self._on_frame(frame)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._deadline.cancel()
        self._sock.unregister(self.peer_address, self.engine.config.call_id)
