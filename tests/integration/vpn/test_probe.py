"""``pptpkit probe`` against a real ``pptpkit server`` in a namespace, each failure made real:
nothing listening, GRE dropped by nft each way, a wrong password, MPPE refused one way or the
other, big GRE packets dropped; and a clean server, with and without credentials.  The probe
runs as the real CLI with ``--json``; the tests check its report, its one stderr line and its
exit status, and that it left no interface or route behind.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import require_binary, require_root
from e2e_support import PASSWORD, PY, SERVER, USER, VpnLab
from netns import NetnsLab

pytestmark = [pytest.mark.root]


@pytest.fixture
def vpn(tmp_path: Path) -> Iterator[VpnLab]:
    require_root()
    require_binary("ip")
    lab = NetnsLab("pkprobe")
    try:
        yield VpnLab(lab, tmp_path)
    finally:
        lab.close()
    assert not lab.leftovers()


def _server(vpn: VpnLab, *flags: str) -> None:
    # A control socket of our own: another server on this host must not stop ours.
    vpn.start_server("--ctl-socket", str(vpn.tmp / "ctl.sock"), *flags)


def _probe(vpn: VpnLab, *flags: str, creds: bool = False,
           password_file: Path | None = None) -> tuple[int, dict[str, Any], str]:
    argv = [PY, "-m", "pptpkit", "probe", SERVER, "--json", *flags]
    if creds:
        argv += ["--user", USER, "--password-file", str(password_file or vpn.password_file)]
    links, routes = vpn.links(vpn.client_ns), vpn.routes(vpn.client_ns)
    out = vpn.lab.run(vpn.client_ns, argv, check=False, timeout=60)
    assert vpn.links(vpn.client_ns) == links and vpn.routes(vpn.client_ns) == routes
    report = json.loads(out.stdout)
    assert report["status"] == out.returncode, out.stderr
    return out.returncode, report, out.stderr


def _steps(report: dict[str, Any]) -> dict[str, list[bool | None]]:
    found: dict[str, list[bool | None]] = {}
    for step in report["steps"]:
        found.setdefault(step["name"], []).append(step["ok"])
    return found


def _one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("pptpkit probe: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def _nft_drop(vpn: VpnLab, hook: str, rule: str) -> None:
    require_binary("nft")
    vpn.lab.run(vpn.client_ns, ["nft", "add table inet pkprobe"])
    vpn.lab.run(vpn.client_ns, ["nft", f"add chain inet pkprobe {hook} {{ type filter hook {hook} "
                                       "priority 0 ; }"])
    vpn.lab.run(vpn.client_ns, ["nft", f"add rule inet pkprobe {hook} {rule} drop"])


def test_open_server_without_credentials(vpn: VpnLab) -> None:
    _server(vpn)
    status, report, stderr = _probe(vpn)
    assert status == 0, stderr
    assert _steps(report) == {"tcp": [True], "control": [True], "call": [True], "gre": [True, True],
                              "lcp": [True], "auth": [None]}
    assert report["gre_in"] is True and report["gre_out"] is True
    assert report["server_info"]["vendor"] == "pptpkit" and report["server_info"]["protocol_version"] == "1.0"
    assert report["auth_requested"][0] == "mschap-v2" and report["auth_method"] == "mschap-v2"
    assert report["authenticated"] is None
    assert all(step["ms"] is None or step["ms"] < 5000 for step in report["steps"])
    # Closed before any authentication packet: the server saw no login attempt (it logs the
    # name of every one, see test_wrong_password).
    assert "pptpkit-probe" not in vpn.server_text()


def test_open_server_with_credentials_text_output(vpn: VpnLab) -> None:
    _server(vpn)
    status, report, stderr = _probe(vpn, creds=True)
    assert status == 0, stderr
    assert report["authenticated"] is True and report["mppe"].startswith("MPPE 128")
    assert report["echoes"] and all(e["answered"] for e in report["echoes"])
    assert max(e["size"] for e in report["echoes"]) == report["peer_mru"]
    assert report["path_mtu"] == 1500
    assert [v["severity"] for v in report["verdicts"]] == ["ok"]
    out = vpn.lab.run(vpn.client_ns, [PY, "-m", "pptpkit", "probe", SERVER, "-u", USER,
                                      "--password-file", str(vpn.password_file)], check=False)
    assert out.returncode == 0, out.stderr
    assert "verdict: everything probed works" in out.stdout and "mppe     ok" in out.stdout
    assert out.stderr == ""  # the library's INFO lines are the report's business


def test_tcp_refused(vpn: VpnLab) -> None:
    status, report, stderr = _probe(vpn, "--timeout", "3")
    assert status == 30
    assert _steps(report) == {"tcp": [False]}
    assert "connection refused" in _one_line(stderr)
    assert "listens on this port" in report["verdicts"][0]["fix"]


def test_gre_blocked_towards_us(vpn: VpnLab) -> None:
    _server(vpn)
    _nft_drop(vpn, "input", "meta l4proto gre")
    status, report, stderr = _probe(vpn, "--timeout", "3")
    assert status == 31
    assert report["gre_in"] is False and report["gre_out"] is None
    assert "no GRE (IP protocol 47) packet came back" in _one_line(stderr)
    assert "nf_conntrack_pptp" in report["verdicts"][0]["fix"]


def test_gre_blocked_towards_the_server(vpn: VpnLab) -> None:
    _server(vpn)
    _nft_drop(vpn, "output", "meta l4proto gre")
    status, report, stderr = _probe(vpn, "--timeout", "3")
    assert status == 31
    assert report["gre_in"] is True and report["gre_out"] is False
    assert f"GRE (IP protocol 47) from us does not reach {SERVER}" in _one_line(stderr)
    assert "out towards the server" in report["verdicts"][0]["fix"]


def test_wrong_password(vpn: VpnLab) -> None:
    _server(vpn)
    wrong = vpn.tmp / "wrong"
    wrong.write_text(PASSWORD + "x\n")
    status, report, stderr = _probe(vpn, creds=True, password_file=wrong)
    assert status == 19
    assert report["authenticated"] is False and _steps(report)["auth"] == [False]
    assert "wrong user name or password" in _one_line(stderr)
    assert USER in vpn.server_text()


def test_server_requires_mppe_probe_refuses_it(vpn: VpnLab) -> None:
    _server(vpn, "--require-mppe-128")
    status, report, stderr = _probe(vpn, "--no-mppe", creds=True)
    assert status == 10
    assert "mppe" in _one_line(stderr).lower()
    assert "MS-CHAP" in report["verdicts"][0]["fix"]


def test_server_without_mppe_probe_requires_it(vpn: VpnLab) -> None:
    _server(vpn, "--no-mppe")
    status, _, stderr = _probe(vpn, "--require-mppe", creds=True)
    assert status == 10
    assert "MPPE" in _one_line(stderr)


def test_server_without_mppe_and_chap_is_a_note(vpn: VpnLab) -> None:
    _server(vpn, "--no-mppe", "--require-chap")
    status, report, stderr = _probe(vpn, creds=True)
    assert status == 0, stderr
    assert report["auth_requested"][0] == "chap" and report["auth_method"] == "chap"
    assert not report["mppe"].startswith("MPPE")
    [note] = [v for v in report["verdicts"] if v["severity"] == "warn"]
    assert "without encryption" in note["problem"]


def test_big_gre_packets_dropped_is_mtu_trouble(vpn: VpnLab) -> None:
    _server(vpn)
    # The server's echo replies above 1400 bytes on the wire never arrive.
    _nft_drop(vpn, "input", "meta l4proto gre ip length > 1400")
    status, report, stderr = _probe(vpn, creds=True)
    assert status == 1
    answered = {e["size"]: e["answered"] for e in report["echoes"]}
    assert answered[1300] and not answered[report["peer_mru"]], answered
    line = _one_line(stderr)
    assert "big packets through the tunnel are lost: 1300 bytes get through" in line, line
    assert "--mtu 1300" in report["verdicts"][0]["fix"]


def test_not_permitted_without_cap_net_raw(vpn: VpnLab) -> None:
    require_binary("setpriv")
    _server(vpn)
    argv = ["setpriv", "--bounding-set", "-net_raw,-net_admin", "--inh-caps", "-all",
            PY, "-m", "pptpkit", "probe", SERVER, "--json"]
    out = vpn.lab.run(vpn.client_ns, argv, check=False, timeout=60)
    assert out.returncode == 3, out.stderr
    report = json.loads(out.stdout)
    # TCP still told the user something; the rest says why it was not run.
    assert _steps(report) == {"tcp": [True], "control": [None]}
    assert _one_line(out.stderr).startswith(
        "pptpkit probe: not permitted: needs root (CAP_NET_ADMIN and CAP_NET_RAW): ")


def test_help_lists_the_exit_statuses() -> None:
    out = subprocess.run([PY, "-m", "pptpkit", "probe", "--help"], capture_output=True, text=True,
                         check=True)
    assert "31  GRE" in out.stdout and "19  our authentication" in out.stdout
