"""Pin records: a killed run's host route is found by the next run, and only that one."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

from pptpkit.errors import os_error_text
from pptpkit.vpn.connect import GreWatchdog
from pptpkit.vpn.pins import PinRecords


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_orphans_are_the_pins_of_dead_owners_only(tmp_path: Path) -> None:
    records = PinRecords(str(tmp_path))
    records.claim("192.0.2.1", 0)  # ours: alive
    ns = os.stat("/proc/self/ns/net").st_ino
    (tmp_path / f"{ns}-192.0.2.1-1").write_text(f"{dead_pid()}\n")
    (tmp_path / f"{ns}-192.0.2.9-2").write_text(f"{dead_pid()}\n")  # another server
    (tmp_path / f"{ns + 1}-192.0.2.1-3").write_text(f"{dead_pid()}\n")  # another namespace
    assert records.orphans("192.0.2.1") == [1]
    assert records.orphans("192.0.2.1") == []  # the record went with it
    assert sorted(p.name.split("-")[-1] for p in tmp_path.iterdir()) == ["0", "2", "3"]
    records.release("192.0.2.1", 0)
    assert not (tmp_path / f"{ns}-192.0.2.1-0").exists()


def test_unwritable_directory_is_not_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    records = PinRecords(str(blocker / "pins"))
    records.claim("192.0.2.1", 0)
    assert records.orphans("192.0.2.1") == []


def test_connect_errors_in_words() -> None:
    refused = OSError(errno.ECONNREFUSED, "Connect call failed ('192.0.2.1', 1724)")
    assert os_error_text(refused).startswith("connection refused: nothing listens there")
    assert os_error_text(OSError(errno.EMFILE, "Too many open files")) == "too many open files"


def test_watchdog_due_after_its_time_even_when_gre_was_seen() -> None:
    dog = GreWatchdog(4.0)
    dog.start(10.0)
    dog.gre_seen()
    assert not dog.due(13.9) and dog.due(14.0) and not dog.expired(14.0)


def test_prefix_pool_hands_out_the_lowest_free_64() -> None:
    import ipaddress

    import pytest

    from pptpkit.errors import ConfigError
    from pptpkit.vpn.pool import PrefixPool

    pool = PrefixPool("2001:db8:100::/62")
    got = [pool.allocate() for _ in range(4)]
    assert [str(p) for p in got if p] == ["2001:db8:100::/64", "2001:db8:100:1::/64", "2001:db8:100:2::/64",
                                          "2001:db8:100:3::/64"]
    assert pool.allocate() is None
    pool.release(ipaddress.IPv6Network("2001:db8:100:2::/64"))
    pool.release(ipaddress.IPv6Network("2001:db8:100:1::/64"))
    assert str(pool.allocate()) == "2001:db8:100:1::/64"
    with pytest.raises(ConfigError, match="does not fit"):
        PrefixPool("2001:db8::/64")
    with pytest.raises(ConfigError, match="--ipv6-prefix"):
        PrefixPool("192.0.2.0/24")
