"""The member <-> manager datagrams: round trips, every malformed input a DecodeError, and the
socket naming."""

from __future__ import annotations

import contextlib
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pptpkit.compat.callmgr import (
    MAX_FRAME,
    MAX_JSON,
    Message,
    MsgType,
    decode_message,
    encode_message,
    socket_path,
)
from pptpkit.errors import DecodeError

OPENED = {"call_id": 1, "peer_call_id": 0, "peer_window": 3, "connect_speed": 115200,
          "peer": {"vendor": "linux"}}
VALID = [
    Message(MsgType.FRAME, frame=b"\xff\x03\xc0\x21\x01\x01\x00\x04"),
    Message(MsgType.HANGUP),
    Message(MsgType.OPEN, data={}),
    Message(MsgType.OPENED, data=OPENED),
    Message(MsgType.FAILED, data={"kind": "refused", "reason": "busy", "result_code": 3}),
    Message(MsgType.CLOSED, data={"reason": "x", "by": "remote", "connection_lost": False}),
]


@pytest.mark.parametrize("msg", VALID, ids=lambda m: m.type.name)
def test_round_trip(msg: Message) -> None:
    assert decode_message(encode_message(msg)) == msg


@pytest.mark.parametrize("data", [
    b"", b"\x00", b"\x09{}", b"\x01", b"\x06x", b"\x02[]", b"\x02{", b"\x02\xff",
    b"\x03" + json.dumps({**OPENED, "call_id": 70000}).encode(),
    b"\x03" + json.dumps({**OPENED, "peer_window": True}).encode(),
    b"\x05" + json.dumps({"reason": "x", "by": "remote"}).encode(),
    b"\x01" + bytes(MAX_FRAME + 1),
    b"\x02" + b" " * (MAX_JSON + 1),
])
def test_malformed(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_message(data)


def test_encoder_refuses_oversized() -> None:
    with pytest.raises(ValueError):
        encode_message(Message(MsgType.FRAME, frame=bytes(MAX_FRAME + 1)))


def test_socket_path_is_per_server_port_and_namespace() -> None:
    assert socket_path("192.0.2.2", 1723, "/d", netns="7") == "/d/192.0.2.2:1723@7"
    assert socket_path("192.0.2.2", 1724, "/d") != socket_path("192.0.2.2", 1723, "/d")
    assert socket_path("192.0.2.2", 1723, "/d", netns="7") != socket_path("192.0.2.2", 1723, "/d", netns="8")
    assert socket_path("192.0.2.2", 1723, "/d").endswith(f"@{os.stat('/proc/self/ns/net').st_ino}")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_random(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_message(data)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(VALID), st.integers(0, 200), st.binary(min_size=1, max_size=4))
def test_fuzz_mutated_and_truncated(msg: Message, pos: int, junk: bytes) -> None:
    data = encode_message(msg)
    pos %= len(data) + 1
    for candidate in (data[:pos], data[:pos] + junk + data[pos + len(junk):]):
        with contextlib.suppress(DecodeError):
            decode_message(candidate)
