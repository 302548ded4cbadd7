"""RC4 behind its interface: RFC 6229's keystream in every backend, the whole-packet
operations of both backends against pycryptodome, and MPPE's ``encrypt_frame``."""

from __future__ import annotations

from pathlib import Path

import pytest
from Crypto.Cipher import ARC4
from hypothesis import given, settings
from hypothesis import strategies as st

from pptpkit import speedups
from pptpkit.crypto import mppe, rc4

BACKENDS = list(rc4.BACKENDS.values())


def test_default_backend_is_the_fastest_available() -> None:
    if rc4._libcrypto is None:
        pytest.skip("no libcrypto")
    assert "openssl" in rc4.BACKENDS
    # The compiled backend, when built and not switched off, comes first.
    assert ("openssl" if speedups.EXT is None else "compiled") == rc4.RC4_BACKEND


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=200, deadline=None)
@given(key=st.binary(min_size=5, max_size=16), prefix=st.binary(max_size=20),
       head=st.integers(0, 0xFFFF), protocol=st.integers(0, 0xFF), payload=st.binary(max_size=5000))
def test_seal_unseal_next_key(backend: rc4.Rc4Factory, key: bytes, prefix: bytes, head: int, protocol: int,
                              payload: bytes) -> None:
    rc4 = backend()
    rc4.set_key(key)
    sealed = rc4.seal(prefix, head, protocol, payload)
    assert sealed == prefix + head.to_bytes(2, "big") + ARC4.new(key).encrypt(bytes((0, protocol)) + payload)
    # A body handed over as a view into a bigger buffer (as the PPP layer does).
    body = memoryview(b"junk" + sealed[len(prefix):])[4:]
    rc4.set_key(key)
    opened = rc4.unseal(body)
    # The plaintext starts 00 <protocol>: valid only when the protocol octet is odd.
    assert opened == ((protocol, payload) if protocol & 1 else None)
    # A one-octet (PFC) protocol field, as a sender may use.
    rc4.set_key(key)
    pfc_body = b"\x90\x00" + ARC4.new(key).encrypt(bytes((protocol | 1,)) + payload)
    assert rc4.unseal(pfc_body) == (protocol | 1, payload)
    interim = key[:8] if len(key) < 16 else key
    assert rc4.next_key(interim) == ARC4.new(interim).encrypt(interim)


@pytest.mark.parametrize("backend", BACKENDS)
def test_seal_continues_the_stream_and_buffers_grow(backend: rc4.Rc4Factory) -> None:
    rc4 = backend()
    rc4.set_key(b"k" * 16)
    ref = ARC4.new(b"k" * 16)
    for size in (10, 4000, 70000, 3):
        assert rc4.seal(b"\xfd", 0x1000, 0x21, bytes(size))[3:] == ref.encrypt(bytes((0, 0x21)) + bytes(size))


@settings(max_examples=100, deadline=None)
@given(payloads=st.lists(st.binary(min_size=1, max_size=1500), min_size=1, max_size=10),
       stateless=st.booleans(), key_bits=st.sampled_from(mppe.KEY_BITS), prefix=st.binary(max_size=4))
def test_encrypt_frame_is_prefix_plus_encrypt(payloads: list[bytes], stateless: bool, key_bits: int,
                                              prefix: bytes) -> None:
    cfg = mppe.MppeConfig(start_key=bytes(range(16)), stateless=stateless, key_bits=key_bits)
    a, b = mppe.MppeEncryptor(cfg), mppe.MppeEncryptor(cfg)
    dec = mppe.MppeDecryptor(cfg)
    for payload in payloads:
        frame = a.encrypt_frame(prefix, 0x21, payload)
        assert frame == prefix + b.encrypt(0x21, payload)
        assert dec.decrypt(memoryview(frame)[len(prefix):]) == (0x21, payload)
    assert a.stats == b.stats


@pytest.mark.parametrize("backend", BACKENDS)
def test_threads_do_not_share_scratch_results(backend: rc4.Rc4Factory) -> None:
    """The working buffer is shared by every session of a thread; ctypes drops the GIL during
    RC4, so two threads sealing at once must still each get their own, exact results."""
    import threading

    errors: list[str] = []

    def work(tag: int) -> None:
        key = bytes([tag]) * 16
        rc4 = backend()
        for i in range(1500):
            payload = bytes([tag, i & 0xFF]) * (200 + (i * 37 + tag) % 1200)
            rc4.set_key(key)
            sealed = rc4.seal(b"\xff\x03", 0x9000 | tag, 0x21, payload)
            expected = ARC4.new(key).encrypt(b"\x00\x21" + payload)
            if sealed != b"\xff\x03" + (0x9000 | tag).to_bytes(2, "big") + expected:
                errors.append(f"thread {tag}: seal {i}")
                return
            rc4.set_key(key)
            if rc4.unseal(sealed[2:]) != (0x21, payload):
                errors.append(f"thread {tag}: unseal {i}")
                return
            if rc4.next_key(key) != ARC4.new(key).encrypt(key):
                errors.append(f"thread {tag}: next_key {i}")
                return

    threads = [threading.Thread(target=work, args=(t,)) for t in (1, 2, 3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_idle_transforms_hold_no_packet_buffer() -> None:
    """Sessions share the per-thread scratch: a transform keeps only its RC4 state."""
    if "openssl" not in rc4.BACKENDS:
        pytest.skip("libcrypto backend not available")
    cipher = rc4.OpenSslRc4()
    cipher.set_key(bytes(16))
    cipher.seal(b"", 0x9000, 0x21, bytes(1400))
    assert rc4.OpenSslRc4.__slots__ == ("_ks",)


def _rfc6229() -> list[tuple[bytes, int, bytes]]:
    path = Path(__file__).resolve().parents[2] / "vectors" / "rfc6229_rc4.txt"
    out = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, offset, stream = line.split()
            out.append((bytes.fromhex(key), int(offset), bytes.fromhex(stream)))
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("key", "offset", "stream"), _rfc6229())
def test_rfc6229_keystream(backend: rc4.Rc4Factory, key: bytes, offset: int, stream: bytes) -> None:
    cipher = backend()
    cipher.set_key(key)
    if offset:
        cipher.crypt(bytes(offset))  # the stream continues across calls
    assert cipher.crypt(bytes(len(stream))) == stream


def test_mppe_can_be_given_a_backend() -> None:
    """The transform knows only the interface: any backend gives the same stream."""
    bodies = set()
    for backend in BACKENDS:
        enc = mppe.MppeEncryptor(mppe.MppeConfig(start_key=bytes(range(16)), rc4=backend))
        bodies.add(enc.encrypt(0x21, b"\x45" + bytes(40)))
    assert len(bodies) == 1
