"""One PPP session on asyncio: frames from a transport <-> :class:`PppSession` <-> IP packets.

:class:`PppLink` is the adapter around the sans-IO :class:`~pptpkit.ppp.session.PppSession`
(docs/engine-api.md).  It owns nothing but the session and one timer; the two ends are plugged
in:

* a **frame transport** (:class:`FrameTransport`): anything with ``send_frame(frame) -> bool``
  and ``close()``.  A :class:`~pptpkit.pptp.client.PptpCall` fits as is; so does an
  :class:`~pptpkit.io.hdlcstream.HdlcStreamBridge` (HDLC on a pty or stdin).  The owner wires the
  transport's frame callback to :meth:`PppLink.frame_received` and its end to
  :meth:`PppLink.lower_down`.  A transport that also has ``set_link_info(send_accm,
  receive_accm)`` (:class:`LinkInfoSink`) is told the ACCMs LCP agreed (PPTP Set-Link-Info);
  one with ``set_accm(accm)`` (the HDLC bridge) gets the transmit ACCM.
* a **data plane** (:class:`DataPlane`): where IP packets go once IPCP is up.
  :class:`~pptpkit.io.dataplane.TunDataPlane` gives every link its own TUN interface
  (``pptpkit%d``: addresses local/peer, MTU from the negotiation, up; routes optional);
  :class:`~pptpkit.io.dataplane.SharedTunRouter` puts every link of a server on one TUN and
  routes by destination address.  The link itself touches no kernel configuration.

Typical use (client)::

    call = await client.open_call()
    link = PppLink(session_config, call, TunDataPlane(routes=("203.0.113.0/24",)),
                   on_event=lambda link, ev: print(ev))
    call.on_frame = link.frame_received
    call.on_close = lambda info: link.lower_down(info.reason)
    link.start()                       # LCP Configure-Request goes out
    up = await link.wait_up()          # LinkUp (TUN configured), or LinkDownError
    ...
    down = await link.aclose()         # LCP Terminate, TUN removed, transport closed
    down.outcome, down.exit_status     # also: await link.closed

Events: every :class:`~pptpkit.ppp.session_config.SessionEvent` goes to ``on_event(link,
event)`` in order, except that :class:`LinkUp` is passed on only once the data plane is
configured (so :attr:`PppLink.interface` is known), and :class:`LinkDown` only after the data
plane was detached and the transport closed; :attr:`PppLink.closed` then resolves with that
:class:`LinkDown`.  A link that cannot configure its data plane closes the session with
reason ``"data plane failed: ..."``.

Per-packet path: peer -> ``frame_received`` -> ``session.receive_frame`` -> the data plane's
sink (for a TUN, ``os.write`` of the very bytes object the session returned); TUN ->
``send_ip`` -> ``session.send_packet`` -> ``transport.send_frame``.  No queue, no copy of our
own, no event drain when a frame was data.  A TUN read of several packets (a TSO super-segment
cut into segments) takes the batch path instead: ``send_ips`` -> ``session.send_packets`` (one
MPPE call for the batch) -> ``transport.send_frames`` (one ``sendmmsg``), with the same result
as the packets one by one.

The receive direction has its batch path too: a transport with runs of frames (a GRE channel,
one ``recvmmsg``'s datagrams of the call) calls ``frames_received``: ``session.receive_frames``
opens the run's stateless-MPPE prefix in one compiled call and its packets go to the sink's
batch variant (:func:`batch_sink`: a TUN's ``write_many``) in one call; whatever the prefix
stops at goes through ``frame_received``.  Same packets, order and counters as frame by frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Final, Protocol, runtime_checkable

from pptpkit.auth.base import ExternalVerdict
from pptpkit.errors import PptpkitError, StateError
from pptpkit.io.deadline import Deadline
from pptpkit.io.ratelimit import TokenBucket
from pptpkit.ppp.session import PppSession
from pptpkit.ppp.session_config import (
    AccmChanged,
    Ipv6Up,
    LinkDown,
    LinkUp,
    NetworkDown,
    Outcome,
    SessionConfig,
    SessionEvent,
)
from pptpkit.speedups import EXT

__all__ = [
    "DataPlane",
    "FrameTransport",
    "LinkDownError",
    "LinkInfoSink",
    "LinkStats",
    "PacketBatchSink",
    "PacketSink",
    "PppLink",
    "batch_sink",
    "ipv4_from",
    "link_local_bytes",
    "outcome_text",
]

log = logging.getLogger(__name__)

#: Packets from the peer go to this (a TUN's ``write``); its result is ignored.
PacketSink = Callable[[bytes], object]
#: The batch variant: a run of packets from the peer, in order (a TUN's ``write_many``).
PacketBatchSink = Callable[[list[bytes]], object]
#: Seconds :meth:`PppLink.aclose` waits by default for the peer's Terminate-Ack.  pppd gives
#: up after its restart timer (3 s) times max-terminate (2); we are shorter because a
#: shutting-down server must not hang on a dead peer.
DEFAULT_CLOSE_TIMEOUT: Final = 3.0
#: Frames kept from a peer that speaks before :meth:`PppLink.start` (a handful of LCP packets).
MAX_EARLY_FRAMES: Final = 16
#: IP packets from the peer held while the data plane is being attached (LinkUp until the TUN
#: is configured: a few milliseconds, longer with netlink on a thread or many setups at once).
MAX_HELD_PACKETS: Final = 32


class FrameTransport(Protocol):
    """What carries the PPP frames (a PPTP call, an HDLC stream)."""

    def send_frame(self, frame: bytes) -> bool:
        """Send one PPP frame (no HDLC, no GRE); False when it was dropped."""
        ...

    def close(self) -> object:
        """Hang up.  May return an awaitable (PptpCall.close is a coroutine); it is awaited."""
        ...


@runtime_checkable
class LinkInfoSink(Protocol):
    """A transport that can forward the agreed ACCMs (PPTP Set-Link-Info, RFC 2637 2.15)."""

    def set_link_info(self, send_accm: int, receive_accm: int) -> None: ...


class DataPlane(Protocol):
    """Where a link's IP packets go once it is up.

    ``attach`` configures what the link needs (interface, addresses, MTU, routes), arranges
    for packets towards the peer to reach :meth:`PppLink.send_ip`, sets
    :attr:`PppLink.interface`, and returns the sink for packets from the peer.  It may be
    called again after a renegotiation (a second LinkUp); ``detach`` undoes it and is called
    once per successful attach.
    """

    async def attach(self, link: PppLink, up: LinkUp) -> PacketSink: ...

    async def detach(self, link: PppLink) -> None: ...


class LinkDownError(PptpkitError):
    """The link ended before it came up; ``down`` is its :class:`LinkDown`."""

    def __init__(self, down: LinkDown) -> None:
        super().__init__(f"link down before it came up: {down.outcome.value}: {down.reason}")
        self.down = down


@dataclass(slots=True)
class LinkStats:
    """Adapter counters, next to ``link.session.stats`` (the engine's).

    ``packets_in``/``octets_in``: IP packets from the peer handed to the data plane;
    ``packets_out``/``octets_out``: IP packets from the data plane accepted by the transport.
    ``dropped_no_data_plane``: packets from the peer while no data plane was attached (after a
    failure, or beyond :data:`MAX_HELD_PACKETS` while the TUN was being configured after IPCP
    came up: those are held and delivered once it is);
    ``early_frames_dropped``: frames beyond :data:`MAX_EARLY_FRAMES` that came before
    :meth:`PppLink.start`; ``refused_by_session``: packets the session would not send (link
    not up, MPPE required but off, not IP); ``refused_by_transport``: frames the transport
    dropped (call gone, window queue full).  ``source_refused``: packets from the peer with a
    source address it was not given (``source_check``).
    """

    packets_in: int = 0
    octets_in: int = 0
    packets_out: int = 0
    octets_out: int = 0
    dropped_no_data_plane: int = 0
    refused_by_session: int = 0
    refused_by_transport: int = 0
    control_frames_refused: int = 0
    early_frames_dropped: int = 0
    source_refused: int = 0


class PppLink:
    """The asyncio adapter of one PPP session (see the module docstring).

    ``config``: the session's :class:`SessionConfig`.  ``transport``: a
    :class:`FrameTransport`.  ``data_plane``: None runs the link without IP forwarding (packets
    from the peer are dropped and counted; useful for tests and for authentication-only runs).
    ``on_event(link, event)``: every session event (see the module docstring for the order).
    ``name``: a label for log lines (e.g. ``"call 5 from 192.0.2.2"``).
    ``close_transport``: hang up the transport when the session ends (True: pppd exits, so
    pptpd clears the call).  ``source_check`` (servers): drop and count every packet from the
    peer whose source is not the address it was given (IPv4), or its link-local address from
    the negotiated interface identifier (IPv6), so a user cannot send as another user.
    """

    __slots__ = (
        '_attached', '_close_transport', '_data_plane', '_deadline', '_early', '_held', '_loop', '_many',
        '_many_of', '_on_event',
        '_plane_chain', '_police_in', '_police_out', '_prefix6', '_sink', '_source_check', '_src4',
        '_src6', '_started', '_tasks', '_transport',
        '_up_waiter', 'closed', 'config', 'down_event', 'interface', 'name', 'plane_lost', 'session',
        'started_at', 'stats', 'up', 'up_at',
    )

    def __init__(
        self,
        config: SessionConfig,
        transport: FrameTransport,
        data_plane: DataPlane | None = None,
        *,
        on_event: Callable[[PppLink, SessionEvent], None] | None = None,
        name: str = "",
        close_transport: bool = True,
        source_check: bool = False,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self.config = config
        self.name = name or "ppp"
        self.session = PppSession(config, self._loop.time())
        self.stats = LinkStats()
        self._transport = transport
        self._data_plane = data_plane
        self._on_event = on_event
        self._close_transport = close_transport
        self._sink: PacketSink | None = None
        self._source_check = source_check
        # The batch variant of _sink (see batch_sink), and the sink it was found for.
        self._many: PacketBatchSink | None = None
        self._many_of: PacketSink | None = None
        # The sources the peer may use, once known (b"": none allowed yet); None = unchecked.
        self._src4: bytes | None = b"" if source_check else None
        self._src6: bytes | None = None
        self._prefix6: bytes | None = None
        # Rate limits kept in our own path (shared TUN); None: none, and one test per packet.
        self._police_in: TokenBucket | None = None
        self._police_out: TokenBucket | None = None
        self._attached = False
        self._deadline = Deadline(self._loop, self._on_deadline)
        self._started = False
        self._early: list[bytes] | None = None
        #: Packets from the peer while the data plane is attached (None: not attaching).
        self._held: list[bytes] | None = None
        # Created with the first data-plane task: most of a link's life has none running.
        self._tasks: set[asyncio.Task[None]] | None = None
        # Data-plane changes run one after the other, in event order (up, down, up, end).
        self._plane_chain: asyncio.Future[None] | None = None
        self.closed: asyncio.Future[LinkDown] = self._loop.create_future()
        """Resolves with the final :class:`LinkDown` once everything is released."""
        self._up_waiter: asyncio.Future[LinkUp] = self._loop.create_future()
        self.up: LinkUp | None = None
        """The current :class:`LinkUp` (None before, and again after a NetworkDown)."""
        self.interface: str | None = None
        """Set by the data plane: the interface carrying this link's packets."""
        self.started_at: float | None = None
        self.up_at: float | None = None
        self.down_event: LinkDown | None = None
        self.plane_lost: str | None = None
        """Set by :meth:`data_plane_lost`: why the data plane went away under the link."""

    # -- control ---------------------------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def transport(self) -> FrameTransport:
        return self._transport

    @property
    def finished(self) -> bool:
        """True once the session ended (teardown may still be running; see :attr:`closed`)."""
        return self.session.finished

    def start(self) -> None:
        """The transport is up: open the session (our LCP Configure-Request goes out)."""
        if self._started:
            raise StateError("PppLink.start() called twice")
        self._started = True
        now = self._loop.time()
        self.started_at = now
        self.session.open(now)
        self._pump(now)
        early, self._early = self._early, None
        for frame in early or ():
            self.frame_received(frame)

    def close(self, reason: str = "User request") -> None:
        """Ask the session to end: LCP Terminate-Request with ``reason``; non-blocking."""
        now = self._loop.time()
        if not self._started:
            self._started = True
            self.started_at = now
            self._early = None
        self.session.close(now, reason)
        self._pump(now)

    def data_plane_lost(self, reason: str) -> None:
        """The data plane is gone under the link (its interface was deleted): packets have
        nowhere to go, so the session ends (LCP Terminate-Request with ``reason``), once."""
        if self.plane_lost is not None or self.session.finished:
            return
        self.plane_lost = reason
        self._sink = None
        log.warning("%s: %s; ending the session", self.name, reason)
        self.close(reason)

    def set_idle_timeout(self, seconds: float) -> None:
        """Seconds without data before the session ends (0: never), for this link only."""
        self.session.idle_timeout = seconds
        self._deadline.arm(self.session.get_timer())

    def complete_verification(self, verdict: ExternalVerdict) -> None:
        """The outside verdict (RADIUS) on the credentials a
        :class:`~pptpkit.ppp.session_config.VerificationNeeded` event carried."""
        now = self._loop.time()
        self.session.complete_verification(verdict, now)
        self._pump(now)

    def lower_down(self, reason: str = "") -> None:
        """The transport is gone (call cleared, stream closed): end the session now."""
        if reason:
            log.debug("%s: lower layer down: %s", self.name, reason)
        now = self._loop.time()
        self._started = True
        self._early = None
        self.session.lower_down(now)
        self._pump(now)

    async def aclose(self, reason: str = "User request", timeout: float = DEFAULT_CLOSE_TIMEOUT) -> LinkDown:
        """:meth:`close`, wait up to ``timeout`` for the peer's Terminate-Ack, then cut the
        lower layer; returns the final :class:`LinkDown` once everything is released."""
        if not self.session.finished:
            self.close(reason)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await asyncio.shield(self.closed)
            if not self.session.finished:
                self.lower_down("no Terminate-Ack")
        return await asyncio.shield(self.closed)

    async def wait_up(self) -> LinkUp:
        """The first :class:`LinkUp` (data plane configured); :class:`LinkDownError` if the
        session ends first."""
        waiter: asyncio.Future[Any] = asyncio.ensure_future(asyncio.shield(self._up_waiter))
        closed: asyncio.Future[Any] = asyncio.ensure_future(asyncio.shield(self.closed))
        try:
            await asyncio.wait({waiter, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            closed.cancel()
        if self._up_waiter.done():
            return self._up_waiter.result()
        raise LinkDownError(self.closed.result())

    # -- per-packet path ---------------------------------------------------------------------------

    def frame_received(self, frame: bytes) -> None:
        """A PPP frame from the transport (held until :meth:`start` if it comes first)."""
        if not self._started:
            # The peer may speak first, between the call coming up and start(): LCP in its
            # Initial state would drop the frame and the peer would retransmit only after
            # its restart timer (3 s).  start() hands these over.
            early = self._early
            if early is None:
                early = self._early = []
            if len(early) < MAX_EARLY_FRAMES:
                early.append(bytes(frame))
            else:
                self.stats.early_frames_dropped += 1
            return
        now = self._loop.time()
        packet = self.session.receive_frame(frame, now)
        if packet is not None:
            self._deliver(packet, now)
            return
        # A control frame (or a dropped one, which may have asked for an MPPE reset): it may
        # have produced frames, events and a new deadline.
        self._pump(now)

    def _deliver(self, packet: bytes, now: float) -> None:
        sink = self._sink
        if sink is None:
            held = self._held
            if held is not None and len(held) < MAX_HELD_PACKETS:
                held.append(packet)
            else:
                self.stats.dropped_no_data_plane += 1
            return
        src4 = self._src4
        if src4 is not None and (len(packet) < 20 or (packet[12:16] != src4 if packet[0] >> 4 == 4
                                                      else not self._ipv6_source_ok(packet))):
            self._refuse_source(packet)
            return
        police = self._police_in
        if police is not None and not police.allow(len(packet), now):
            return
        stats = self.stats
        stats.packets_in += 1
        stats.octets_in += len(packet)
        sink(packet)

    def frames_received(self, frames: list[bytes]) -> None:
        """:meth:`frame_received` for a run of frames (a transport's batch, in order): the
        session opens the run's common case in one call (:meth:`PppSession.receive_frames`) and
        its packets go to the data plane in one call; the frame it cannot take goes through
        :meth:`frame_received`, then the batch path resumes after it.  Same result, counters
        and order as feeding the frames one by one."""
        if not self._started:
            for frame in frames:
                self.frame_received(frame)
            return
        receive = self.session.receive_frames
        now = self._loop.time()
        rest = frames
        missed = False
        while rest:
            packets, taken = receive(rest, now)
            if packets:
                self._deliver_many(packets, now)
            if taken >= len(rest):
                return
            if not taken and missed:
                # Twice in a row nothing for the batch path (stateful or no MPPE, or a run of
                # control frames): the rest one by one, not a retry per frame.
                for frame in rest:
                    self.frame_received(frame)
                return
            missed = not taken
            self.frame_received(rest[taken])
            rest = rest[taken + 1:]

    def _deliver_many(self, packets: list[bytes], now: float) -> None:
        """:meth:`_deliver` of each packet, in one data-plane call when nothing has to be
        decided per packet (a sink with a batch variant, no policer, sources as expected)."""
        sink = self._sink
        if sink is None or self._police_in is not None:
            for packet in packets:
                self._deliver(packet, now)
            return
        if sink is not self._many_of:
            self._many_of = sink
            self._many = batch_sink(sink)
        many = self._many
        src4 = self._src4
        # b"" (no IPv4 source allowed yet) is refused packet by packet, as _deliver does.
        if many is None or (src4 is not None and (len(src4) != 4 or not _ipv4_from(packets, src4))):
            for packet in packets:
                self._deliver(packet, now)
            return
        stats = self.stats
        stats.packets_in += len(packets)
        stats.octets_in += sum(map(len, packets))
        many(packets)

    def _ipv6_source_ok(self, packet: bytes) -> bool:
        """The client's link-local address, or any address of the /64 routed to it."""
        if len(packet) < 40:
            return False
        return packet[8:24] == self._src6 or (self._prefix6 is not None and packet[8:16] == self._prefix6)

    def allow_ipv6_prefix(self, prefix: bytes | None) -> None:
        """Also accept sources from the /64 whose first 8 octets are ``prefix`` (a prefix routed
        to this client, ``--ipv6-prefix``)."""
        self._prefix6 = prefix

    def _refuse_source(self, packet: bytes) -> None:
        stats = self.stats
        stats.source_refused += 1
        if stats.source_refused == 1:
            # Once per session: the count says the rest, and a spoofing peer must not be able
            # to flood the log.
            log.warning("%s: dropping packets whose source is not the peer's address (first: "
                        "%s); counted in source_refused", self.name, _source_text(packet))

    def packet_from_data_plane(self, packet: bytes) -> None:
        """:meth:`send_ip` without a result (the shape of a TUN's packet callback)."""
        self.send_ip(packet)

    def set_policers(self, down: TokenBucket | None, up: TokenBucket | None) -> None:
        """Rate limits in the link's own path (the shared TUN's shaper): ``down`` polices the
        packets towards the peer, ``up`` those from it; None lifts a limit.  Packets over a
        limit are dropped before they are encrypted or written, counted in the bucket."""
        self._police_out = down
        self._police_in = up

    @property
    def policers(self) -> tuple[TokenBucket | None, TokenBucket | None]:
        """(down, up) as :meth:`set_policers` set them."""
        return self._police_out, self._police_in

    def send_ip(self, packet: bytes) -> bool:
        """An IP packet from the data plane towards the peer; False when it was dropped."""
        now = self._loop.time()
        police = self._police_out
        if police is not None and not police.allow(len(packet), now):
            return False
        frame = self.session.send_packet(packet, now)
        if frame is None:
            self.stats.refused_by_session += 1
            return False
        if not self._transport.send_frame(frame):
            self.stats.refused_by_transport += 1
            return False
        stats = self.stats
        stats.packets_out += 1
        stats.octets_out += len(packet)
        return True

    def send_ips(self, packets: Sequence[bytes]) -> int:
        """:meth:`send_ip` of each packet in turn (the segments of one TUN read), with the same
        frames on the wire and the same counters; returns how many were accepted.  The session
        seals the whole batch (:meth:`PppSession.send_packets`) and a transport with
        ``send_frames`` (a PPTP call: one ``sendmmsg``) sends what it can at once; the frames
        it leaves go through ``send_frame`` one by one.  A policed link (shared TUN shaper)
        takes the packets one by one: each packet's verdict depends on the time it is seen."""
        if self._police_out is not None or len(packets) == 1:
            # A read of one packet (an ACK, a plain TUN) costs less through send_ip.
            send_ip = self.send_ip
            return sum([send_ip(packet) for packet in packets])
        session = self.session
        sstats = session.stats
        before = sstats.tx_packet_octets
        frames = session.send_packets(packets, self._loop.time())
        stats = self.stats
        if len(frames) != len(packets):
            stats.refused_by_session += len(packets) - len(frames)
            if not frames:
                return 0
        octets = sstats.tx_packet_octets - before
        transport = self._transport
        send_frames = getattr(transport, "send_frames", None)
        accepted = send_frames(frames) if send_frames is not None else 0
        if accepted < len(frames):
            # The transport's common case ended (window full, call gone): the rest one by one,
            # as send_ip would, each refusal counted with its packet's octets taken back.
            send_frame = transport.send_frame
            overhead = session.tx_overhead
            for frame in frames[accepted:]:
                if send_frame(frame):
                    accepted += 1
                else:
                    stats.refused_by_transport += 1
                    octets -= len(frame) - overhead
        stats.packets_out += accepted
        stats.octets_out += octets
        return accepted

    # -- engine plumbing ---------------------------------------------------------------------------

    def _pump(self, now: float) -> None:
        session = self.session
        for frame in session.frames_to_send():
            if not self._transport.send_frame(frame):
                self.stats.control_frames_refused += 1
        while (event := session.next_event()) is not None:
            self._handle_event(event)
        self._deadline.arm(session.get_timer())

    def _on_deadline(self, now: float) -> None:
        self.session.handle_timer(now)
        self._pump(now)

    def _handle_event(self, event: SessionEvent) -> None:
        if isinstance(event, LinkUp):
            if self._data_plane is not None and self._sink is None and self._held is None:
                # The peer is up now and may send at once, while the data plane is still being
                # configured: its first packets are held for it, not dropped.
                self._held = []
            self._chain(self._link_up(event))
            return
        if isinstance(event, LinkDown):
            self.down_event = event
            self._deadline.cancel()
            self._sink = None
            self._held = None
            self.up = None
            self._chain(self._link_down(event))
            return
        if isinstance(event, Ipv6Up):
            if self._source_check:
                self._src6 = link_local_bytes(event.peer_id)
            self._chain(self._ipv6_up(event))
        if isinstance(event, NetworkDown):
            # The session drops data until the next LinkUp; the interface stays so that
            # routes and sockets survive a renegotiation, as with pppd's persistent unit.
            self.up = None
        elif isinstance(event, AccmChanged):
            self._accm_changed(event)
        self._emit(event)

    def _emit(self, event: SessionEvent) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(self, event)
        except Exception:
            log.exception("%s: event handler failed on %s", self.name, type(event).__name__)

    def _accm_changed(self, event: AccmChanged) -> None:
        transport: Any = self._transport
        # The same test isinstance() makes against the runtime-checkable protocols (is the
        # method there), without typing's protocol machinery, which costs more than the call.
        set_link_info = getattr(transport, "set_link_info", None)
        set_accm = getattr(transport, "set_accm", None)
        try:
            if set_link_info is not None:
                set_link_info(event.send_accm, event.recv_accm)
            elif set_accm is not None:
                set_accm(event.send_accm)
        except (PptpkitError, ValueError) as exc:
            log.debug("%s: cannot pass the ACCM on: %s", self.name, exc)

    def _chain(self, coro: Awaitable[None]) -> None:
        previous = self._plane_chain

        async def run() -> None:
            if previous is not None:
                with contextlib.suppress(Exception):
                    await previous
            await coro

        task = asyncio.ensure_future(run())
        self._plane_chain = task
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if self._tasks is not None:
            self._tasks.discard(task)
            if not self._tasks:
                self._tasks = None
        if self._plane_chain is task:
            # Nothing left to wait for; a finished task kept per link would be dead weight.
            self._plane_chain = None
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: data plane task failed", self.name, exc_info=task.exception())

    async def _link_up(self, up: LinkUp) -> None:
        if self.session.finished:
            return
        plane = self._data_plane
        if plane is not None:
            if self._attached:
                await self._detach()
            try:
                sink = await plane.attach(self, up)
            except (PptpkitError, OSError, ValueError) as exc:
                log.warning("%s: cannot configure the data plane: %s", self.name, exc)
                self.close(f"data plane failed: {exc}")
                return
            self._attached = True
            if self.session.finished:
                await self._detach()
                return
            self._sink = sink
        if self._source_check:
            self._src4 = up.peer_address.packed if up.peer_address is not None else b""
            if up.peer_ipv6_id is not None:
                self._src6 = link_local_bytes(up.peer_ipv6_id)
        self.up = up
        held, self._held = self._held, None
        if held and self._sink is not None:
            now = self._loop.time()
            for packet in held:
                self._deliver(packet, now)
        if self.up_at is None:
            self.up_at = self._loop.time()
        if not self._up_waiter.done():
            self._up_waiter.set_result(up)
        self._emit(up)

    async def _ipv6_up(self, event: Ipv6Up) -> None:
        """After the data plane is attached (chained behind it): IPv6 addresses for it, if the
        plane has a notion of them and IPCP did not already bring both identifiers."""
        handler = getattr(self._data_plane, "ipv6_up", None)
        if (handler is None or not self._attached or event.local_id is None or event.peer_id is None
                or (self.up is not None and self.up.peer_ipv6_id is not None)):
            return
        try:
            await handler(self, event.local_id, event.peer_id)
        except (PptpkitError, OSError) as exc:
            log.warning("%s: IPv6 addresses not configured: %s", self.name, exc)

    async def _detach(self) -> None:
        self._sink = None
        if not self._attached or self._data_plane is None:
            return
        self._attached = False
        try:
            await self._data_plane.detach(self)
        except (PptpkitError, OSError) as exc:
            log.warning("%s: data plane cleanup failed: %s", self.name, exc)

    async def _link_down(self, down: LinkDown) -> None:
        await self._detach()
        if self._close_transport:
            try:
                result = self._transport.close()
                if inspect.isawaitable(result):
                    await result
            except (PptpkitError, OSError) as exc:
                log.debug("%s: closing the transport: %s", self.name, exc)
        self._emit(down)
        if not self.closed.done():
            self.closed.set_result(down)


def ipv4_from(packets: list[bytes], source: bytes) -> bool:
    """Whether every packet is IPv4 (version 4, a whole 20-octet header) from ``source`` (4
    octets): the source check of a run, which :meth:`PppLink._deliver` makes per packet.  The
    compiled ``ipv4_from`` (:mod:`pptpkit.speedups`) is its twin."""
    if len(source) != 4:
        raise ValueError("ipv4_from: source must be 4 octets")
    return all(len(p) >= 20 and p[0] >> 4 == 4 and p[12:16] == source for p in packets)


_ipv4_from: Callable[[list[bytes], bytes], bool] = EXT.ipv4_from if EXT is not None else ipv4_from


def batch_sink(sink: PacketSink) -> PacketBatchSink | None:
    """The batch variant of a data plane's sink, or None: a sink that is the ``write`` of an
    object that also has ``write_many(packets)`` (a :class:`~pptpkit.io.tun.TunDevice`) is fed
    whole runs through it.  Found by looking, so that every data plane that returns its TUN's
    ``write`` gets it and every other sink (the pppd bridge, the bench agents' planes) keeps
    its per-packet calls unchanged."""
    owner = getattr(sink, "__self__", None)
    if owner is None or sink != getattr(owner, "write", None):
        return None
    many: PacketBatchSink | None = getattr(owner, "write_many", None)
    return many


def link_local_bytes(interface_id: bytes | None) -> bytes | None:
    """fe80::/64 with the negotiated interface identifier (RFC 5072 section 5)."""
    if interface_id is None or len(interface_id) != 8:
        return None
    return b"\xfe\x80" + bytes(6) + interface_id


def _source_text(packet: bytes) -> str:
    try:
        if packet[0] >> 4 == 4:
            return str(IPv4Address(packet[12:16]))
        return str(IPv6Address(packet[8:24]))
    except (ValueError, IndexError):
        return "a malformed packet"


def outcome_text(down: LinkDown) -> str:
    """A short human description of how a link ended, for log lines."""
    if down.outcome is Outcome.LOCAL_CLOSE:
        return f"closed locally ({down.reason})"
    return f"{down.outcome.value}: {down.reason}"
