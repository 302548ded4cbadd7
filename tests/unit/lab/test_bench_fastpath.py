"""The benchmark's pure parts and the fast MPPE RC4 path (no root needed)."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
from Crypto.Cipher import ARC4
from hypothesis import given, settings
from hypothesis import strategies as st

from pptpkit.crypto import mppe, rc4
from pptpkit.lab.bench.agent import probe_packet, session_config
from pptpkit.lab.bench.relay import FrameCounter, frame_stream, ppp_frame
from pptpkit.lab.bench.report import to_json, to_table
from pptpkit.lab.bench.runner import Report
from pptpkit.ppp import hdlc
from pptpkit.ppp.session_config import SessionRole


@pytest.mark.skipif("openssl" not in rc4.BACKENDS, reason="libcrypto RC4 not available")
@settings(max_examples=200, deadline=None)
@given(key=st.binary(min_size=5, max_size=16), chunks=st.lists(st.binary(max_size=3000), max_size=5))
def test_openssl_rc4_matches_pycryptodome(key: bytes, chunks: list[bytes]) -> None:
    fast = rc4.OpenSslRc4()
    fast.set_key(key)
    ref = ARC4.new(key)
    for chunk in chunks:
        assert fast.crypt(chunk) == ref.encrypt(chunk)


@settings(max_examples=100, deadline=None)
@given(payloads=st.lists(st.binary(min_size=1, max_size=1500), min_size=1, max_size=20),
       stateless=st.booleans())
def test_both_rc4_backends_produce_the_same_mppe_stream(payloads: list[bytes], stateless: bool) -> None:
    key = bytes(range(16))
    cfg = mppe.MppeConfig(start_key=key, stateless=stateless)
    enc_default = mppe.MppeEncryptor(cfg)
    ref_cfg = dataclasses.replace(cfg, rc4=rc4.PyCryptodomeRc4)
    enc_ref = mppe.MppeEncryptor(ref_cfg)
    dec_ref = mppe.MppeDecryptor(ref_cfg)
    for payload in payloads:
        body = enc_default.encrypt(0x21, payload)
        assert body == enc_ref.encrypt(0x21, payload)
        assert dec_ref.decrypt(body) == (0x21, payload)


def test_frame_counter_counts_frames_across_any_split() -> None:
    stream = frame_stream(count=7) + hdlc.encode_frame(ppp_frame()) * 3
    for piece in (1, 2, 3, 100, 1401, len(stream)):
        counter = FrameCounter()
        for i in range(0, len(stream), piece):
            counter.feed(stream[i:i + piece])
        assert counter.frames == 10, piece
        assert counter.octets == len(stream)


def test_frame_counter_with_shared_flags() -> None:
    body = hdlc.encode_frame(ppp_frame())[:-1]  # strip the closing flag: "~a~b~c~" style
    stream = b"".join(body for _ in range(5)) + b"\x7e"
    counter = FrameCounter()
    counter.feed(stream)
    assert counter.frames == 5


def test_ppp_frame_is_1400_octets_and_decodes() -> None:
    frame = ppp_frame()
    assert len(frame) == 1400
    assert hdlc.HdlcDecoder(max_frame=65535).feed(frame_stream(count=2)) == [frame, frame]


def test_probe_packet_has_a_valid_ipv4_checksum() -> None:
    from pptpkit.lab.bench.agent import _ip_checksum
    from pptpkit.ppp.session_config import LinkUp

    up = LinkUp(local_address=None, peer_address=None, dns_servers=(), nbns_servers=(),
                local_ipv6_id=None, peer_ipv6_id=None, mtu=1396, mppe="none", auth_method=None,
                username="")
    packet = probe_packet(up, 12345)
    assert packet[0] == 0x45 and len(packet) == 64
    assert _ip_checksum(packet[:20]) == 0


def test_session_configs_are_valid_for_every_mode() -> None:
    for mode in ("stateless", "stateful", "none"):
        for role in (SessionRole.SERVER, SessionRole.CLIENT):
            cfg = session_config(role, mode, echo_interval=10.0)
            assert cfg.mru == 1400
            assert cfg.mppe.required == (mode != "none")


def test_report_renders_as_table_and_json() -> None:
    report = Report("throughput", "pptpkit bench throughput")
    report.add("limit", "veth client->server", "Mbit/s", [9000.0, 9500.0, 9100.0])
    report.checks["x"] = True
    table = to_table(report)
    assert "veth client->server" in table and "9,100 Mbit/s" in table and "min 9,000" in table
    data = json.loads(to_json(report))
    assert data["figures"][0]["value"] == 9100.0
    assert data["machine"]["nproc"] == os.cpu_count()
