"""The shared namespace lab's guards that need no root: TEST-NET only, names unique per lab."""

from __future__ import annotations

import pytest

from pptpkit.lab.netns import NetnsLab, is_test_net


@pytest.mark.parametrize("address", ["192.0.2.1/24", "198.51.100.255", "203.0.113.7/32"])
def test_test_net_addresses_are_accepted(address: str) -> None:
    assert is_test_net(address)


@pytest.mark.parametrize("address", ["10.0.0.1/24", "192.0.3.1/24", "198.51.101.1", "127.0.0.1/8"])
def test_other_addresses_are_not_test_net(address: str) -> None:
    assert not is_test_net(address)


def test_a_veth_outside_test_net_is_refused_before_anything_is_built() -> None:
    lab = NetnsLab("pkt")
    # Namespaces that do not exist: the address check must come first, so no root is needed.
    with pytest.raises(ValueError, match=r"10\.0\.0\.2/24 is not a TEST-NET address"):
        lab.add_veth("pkt-none-a", "pkt-none-b", addr_a="192.0.2.1/24", addr_b="10.0.0.2/24")
    assert lab.namespaces == [] and lab.close() == []


def test_two_labs_of_one_process_never_share_names() -> None:
    first, second = NetnsLab("pkt"), NetnsLab("pkt")
    assert first.prefix != second.prefix
    assert not second.prefix.startswith(first.prefix + "-")
