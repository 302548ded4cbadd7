"""The systemd units in packaging/systemd pass ``systemd-analyze verify`` without a warning, and
the readiness protocol reaches a NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require_binary
from pptpkit.io.sdnotify import notify

UNITS = Path(__file__).resolve().parents[2] / "packaging" / "systemd"


def _verify(unit: Path) -> str:
    proc = subprocess.run([require_binary("systemd-analyze"), "verify", str(unit)],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        return f"rc {proc.returncode}: {proc.stderr}"
    # Other units installed on the machine may draw warnings of their own: only ours count.
    return "\n".join(line for line in (proc.stdout + proc.stderr).splitlines() if unit.name in line)


def _installed_copy(unit: Path, folder: Path, name: str | None = None) -> Path:
    """The unit as installed: ExecStart pointing at a pptpkit that exists here."""
    pptpkit = Path(sys.executable).with_name("pptpkit")
    text = unit.read_text().replace("/usr/local/bin/pptpkit", str(pptpkit))
    copy = folder / unit.name
    copy.write_text(text)
    if name is not None:
        (folder / name).symlink_to(copy.name)
        return folder / name
    return copy


@pytest.mark.parametrize(("unit", "instance"), [
    ("pptpkit-server.service", None),
    ("pptpkit-connect@.service", "pptpkit-connect@office.service"),
])
def test_units_verify_cleanly(tmp_path: Path, unit: str, instance: str | None) -> None:
    assert _verify(_installed_copy(UNITS / unit, tmp_path, instance)) == ""


def test_the_check_sees_a_broken_unit(tmp_path: Path) -> None:
    broken = tmp_path / "broken.service"
    broken.write_text((UNITS / "pptpkit-server.service").read_text()
                      .replace("Type=notify", "Type=bogus")
                      .replace("/usr/local/bin/pptpkit", str(Path(sys.executable).with_name("pptpkit"))))
    assert "bogus" in _verify(broken)


def test_units_keep_to_the_capabilities_the_server_needs() -> None:
    for unit in UNITS.glob("*.service"):
        text = unit.read_text()
        assert "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW\n" in text, unit
        assert "DeviceAllow=/dev/net/tun rw" in text and "NoNewPrivileges=yes" in text
        assert "ProtectSystem=strict" in text and "Type=notify" in text


def test_notify_reaches_the_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert notify("READY=1", "STATUS=listening\non two lines")
        assert sock.recv(4096) == b"READY=1\nSTATUS=listening on two lines"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not notify("READY=1")


def test_notify_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"pptpkit-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("STOPPING=1")
        assert sock.recv(64) == b"STOPPING=1"


def test_the_server_unit_lets_the_supervisor_stop_its_workers() -> None:
    """SIGTERM to the main process alone: the supervisor stops the workers (one per CPU by
    default) and the ip-down scripts run to their end, instead of every process at once."""
    text = (UNITS / "pptpkit-server.service").read_text()
    assert "\nKillMode=mixed\n" in text and "\nKillSignal=SIGTERM\n" in text
