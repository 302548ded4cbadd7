"""``pptpkit probe``'s verdicts, sans-IO: from a report (what was found) to the problem lines,
their fixes and the exit status; the classification shared with ``pptpkit connect``; the
report's text and JSON forms."""

from __future__ import annotations

import errno
import json

import pytest

from pptpkit.cli.probe import format_report
from pptpkit.control.events import CloseCause
from pptpkit.errors import ConfigError, ExitStatus
from pptpkit.gre import GreStats
from pptpkit.ppp.session_config import LinkDown, Outcome
from pptpkit.pptp.client import CallRefusedError, ControlConnectionError
from pptpkit.vpn.connect import (
    call_failure,
    classify_link_down,
    control_failure,
    gre_blocked_failure,
    gre_outbound_blocked_failure,
    gre_path_failure,
)
from pptpkit.vpn.probe import (
    EchoResult,
    ProbeConfig,
    ProbeReport,
    echo_ip_size,
    probe_status,
    verdicts,
)

SERVER = "192.0.2.1"


def _report(**fields: object) -> ProbeReport:
    return ProbeReport(server=SERVER, port=1723, **fields)  # type: ignore[arg-type]


def _fails(report: ProbeReport) -> list[tuple[ExitStatus, str, str]]:
    return [(v.status, v.problem, v.fix) for v in verdicts(report) if v.severity == "fail"]


def test_a_clean_probe_is_status_0_with_one_ok_line() -> None:
    report = _report(gre_in=True, gre_out=True, authenticated=True, mppe="MPPE 128-bit stateless",
                     echoes=[EchoResult(size=100, answered=True), EchoResult(size=1400, answered=True)])
    found = verdicts(report)
    assert [(v.severity, v.problem) for v in found] == [("ok", "everything probed works")]
    assert probe_status(found) is ExitStatus.OK


def test_without_credentials_the_note_says_what_was_not_tried() -> None:
    found = verdicts(_report(gre_in=True, gre_out=True))
    assert probe_status(found) is ExitStatus.OK
    assert [v.severity for v in found] == ["ok", "warn"]
    assert "--user" in found[1].fix


def test_tcp_unreachable_is_30_refused_by_the_server_is_8() -> None:
    unreachable = control_failure(ControlConnectionError("connection refused: nothing listens there"),
                                  SERVER, 1723)
    [(status, problem, fix)] = _fails(_report(failure=unreachable))
    assert status is ExitStatus.CONTROL_UNREACHABLE == 30
    assert "connection refused" in problem and "listens on this port" in fix
    refused = control_failure(ControlConnectionError("rejected", cause=CloseCause.START_REJECTED),
                              SERVER, 1723)
    [(status, _, fix)] = _fails(_report(failure=refused))
    assert status is ExitStatus.CONNECT_FAILED == 8 and "log" in fix


def test_not_permitted_is_3_with_the_common_message() -> None:
    cause = PermissionError(errno.EPERM, "Operation not permitted")
    error = ControlConnectionError(f"cannot open a raw GRE socket: {cause}")
    error.__cause__ = cause
    [(status, problem, fix)] = _fails(_report(failure=control_failure(error, SERVER, 1723)))
    assert status is ExitStatus.NOT_PERMITTED == 3
    assert problem.startswith("not permitted: needs root (CAP_NET_ADMIN and CAP_NET_RAW): ")
    assert "CAP_NET_RAW" in fix


def test_call_refused_is_8_and_a_lost_connection_16() -> None:
    refused = call_failure(CallRefusedError("busy", result_code=3, error_code=0, cause_code=0), SERVER)
    assert refused.code is ExitStatus.CONNECT_FAILED and "result code 3" in refused.message
    lost = call_failure(ControlConnectionError("gone"), SERVER)
    assert lost.code is ExitStatus.HANGUP


def test_gre_path_from_the_counters() -> None:
    assert gre_path_failure(GreStats(sent=5), SERVER) == gre_blocked_failure(SERVER)
    assert gre_path_failure(GreStats(sent=5, received=4, acks_received=4), SERVER) \
        == gre_outbound_blocked_failure(SERVER)
    assert gre_path_failure(GreStats(sent=5, received=4, acks_received=4, acks_new=2), SERVER) is None


def test_gre_blocked_each_way_is_31_with_the_fix_for_that_direction() -> None:
    [(status, problem, fix)] = _fails(_report(gre_in=False, failure=gre_blocked_failure(SERVER)))
    assert status is ExitStatus.GRE_BLOCKED == 31
    assert "no GRE (IP protocol 47) packet came back" in problem
    assert "both ways" in fix and "nf_conntrack_pptp" in fix
    [(status, problem, fix)] = _fails(_report(gre_in=True, gre_out=False,
                                              failure=gre_outbound_blocked_failure(SERVER)))
    assert status is ExitStatus.GRE_BLOCKED
    assert "from us does not reach" in problem and "out towards the server" in fix


def test_wrong_password_is_19() -> None:
    down = LinkDown(outcome=Outcome.AUTH_TOPEER_FAILED, reason="E=691 Authentication failure",
                    exit_status=19)
    failure = classify_link_down(down, server=SERVER, was_up=False)
    assert failure is not None
    [(status, problem, fix)] = _fails(_report(gre_in=True, gre_out=True, authenticated=False,
                                              failure=failure))
    assert status is ExitStatus.AUTH_FAILED == 19
    assert "wrong user name or password" in problem and "password" in fix


@pytest.mark.parametrize("down", [
    LinkDown(outcome=Outcome.MPPE_REFUSED, reason="MPPE required but not negotiated", exit_status=10),
    LinkDown(outcome=Outcome.PEER_TERMINATED, reason="MPPE required but peer refused", exit_status=10),
])
def test_mppe_mismatch_is_10_with_the_mppe_fix(down: LinkDown) -> None:
    failure = classify_link_down(down, server=SERVER, was_up=False)
    assert failure is not None
    [(status, _, fix)] = _fails(_report(gre_in=True, gre_out=True, authenticated=True, failure=failure))
    assert status is ExitStatus.NEGOTIATION_FAILED == 10
    assert "MS-CHAP" in fix and "require-mppe-128" in fix


def test_other_negotiation_failures_point_at_verbose() -> None:
    down = LinkDown(outcome=Outcome.NEGOTIATION_FAILED, reason="IPCP: no address", exit_status=10)
    failure = classify_link_down(down, server=SERVER, was_up=False)
    assert failure is not None
    [(status, _, fix)] = _fails(_report(failure=failure))
    assert status is ExitStatus.NEGOTIATION_FAILED and "-v" in fix


def test_an_unencrypted_link_is_a_note_not_a_failure() -> None:
    found = verdicts(_report(gre_in=True, gre_out=True, authenticated=True, mppe="no MPPE"))
    assert probe_status(found) is ExitStatus.OK
    [note] = [v for v in found if v.severity == "warn"]
    assert "without encryption" in note.problem and "status 10" in note.problem


def test_lost_big_echoes_are_mtu_trouble() -> None:
    echoes = [EchoResult(size=s, answered=s <= 1300) for s in (100, 576, 1000, 1300, 1400, 1460)]
    report = _report(gre_in=True, gre_out=True, authenticated=True, mppe="MPPE 128-bit stateless",
                     echoes=echoes, path_mtu=1500)
    [(status, problem, fix)] = _fails(report)
    assert status is ExitStatus.FATAL
    assert "1300 bytes get through, 1400 do not" in problem
    assert f"{echo_ip_size(1400)} bytes on the path" in problem and "path MTU 1500" in problem
    assert "--mtu 1300" in fix
    assert probe_status(verdicts(report)) is ExitStatus.FATAL


def test_no_echo_answered_at_all_is_only_a_note() -> None:
    report = _report(gre_in=True, gre_out=True, authenticated=True, mppe="MPPE 128-bit stateless",
                     echoes=[EchoResult(size=100, answered=False), EchoResult(size=1400, answered=False)])
    found = verdicts(report)
    assert probe_status(found) is ExitStatus.OK
    assert any(v.severity == "warn" and "none of 2" in v.problem for v in found)


def test_the_failure_comes_before_mtu_trouble() -> None:
    report = _report(failure=gre_blocked_failure(SERVER), gre_in=False,
                     echoes=[EchoResult(size=100, answered=True), EchoResult(size=1400, answered=False)])
    assert probe_status(verdicts(report)) is ExitStatus.GRE_BLOCKED


def test_echo_size_on_the_path() -> None:
    # IP 20 + GRE with sequence and ack 16 + PPP ff03c021 4.
    assert echo_ip_size(1460) == 1500


def test_the_report_as_json_and_as_text() -> None:
    report = _report(failure=gre_blocked_failure(SERVER), gre_in=False,
                     server_info={"host_name": "h", "vendor": "v", "firmware_revision": 1,
                                  "protocol_version": "1.0", "framing_capabilities": ["async"],
                                  "bearer_capabilities": ["analog"], "max_channels": 0})
    report.step("tcp", True, "TCP connects", 0.4321)
    report.step("gre", False, "no GRE")
    data = json.loads(json.dumps(report.as_dict()))
    assert data["status"] == 31 and data["failure"]["code"] == 31
    assert data["steps"][0] == {"name": "tcp", "ok": True, "ms": 0.432, "detail": "TCP connects"}
    text = format_report(data)
    assert "gre      FAIL" in text and "PROBLEM (status 31)" in text and "fix: " in text
    assert "max channels 0" in text


def test_config_is_checked() -> None:
    with pytest.raises(ConfigError):
        ProbeConfig(server=SERVER, username="a")
    with pytest.raises(ConfigError):
        ProbeConfig(server=SERVER, port=0)
    with pytest.raises(ConfigError):
        ProbeConfig(server=SERVER, echo_sizes=(4,))
