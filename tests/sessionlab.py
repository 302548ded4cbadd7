"""Built-in server sessions in memory: the session table with a real PPP client on the other
end of each call, no sockets and no TUN (a helper module for unit tests, not a test file)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from pptpkit.auth.base import PeerConfig
from pptpkit.gre.call import GreStats
from pptpkit.io.link import PacketSink, PppLink
from pptpkit.ppp.fsm import FsmConfig
from pptpkit.ppp.session_config import LinkUp, MppePolicy, SessionConfig, SessionRole
from pptpkit.vpn.server import BuiltinSessions


class MemoryPlane:
    """A data plane that takes every packet and keeps none."""

    async def attach(self, link: PppLink, up: LinkUp) -> PacketSink:
        link.interface = "mem0"
        return lambda packet: None

    async def detach(self, link: PppLink) -> None:
        return None


class FakeCall:
    """What the session table (and its observers) use of a ServerCall, joined in memory to a
    client PppLink."""

    def __init__(self, call_id: int, peer: str = "192.0.2.2") -> None:
        self.call_id, self.peer_address, self.peer_port = call_id, peer, 40000 + call_id
        self.answered, self.end_reason, self.cleared = True, "", False
        self.local_address: str | None = "192.0.2.1"
        self.on_frame: Callable[[bytes], object] | None = None
        self.client: PppLink | None = None
        self.handler: Any = None
        self.stats = GreStats()
        self.tasks: set[asyncio.Task[None]] = set()

    def send_frame(self, frame: bytes) -> bool:
        if self.client is not None and not self.cleared:
            asyncio.get_running_loop().call_soon(self.client.frame_received, frame)
        return True

    def close(self) -> None:
        # As the PAC does: the call ends, and so does its handler.
        self.cleared = True
        if self.client is not None:
            self.client.lower_down("call cleared")
        if self.handler is not None:
            self.tasks.add(asyncio.ensure_future(self.handler.aclose()))


class ClientTransport:
    """The client's side of a :class:`FakeCall`."""

    def __init__(self, call: FakeCall) -> None:
        self.call = call

    def send_frame(self, frame: bytes) -> bool:
        if self.call.on_frame is not None and not self.call.cleared:
            asyncio.get_running_loop().call_soon(self.call.on_frame, frame)
        return True

    def close(self) -> None:
        self.call.cleared = True


async def dial(table: BuiltinSessions, call_id: int, password: str = "pw") -> tuple[FakeCall, PppLink]:
    """A call to ``table`` from a client logging in as alice with ``password``."""
    call = FakeCall(call_id)
    call.handler = await table(call)  # type: ignore[arg-type]
    config = SessionConfig(role=SessionRole.CLIENT, peer=PeerConfig(username="alice", password=password),
                           mppe=MppePolicy.nomppe(), fsm=FsmConfig(restart_interval=0.2))
    client = PppLink(config, ClientTransport(call), None, name="client")
    call.client = client
    client.start()
    return call, client


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 20))


async def until(predicate: Callable[[], bool]) -> None:
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")
