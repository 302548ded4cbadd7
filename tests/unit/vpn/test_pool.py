"""pptpd's address lists and the pool that hands out (local, remote) pairs."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pptpkit.errors import ConfigError
from pptpkit.vpn.pool import MAX_POOL_ADDRESSES, AddressPool, parse_ip_list

# -- pptpd address lists ----------------------------------------------------------------------------


def test_ip_list_pptpd_syntax() -> None:
    addrs = parse_ip_list("198.51.100.10-50,198.51.100.60")
    assert len(addrs) == 42
    assert addrs[0] == "198.51.100.10" and addrs[40] == "198.51.100.50" and addrs[41] == "198.51.100.60"


def test_ip_list_full_range_end_and_duplicates() -> None:
    assert parse_ip_list("198.51.100.254-198.51.101.1") == [
        "198.51.100.254", "198.51.100.255", "198.51.101.0", "198.51.101.1"]
    assert parse_ip_list("192.0.2.1, 192.0.2.1-2") == ["192.0.2.1", "192.0.2.2"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty item"),
        ("192.0.2.1,,192.0.2.2", "empty item"),
        ("192.0.2.x", "'192.0.2.x' is not an IPv4 address"),
        ("192.0.2.10-300", "range end 300 is not an octet"),
        ("192.0.2.10-5", "ends before it starts"),
        ("192.0.2.1-foo", "'foo' is not a range end"),
        ("10.0.0.0-10.255.255.255", f"more than {MAX_POOL_ADDRESSES} addresses"),
    ],
)
def test_ip_list_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_ip_list(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789.,- x", max_size=40))
def test_ip_list_only_config_errors(text: str) -> None:
    try:
        addrs = parse_ip_list(text)
    except ConfigError:
        return
    assert addrs and len(addrs) == len(set(addrs)) <= MAX_POOL_ADDRESSES


def test_address_pool_single_local_shared() -> None:
    pool = AddressPool(["198.51.100.1"], parse_ip_list("198.51.100.2-3"))
    a, b = pool.allocate(), pool.allocate()
    assert a == ("198.51.100.1", "198.51.100.2") and b == ("198.51.100.1", "198.51.100.3")
    assert pool.allocate() is None
    pool.release(a)  # type: ignore[arg-type]
    assert pool.allocate() == a


def test_address_pool_paired_lists() -> None:
    pool = AddressPool(parse_ip_list("198.51.100.1-2"), parse_ip_list("198.51.100.11-13"))
    assert pool.size == 2
    assert [pool.allocate(), pool.allocate(), pool.allocate()] == [
        ("198.51.100.1", "198.51.100.11"), ("198.51.100.2", "198.51.100.12"), None]



def test_pool_allocate_skips_excluded_and_released_pairs_return() -> None:
    pool = AddressPool(["198.51.100.1"], ["198.51.100.10", "198.51.100.11", "198.51.100.12"])
    first = pool.allocate(exclude={"198.51.100.10"})
    assert first == ("198.51.100.1", "198.51.100.11")
    assert pool.allocate() == ("198.51.100.1", "198.51.100.10")
    assert pool.allocate(exclude={"198.51.100.12"}) is None
    pool.release(first)
    assert pool.allocate() == first


def test_pool_release_is_idempotent_and_ignores_strangers() -> None:
    pool = AddressPool(["198.51.100.1"], parse_ip_list("198.51.100.10-12"))
    a = pool.allocate()
    assert a is not None and pool.in_use == 1
    pool.release(a)
    pool.release(a)  # a second release must not free the slot twice
    pool.release(("198.51.100.1", "203.0.113.9"))
    assert pool.in_use == 0
    got = [pool.allocate() for _ in range(4)]
    assert got[3] is None and len({g for g in got[:3]}) == 3


def test_pool_always_hands_out_the_lowest_free_pair() -> None:
    """The heap gives the same answer as a scan from the start, whatever the order of releases
    and exclusions."""
    remote = parse_ip_list("198.51.100.1-60")
    pool = AddressPool(["192.0.2.1"], remote)
    rng = random.Random(7)
    held: set[str] = set()
    for _ in range(2000):
        if held and rng.random() < 0.45:
            addr = rng.choice(sorted(held))
            held.discard(addr)
            pool.release(("192.0.2.1", addr))
            continue
        exclude = set(rng.sample(remote, 3))
        expected = next((r for r in remote if r not in held and r not in exclude), None)
        pair = pool.allocate(exclude=exclude)
        assert (pair[1] if pair else None) == expected
        if pair is not None:
            held.add(pair[1])
        assert pool.in_use == len(held)


@pytest.mark.parametrize("text", ["198.51.10.10-4\u00b2", "198.51.10.1-\u0663", "\u0661.2.3.4"])
def test_ip_list_refuses_non_ascii_digits(text: str) -> None:
    """str.isdigit() accepts "²" and Arabic-Indic digits, which int() or the address parser
    then refuse: found by the pptpd.conf fuzzer as an escaping ValueError."""
    with pytest.raises(ConfigError):
        parse_ip_list(text)
