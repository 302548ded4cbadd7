"""The compiled per-packet primitives (pptpkit.speedups._ext) against their pure-Python twins.

Every function of the extension is compared, with hypothesis, to the Python code the pure path
runs (pycryptodome's RC4 with :class:`pptpkit.crypto.rc4.PacketOps`, hashlib's SHA-1,
:func:`pptpkit.io.offload.word_sum_pure`), on the results and on the keystream state each
leaves behind; then the users of the primitives (MPPE both ways, TSO segmentation, coalescing)
are run once per path and must agree octet for octet.  The extension is imported directly, so
these tests also run under ``PPTPKIT_PURE=1`` (which only changes what the engines use); a
checkout without the built extension skips them, or fails under ``PPTPKIT_REQUIRE_ALL=1``.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from Crypto.Cipher import ARC4
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import require
from pptpkit import speedups
from pptpkit.crypto import mppe, rc4
from pptpkit.gre.packet import encode_gre
from pptpkit.io import offload


def _ext() -> ModuleType:
    try:
        return importlib.import_module("pptpkit.speedups._ext")
    except ImportError:
        require(False, "the C extension is not built (tools/bootstrap.sh, or tools/build_ext.sh in place)")
        raise


@pytest.fixture(name="ext")
def _ext_fixture() -> ModuleType:
    return _ext()


keys = st.binary(min_size=1, max_size=32)
# Both RC4s inside the extension: libcrypto's (when this machine has it) and the built-in one.
impls = st.sampled_from(["default", "builtin"])


def _rc4(impl: str) -> rc4.Rc4:
    cipher: rc4.Rc4 = _ext().Rc4(builtin=impl == "builtin")
    return cipher
start_keys = st.one_of(st.binary(min_size=8, max_size=8), st.binary(min_size=16, max_size=16))


# -- RC4 ---------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(impl=impls, key=keys, chunks=st.lists(st.binary(max_size=3000), max_size=5))
def test_crypt_continues_the_stream_like_pycryptodome(impl: str, key: bytes, chunks: list[bytes]) -> None:
    fast = _rc4(impl)
    fast.set_key(key)
    ref = ARC4.new(key)
    for chunk in chunks:
        assert fast.crypt(chunk) == ref.encrypt(chunk)


@settings(max_examples=200, deadline=None)
@given(impl=impls, key=keys, prefix=st.binary(max_size=20), head=st.integers(0, 0xFFFF),
       protocol=st.integers(0, 0xFFFF), payload=st.binary(max_size=3000), view=st.booleans())
def test_seal_and_unseal_match_the_python_backend(impl: str, key: bytes, prefix: bytes, head: int,
                                                  protocol: int, payload: bytes, view: bool) -> None:
    fast, pure = _rc4(impl), rc4.PyCryptodomeRc4()
    sealed = []
    for cipher in (fast, pure):
        cipher.set_key(key)
        sealed.append(cipher.seal(prefix, head, protocol & 0xFF, payload))
    assert sealed[0] == sealed[1]
    body = sealed[0][len(prefix):]
    if view:  # as the PPP layer hands it over: a view into a bigger buffer
        body = memoryview(b"junk" + body)[4:]  # type: ignore[assignment]
    opened = []
    for cipher in (fast, pure):
        cipher.set_key(key)
        opened.append(cipher.unseal(body))
        # The stream continues from the same place after the packet, valid or not.
        opened.append(cipher.crypt(bytes(8)))
    assert opened[0:2] == opened[2:4]


@settings(max_examples=300, deadline=None)
@given(impl=impls, key=keys, body=st.binary(min_size=3, max_size=40))
def test_unseal_of_arbitrary_bodies_matches(impl: str, key: bytes, body: bytes) -> None:
    """Every protocol-field shape: one octet (odd), two octets, invalid (even, even)."""
    fast, pure = _rc4(impl), rc4.PyCryptodomeRc4()
    fast.set_key(key)
    pure.set_key(key)
    assert fast.unseal(body) == pure.unseal(body)
    assert fast.crypt(bytes(4)) == pure.crypt(bytes(4))


@settings(max_examples=200, deadline=None)
@given(impl=impls, interim=st.binary(min_size=1, max_size=16))
def test_next_key(impl: str, interim: bytes) -> None:
    assert _rc4(impl).next_key(interim) == ARC4.new(interim).encrypt(interim)


@settings(max_examples=200, deadline=None)
@given(impl=impls, start=start_keys, data=st.data())
def test_change_key_is_rfc3079_get_new_key_from_sha_then_rc4(impl: str, start: bytes,
                                                             data: st.DataObject) -> None:
    key = data.draw(st.binary(min_size=len(start), max_size=len(start)))
    salt = data.draw(st.sampled_from([b"", b"\xd1", b"\xd1\x26\x9e"]))
    digest = hashlib.sha1(start + b"\x00" * 40 + key + b"\xf2" * 40).digest()[: len(start)]
    new = ARC4.new(digest).encrypt(digest)
    expected = salt + new[len(salt):]
    assert _rc4(impl).change_key(start, key, salt) == expected
    assert rc4.change_key(rc4.PyCryptodomeRc4(), start, key, salt) == expected


@settings(max_examples=200, deadline=None)
@given(impl=impls, start=start_keys, data=st.data(), prefix=st.binary(max_size=4),
       head=st.integers(0, 0xFFFF), protocol=st.integers(0x21, 0xFA), payload=st.binary(max_size=2000))
def test_rekey_seal_and_rekey_unseal_match_the_composed_python(
        impl: str, start: bytes, data: st.DataObject, prefix: bytes, head: int, protocol: int,
        payload: bytes) -> None:
    key = data.draw(st.binary(min_size=len(start), max_size=len(start)))
    salt = data.draw(st.sampled_from([b"", b"\xd1", b"\xd1\x26\x9e"]))
    fast, pure = _rc4(impl), rc4.PyCryptodomeRc4()
    f_key, f_frame = fast.rekey_seal(start, salt, key, prefix, head, protocol, payload)
    p_key, p_frame = pure.rekey_seal(start, salt, key, prefix, head, protocol, payload)
    assert (f_key, f_frame) == (p_key, p_frame)
    body = f_frame[len(prefix):]
    assert fast.rekey_unseal(start, salt, key, body) == pure.rekey_unseal(start, salt, key, body)
    opened = fast.rekey_unseal(start, salt, key, body)
    assert opened == ((f_key, protocol, payload) if protocol & 1 else None)
    # A wrong key decrypts to garbage: the result is a valid-looking packet or None, the same
    # for both, and never raises.
    wrong = bytes(b ^ 1 for b in key)
    assert fast.rekey_unseal(start, salt, wrong, body) == pure.rekey_unseal(start, salt, wrong, body)


_PPP_MPPE_HEADERS = [b"\xff\x03\x00\xfd", b"\x00\xfd", b"\xfd", b"\xff\x03\xfd"]


@st.composite
def _mppe_frames(draw: st.DrawFn) -> tuple[bytes, int]:
    """A frame near the stateless common case (and a count), mutated now and then: other PPP
    headers, header bits, counts, truncation, arbitrary octets."""
    count = draw(st.integers(0, 0x0FFF))
    header = draw(st.sampled_from([*_PPP_MPPE_HEADERS, b"\xff\x03\x00\x21", b"\xff\x05\x00\xfd",
                                   b"\x00\xfb", b""]))
    bits = draw(st.sampled_from([0x90, 0x90, 0xD0, 0x80, 0x10, 0xB0, 0x00]))
    cc = draw(st.sampled_from([count, count, (count + 1) & 0x0FFF, (count - 1) & 0x0FFF]))
    body = bytes([bits | cc >> 8, cc & 0xFF]) + draw(st.binary(max_size=40))
    frame = header + body
    if draw(st.booleans()):
        frame = frame[: draw(st.integers(0, len(frame)))]
    return frame, count


@settings(max_examples=500, deadline=None)
@given(impl=impls, start=start_keys, data=st.data(), case=_mppe_frames())
def test_rekey_unseal_frame_matches_the_pure_twin(impl: str, start: bytes, data: st.DataObject,
                                                  case: tuple[bytes, int]) -> None:
    """Compiled and pure agree on which frames are the common case and on what they open to;
    a frame that is, opens exactly as decode_frame + rekey_unseal would open it."""
    frame, count = case
    key = data.draw(st.binary(min_size=len(start), max_size=len(start)))
    salt = data.draw(st.sampled_from([b"", b"\xd1\x26\x9e"]))
    fast, pure = _rc4(impl), rc4.PyCryptodomeRc4()
    got = fast.rekey_unseal_frame(start, salt, key, memoryview(frame), count)
    assert got == pure.rekey_unseal_frame(start, salt, key, frame, count)
    at = rc4.mppe_body_at(frame, count)
    if at < 0:
        assert got is None
    else:
        assert got == rc4.PyCryptodomeRc4().rekey_unseal(start, salt, key, frame[at:])


@settings(max_examples=200, deadline=None)
@given(impl=impls, start=start_keys, data=st.data(), header=st.sampled_from(_PPP_MPPE_HEADERS),
       count=st.integers(0, 0x0FFF), protocol=st.integers(0x21, 0xFA), payload=st.binary(max_size=1500))
def test_rekey_unseal_frame_opens_what_rekey_seal_sealed(impl: str, start: bytes, data: st.DataObject,
                                                         header: bytes, count: int, protocol: int,
                                                         payload: bytes) -> None:
    key = data.draw(st.binary(min_size=len(start), max_size=len(start)))
    fast, pure = _rc4(impl), rc4.PyCryptodomeRc4()
    new_key, frame = fast.rekey_seal(start, b"", key, header, 0x9000 | count, protocol, payload)
    want = (new_key, protocol, payload) if protocol & 1 else None
    assert fast.rekey_unseal_frame(start, b"", key, frame, count) == want
    assert pure.rekey_unseal_frame(start, b"", key, frame, count) == want
    assert fast.rekey_unseal_frame(start, b"", key, frame, (count + 1) & 0x0FFF) is None
    with pytest.raises(ValueError):
        fast.rekey_unseal_frame(start, b"", key, frame, 0x1000)
    with pytest.raises(ValueError):
        pure.rekey_unseal_frame(start, b"", key, frame, 0x1000)


@settings(max_examples=300, deadline=None)
@given(impl=impls, start=start_keys, data=st.data(), count=st.integers(0, 0x0FFF),
       header=st.sampled_from(_PPP_MPPE_HEADERS), n=st.integers(0, 8), views=st.booleans())
def test_rekey_unseal_frames_matches_the_pure_twin_and_the_frames_one_by_one(
        impl: str, start: bytes, data: st.DataObject, count: int, header: bytes, n: int, views: bool) -> None:
    """A run of stateless frames as a sender seals them (counts wrapping at 4095), with now and
    then one of _mppe_frames' near misses, or a bad protocol inside, put in: the compiled run,
    the pure one and rekey_unseal_frame frame by frame agree on the prefix and everything else."""
    key = data.draw(st.binary(min_size=len(start), max_size=len(start)))
    salt = data.draw(st.sampled_from([b"", b"\xd1\x26\x9e"]))
    sender = rc4.PyCryptodomeRc4()
    frames: list[bytes] = []
    k = key
    for i in range(n):
        protocol = data.draw(st.sampled_from([0x21, 0x57, 0x21, 0xFD, 0x20]))  # 0x20: not valid
        payload = data.draw(st.binary(max_size=300))
        k, frame = sender.rekey_seal(start, salt, k, header, 0x9000 | (count + i) & 0x0FFF, protocol & 0xFF,
                                     payload)
        if data.draw(st.integers(0, 9)) == 0:
            frame = data.draw(_mppe_frames())[0]
        frames.append(frame)
    run = [memoryview(b"x" + f)[1:] for f in frames] if views else frames
    fast, pure = _rc4(impl), rc4.PyCryptodomeRc4()
    got = fast.rekey_unseal_frames(start, salt, key, run, count)
    assert got == pure.rekey_unseal_frames(start, salt, key, frames, count)
    want_key, payloads, protocols, frame_octets, payload_octets = key, [], [], 0, 0
    c = count
    for frame in frames:
        opened = rc4.PyCryptodomeRc4().rekey_unseal_frame(start, salt, want_key, frame, c)
        if opened is None:
            break
        want_key = opened[0]
        protocols.append(opened[1])
        payloads.append(opened[2])
        frame_octets += len(frame)
        payload_octets += len(opened[2])
        c = (c + 1) & 0x0FFF
    assert got == (want_key, payloads, protocols, frame_octets, payload_octets)
    with pytest.raises(ValueError):
        fast.rekey_unseal_frames(start, salt, key, frames, 0x1000)
    with pytest.raises(ValueError):
        pure.rekey_unseal_frames(start, salt, key, frames, 0x1000)


def test_bad_arguments_raise_instead_of_reading_out_of_bounds(ext: ModuleType) -> None:
    cipher = ext.Rc4()
    with pytest.raises(ValueError):
        cipher.set_key(b"")
    with pytest.raises(ValueError):
        cipher.set_key(bytes(257))
    with pytest.raises(TypeError):
        cipher.crypt("text")
    with pytest.raises(ValueError):
        cipher.change_key(bytes(16), bytes(8), b"")
    with pytest.raises(ValueError):
        cipher.change_key(bytes(12), bytes(12), b"")
    with pytest.raises(ValueError):
        cipher.seal(b"", 0x10000, 0x21, b"")
    with pytest.raises(TypeError):
        cipher.rekey_seal(bytes(16), b"", bytes(16), b"", 0, 0x21)
    with pytest.raises(TypeError):
        cipher.rekey_unseal(bytes(16), b"", bytes(16), None)
    assert cipher.unseal(b"\x90\x00") is None  # no protocol octet at all
    with pytest.raises(TypeError):
        ext.Rc4(b"key")


def test_the_compiled_backend_holds_only_its_rc4_state(ext: ModuleType) -> None:
    """Idle sessions keep two of these (one per direction): no buffer inside, only the larger
    of the two RC4 states (libcrypto's RC4_KEY, 258 32-bit words)."""
    assert sys.getsizeof(ext.Rc4()) <= 1100


def test_libcrypto_rc4_is_used_when_this_machine_has_it(ext: ModuleType) -> None:
    """The same lookup as the ctypes backend: if that one found RC4 in libcrypto, so must we."""
    assert ("openssl" if "openssl" in rc4.BACKENDS else "builtin") == ext.RC4_IMPL
    assert ext.Rc4().impl == ext.RC4_IMPL
    assert ext.Rc4(builtin=True).impl == "builtin"


def test_libcrypto_sha1_is_used_when_this_machine_has_it(ext: ModuleType) -> None:
    """The key change's SHA-1 comes from libcrypto when it exports one (every OpenSSL does);
    both SHA-1s meet the Python composition in the change_key/rekey tests above (``builtin``
    forces the built-in one)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("crypto")
    has = name is not None and hasattr(ctypes.CDLL(name), "SHA1")
    assert ("openssl" if has else "builtin") == ext.SHA1_IMPL
    start, key = bytes(range(16)), bytes(range(16, 32))
    want = rc4.change_key(rc4.PyCryptodomeRc4(), start, key, b"")
    assert ext.Rc4().change_key(start, key, b"") == ext.Rc4(builtin=True).change_key(start, key, b"") == want


# -- MPPE through the engines ------------------------------------------------------------------


def _streams(backend: rc4.Rc4Factory, stateless: bool, key_bits: int, payloads: list[bytes]
             ) -> Iterator[object]:
    start = bytes(range(16)) if key_bits == 128 else bytes(range(8))
    cfg = mppe.MppeConfig(start_key=start, key_bits=key_bits, stateless=stateless, rc4=backend)
    enc, dec = mppe.MppeEncryptor(cfg), mppe.MppeDecryptor(cfg)
    for i, payload in enumerate(payloads):
        if i % 7 == 3:
            enc.reset()
        body = enc.encrypt(0x21, payload)
        yield body
        yield dec.decrypt(body)
    yield enc.stats
    yield dec.stats


@settings(max_examples=60, deadline=None)
@given(payloads=st.lists(st.binary(min_size=1, max_size=1500), min_size=1, max_size=300),
       stateless=st.booleans(), key_bits=st.sampled_from([40, 56, 128]))
def test_mppe_engines_produce_the_same_stream_on_both_paths(payloads: list[bytes], stateless: bool,
                                                            key_bits: int) -> None:
    """Across a stateful flag packet (count 255) too when there are enough payloads."""
    fast = list(_streams(_ext().Rc4, stateless, key_bits, payloads))
    pure = list(_streams(rc4.PyCryptodomeRc4, stateless, key_bits, payloads))
    assert fast == pure
    assert list(_streams(lambda: _ext().Rc4(builtin=True), stateless, key_bits, payloads)) == pure
    opened = fast[1 : 2 * len(payloads) : 2]
    assert opened == [(0x21, p) for p in payloads]


@settings(max_examples=100, deadline=None)
@given(jump=st.integers(1, 40), corrupt=st.booleans())
def test_stateless_receiver_after_loss_and_corruption_on_both_paths(jump: int, corrupt: bool) -> None:
    results = []
    for backend in (_ext().Rc4, rc4.PyCryptodomeRc4):
        cfg = mppe.MppeConfig(start_key=bytes(range(16)), rc4=backend)
        enc, dec = mppe.MppeEncryptor(cfg), mppe.MppeDecryptor(cfg)
        bodies = [enc.encrypt(0x21, bytes([i]) * 100) for i in range(jump + 2)]
        got = [dec.decrypt(bodies[0])]
        last = bytearray(bodies[jump])
        if corrupt:
            last[2] ^= 0xFF  # the encrypted protocol field
        got.append(dec.decrypt(last))
        got.append(dec.decrypt(bodies[jump + 1]))
        results.append((got, dec.stats, dec.session_key, dec.last_drop))
    assert results[0] == results[1]


# -- checksums and offloads --------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=3000))
def test_csum_is_congruent_to_the_pure_word_sum(data: bytes) -> None:
    fast = _ext().csum(data)
    pure = offload.word_sum_pure(data)
    assert 0 <= fast <= 0xFFFF
    assert fast % 0xFFFF == pure % 0xFFFF
    assert (fast == 0) == (pure == 0) == (not any(data))


def test_csum_takes_views_and_rejects_text(ext: ModuleType) -> None:
    assert ext.csum(memoryview(b"\x00\x01\xf2\x03\xf4\xf5\xf6\xf7")[0:8]) == 0xDDF2  # RFC 1071's example
    assert ext.csum(bytearray(b"\xff")) == 0xFF00
    with pytest.raises(TypeError):
        ext.csum("text")


def _both(fn: Callable[[], object]) -> list[object]:
    """``fn()`` on the pure, then on the compiled offload path, whatever the process uses."""
    out: list[object] = []
    saved = offload.EXT, offload.word_sum
    try:
        for ext, impl in ((None, offload.word_sum_pure), (_ext(), _ext().csum)):
            offload.EXT, offload.word_sum = ext, impl
            try:
                out.append(fn())
            except Exception as exc:  # must be the same exception type on both paths
                out.append(type(exc))
    finally:
        offload.EXT, offload.word_sum = saved
    return out


def _tcp4(payload: bytes, seq: int, flags: int = 0x10, tcp_opts: bytes = b"", ip_opts: bytes = b"",
          ident: int = 1) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, seq, 7, (5 + len(tcp_opts) // 4) << 4, flags, 512, 0, 0)
    tcp += tcp_opts + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45 + len(ip_opts) // 4, 0, 20 + len(ip_opts) + len(tcp), ident,
                     0x4000, 64, 6, 0, bytes([192, 0, 2, 1]), bytes([198, 51, 100, 7])) + ip_opts
    s = offload.internet_checksum(ip)
    ip = ip[:10] + s.to_bytes(2, "big") + ip[12:]
    pseudo = ip[12:20] + bytes([0, 6]) + len(tcp).to_bytes(2, "big")
    c = offload.internet_checksum(pseudo + tcp)
    return ip + tcp[:16] + c.to_bytes(2, "big") + tcp[18:]


@settings(max_examples=200, deadline=None)
@given(payload=st.binary(min_size=1, max_size=9000), mss=st.integers(1, 1500), seq=st.integers(0, 2**32 - 1),
       flags=st.sampled_from([0x10, 0x18, 0x19, 0x90, 0x99]), v6=st.booleans(),
       tcp_opts=st.sampled_from([b"", bytes([1, 1, 8, 10]) + bytes(range(8))]),
       ip_opts=st.sampled_from([b"", bytes([1, 1, 1, 0])]), ident=st.integers(0, 0xFFFF))
def test_segment_is_the_same_on_both_paths(payload: bytes, mss: int, seq: int, flags: int, v6: bool,
                                           tcp_opts: bytes, ip_opts: bytes, ident: int) -> None:
    if v6:
        packet = _tcp6(payload, seq, flags, 40000, tcp_opts)
        iphl = 40
    else:
        packet = _tcp4(payload, seq, flags, tcp_opts, ip_opts, ident)
        iphl = 20 + len(ip_opts)
    hl = iphl + 20 + len(tcp_opts)
    hdr = offload.VnetHeader(flags=1, gso_type=offload.GsoType.TCPV6 if v6 else offload.GsoType.TCPV4,
                             hdr_len=hl, gso_size=mss, csum_start=iphl, csum_offset=16)
    pure, fast = _both(lambda: offload.segment(hdr, packet))
    assert pure == fast
    assert isinstance(fast, list) and len(fast) == (len(payload) + mss - 1) // mss
    # Every segment's checksums verify from scratch.
    for seg in fast:
        if not v6:
            assert offload.internet_checksum(seg[:iphl]) == 0
            pseudo = seg[12:20] + bytes([0, 6]) + (len(seg) - iphl).to_bytes(2, "big")
        else:
            pseudo = seg[8:40] + (len(seg) - 40).to_bytes(4, "big") + bytes([0, 0, 0, 6])
        assert offload.internet_checksum(pseudo + seg[iphl:]) == 0
    partial = offload.VnetHeader(flags=1, csum_start=iphl, csum_offset=16)
    pure, fast = _both(lambda: offload.segment(partial, packet))
    assert pure == fast


def test_tso_split_rejects_an_inconsistent_layout(ext: ModuleType) -> None:
    packet = _tcp4(bytes(100), 1)
    with pytest.raises(ValueError):
        ext.tso_split(packet, False, 20, 40, 0)
    with pytest.raises(ValueError):
        ext.tso_split(packet, False, 20, 10, 100)
    with pytest.raises(ValueError):
        ext.tso_split(packet, False, 20, len(packet), 100)  # no payload
    with pytest.raises(ValueError):
        ext.tso_split(packet, True, 20, 40, 100)


def _tcp6(payload: bytes, seq: int, flags: int, sport: int, tcp_opts: bytes = b"") -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, 5201, seq, 7, (5 + len(tcp_opts) // 4) << 4, flags, 512, 0, 0)
    tcp += tcp_opts + payload
    net = bytes([0x20, 0x01, 0x0D, 0xB8]) + bytes(11)
    src, dst = net + b"\x01", net + b"\x02"
    ip = struct.pack("!IHBB16s16s", 0x60000000, len(tcp), 6, 64, src, dst)
    pseudo = src + dst + len(tcp).to_bytes(4, "big") + bytes([0, 0, 0, 6])
    c = offload.internet_checksum(pseudo + tcp)
    return ip + tcp[:16] + c.to_bytes(2, "big") + tcp[18:]


# One queued packet: (flow 0..3, payload size, flags, sequence gap, damage, window change).
_queue_items = st.tuples(st.integers(0, 5), st.integers(0, 1400),
                         st.sampled_from([0x10, 0x10, 0x10, 0x18, 0x11, 0x12]),
                         st.sampled_from([0, 0, 0, 0, 1, -5]), st.booleans(), st.booleans())


@settings(max_examples=300, deadline=None)
@given(items=st.lists(_queue_items, min_size=1, max_size=60))
def test_coalescer_is_the_same_on_both_paths(items: list[tuple[int, int, int, int, bool, bool]]) -> None:
    """Flows of IPv4 and IPv6, runs broken by flags, gaps, short payloads, bad checksums,
    another window, packets that are not TCP at all: every unit and counter identical."""
    seqs = [1000, 2**32 - 3000, 5, 77]
    packets = []
    for flow, size, flags, gap, damage, window in items:
        payload = bytes([flow]) * size
        if flow == 4:
            packets.append(bytes([0x45]) + bytes(20))  # too short / not TCP: written alone
            continue
        if flow == 5:
            udp = bytearray(_tcp4(payload, 0))
            udp[9] = 17
            packets.append(bytes(udp))
            continue
        seq = (seqs[flow] + gap) % 2**32
        p = bytearray(_tcp6(payload, seq, flags, 40000 + flow) if flow >= 2 else _tcp4(payload, seq, flags))
        if flow == 1:
            p[12] ^= 1  # another source address: another flow (checksums redone below)
            p = bytearray(_retcp4(bytes(p)))
        if window:
            off = 40 if flow >= 2 else 20
            p[off + 14] ^= 0x40
        if damage:
            p[-1 if size else 30] ^= 0x55
        packets.append(bytes(p))
        seqs[flow] = (seq + size) % 2**32

    def run() -> object:
        c = offload.Coalescer()
        for p in packets:
            c.feed(p)
        units = c.flush()
        # The single-packet units carry the very ZERO_VNET_HDR object (the TUN writer tests it).
        assert all((vnet is offload.ZERO_VNET_HDR) == (len(segs) == 1) for vnet, _, segs in units)
        return units, c.stats

    pure, fast = _both(run)
    assert pure == fast


def test_coalesce_merges_runs_of_both_families(ext: ModuleType) -> None:
    """A run of full segments per flow (IPv4 and IPv6, interleaved) becomes one unit each."""
    packets = []
    for i in range(10):
        packets.append(_tcp4(bytes([i]) * 1000, 1000 + 1000 * i))
        packets.append(_tcp6(bytes([i]) * 1000, 5 + 1000 * i, 0x18 if i == 9 else 0x10, 40002))
    units, bad, single, merged, segs = ext.coalesce(packets, offload.ZERO_VNET_HDR)
    assert (bad, single, merged, segs) == (0, 0, 2, 20)
    c = offload.Coalescer()
    assert units == c._flush_pure(packets, c.stats)
    v4, v6 = units
    assert offload.VnetHeader.decode(v4[0]) == offload.VnetHeader(
        flags=1, gso_type=offload.GsoType.TCPV4, hdr_len=40, gso_size=1000, csum_start=20, csum_offset=16)
    assert b"".join(v6[1]) [60:] == b"".join(bytes([i]) * 1000 for i in range(10))


def _retcp4(p: bytes) -> bytes:
    """``p`` with its IPv4 header and TCP checksums recomputed."""
    ip = bytearray(p[:20])
    ip[10:12] = b"\0\0"
    ip[10:12] = offload.internet_checksum(bytes(ip)).to_bytes(2, "big")
    tcp = bytearray(p[20:])
    tcp[16:18] = b"\0\0"
    pseudo = bytes(ip[12:20]) + bytes([0, 6]) + len(tcp).to_bytes(2, "big")
    tcp[16:18] = offload.internet_checksum(pseudo + bytes(tcp)).to_bytes(2, "big")
    return bytes(ip) + bytes(tcp)


# -- the switch --------------------------------------------------------------------------------


def _probe(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != speedups.PURE_ENV}
    if env_value is not None:
        env[speedups.PURE_ENV] = env_value
    code = ("import logging, sys; from pptpkit import speedups; from pptpkit.crypto import rc4; "
            "from pptpkit.io import offload; logging.basicConfig(stream=sys.stdout, format='%(message)s'); "
            "log = logging.getLogger('x'); log.setLevel(logging.INFO); "
            "speedups.log_choice(log); speedups.log_choice(log); "
            "print(speedups.describe(), rc4.RC4_BACKEND, offload.word_sum.__name__)")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout


def test_pptpkit_pure_forces_the_python_path_and_says_so_once(ext: ModuleType) -> None:
    assert _probe("1").splitlines() == [
        "per-packet path: pure Python (PPTPKIT_PURE is set)",
        f"pure {'openssl' if 'openssl' in rc4.BACKENDS else 'pycryptodome'} word_sum_pure",
    ]
    assert _probe("0").splitlines() == ["compiled compiled csum"]
    assert _probe(None).splitlines() == ["compiled compiled csum"]


def test_missing_extension_falls_back_with_one_warning(tmp_path: Path, ext: ModuleType) -> None:
    """What a plain install without a compiler gets: the package without the .so."""
    src = Path(speedups.__file__).resolve().parents[1]
    copy = tmp_path / "pptpkit"
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    code = ("import logging, sys; logging.basicConfig(stream=sys.stdout, format='%(levelname)s %(message)s');"
            "from pptpkit import speedups; from pptpkit.crypto import rc4; log = logging.getLogger('x');"
            "speedups.log_choice(log); speedups.log_choice(log); print(speedups.describe())")
    env = {k: v for k, v in os.environ.items() if k != speedups.PURE_ENV}
    env["PYTHONPATH"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert len(out) == 2
    assert out[0].startswith("WARNING per-packet path: pure Python, slower: the C extension is not built")
    assert out[1] == "pure"


# -- the GRE socket ----------------------------------------------------------------------------


def _gre_datagram(src: bytes, call_id: int, ihl: int = 20, flags: int = 0x3001, proto: int = 0x880B,
                  payload: bytes = b"ppp") -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl // 4, 0, 0, 0, 0, 64, 47, 0, src, bytes([198, 51, 100, 1]))
    gre = struct.pack("!HHHHI", flags, proto, len(payload), call_id, 7) + payload
    return ip + bytes(ihl - 20) + gre


_datagrams = st.one_of(
    st.binary(max_size=64),
    st.builds(_gre_datagram, st.binary(min_size=4, max_size=4), st.integers(0, 0xFFFF),
              st.sampled_from([20, 24, 60]), st.sampled_from([0x3001, 0x2001, 0x1001, 0x3000, 0x3081]),
              st.sampled_from([0x880B, 0x0800]), st.binary(max_size=8)),
    st.builds(lambda d, n: d[:n], st.builds(_gre_datagram, st.just(b"\xc0\x00\x02\x07"), st.just(5)),
              st.integers(0, 40)),
)


@settings(max_examples=500, deadline=None)
@given(datagram=_datagrams)
def test_gre_parse_is_the_demux_parse(datagram: bytes) -> None:
    from pptpkit.gre.demux import parse_datagram
    assert _ext().parse_gre(datagram) == parse_datagram(datagram)


@st.composite
def _data_runs(draw: st.DrawFn) -> tuple[list[bytes], int, int]:
    """A run of GRE data packets for call 7 numbered on from ``seq`` (wrapping), with now and
    then a near miss: another call, a gap, a bad length or protocol, other flags, a short one."""
    seq = draw(st.sampled_from([0, 5, 0xFFFFFFFE, 0x7FFFFFFF]))
    packets = []
    for i in range(draw(st.integers(0, 8))):
        ack = draw(st.one_of(st.none(), st.integers(0, 0xFFFFFFFF)))
        payload = draw(st.binary(min_size=0, max_size=30))
        packet = encode_gre(7, payload, (seq + i) & 0xFFFFFFFF, ack)
        miss = draw(st.integers(0, 12))
        if miss == 0:
            packet = encode_gre(8, payload, (seq + i) & 0xFFFFFFFF, ack)
        elif miss == 1:
            packet = encode_gre(7, payload, (seq + i + 1) & 0xFFFFFFFF, ack)
        elif miss == 2:
            packet = packet[:-1] if payload else packet + b"x"
        elif miss == 3:
            packet = packet[:2] + b"\x08\x00" + packet[4:]
        elif miss == 4:
            packet = bytes([packet[0] | 0x80]) + packet[1:]
        elif miss == 5:
            packet = encode_gre(7, b"", None, ack)
        packets.append(packet)
    return packets, seq, draw(st.sampled_from([-1, 0, seq, (seq - 3) & 0xFFFFFFFF, (seq + 2) & 0xFFFFFFFF]))


@settings(max_examples=500, deadline=None)
@given(case=_data_runs(), window=st.sampled_from([0, 1, 3, 64]), views=st.booleans())
def test_gre_data_run_matches_the_pure_twin(case: tuple[list[bytes], int, int], window: int,
                                            views: bool) -> None:
    from pptpkit.gre.packet import data_run

    packets, seq, acked = case
    run = [memoryview(b"x" + p)[1:] for p in packets] if views else packets
    got = _ext().gre_data_run(run, 7, seq, acked, window)
    assert got == data_run(packets, 7, seq, acked, window)
    assert len(got[0]) <= len(packets)
    with pytest.raises(ValueError):
        _ext().gre_data_run(packets, 7, 1 << 32, -1, 0)


_SOURCE = bytes([198, 51, 100, 2])


@st.composite
def _runs_of_sources(draw: st.DrawFn) -> list[bytes]:
    """IPv4 packets from _SOURCE, now and then another source, version, or a short one."""
    packets = []
    for _ in range(draw(st.integers(0, 6))):
        packet = bytearray(bytes([0x45]) + bytes(11) + _SOURCE + draw(st.binary(min_size=4, max_size=30)))
        miss = draw(st.integers(0, 8))
        if miss == 0:
            packet[12 + draw(st.integers(0, 3))] ^= 1
        elif miss == 1:
            packet[0] = draw(st.sampled_from([0x60, 0x35, 0x00]))
        elif miss == 2:
            del packet[draw(st.integers(0, 19)):]
        packets.append(bytes(packet))
    return packets


@settings(max_examples=500, deadline=None)
@given(packets=_runs_of_sources(), views=st.booleans())
def test_ipv4_from_matches_the_pure_twin(packets: list[bytes], views: bool) -> None:
    from pptpkit.io.link import ipv4_from

    run = [memoryview(b"x" + p)[1:] for p in packets] if views else packets
    got = _ext().ipv4_from(run, _SOURCE)
    assert got == ipv4_from(packets, _SOURCE)
    assert got == all(len(p) >= 20 and p[0] >> 4 == 4 and p[12:16] == _SOURCE for p in packets)
    with pytest.raises(ValueError):
        _ext().ipv4_from(packets, b"\x01")
    with pytest.raises(ValueError):
        ipv4_from(packets, b"\x01")


def test_recv_gre_batches_and_routes_like_the_demux(ext: ModuleType) -> None:
    """Datagrams through a datagram socket pair: each comes back parsed, in order, at most
    ``max`` per call; an empty socket gives []."""
    import socket as s

    a, b = s.socketpair(s.AF_UNIX, s.SOCK_DGRAM)
    with a, b:
        b.setblocking(False)
        sent = [_gre_datagram(bytes([192, 0, 2, i]), 1000 + i, payload=bytes([i]) * i) for i in range(20)]
        sent.insert(3, b"\x45short")
        for d in sent:
            a.send(d)
        got = ext.recv_gre(b.fileno(), 16) + ext.recv_gre(b.fileno(), 16)
        assert ext.recv_gre(b.fileno(), 16) == []
    from pptpkit.gre.demux import parse_datagram
    want = []
    for d in sent:
        key, ihl = parse_datagram(d)
        want.append((key, d[ihl:] if key >= 0 else b""))
    assert got == want
    with pytest.raises(ValueError):
        ext.recv_gre(0, 65)
    with pytest.raises(OSError):
        ext.recv_gre(-1, 1)


def test_send_gre_sends_from_the_given_source(ext: ModuleType) -> None:
    """A raw socket of an experimental protocol on loopback (no GRE, no route touched): what
    send_gre sends arrives with its IPv4 header, to and from 127.0.0.1."""
    import socket as s

    from conftest import require_root

    require_root()
    from pptpkit.io.gresock import source_ancillary

    with s.socket(s.AF_INET, s.SOCK_RAW, 253) as raw:
        raw.settimeout(5)
        ext.send_gre(raw.fileno(), b"first", 0x7F000001, None)
        ext.send_gre(raw.fileno(), b"second", 0x7F000001, source_ancillary("127.0.0.1")[0][2])
        got = [raw.recv(2048), raw.recv(2048)]
    assert [g[20:] for g in got] == [b"first", b"second"]
    assert all(g[12:16] == g[16:20] == bytes([127, 0, 0, 1]) for g in got)
    with pytest.raises(ValueError):
        ext.send_gre(0, b"x", 1 << 32, None)
    with pytest.raises(ValueError):
        ext.send_gre(0, b"x", 1, b"short")
    with pytest.raises(OSError):
        ext.send_gre(-1, b"x", 1, None)


def test_send_gre_gathers_header_and_payload(ext: ModuleType) -> None:
    """The two-part form: the kernel joins header and payload; the datagram is the same."""
    import socket as s

    from conftest import require_root

    require_root()
    with s.socket(s.AF_INET, s.SOCK_RAW, 253) as raw:
        raw.settimeout(5)
        ext.send_gre(raw.fileno(), b"head", 0x7F000001, None, memoryview(b"-and-payload"))
        ext.send_gre(raw.fileno(), b"", 0x7F000001, None, b"only")
        got = [raw.recv(2048)[20:], raw.recv(2048)[20:]]
    assert got == [b"head-and-payload", b"only"]
    with pytest.raises(TypeError):
        ext.send_gre(0, b"x", 1, None, "text")
    with pytest.raises(TypeError):
        ext.send_gre(0, b"x", 1, None, b"y", b"z")


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "pure"])
def test_gre_socket_send_parts_is_one_datagram_on_both_paths(compiled: bool, monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    import asyncio
    import socket as s

    from conftest import require_root

    require_root()
    from pptpkit.io import gresock

    if compiled:
        monkeypatch.setattr(gresock, "EXT", _ext())
    else:
        monkeypatch.setattr(gresock, "EXT", None)
    marker = os.urandom(8)

    async def run() -> list[bytes]:
        sock = gresock.GreSocket(receive_buffer=None)
        try:
            with s.socket(s.AF_INET, s.SOCK_RAW, 47) as raw:
                raw.settimeout(5)
                pktinfo = gresock.source_ancillary("127.0.0.1")[0][2]
                assert sock.send_parts(0x7F000001, b"\x20\x01\x88\x0b", marker, None)
                assert sock.send_parts(0x7F000001, b"\x20\x01\x88\x0b", marker[::-1], pktinfo)
                got = []
                while len(got) < 2:
                    d = raw.recv(4096)[20:]
                    if d[4:] in (marker, marker[::-1]):
                        got.append(d)
                return got
        finally:
            sock.close()

    assert asyncio.run(run()) == [b"\x20\x01\x88\x0b" + marker, b"\x20\x01\x88\x0b" + marker[::-1]]


# -- batch entry points of the send path ---------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(impl=impls, start=start_keys, data=st.data(), prefix=st.binary(max_size=4),
       count=st.one_of(st.integers(0, 0x0FFF), st.integers(0x0FF0, 0x0FFF)), protocol=st.integers(0x21, 0xFA),
       payloads=st.lists(st.binary(max_size=1500), max_size=40))
def test_rekey_seal_many_is_rekey_seal_in_turn(impl: str, start: bytes, data: st.DataObject, prefix: bytes,
                                               count: int, protocol: int, payloads: list[bytes]) -> None:
    """Compiled batch == the pure twin (PacketOps) == rekey_seal one by one with consecutive
    counts (wrapping at 4095) and each packet under the key after the previous one's."""
    key = data.draw(st.binary(min_size=len(start), max_size=len(start)))
    salt = data.draw(st.sampled_from([b"", b"\xd1", b"\xd1\x26\x9e"]))
    fast, pure = _rc4(impl), rc4.PyCryptodomeRc4()
    views = [memoryview(p) if i % 2 else p for i, p in enumerate(payloads)]
    got = fast.rekey_seal_many(start, salt, key, prefix, count, protocol, views)
    assert got == pure.rekey_seal_many(start, salt, key, prefix, count, protocol, payloads)
    one = _rc4(impl)
    frames = []
    for k, payload in enumerate(payloads):
        head = 0x9000 | ((count + k) & 0x0FFF)
        key, frame = one.rekey_seal(start, salt, key, prefix, head, protocol, payload)
        frames.append(frame)
    assert got == (key, frames)


def test_rekey_seal_many_rejects_bad_arguments(ext: ModuleType) -> None:
    cipher = ext.Rc4()
    with pytest.raises(ValueError):
        cipher.rekey_seal_many(bytes(16), b"", bytes(16), b"", 0x1000, 0x21, [b"x"])
    with pytest.raises(ValueError):
        cipher.rekey_seal_many(bytes(16), b"", bytes(8), b"", 0, 0x21, [b"x"])
    with pytest.raises(TypeError):
        cipher.rekey_seal_many(bytes(16), b"", bytes(16), b"", 0, 0x21, [b"x", "text"])
    with pytest.raises(TypeError):
        cipher.rekey_seal_many(bytes(16), b"", bytes(16), b"", 0, 0x21, 5)
    assert cipher.rekey_seal_many(bytes(16), b"", bytes(16), b"", 0, 0x21, []) == (bytes(16), [])
    with pytest.raises(ValueError):
        rc4.PyCryptodomeRc4().rekey_seal_many(bytes(16), b"", bytes(16), b"", 0x1000, 0x21, [])


@settings(max_examples=60, deadline=None)
@given(seq=st.one_of(st.integers(0, 2**32 - 1), st.integers(2**32 - 80, 2**32 - 1)),
       ack=st.one_of(st.just(-1), st.integers(0, 2**32 - 1)), call_id=st.integers(0, 0xFFFF),
       frames=st.lists(st.binary(max_size=300), max_size=150), source=st.booleans())
def test_send_gre_many_sends_what_its_pure_twin_sends(seq: int, ack: int, call_id: int, frames: list[bytes],
                                                      source: bool) -> None:
    """Through a raw socket of an experimental protocol on loopback (no GRE, no route touched):
    the compiled sendmmsg batch (more than its 64 slots, too) and the pure sendmsg loop put the
    same datagrams on the wire, header seq + k (wrapping) and the same ack on each."""
    import socket as s

    from conftest import require_root
    from pptpkit.gre.packet import data_header
    from pptpkit.io.gresock import send_gre_many, source_ancillary

    require_root()
    ext = _ext()
    pktinfo = source_ancillary("127.0.0.1")[0][2] if source else None
    with s.socket(s.AF_INET, s.SOCK_RAW, 253) as raw:
        raw.setsockopt(s.SOL_SOCKET, s.SO_RCVBUF, 4 * 1024 * 1024)
        raw.settimeout(5)
        assert ext.send_gre_many(raw.fileno(), 0x7F000001, pktinfo, call_id, seq, ack, frames) == (
            len(frames), 0, 0, 0)
        fast = [raw.recv(2048)[20:] for _ in frames]
        assert send_gre_many(raw, 0x7F000001, pktinfo, call_id, seq, ack, frames) == (len(frames), 0, 0, 0)
        pure = [raw.recv(2048)[20:] for _ in frames]
    assert fast == pure == [data_header(call_id, len(f), (seq + k) & 0xFFFFFFFF, ack) + f
                            for k, f in enumerate(frames)]


def test_send_gre_many_counts_refusals_and_checks_arguments(ext: ModuleType) -> None:
    """Every message is tried and counted, never raised: a bad descriptor refuses each one (an
    error, with its errno)."""
    import errno as e

    assert ext.send_gre_many(-1, 0x7F000001, None, 1, 0, -1, [b"a", b"b", b"c"]) == (0, 0, 3, e.EBADF)
    assert ext.send_gre_many(-1, 0x7F000001, None, 1, 0, -1, []) == (0, 0, 0, 0)
    with pytest.raises(ValueError):
        ext.send_gre_many(-1, 1 << 32, None, 1, 0, -1, [b"a"])
    with pytest.raises(ValueError):
        ext.send_gre_many(-1, 1, b"short", 1, 0, -1, [b"a"])
    with pytest.raises(ValueError):
        ext.send_gre_many(-1, 1, None, 1 << 16, 0, -1, [b"a"])
    with pytest.raises(ValueError):
        ext.send_gre_many(-1, 1, None, 1, 0, -1, [bytes(65536)])
    with pytest.raises(TypeError):
        ext.send_gre_many(-1, 1, None, 1, 0, -1, [b"a", 3])


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "pure"])
def test_gre_channel_send_frames_puts_the_engine_numbering_on_the_wire(
        compiled: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """GreChannel.send_frames over a real GRE socket, both paths: the frames the window admits
    go out in one batch, numbered by the engine, and the rest are left to send_frame (queued)."""
    import asyncio
    import socket as s

    from conftest import require_root

    require_root()
    from pptpkit.gre import GreCallConfig
    from pptpkit.gre.packet import encode_gre
    from pptpkit.io import gresock
    from pptpkit.io.grechannel import GreChannel

    monkeypatch.setattr(gresock, "EXT", _ext() if compiled else None)
    marker = os.urandom(8)
    frames = [marker + bytes([i]) * i for i in range(8)]

    async def run() -> tuple[list[bytes], int, int]:
        sock = gresock.GreSocket(receive_buffer=None)
        config = GreCallConfig(call_id=0x7E57, peer_call_id=0x7E58, peer_window=5, first_seq=0xFFFFFFFE)
        channel = GreChannel(sock, "127.0.0.1", config, local_address="127.0.0.1")
        try:
            with s.socket(s.AF_INET, s.SOCK_RAW, 47) as raw:
                raw.settimeout(5)
                k = channel.send_frames(frames)
                assert [channel.send_frame(f) for f in frames[k:]] == [False] * (len(frames) - k)
                got = []
                while len(got) < k:
                    d = raw.recv(4096)[20:]
                    if marker in d:
                        got.append(d)
                return got, k, channel.engine.queued
        finally:
            channel.close()
            sock.close()

    got, k, queued = asyncio.run(run())
    assert (k, queued) == (5, 3)
    assert got == [encode_gre(0x7E58, f, (0xFFFFFFFE + i) & 0xFFFFFFFF, None)
                   for i, f in enumerate(frames[:5])]
