"""A read that carries an Outgoing-Call-Request and then what closes the connection: the call
cannot get a GRE channel, and the refusal finds no connection to answer on.  Found by the
control-stream fuzzer; it raised StateError out of the server's event handler."""

from __future__ import annotations

import asyncio
import ipaddress
import logging

import pytest

from pptpkit.control.messages import (
    OutgoingCallRequest,
    StartControlConnectionRequest,
    StopControlConnectionRequest,
)
from pptpkit.gre import GreDemux
from pptpkit.pptp.server import CallHandler, PptpServer, PptpServerConfig, ServerCall


class _FullGre(GreDemux):
    """A GRE table with no room: every call's channel fails to register."""

    closed = False

    def __init__(self) -> None:
        super().__init__(max_calls=1)
        self.register("127.0.0.1", 1, lambda packet, now: None)

    def send(self, peer: str, packet: bytes | bytearray | memoryview) -> bool:
        return True

    def send_to(self, peer: int, packet: bytes | bytearray | memoryview, pktinfo: bytes | None) -> bool:
        return self.send(str(ipaddress.IPv4Address(peer)), bytes(packet))

    def close(self) -> None:
        self.closed = True


async def _never(call: ServerCall) -> CallHandler:
    raise AssertionError("no call may be answered")


def test_refusing_a_call_on_a_connection_that_just_closed(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        server = PptpServer(PptpServerConfig(listen="127.0.0.1", port=0, echo_interval=None), _never,
                            gre_socket=_FullGre())  # type: ignore[arg-type]
        await server.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            request = OutgoingCallRequest(call_id=7, call_serial_number=1, packet_receive_window=64)
            writer.write(StartControlConnectionRequest(host_name="h", vendor="v").encode()
                         + request.encode() + StopControlConnectionRequest().encode())
            await writer.drain()
            while await asyncio.wait_for(reader.read(4096), 5):
                pass
            writer.close()
        finally:
            await server.close()

    with caplog.at_level(logging.DEBUG):
        asyncio.run(main())
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
    assert "StateError" not in caplog.text
