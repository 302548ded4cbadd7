"""The asyncio UDP adapter of the RADIUS client engine (:mod:`pptpkit.radius.client`).

One unconnected UDP socket for every configured server (the engine checks each answer's
source), one timer (:class:`~pptpkit.io.deadline.Deadline`), one future per request.  Callers
``await`` :meth:`RadiusUdpClient.access_request` / ``accounting_request`` and get the engine's
answer event or :class:`~pptpkit.radius.client.RequestTimedOut`; server up/down events go to an
optional callback (the log line of an outage).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Sequence

from pptpkit.io.deadline import Deadline
from pptpkit.radius.client import (
    AccessAccepted,
    AccessChallenged,
    AccessRejected,
    AccountingResponded,
    AttributeSpec,
    RadiusClient,
    RadiusClientConfig,
    RequestTimedOut,
    ServerDown,
    ServerUp,
    StatusServerAnswered,
)
from pptpkit.radius.packet import MAX_PACKET_SIZE

__all__ = ["AccessAnswer", "RadiusUdpClient"]

AccessAnswer = AccessAccepted | AccessRejected | AccessChallenged | RequestTimedOut
_Answer = AccessAnswer | AccountingResponded | StatusServerAnswered


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: RadiusUdpClient) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._owner.datagram_received(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the retransmission timer handles it.
        pass


class RadiusUdpClient:
    """Drives a :class:`RadiusClient` on asyncio.  Create with :meth:`open`."""

    def __init__(self, engine: RadiusClient, loop: asyncio.AbstractEventLoop,
                 on_server_event: Callable[[ServerDown | ServerUp], None] | None = None) -> None:
        self.engine = engine
        self._loop = loop
        self._on_server_event = on_server_event
        self._transport: asyncio.DatagramTransport | None = None
        self._deadline = Deadline(loop, self._timer)
        self._waiters: dict[int, asyncio.Future[_Answer]] = {}

    @classmethod
    async def open(cls, config: RadiusClientConfig, *, bind: tuple[str, int] | None = None,
                   on_server_event: Callable[[ServerDown | ServerUp], None] | None = None,
                   ) -> RadiusUdpClient:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in config.servers[0].address else socket.AF_INET
        self = cls(RadiusClient(config), loop, on_server_event)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind(bind or (("::" if family == socket.AF_INET6 else "0.0.0.0"), 0))
            transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=sock)
        except BaseException:
            sock.close()
            raise
        self._transport = transport
        return self

    @property
    def local_address(self) -> tuple[str, int]:
        assert self._transport is not None
        name = self._transport.get_extra_info("sockname")
        return (str(name[0]), int(name[1]))

    def close(self) -> None:
        self._deadline.cancel()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        for fut in self._waiters.values():
            if not fut.done():
                fut.cancel()
        self._waiters.clear()

    async def access_request(self, attributes: Sequence[AttributeSpec]) -> AccessAnswer:
        rid = self.engine.send_access_request(attributes, self._loop.time())
        answer = await self._wait(rid)
        assert not isinstance(answer, AccountingResponded | StatusServerAnswered)
        return answer

    async def accounting_request(self, attributes: Sequence[AttributeSpec]
                                 ) -> AccountingResponded | RequestTimedOut:
        rid = self.engine.send_accounting_request(attributes, self._loop.time())
        answer = await self._wait(rid)
        assert isinstance(answer, AccountingResponded | RequestTimedOut)
        return answer

    async def status_server(self, server_index: int) -> StatusServerAnswered | RequestTimedOut:
        rid = self.engine.send_status_server(server_index, self._loop.time())
        answer = await self._wait(rid)
        assert isinstance(answer, StatusServerAnswered | RequestTimedOut)
        return answer

    async def _wait(self, rid: int) -> _Answer:
        fut: asyncio.Future[_Answer] = self._loop.create_future()
        self._waiters[rid] = fut
        self._pump()
        try:
            return await fut
        finally:
            # Still registered: no answer came (the caller was cancelled); free the Identifier.
            if self._waiters.pop(rid, None) is not None:
                self.engine.cancel(rid, self._loop.time())
                self._pump()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) > MAX_PACKET_SIZE:
            data = data[:MAX_PACKET_SIZE]
        self.engine.receive_datagram(data, addr, self._loop.time())
        self._pump()

    def _timer(self, now: float) -> None:
        self.engine.handle_timer(now)
        self._pump()

    def _pump(self) -> None:
        transport = self._transport
        for data, endpoint in self.engine.datagrams_to_send():
            if transport is not None:
                transport.sendto(data, endpoint)
        while (event := self.engine.next_event()) is not None:
            if isinstance(event, ServerDown | ServerUp):
                if self._on_server_event is not None:
                    self._on_server_event(event)
                continue
            fut = self._waiters.pop(event.request_id, None)
            if fut is not None and not fut.done():
                fut.set_result(event)
        self._deadline.arm(self.engine.get_timer())
