"""Accounting records as RFC 2866 wants them, from a session (no sockets)."""

from __future__ import annotations

import ipaddress
from types import SimpleNamespace
from typing import Any

from pptpkit.ops.accounting import Counters, Status, nas_record, session_record
from pptpkit.radius.access import AccessResult, NasInfo
from pptpkit.vpn.notices import TerminateCause

NAS = NasInfo(nas_identifier="gw1", nas_ip_address=ipaddress.IPv4Address("192.0.2.2"))


def session(**kw: Any) -> Any:
    call = SimpleNamespace(call_id=4711, local_address="192.0.2.2")
    base = dict(id="5F000000000000A1", user="alice", source="203.0.113.9", call=call, access=None,
                address=ipaddress.IPv4Address("198.51.100.20"), up=None)
    base.update(kw)
    return SimpleNamespace(**base)


def as_dict(attrs: list[Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for name, value in attrs:
        out.setdefault(name, []).append(value)
    return out


def test_start_carries_identity_and_no_counters() -> None:
    a = as_dict(session_record(Status.START, session(), NAS, session_time=0, counters=Counters()))
    assert a["Acct-Status-Type"] == ["Start"] and a["Acct-Session-Id"] == ["5F000000000000A1"]
    assert a["NAS-Port"] == [4711] and a["NAS-Identifier"] == ["gw1"] and a["Acct-Authentic"] == ["Local"]
    assert a["Framed-IP-Address"] == [ipaddress.IPv4Address("198.51.100.20")]
    assert a["Calling-Station-Id"] == ["203.0.113.9"] and a["Called-Station-Id"] == ["192.0.2.2"]
    assert "Acct-Input-Octets" not in a and "Acct-Terminate-Cause" not in a


def test_stop_splits_gigawords_and_echoes_class() -> None:
    access = AccessResult(accepted=True, classes=(b"one", b"two"))
    big = 5 * (1 << 32) + 123
    a = as_dict(session_record(Status.STOP, session(access=access), NAS, session_time=3600,
                               counters=Counters(big, 7, 9, 11), cause=TerminateCause.ADMIN_RESET))
    assert a["Acct-Input-Octets"] == [123] and a["Acct-Input-Gigawords"] == [5]
    assert a["Acct-Output-Octets"] == [7] and a["Acct-Output-Gigawords"] == [0]
    assert a["Acct-Input-Packets"] == [9] and a["Acct-Output-Packets"] == [11]
    assert a["Class"] == [b"one", b"two"] and a["Acct-Authentic"] == ["RADIUS"]
    assert a["Acct-Terminate-Cause"] == [6] and a["Acct-Session-Time"] == [3600]


def test_accounting_on_off() -> None:
    a = as_dict(nas_record(Status.OFF, NAS, "5F00000000000000", TerminateCause.ADMIN_REBOOT))
    assert a == {"Acct-Status-Type": ["Accounting-Off"], "Acct-Session-Id": ["5F00000000000000"],
                 "NAS-IP-Address": [ipaddress.IPv4Address("192.0.2.2")], "NAS-Identifier": ["gw1"],
                 "Acct-Terminate-Cause": [7]}
