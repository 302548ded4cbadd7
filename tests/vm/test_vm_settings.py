"""The VM build takes its Debian mirror from the host's apt configuration (never from the
repository). These run the shell function itself against made-up apt directories; no VM, no
root needed. Host names are RFC 2606 example names."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from vmlib import REPO

SETTINGS = REPO / "tools" / "vm" / "settings.sh"


def mirror(apt_dir: Path, *, override: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f'. "{SETTINGS}" && pkvm_mirror'],
        env={"PATH": "/usr/bin:/bin", "PKVM_APT_DIR": str(apt_dir), "PKVM_MIRROR": override},
        capture_output=True,
        text=True,
        check=False,
    )


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_deb822_skips_security_and_source_stanzas(tmp_path: Path) -> None:
    write(
        tmp_path / "sources.list.d" / "debian.sources",
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\n"
        "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n"
        "# main archive\nTypes: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
    )
    done = mirror(tmp_path)
    assert (done.returncode, done.stdout) == (0, "http://mirror.example/debian\n")


def test_one_line_format_with_options(tmp_path: Path) -> None:
    write(
        tmp_path / "sources.list",
        "# comment\n"
        "deb http://security.example/debian-security bookworm-security main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian/ bookworm main\n",
    )
    done = mirror(tmp_path)
    assert (done.returncode, done.stdout) == (0, "http://mirror.example/debian\n")


def test_deb822_wins_over_one_line_format(tmp_path: Path) -> None:
    write(tmp_path / "sources.list", "deb http://old.example/debian bookworm main\n")
    write(tmp_path / "sources.list.d" / "d.sources", "Types: deb\nURIs: http://new.example/debian\n")
    assert mirror(tmp_path).stdout == "http://new.example/debian\n"


def test_no_configuration_fails_and_override_wins(tmp_path: Path) -> None:
    assert mirror(tmp_path).returncode == 1
    assert (
        mirror(tmp_path, override="http://pinned.example/debian").stdout == "http://pinned.example/debian\n"
    )


@pytest.mark.parametrize("needle", ["debian.org", "http://", "https://"])
def test_no_mirror_is_written_into_the_harness(needle: str) -> None:
    offenders = [
        str(path.relative_to(REPO))
        for path in sorted((REPO / "tools" / "vm").rglob("*"))
        if path.is_file() and needle in path.read_text(errors="replace")
    ]
    assert offenders == []
