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
  :class:`TunDataPlane` gives every link its own TUN interface (``pptpkit%d``: addresses
  local/peer, MTU from the negotiation, up; routes optional); :class:`SharedTunRouter` puts
  every link of a server on one TUN and routes by destination address.

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
own, no event drain when a frame was data.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any, Final, Protocol, runtime_checkable

from pyroute2.netlink.exceptions import NetlinkError

from pptpkit.errors import PptpkitError, StateError
from pptpkit.io.deadline import Deadline
from pptpkit.io.netconfig import NetConfig, NetConfigError
from pptpkit.io.tun import TunDevice
from pptpkit.ppp.session import PppSession
from pptpkit.ppp.session_config import (
    AccmChanged,
    LinkDown,
    LinkUp,
    NetworkDown,
    Outcome,
    SessionConfig,
    SessionEvent,
)

__all__ = [
    "DataPlane",
    "FrameTransport",
    "LinkDownError",
    "LinkInfoSink",
    "LinkStats",
    "PacketSink",
    "PppLink",
    "SharedTunRouter",
    "TunDataPlane",
    "outcome_text",
]

log = logging.getLogger(__name__)

#: Packets from the peer go to this (a TUN's ``write``); its result is ignored.
PacketSink = Callable[[bytes], object]
#: Seconds :meth:`PppLink.aclose` waits by default for the peer's Terminate-Ack.  pppd gives
#: up after its restart timer (3 s) times max-terminate (2); we are shorter because a
#: shutting-down server must not hang on a dead peer.
DEFAULT_CLOSE_TIMEOUT: Final = 3.0
#: Frames kept from a peer that speaks before :meth:`PppLink.start` (a handful of LCP packets).
MAX_EARLY_FRAMES: Final = 16


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


@runtime_checkable
class _AccmSink(Protocol):
    def set_accm(self, accm: int) -> None: ...


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
    ``dropped_no_data_plane``: packets from the peer while no data plane was attached (the
    short window between IPCP up and the TUN being configured, or after a failure);
    ``early_frames_dropped``: frames beyond :data:`MAX_EARLY_FRAMES` that came before
    :meth:`PppLink.start`; ``refused_by_session``: packets the session would not send (link
    not up, MPPE required but off, not IP); ``refused_by_transport``: frames the transport
    dropped (call gone, window queue full).
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


class PppLink:
    """The asyncio adapter of one PPP session (see the module docstring).

    ``config``: the session's :class:`SessionConfig`.  ``transport``: a
    :class:`FrameTransport`.  ``data_plane``: None runs the link without IP forwarding (packets
    from the peer are dropped and counted; useful for tests and for authentication-only runs).
    ``on_event(link, event)``: every session event (see the module docstring for the order).
    ``name``: a label for log lines (e.g. ``"call 5 from 192.0.2.2"``).
    ``close_transport``: hang up the transport when the session ends (True: pppd exits, so
    pptpd clears the call).
    """

    __slots__ = (
        '_attached', '_close_transport', '_data_plane', '_deadline', '_early', '_loop', '_on_event',
        '_plane_chain',
        '_sink', '_started', '_tasks', '_transport', '_up_waiter', 'closed', 'config',
        'down_event', 'interface', 'name', 'session', 'started_at', 'stats', 'up', 'up_at',
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
        self._attached = False
        self._deadline = Deadline(self._loop, self._on_deadline)
        self._started = False
        self._early: list[bytes] | None = None
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
                await asyncio.wait_for(asyncio.shield(self.closed), timeout)
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
            sink = self._sink
            if sink is None:
                self.stats.dropped_no_data_plane += 1
                return
            stats = self.stats
            stats.packets_in += 1
            stats.octets_in += len(packet)
            sink(packet)
            return
        # A control frame (or a dropped one, which may have asked for an MPPE reset): it may
        # have produced frames, events and a new deadline.
        self._pump(now)

    def packet_from_data_plane(self, packet: bytes) -> None:
        """:meth:`send_ip` without a result (the shape of a TUN's packet callback)."""
        self.send_ip(packet)

    def send_ip(self, packet: bytes) -> bool:
        """An IP packet from the data plane towards the peer; False when it was dropped."""
        frame = self.session.send_packet(packet, self._loop.time())
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
            self._chain(self._link_up(event))
            return
        if isinstance(event, LinkDown):
            self.down_event = event
            self._deadline.cancel()
            self._sink = None
            self.up = None
            self._chain(self._link_down(event))
            return
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
        try:
            if isinstance(transport, LinkInfoSink):
                transport.set_link_info(event.send_accm, event.recv_accm)
            elif isinstance(transport, _AccmSink):
                transport.set_accm(event.send_accm)
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
        self.up = up
        if self.up_at is None:
            self.up_at = self._loop.time()
        if not self._up_waiter.done():
            self._up_waiter.set_result(up)
        self._emit(up)

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


# -- data planes -----------------------------------------------------------------------------------


#: Called after a per-link TUN is configured, with (interface name, LinkUp, NetConfig still
#: open): extra routes, firewall hooks.  Whatever it adds with that NetConfig on the
#: interface disappears with the interface.
TunHook = Callable[[str, LinkUp, NetConfig], Awaitable[None]]


class TunDataPlane:
    """A TUN interface per link (pppd's ``pppN`` model).

    On LinkUp: open ``name`` (``%d``: the kernel picks the first free number), put the
    point-to-point address ``local peer PEER/32`` on it, MTU = the link's MTU (the smaller MRU
    less the MPPE overhead) unless ``mtu`` caps it lower, bring it up, add ``routes`` (CIDR
    strings) through it, run ``hook``.  On detach the TUN is closed: the kernel removes the
    interface and with it its addresses and routes, so nothing is left even after a crash.
    One instance may serve any number of links; each gets its own interface.
    """

    def __init__(
        self,
        name: str = "pptpkit%d",
        *,
        routes: Sequence[str] = (),
        mtu: int | None = None,
        hook: TunHook | None = None,
        on_detach: Callable[[str], Awaitable[None]] | None = None,
        max_batch: int = 64,
        offload: bool = True,
    ) -> None:
        self.name = name
        self.routes = tuple(routes)
        self.mtu = mtu
        self.hook = hook
        self.on_detach = on_detach
        self.max_batch = max_batch
        # TUN checksum/TSO offloads and merged writes (pptpkit.io.offload); a kernel without them
        # gives a plain TUN.
        self.offload = offload
        self._tuns: dict[PppLink, TunDevice] = {}

    def tun_of(self, link: PppLink) -> TunDevice | None:
        return self._tuns.get(link)

    async def attach(self, link: PppLink, up: LinkUp) -> PacketSink:
        if up.local_address is None or up.peer_address is None:
            raise NetConfigError("IPCP agreed no address pair")
        tun = TunDevice.open(self.name, offload=self.offload)
        try:
            nc = await NetConfig().open()
            try:
                mtu = up.mtu if self.mtu is None else min(up.mtu, self.mtu)
                await nc.add_ptp_address(tun.name, str(up.local_address), str(up.peer_address))
                await nc.set_link(tun.name, up=True, mtu=mtu)
                for route in self.routes:
                    await nc.add_route(route, dev=tun.name)
                if self.hook is not None:
                    await self.hook(tun.name, up, nc)
            finally:
                # Closed without cleanup on purpose: closing the TUN removes what we added.
                await nc.close()
        except BaseException:
            tun.close()
            raise
        tun.start(link.packet_from_data_plane, loop=link.loop, max_batch=self.max_batch)
        self._tuns[link] = tun
        link.interface = tun.name
        return tun.write

    async def detach(self, link: PppLink) -> None:
        tun = self._tuns.pop(link, None)
        if tun is None:
            return
        name = tun.name
        tun.close()
        if self.on_detach is not None:
            await self.on_detach(name)


class SharedTunRouter:
    """One TUN for every link of a server, routed by the destination address.

    :meth:`open` creates the interface (up, MTU ``mtu``).  Each attached link adds its local
    address to the interface (once per distinct address) and a host route ``peer/32`` through
    it whose route MTU is the link's own, so the kernel sizes packets (and answers with ICMP
    fragmentation-needed) per session even though the interface is shared.  Packets the kernel
    routes into the TUN are dispatched on their IPv4 destination with one dict lookup; IPv6 is
    not routed in this mode (counted in ``unroutable``).  :meth:`close` removes the interface
    and, with it, every address and route.
    """

    def __init__(self, name: str = "pptpkit", *, mtu: int = 1500, max_batch: int = 64,
                 offload: bool = True) -> None:
        if not 68 <= mtu <= 65535:
            raise ValueError(f"bad MTU {mtu}")
        self.name = name
        self.mtu = mtu
        self.max_batch = max_batch
        self.offload = offload
        self.tun: TunDevice | None = None
        self._nc: NetConfig | None = None
        self._routes: dict[bytes, PppLink] = {}
        self._by_link: dict[PppLink, bytes] = {}
        self._locals: set[str] = set()
        self._lock = asyncio.Lock()
        self.unroutable = 0

    @property
    def interface(self) -> str | None:
        return self.tun.name if self.tun is not None else None

    @property
    def links(self) -> int:
        return len(self._by_link)

    async def open(self) -> None:
        if self.tun is not None:
            return
        tun = TunDevice.open(self.name, offload=self.offload)
        try:
            nc = await NetConfig().open()
            try:
                await nc.set_link(tun.name, up=True, mtu=self.mtu)
            except BaseException:
                await nc.close()
                raise
        except BaseException:
            tun.close()
            raise
        self._nc = nc
        self.tun = tun
        tun.start(self._dispatch, max_batch=self.max_batch)

    def _dispatch(self, packet: bytes) -> None:
        # A TUN read is never empty, but a short or non-IPv4 packet must not raise here.
        link = self._routes.get(packet[16:20]) if len(packet) >= 20 and packet[0] >> 4 == 4 else None
        if link is None:
            self.unroutable += 1
            return
        link.send_ip(packet)

    async def attach(self, link: PppLink, up: LinkUp) -> PacketSink:
        tun, nc = self.tun, self._nc
        if tun is None or nc is None:
            raise NetConfigError("the shared TUN is not open")
        if up.local_address is None or up.peer_address is None:
            raise NetConfigError("IPCP agreed no address pair")
        key = up.peer_address.packed
        async with self._lock:
            owner = self._routes.get(key)
            if owner is not None and owner is not link:
                raise NetConfigError(f"{up.peer_address} is already in use by {owner.name}")
            local = str(up.local_address)
            if local not in self._locals:
                await _add_local_address(nc, tun.name, local)
                self._locals.add(local)
            await _add_host_route(nc, tun.name, up.peer_address, local, up.mtu)
            self._routes[key] = link
            self._by_link[link] = key
        link.interface = tun.name
        return tun.write

    async def detach(self, link: PppLink) -> None:
        key = self._by_link.pop(link, None)
        if key is None:
            return
        if self._routes.get(key) is link:
            del self._routes[key]
        nc, tun = self._nc, self.tun
        if nc is None or tun is None:
            return
        async with self._lock:
            with contextlib.suppress(NetConfigError):
                await _del_host_route(nc, tun.name, IPv4Address(key))

    async def close(self) -> None:
        self._routes.clear()
        self._by_link.clear()
        self._locals.clear()
        if self.tun is not None:
            self.tun.close()
            self.tun = None
        if self._nc is not None:
            await self._nc.close()
            self._nc = None


async def _add_local_address(nc: NetConfig, ifname: str, local: str) -> None:
    index = await nc.link_index(ifname)
    try:
        await nc.ipr.addr("add", index=index, address=local, prefixlen=32)
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise NetConfigError(f"add address {local} on {ifname}: {exc}", errno_=exc.code) from exc


async def _add_host_route(nc: NetConfig, ifname: str, peer: IPv4Address, local: str, mtu: int) -> None:
    index = await nc.link_index(ifname)
    try:
        await nc.ipr.route("replace", dst=str(peer), dst_len=32, oif=index, prefsrc=local,
                           metrics={"mtu": mtu})
    except NetlinkError as exc:
        raise NetConfigError(f"add route {peer}/32 dev {ifname}: {exc}", errno_=exc.code) from exc


async def _del_host_route(nc: NetConfig, ifname: str, peer: IPv4Address) -> None:
    index = await nc.link_index(ifname)
    try:
        await nc.ipr.route("del", dst=str(peer), dst_len=32, oif=index)
    except NetlinkError as exc:
        raise NetConfigError(f"delete route {peer}/32: {exc}", errno_=exc.code) from exc


def outcome_text(down: LinkDown) -> str:
    """A short human description of how a link ended, for log lines."""
    if down.outcome is Outcome.LOCAL_CLOSE:
        return f"closed locally ({down.reason})"
    return f"{down.outcome.value}: {down.reason}"
