"""FrameInlet: frames that arrive before the layer above is attached wait for it, capped."""

from __future__ import annotations

from pptpkit.io.grechannel import MAX_HELD_FRAMES, FrameInlet


def test_frames_before_the_sink_are_handed_over_in_order_when_it_is_attached() -> None:
    inlet = FrameInlet()
    buffer = bytearray(b"lcp-1")
    inlet.deliver(memoryview(buffer))
    buffer[:] = b"reuse"  # the receive buffer is reused: the held frame must be a copy
    inlet.deliver(b"lcp-2")
    got: list[bytes] = []
    inlet.sink = got.append
    assert got == [b"lcp-1", b"lcp-2"] and inlet.held == 0
    inlet.deliver(b"lcp-3")
    assert got[-1] == b"lcp-3" and inlet.dropped == 0


def test_the_queue_is_capped_and_overflow_counted() -> None:
    inlet = FrameInlet()
    for i in range(MAX_HELD_FRAMES + 5):
        inlet.deliver(bytes([i]))
    assert inlet.held == MAX_HELD_FRAMES and inlet.dropped == 5
    got: list[bytes] = []
    inlet.sink = got.append
    assert got == [bytes([i]) for i in range(MAX_HELD_FRAMES)]


def test_detaching_holds_again() -> None:
    inlet = FrameInlet()
    got: list[bytes] = []
    inlet.sink = got.append
    inlet.sink = None
    inlet.deliver(b"x")
    assert got == [] and inlet.held == 1
