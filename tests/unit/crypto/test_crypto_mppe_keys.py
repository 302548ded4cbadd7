"""MPPE key derivation against RFC 3079 sections 2.5 and 3.5, with a second computation path."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from crypto_vectors import VectorFile, rc4_reference
from hypothesis import given, settings
from hypothesis import strategies as st

from pptpkit.crypto import mppe, mschap
from pptpkit.crypto.mschap import CryptoInputError

V1 = "rfc3079_mschapv1_keys.txt"
V2 = "rfc3079_mschapv2_keys.txt"


def _reference_change(start: bytes, session: bytes, bits: int) -> bytes:
    """RFC 3078 7.3 written out independently: SHA-1, pure-Python RC4, reduction."""
    n = len(start)
    interim = hashlib.sha1(start + bytes(40) + session + b"\xf2" * 40).digest()[:n]
    new = rc4_reference(interim, interim)
    if bits == 40:
        new = b"\xd1\x26\x9e" + new[3:]
    elif bits == 56:
        new = b"\xd1" + new[1:]
    return new


# ---------------------------------------------------------------------------------------------
# RFC 3079 section 2.5 (MS-CHAPv1)


def test_rfc3079_v1_lan_manager_40_and_56() -> None:
    v = VectorFile(V1)
    lm = mschap.lm_password_hash(v.s("password"))
    assert lm == v.b("lm_password_hash")
    start = mppe.mschapv1_lm_start_key(lm, 40)
    assert start == lm[:8]
    assert mppe.get_new_key_from_sha(start, start, 8) == v.b("lm_get_key_8")
    assert mppe.initial_session_key(start, 40) == v.b("session_key_40")
    assert mppe.initial_session_key(mppe.mschapv1_lm_start_key(lm, 56), 56) == v.b("session_key_56")
    assert mppe.reduce_key(v.b("lm_get_key_8"), 40) == v.b("session_key_40")
    assert mppe.reduce_key(v.b("lm_get_key_8"), 56) == v.b("session_key_56")


def test_rfc3079_v1_128_and_the_step3_misprint() -> None:
    v = VectorFile(V1)
    pw_hash = mschap.nt_password_hash(v.s("password"))
    assert pw_hash == v.b("password_hash")
    phh = mschap.hash_nt_password_hash(pw_hash)
    assert phh == v.b("password_hash_hash")
    start = mppe.mschapv1_start_key(phh, v.b("challenge"), 128)
    assert start == v.b("start_key_128")
    assert mppe.mschapv1_start_key_from_hash(pw_hash, v.b("challenge"), 128) == start
    assert mppe.get_start_key(v.b("challenge"), phh) == start
    assert mppe.initial_session_key(start, 128) == v.b("session_key_128")
    # Second path straight from the RFC text, and proof that the misprinted value is wrong.
    assert hashlib.sha1(phh + phh + v.b("challenge")).digest()[:16] == start
    assert start != v.b("misprinted_start_key")
    assert mppe.initial_session_key(v.b("misprinted_start_key"), 128) != v.b("session_key_128")


def test_v1_shorter_keys_follow_pppd_nt_route() -> None:
    # pppd (and so Linux) takes the first 8 octets of the same NT-based digest for 40/56 bits.
    v = VectorFile(V1)
    for bits in (40, 56):
        key = mppe.mschapv1_start_key(v.b("password_hash_hash"), v.b("challenge"), bits)
        assert key == v.b("start_key_128")[:8]


# ---------------------------------------------------------------------------------------------
# RFC 3079 section 3.5 (MS-CHAPv2)


def test_rfc3079_v2_master_key_and_nt_response() -> None:
    v = VectorFile(V2)
    pw_hash = mschap.nt_password_hash(v.s("password"))
    assert pw_hash == v.b("password_hash")
    assert mschap.hash_nt_password_hash(pw_hash) == v.b("password_hash_hash")
    nt = mschap.generate_nt_response(
        v.b("authenticator_challenge"), v.b("peer_challenge"), v.s("username"), v.s("password")
    )
    assert nt == v.b("nt_response")
    master = mppe.get_master_key(v.b("password_hash_hash"), nt)
    assert master == v.b("master_key")
    magic1 = b"This is the MPPE Master Key"
    assert hashlib.sha1(v.b("password_hash_hash") + nt + magic1).digest()[:16] == master


@pytest.mark.parametrize("bits", [40, 56, 128])
def test_rfc3079_v2_send_keys(bits: int) -> None:
    v = VectorFile(V2)
    n = mppe.key_length(bits)
    master = v.b("master_key")
    start = mppe.get_asymmetric_start_key(master, n, True, True)
    assert start == v.b(f"send_start_key_{bits}")
    session = mppe.initial_session_key(start, bits)
    assert session == v.b(f"send_session_key_{bits}")
    send, recv = mppe.mschapv2_start_keys(
        v.b("password_hash_hash"), v.b("nt_response"), is_server=True, key_bits=bits
    )
    assert send == start
    # The client's receive key is the server's send key, and vice versa.
    c_send, c_recv = mppe.mschapv2_start_keys(
        v.b("password_hash_hash"), v.b("nt_response"), is_server=False, key_bits=bits
    )
    assert (c_send, c_recv) == (recv, send)
    assert send != recv


def test_rfc3079_v2_receive_keys() -> None:
    v = VectorFile(V2)
    for bits in (40, 128):
        start = mppe.get_asymmetric_start_key(v.b("master_key"), mppe.key_length(bits), False, True)
        assert start == v.b(f"recv_start_key_{bits}")
        assert mppe.initial_session_key(start, bits) == v.b(f"recv_session_key_{bits}")


@pytest.mark.parametrize("bits", [40, 56, 128])
def test_rfc3079_sample_messages(bits: int) -> None:
    v = VectorFile(V2)
    key = v.b(f"send_session_key_{bits}")
    message = v.s("message").encode()
    expected = v.b(f"rc4_{bits}")
    from Crypto.Cipher import ARC4

    assert ARC4.new(key).encrypt(message) == expected
    assert rc4_reference(key, message) == expected


def test_rfc3079_56bit_sample_misprint() -> None:
    v = VectorFile(V2)
    computed = rc4_reference(v.b("send_session_key_56"), v.s("message").encode())
    printed = v.b("rc4_56_printed")
    assert computed[:-1] == printed[:-1]
    assert (computed[-1], printed[-1]) == (0xB8, 0x58)
    # The 56-bit sample is not the 40-bit key's output despite the RFC's label.
    assert computed != v.b("rc4_40")


# ---------------------------------------------------------------------------------------------
# Key changes


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([40, 56, 128]), st.binary(min_size=16, max_size=16), st.integers(1, 5))
def test_change_key_matches_reference(bits: int, raw: bytes, rounds: int) -> None:
    start = raw[: mppe.key_length(bits)]
    key = mppe.initial_session_key(start, bits)
    ref = key
    for _ in range(rounds):
        key = mppe.change_key(start, key, bits)
        ref = _reference_change(start, ref, bits)
        assert key == ref
    assert len(key) == len(start)


def test_sixteen_octet_start_key_is_accepted_for_short_keys() -> None:
    start16 = bytes(range(16))
    for bits in (40, 56):
        assert mppe.initial_session_key(start16, bits) == mppe.initial_session_key(start16[:8], bits)


@pytest.mark.parametrize(
    "call",
    [
        lambda: mppe.key_length(64),
        lambda: mppe.reduce_key(bytes(16), 40),
        lambda: mppe.initial_session_key(bytes(12), 128),
        lambda: mppe.initial_session_key(bytes(8), 128),
        lambda: mppe.get_new_key_from_sha(bytes(8), bytes(8), 12),
        lambda: mppe.get_new_key_from_sha(bytes(8), bytes(16), 16),
        lambda: mppe.get_master_key(bytes(16), bytes(23)),
        lambda: mppe.get_asymmetric_start_key(bytes(16), 12, True, True),
        lambda: mppe.get_asymmetric_start_key(bytes(15), 16, True, True),
        lambda: mppe.get_start_key(bytes(16), bytes(16)),
        lambda: mppe.mschapv1_lm_start_key(bytes(16), 128),
        lambda: mppe.change_key(bytes(16), bytes(8), 128),
    ],
)
def test_bad_key_inputs(call: Callable[[], object]) -> None:
    with pytest.raises(CryptoInputError):
        call()
