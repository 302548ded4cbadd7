"""MS-CHAP primitives against RFC 2759 / RFC 2433 published vectors and independent checks."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from Crypto.Cipher import DES
from Crypto.Hash import MD4
from crypto_vectors import VectorFile
from hypothesis import given, settings
from hypothesis import strategies as st

from pptpkit.crypto import mschap
from pptpkit.crypto.mschap import CryptoInputError
from pptpkit.errors import DecodeError, PptpkitError

FUZZ = settings(max_examples=200, deadline=None)


# ---------------------------------------------------------------------------------------------
# RFC 2759 section 9.2: the whole chain


def test_rfc2759_hash_example_chain() -> None:
    v = VectorFile("rfc2759_hash_example.txt")
    user, password = v.s("username"), v.s("password")
    assert user.encode() == v.b("username_bytes")
    assert password.encode("utf-16-le") == v.b("password_utf16le")
    ac, pc = v.b("authenticator_challenge"), v.b("peer_challenge")

    assert mschap.challenge_hash(pc, ac, user) == v.b("challenge")
    pw_hash = mschap.nt_password_hash(password)
    assert pw_hash == v.b("password_hash")
    assert mschap.challenge_response(v.b("challenge"), pw_hash) == v.b("nt_response")
    assert mschap.generate_nt_response(ac, pc, user, password) == v.b("nt_response")
    assert mschap.generate_nt_response_from_hash(ac, pc, user, pw_hash) == v.b("nt_response")
    assert mschap.hash_nt_password_hash(pw_hash) == v.b("password_hash_hash")
    auth = mschap.generate_authenticator_response(pw_hash, v.b("nt_response"), pc, ac, user)
    assert auth == v.s("authenticator_response")
    assert mschap.check_authenticator_response(pw_hash, v.b("nt_response"), pc, ac, user, auth)
    assert mschap.verify_nt_response(ac, pc, user, pw_hash, v.b("nt_response"))


def test_rfc2759_chain_matches_direct_library_computation() -> None:
    # Second path: straight hashlib/pycryptodome calls, no mschap helpers, so a bug shared by the
    # helpers and a misread vector cannot hide.
    v = VectorFile("rfc2759_hash_example.txt")
    ac, pc = v.b("authenticator_challenge"), v.b("peer_challenge")
    pw_hash = MD4.new(v.b("password_utf16le")).digest()
    assert pw_hash == v.b("password_hash")
    challenge = hashlib.sha1(pc + ac + v.b("username_bytes")).digest()[:8]
    assert challenge == v.b("challenge")
    assert MD4.new(pw_hash).digest() == v.b("password_hash_hash")


def test_rfc2759_des_key_example() -> None:
    v = VectorFile("rfc2759_des_key_example.txt")
    assert v.s("password").encode("utf-16-le") == v.b("password_utf16le")
    assert mschap.nt_password_hash(v.s("password")) == v.b("password_hash")
    # The RFC's printed "unicode" password is really ASCII: its MD4 is not the printed hash.
    assert MD4.new(v.b("password_printed_ascii")).digest() != v.b("password_hash")
    assert v.b("password_hash")[:7] == v.b("raw_key_1")
    assert v.b("password_hash")[7:14] == v.b("raw_key_2")
    assert mschap.des_key_with_parity(v.b("raw_key_1")) == v.b("parity_key_1")
    assert mschap.des_key_with_parity(v.b("raw_key_2")) == v.b("parity_key_2")


# ---------------------------------------------------------------------------------------------
# RFC 2433 appendix B


def test_rfc2433_hash_example() -> None:
    v = VectorFile("rfc2433_hash_example.txt")
    password = v.s("password")
    assert password.encode("utf-16-le") == v.b("password_utf16le")
    assert mschap.nt_password_hash(password) == v.b("password_hash")
    assert mschap.nt_challenge_response(v.b("challenge"), password) == v.b("nt_challenge_response")
    assert mschap.nt_challenge_response_from_hash(v.b("challenge"), v.b("password_hash")) == v.b(
        "nt_challenge_response"
    )
    assert mschap.verify_mschapv1_nt_response(
        v.b("challenge"), v.b("password_hash"), v.b("nt_challenge_response")
    )
    assert mschap.des_key_with_parity(v.b("raw_key_1")) == v.b("parity_key_1")
    assert mschap.des_key_with_parity(v.b("raw_key_2")) == v.b("parity_key_2")


def test_well_known_hashes_of_password() -> None:
    # Widely published NT and LM hashes of "password", an independent check of both hashes.
    assert mschap.nt_password_hash("password").hex() == "8846f7eaee8fb117ad06bdd830b7586c"
    assert mschap.lm_password_hash("password").hex() == "e52cac67419a9a224a3b108f3fa6cb6d"
    # LM upper-cases and is limited to 14 characters.
    assert mschap.lm_password_hash("PassWord") == mschap.lm_password_hash("password")
    assert mschap.lm_password_hash("a" * 14) == mschap.lm_password_hash("a" * 20)
    assert mschap.lm_password_hash("a" * 13) != mschap.lm_password_hash("a" * 14)


def test_lm_challenge_response_is_challenge_response_of_lm_hash() -> None:
    challenge = bytes(range(8))
    lm = mschap.lm_password_hash("clientPass")
    assert lm.hex() == "76a152936096d7830e2390227404afd2"  # RFC 3079 2.5.1 step 1
    assert mschap.lm_challenge_response(challenge, "clientPass") == mschap.challenge_response(challenge, lm)
    assert mschap.lm_challenge_response_from_hash(challenge, lm) == mschap.challenge_response(challenge, lm)


# ---------------------------------------------------------------------------------------------
# DES helpers


def _parity_by_bitstring(key7: bytes) -> bytes:
    bits = "".join(f"{b:08b}" for b in key7)
    out = []
    for i in range(8):
        group = bits[7 * i : 7 * i + 7]
        parity = "1" if group.count("1") % 2 == 0 else "0"
        out.append(int(group + parity, 2))
    return bytes(out)


@FUZZ
@given(st.binary(min_size=7, max_size=7))
def test_des_parity_matches_bitstring_reference(key7: bytes) -> None:
    key8 = mschap.des_key_with_parity(key7)
    assert key8 == _parity_by_bitstring(key7)
    assert all(bin(b).count("1") % 2 == 1 for b in key8)


@FUZZ
@given(st.binary(min_size=7, max_size=7), st.binary(min_size=8, max_size=8))
def test_des_encrypt_round_trips(key7: bytes, clear: bytes) -> None:
    cypher = mschap.des_encrypt(clear, key7)
    assert DES.new(mschap.des_key_with_parity(key7), DES.MODE_ECB).decrypt(cypher) == clear


needs_openssl = pytest.mark.skipif(mschap._OPENSSL_FUNCTIONS is None,
                                   reason="libcrypto without MD4()/DES_ecb_encrypt")


@needs_openssl
def test_openssl_backend_is_used_when_libcrypto_has_it() -> None:
    assert mschap.HASH_BACKEND == "openssl"


@needs_openssl
@FUZZ
@given(st.binary(max_size=600), st.binary(min_size=8, max_size=8), st.binary(min_size=8, max_size=8))
def test_openssl_md4_and_des_match_pycryptodome(data: bytes, key8: bytes, clear: bytes) -> None:
    assert mschap._openssl_md4(data) == MD4.new(data).digest()
    assert mschap._openssl_des(key8, clear) == DES.new(key8, DES.MODE_ECB).encrypt(clear)


def test_rfc2759_chain_on_the_pycryptodome_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    # The fallback where libcrypto lacks the functions: the whole chain, RFC vectors.
    monkeypatch.setattr(mschap, "_md4", mschap._pycryptodome_md4)
    monkeypatch.setattr(mschap, "_des", mschap._pycryptodome_des)
    test_rfc2759_hash_example_chain()
    test_rfc2759_des_key_example()
    test_rfc2433_hash_example()


# ---------------------------------------------------------------------------------------------
# User names, authenticator response checks


def test_challenge_hash_ignores_domain_prefix() -> None:
    pc, ac = bytes(16), bytes(range(16))
    plain = mschap.challenge_hash(pc, ac, "User")
    assert mschap.challenge_hash(pc, ac, "CORP\\User") == plain
    assert mschap.challenge_hash(pc, ac, b"A\\B\\User") == plain
    assert mschap.challenge_hash(pc, ac, b"User") == plain
    assert mschap.challenge_hash(pc, ac, "user") != plain
    assert mschap.strip_domain("DOM\\x") == b"x"
    assert mschap.strip_domain("x\\") == b""
    assert mschap.strip_domain("ünï") == "ünï".encode()


def test_check_authenticator_response_variants() -> None:
    v = VectorFile("rfc2759_hash_example.txt")
    args = (v.b("password_hash"), v.b("nt_response"), v.b("peer_challenge"), v.b("authenticator_challenge"))
    good = v.s("authenticator_response")
    check = mschap.check_authenticator_response
    assert check(*args, "User", good)
    assert check(*args, "User", good.lower())
    assert check(*args, "User", good.encode())
    assert not check(*args, "User", good[:-1] + ("7" if good[-1] != "7" else "8"))
    assert not check(*args, "User", good[:-1])
    assert not check(*args, "User", good + "0")
    assert not check(*args, "User", "")
    assert not check(*args, "User", "S=" + "\u00e9" * 40)
    assert not check(*args, "Other", good)
    wrong_hash = mschap.nt_password_hash("wrong")
    assert not check(wrong_hash, *args[1:], "User", good)


def test_verify_nt_response_rejects_wrong_password_and_size() -> None:
    ac, pc = bytes(range(16)), bytes(range(16, 32))
    h = mschap.nt_password_hash("secret")
    resp = mschap.generate_nt_response(ac, pc, "bob", "secret")
    assert mschap.verify_nt_response(ac, pc, "bob", h, resp)
    assert not mschap.verify_nt_response(ac, pc, "bob", mschap.nt_password_hash("Secret"), resp)
    assert not mschap.verify_nt_response(ac, pc, "bob", h, resp[:-1])
    assert not mschap.verify_mschapv1_nt_response(bytes(8), h, bytes(24))


@pytest.mark.parametrize(
    "call",
    [
        lambda: mschap.challenge_hash(bytes(15), bytes(16), "u"),
        lambda: mschap.challenge_hash(bytes(16), bytes(17), "u"),
        lambda: mschap.challenge_response(bytes(7), bytes(16)),
        lambda: mschap.challenge_response(bytes(8), bytes(15)),
        lambda: mschap.hash_nt_password_hash(bytes(20)),
        lambda: mschap.generate_authenticator_response(bytes(16), bytes(23), bytes(16), bytes(16), "u"),
        lambda: mschap.des_key_with_parity(bytes(8)),
        lambda: mschap.des_encrypt(bytes(9), bytes(7)),
        lambda: mschap.encrypt_pw_block_with_password_hash("x" * 257, bytes(16), bytes(516)),
        lambda: mschap.encrypt_pw_block_with_password_hash("x", bytes(16), bytes(515)),
        lambda: mschap.decrypt_pw_block(bytes(515), bytes(16)),
        lambda: mschap.nt_password_hash_encrypted_with_block(bytes(16), bytes(8)),
    ],
)
def test_wrong_sizes_raise_crypto_input_error(call: Callable[[], object]) -> None:
    with pytest.raises(CryptoInputError) as info:
        call()
    assert isinstance(info.value, DecodeError)
    assert isinstance(info.value, ValueError)


# ---------------------------------------------------------------------------------------------
# Change-password blocks


def test_pw_block_round_trip_and_layout() -> None:
    old = mschap.nt_password_hash("old")
    filler = bytes(range(256)) * 2 + b"\xaa\xbb\xcc\xdd"
    block = mschap.encrypt_pw_block_with_password_hash("n\u00e9w", old, filler)
    assert len(block) == mschap.PW_BLOCK_SIZE
    clear = rc4_crypt(old, block)
    # The password sits right before the little-endian length, the filler before it.
    assert clear[-4:] == (6).to_bytes(4, "little")
    assert clear[506:512] == "n\u00e9w".encode("utf-16-le")
    assert clear[:506] == filler[:506]
    assert mschap.decrypt_pw_block(block, old) == "n\u00e9w"
    assert mschap.decrypt_pw_block(mschap.encrypt_pw_block_with_password_hash("", old, filler), old) == ""


def rc4_crypt(key: bytes, data: bytes) -> bytes:
    from Crypto.Cipher import ARC4

    return bytes(ARC4.new(key).decrypt(data))


@FUZZ
@given(st.binary(min_size=516, max_size=516), st.binary(min_size=16, max_size=16))
def test_decrypt_pw_block_fuzz(block: bytes, key: bytes) -> None:
    try:
        result = mschap.decrypt_pw_block(block, key)
    except PptpkitError:
        return
    assert isinstance(result, str) and len(result) <= 256


def test_nt_password_hash_encrypted_with_block_decrypts_back() -> None:
    old, new = mschap.nt_password_hash("old"), mschap.nt_password_hash("new")
    enc = mschap.nt_password_hash_encrypted_with_block(old, new)
    k1, k2 = mschap.des_key_with_parity(new[:7]), mschap.des_key_with_parity(new[7:14])
    assert DES.new(k1, DES.MODE_ECB).decrypt(enc[:8]) == old[:8]
    assert DES.new(k2, DES.MODE_ECB).decrypt(enc[8:]) == old[8:]


# ---------------------------------------------------------------------------------------------
# Properties


@FUZZ
@given(
    st.binary(min_size=16, max_size=16),
    st.binary(min_size=16, max_size=16),
    st.text(max_size=40),
    st.text(max_size=40),
)
def test_v2_round_trip_properties(ac: bytes, pc: bytes, user: str, password: str) -> None:
    h = mschap.nt_password_hash(password)
    resp = mschap.generate_nt_response(ac, pc, user, password)
    assert len(resp) == 24
    assert resp == mschap.generate_nt_response_from_hash(ac, pc, user, h)
    assert mschap.verify_nt_response(ac, pc, user, h, resp)
    auth = mschap.generate_authenticator_response(h, resp, pc, ac, user)
    assert len(auth) == 42 and auth.startswith("S=") and auth[2:] == auth[2:].upper()
    assert mschap.check_authenticator_response(h, resp, pc, ac, user, auth.lower())
