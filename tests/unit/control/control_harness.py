"""A client and a server ControlConnection back to back on the shared :mod:`enginepair`."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import TypeVar

from hypothesis import strategies as st

from enginepair import EnginePair, stream_end
from pptpkit.control import (
    CallIdAllocator,
    CallRequested,
    ControlConfig,
    ControlConnection,
    ControlEvent,
    Role,
)
from pptpkit.control.messages import (
    MAX_MESSAGE_SIZE,
    MESSAGE_TYPES,
    ControlMessage,
    ControlStreamFramer,
    RawControlMessage,
    decode_message,
)

T = TypeVar("T")

_U8_FIELDS = {"result_code", "error_code", "reason"}
_U16_FIELDS = {
    "call_id", "peer_call_id", "call_serial_number", "max_channels", "firmware_revision",
    "protocol_version", "packet_receive_window", "packet_processing_delay", "packet_transmit_delay",
    "cause_code",
}
_TEXT_FIELDS = {
    "host_name": 64, "vendor": 64, "phone_number": 64, "subaddress": 64, "dialed_number": 64,
    "dialing_number": 64, "call_statistics": 128,
}


def _text(size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=255), max_size=size)


def _field_strategy(name: str) -> st.SearchStrategy[object]:
    if name in _TEXT_FIELDS:
        return _text(_TEXT_FIELDS[name])
    if name in _U8_FIELDS:
        return st.integers(0, 0xFF)
    if name in _U16_FIELDS:
        return st.integers(0, 0xFFFF)
    return st.integers(0, 0xFFFFFFFF)


def message_strategy(cls: type[ControlMessage]) -> st.SearchStrategy[ControlMessage]:
    fields = {f.name: _field_strategy(f.name) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return st.builds(cls, **fields)


raw_message = st.builds(
    RawControlMessage,
    raw_type=st.integers(0, 0xFFFF).filter(lambda t: t not in MESSAGE_TYPES),
    body=st.binary(max_size=MAX_MESSAGE_SIZE - 12),
)
any_message = st.one_of([message_strategy(cls) for cls in MESSAGE_TYPES.values()] + [raw_message])


def of_type(events: list[ControlEvent], cls: type[T]) -> list[T]:
    return [e for e in events if isinstance(e, cls)]


def split_messages(data: bytes) -> list[ControlMessage]:
    framer = ControlStreamFramer(max_buffer=max(len(data), MAX_MESSAGE_SIZE))
    framer.feed(data)
    out = []
    while (frame := framer.next_frame()) is not None:
        out.append(decode_message(frame))
    assert framer.buffered == 0, "engine emitted a partial message"
    return out


def drain(conn: ControlConnection) -> list[ControlEvent]:
    events = []
    while (event := conn.next_event()) is not None:
        events.append(event)
    return events


class Link(EnginePair):
    """A client and a server engine on the shared :mod:`enginepair`, moving bytes like TCP would:
    in order, and when one side is closed (its adapter closes the socket) the other side sees
    ``connection_lost``.

    ``cut_to_client`` / ``cut_to_server`` silently discard traffic in that direction (a peer that
    stops answering).  Every message that crosses is recorded decoded in ``to_client`` /
    ``to_server``; events pile up in ``client_events`` / ``server_events``.
    """

    def __init__(
        self,
        client_config: ControlConfig | None = None,
        server_config: ControlConfig | None = None,
        *,
        seed: int = 1,
        server_ids: CallIdAllocator | None = None,
        start: float = 1000.0,
    ) -> None:
        client = ControlConnection(
            client_config or ControlConfig(role=Role.CLIENT), now=start, rng=random.Random(seed)
        )
        server = ControlConnection(
            server_config or ControlConfig(role=Role.SERVER),
            now=start,
            rng=random.Random(seed + 1),
            call_ids=server_ids,
        )
        super().__init__(stream_end(client), stream_end(server), names=("client", "server"),
                         directions=("to_server", "to_client"), now=start, rounds=None, lockstep=True)
        self.cut_to_client = False
        self.cut_to_server = False

    # A test may swap in an engine built its own way before the link comes up.
    @property
    def client(self) -> ControlConnection:
        engine: ControlConnection = self.ends["client"].engine
        return engine

    @client.setter
    def client(self, engine: ControlConnection) -> None:
        self.ends["client"] = stream_end(engine)

    @property
    def server(self) -> ControlConnection:
        engine: ControlConnection = self.ends["server"].engine
        return engine

    @server.setter
    def server(self, engine: ControlConnection) -> None:
        self.ends["server"] = stream_end(engine)

    def transform(self, direction: str, unit: bytes) -> Sequence[bytes]:
        cut = self.cut_to_server if direction == "to_server" else self.cut_to_client
        return () if cut else (unit,)

    @property
    def to_server(self) -> list[ControlMessage]:
        return [m for chunk in self.wires["to_server"].sent for m in split_messages(chunk)]

    @property
    def to_client(self) -> list[ControlMessage]:
        return [m for chunk in self.wires["to_client"].sent for m in split_messages(chunk)]

    @property
    def client_events(self) -> list[ControlEvent]:
        return self.events["client"]

    @property
    def server_events(self) -> list[ControlEvent]:
        return self.events["server"]

    def up(self) -> Link:
        self.pump()
        return self

    def call(self) -> tuple[int, int]:
        """Open a call from the client and accept it on the server: (client id, server id)."""
        client_id = self.client.open_call(self.now)
        self.pump()
        request = of_type(self.server_events, CallRequested)[-1]
        assert request.peer_call_id == client_id
        self.server.accept_call(self.now, request.call_id)
        self.pump()
        return client_id, request.call_id
