"""PptpClient: GRE that arrives before the Outgoing-Call-Reply, and the shared call-ID allocator.

The server here is the control engine on a local TCP listener; the client's GRE socket is an
in-memory demux, so the test decides exactly when a GRE packet reaches the client relative to
the reply (the race the setup benchmark kept losing).  No root, no raw sockets.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import struct
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from pptpkit.control import CallIdAllocator, CallRequested, ControlConfig, ControlConnection, Role
from pptpkit.gre import GreDemux
from pptpkit.gre.packet import encode_gre
from pptpkit.io.driver import ConnectionInfo, EngineDriver, start_tcp_server
from pptpkit.pptp.client import MAX_EARLY_GRE, CallRefusedError, PptpClient, PptpClientConfig

LOCALHOST = "127.0.0.1"
SERVER_CALL_ID = 4321


class MemoryGre(GreDemux):
    """The part of GreSocket the client uses, without a socket: sends are recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, bytes]] = []
        self.closed = False

    def send(self, peer: str, packet: bytes | bytearray | memoryview) -> bool:
        self.sent.append((peer, bytes(packet)))
        return True

    def send_to(self, peer: int, packet: bytes | bytearray | memoryview, pktinfo: bytes | None) -> bool:
        return self.send(str(ipaddress.IPv4Address(peer)), bytes(packet))

    def inject(self, call_id: int, payload: bytes, seq: int) -> bool:
        """Deliver one GRE packet from the server as the raw socket would (IPv4 header on)."""
        gre = encode_gre(call_id, payload, seq, None)
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(gre), 0, 0, 64, 47, 0,
                             socket.inet_aton(LOCALHOST), socket.inet_aton(LOCALHOST))
        return self.dispatch(header + gre, asyncio.get_running_loop().time())


Answer = Callable[[ControlConnection, CallRequested], None]


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    @functools.wraps(test)
    def wrapper() -> None:
        asyncio.run(asyncio.wait_for(test(), 20.0))
    return wrapper


async def _run(answer: Answer, client_kw: dict[str, object] | None = None,
               gre: MemoryGre | None = None) -> tuple[PptpClient, MemoryGre, list[bytes], object]:
    """Connect a client to a server that calls ``answer`` on the Outgoing-Call-Request."""
    gre = MemoryGre() if gre is None else gre
    server_engines: list[ControlConnection] = []

    def factory(info: ConnectionInfo) -> ControlConnection:
        engine = ControlConnection(ControlConfig(role=Role.SERVER, echo_interval=None), now=info.now,
                                   call_ids=CallIdAllocator(low=SERVER_CALL_ID, high=SERVER_CALL_ID))
        server_engines.append(engine)
        return engine

    def on_event(driver: EngineDriver[ControlConnection], event: object) -> None:
        if isinstance(event, CallRequested):
            answer(driver.engine, event)
            driver.flush()

    server = await start_tcp_server(LOCALHOST, 0, factory, on_event=on_event)
    port = server.sockets[0].getsockname()[1]
    client = PptpClient(PptpClientConfig(server=LOCALHOST, port=port, echo_interval=None,
                                         call_timeout=5.0, connect_timeout=5.0),
                        gre_socket=gre, **(client_kw or {}))  # type: ignore[arg-type]
    frames: list[bytes] = []
    result: object
    try:
        await client.connect()
        try:
            result = await client.open_call(on_frame=frames.append)
        except CallRefusedError as exc:
            result = exc
        await asyncio.sleep(0)
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
    return client, gre, frames, result


def _accept_after(packets: list[bytes], gre: MemoryGre, seen: list[bool]) -> Answer:
    def answer(engine: ControlConnection, event: CallRequested) -> None:
        # GRE first, reply second: what happens when the raw socket is read before TCP.
        for i, payload in enumerate(packets):
            seen.append(gre.inject(event.peer_call_id, payload, seq=i + 1))
        engine.accept_call(asyncio.get_running_loop().time(), event.call_id)
    return answer


@run
async def test_gre_before_the_reply_is_delivered() -> None:
    gre = MemoryGre()
    seen: list[bool] = []
    first_lcp = b"\xc0\x21\x01\x01\x00\x04"
    client, gre, frames, call = await _run(_accept_after([first_lcp], gre, seen), gre=gre)
    assert not isinstance(call, Exception)
    assert seen == [True]  # the demux had an entry for the call already
    assert frames == [first_lcp]
    assert client.stats.early_gre == 1
    assert client.stats.early_gre_dropped == 0
    assert gre.stats.unknown_call == 0


@run
async def test_early_gre_is_capped() -> None:
    gre = MemoryGre()
    seen: list[bool] = []
    packets = [bytes([0xC0, 0x21, 1, i, 0, 4]) for i in range(MAX_EARLY_GRE + 5)]
    client, gre, frames, call = await _run(_accept_after(packets, gre, seen), gre=gre)
    assert not isinstance(call, Exception)
    assert frames == packets[:MAX_EARLY_GRE]
    assert client.stats.early_gre == MAX_EARLY_GRE
    assert client.stats.early_gre_dropped == 5


@run
async def test_refused_call_releases_its_early_entry() -> None:
    gre = MemoryGre()
    seen: list[bool] = []

    def answer(engine: ControlConnection, event: CallRequested) -> None:
        seen.append(gre.inject(event.peer_call_id, b"\xc0\x21\x01\x01\x00\x04", seq=1))
        engine.reject_call(asyncio.get_running_loop().time(), event.call_id)

    client, gre, frames, result = await _run(answer, gre=gre)
    assert isinstance(result, CallRefusedError)
    assert seen == [True]
    assert frames == []
    assert len(gre) == 0  # nothing left registered for the refused call
    assert client.stats.early_gre_dropped == 1


@run
async def test_call_ids_come_from_the_given_allocator() -> None:
    gre = MemoryGre()
    seen: list[bool] = []
    ids = CallIdAllocator(low=777, high=779)
    _client, gre, _frames, call = await _run(_accept_after([], gre, seen), {"call_ids": ids}, gre)
    assert not isinstance(call, Exception)
    assert call.call_id in (777, 778, 779)  # type: ignore[attr-defined]
    # The call ended with the client; its ID went back to the shared allocator.
    assert len(ids) == 0


@run
async def test_cancelled_open_call_unregisters() -> None:
    gre = MemoryGre()
    server_saw = asyncio.Event()

    def factory(info: ConnectionInfo) -> ControlConnection:
        return ControlConnection(ControlConfig(role=Role.SERVER, echo_interval=None), now=info.now)

    def on_event(driver: EngineDriver[ControlConnection], event: object) -> None:
        if isinstance(event, CallRequested):
            server_saw.set()  # and never answer

    server = await start_tcp_server(LOCALHOST, 0, factory, on_event=on_event)
    port = server.sockets[0].getsockname()[1]
    client = PptpClient(PptpClientConfig(server=LOCALHOST, port=port, echo_interval=None),
                        gre_socket=gre)  # type: ignore[arg-type]
    try:
        await client.connect()
        opener = asyncio.ensure_future(client.open_call())
        await asyncio.wait_for(server_saw.wait(), 5.0)
        assert len(gre) == 1
        opener.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opener
        assert len(gre) == 0
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
