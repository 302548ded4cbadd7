"""The connection gate (``--workers``: the supervisor's connection limits) is asked before a
connection is answered: one it refuses is closed before its Start-Control-Connection-Reply,
exactly as one this server's own limits refuse (the client sees a closed connection, never a
control connection that comes up and is then stopped)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging

import pytest

from pptpkit.control.messages import (
    StartControlConnectionReply,
    StartControlConnectionRequest,
    decode_message,
)
from pptpkit.gre import GreDemux
from pptpkit.io.driver import MAX_HELD
from pptpkit.pptp.server import CallHandler, PptpServer, PptpServerConfig, ServerCall


class _Gre(GreDemux):
    def send(self, peer: str, packet: bytes | bytearray | memoryview) -> bool:
        return True

    def send_to(self, peer: int, packet: bytes | bytearray | memoryview, pktinfo: bytes | None) -> bool:
        return self.send(str(ipaddress.IPv4Address(peer)), bytes(packet))

    def close(self) -> None:
        pass


async def _never(call: ServerCall) -> CallHandler:
    raise AssertionError("no call is placed here")


class _Gate:
    """Answers each connection when the test says: None admits, a string refuses."""

    def __init__(self) -> None:
        self.asked: asyncio.Queue[asyncio.Future[str | None]] = asyncio.Queue()
        self.closed: list[str] = []

    async def open(self, key: str, peer: str) -> str | None:
        answer: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        await self.asked.put(answer)
        return await answer

    def close(self, key: str) -> None:
        self.closed.append(key)


async def _serve(gate: _Gate) -> PptpServer:
    server = PptpServer(PptpServerConfig(listen="127.0.0.1", port=0, echo_interval=None), _never,
                        gre_socket=_Gre())  # type: ignore[arg-type]
    server.connection_gate = gate
    await server.start()
    return server


_SCCRQ = StartControlConnectionRequest(host_name="h", vendor="v").encode()


async def _held(server: PptpServer, gate: _Gate, data: bytes
                ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, asyncio.Future[str | None]]:
    """Connect, send ``data``, and wait until the server asks the gate about the connection:
    the reader, the writer, and the gate's answer still to give."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(data)
    answer = await asyncio.wait_for(gate.asked.get(), 5)
    return reader, writer, answer


async def _nothing_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        await asyncio.wait_for(reader.read(1), seconds)
    except TimeoutError:
        return True
    return False


def test_a_refused_connection_is_closed_before_any_reply() -> None:
    async def main() -> None:
        gate = _Gate()
        server = await _serve(gate)
        try:
            reader, writer, answer = await _held(server, gate, _SCCRQ)
            # Asked and not answered yet: the request waits, unanswered.
            assert await _nothing_within(reader, 0.3)
            answer.set_result("3 connections already (the limit)")
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            assert server.refused_by_gate == 1 and gate.closed == []
        finally:
            await server.close()

    asyncio.run(main())


def test_an_admitted_connection_gets_what_it_sent_while_held() -> None:
    async def main() -> None:
        gate = _Gate()
        server = await _serve(gate)
        try:
            reader, writer, answer = await _held(server, gate, _SCCRQ)
            assert await _nothing_within(reader, 0.2)
            answer.set_result(None)
            reply = decode_message(await asyncio.wait_for(reader.readexactly(156), 5))
            assert isinstance(reply, StartControlConnectionReply) and reply.result_code == 1
            writer.close()
            await writer.wait_closed()
            for _ in range(100):
                if gate.closed:
                    break
                await asyncio.sleep(0.02)
            assert len(gate.closed) == 1
        finally:
            await server.close()

    asyncio.run(main())


def test_a_peer_that_floods_while_held_is_cut_off(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        gate = _Gate()
        server = await _serve(gate)
        try:
            reader, writer, answer = await _held(server, gate, b"\0" * (MAX_HELD + 1))
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            # Admitted after it was gone: given back to the gate at once.
            answer.set_result(None)
            for _ in range(100):
                if gate.closed:
                    break
                await asyncio.sleep(0.02)
            assert len(gate.closed) == 1
        finally:
            await server.close()

    with caplog.at_level(logging.WARNING):
        asyncio.run(main())
    assert f"peer floods us: {MAX_HELD + 1} octets before the connection was admitted" in caplog.text


def test_each_reason_of_the_gate_is_logged_apart_from_our_own(caplog: pytest.LogCaptureFixture) -> None:
    """A per-source refusal (ours or the gate's) must not hide the whole server's limit in the
    log, and the same reason again within the interval is counted, not logged."""
    reasons = ["2 connections from that address already", "3 connections already (the limit)",
               "3 connections already (the limit)"]

    async def main() -> None:
        gate = _Gate()
        server = await _serve(gate)
        try:
            for why in reasons:
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(StartControlConnectionRequest(host_name="h", vendor="v").encode())
                (await asyncio.wait_for(gate.asked.get(), 5)).set_result(why)
                assert await asyncio.wait_for(reader.read(), 5) == b""
                writer.close()
            assert server.refused_by_gate == 3
        finally:
            await server.close()

    with caplog.at_level(logging.WARNING):
        asyncio.run(main())
    refusals = [r.getMessage() for r in caplog.records if "refusing connection" in r.getMessage()]
    assert len(refusals) == 2, refusals
    assert reasons[0] in refusals[0] and reasons[1] in refusals[1]
