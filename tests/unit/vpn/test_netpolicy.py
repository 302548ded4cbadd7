"""The server's nftables MSS clamp ruleset."""

from __future__ import annotations

import pytest

from pptpkit.vpn.netpolicy import nft_ruleset


def test_nft_ruleset_is_self_contained_and_validated() -> None:
    text = nft_ruleset("pptpkit", "pptpkit*")
    assert text.startswith("add table inet pptpkit\ndelete table inet pptpkit\n")
    assert 'oifname "pptpkit*" tcp flags syn / syn,rst tcp option maxseg size set rt mtu' in text
    for table, pattern in (("bad table", "x*"), ("t", 'x"; drop'), ("t", "")):
        with pytest.raises(ValueError):
            nft_ruleset(table, pattern)
