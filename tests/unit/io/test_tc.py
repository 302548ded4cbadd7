"""The shaper's tc/ip batches as pure functions, the stale-IFB finder, and the runner on
harmless programs (no root needed)."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from pptpkit.io import tc


def test_htb_down_and_ifb_up() -> None:
    assert tc.batch_text(tc.htb_commands("pptpkit3", 4000, tc.htb_burst(4000))) == (
        "qdisc replace dev pptpkit3 root handle 1: htb default 1\n"
        "class replace dev pptpkit3 parent 1: classid 1:1 htb rate 4000kbit ceil 4000kbit "
        "burst 10000 cburst 10000\n")
    assert tc.batch_text(tc.redirect_commands("pptpkit3", "pkifb42")) == (
        "qdisc replace dev pptpkit3 handle ffff: ingress\n"
        "filter add dev pptpkit3 parent ffff: protocol all prio 1 u32 match u32 0 0 "
        "action mirred egress redirect dev pkifb42\n")
    assert tc.unshape_commands("pptpkit3", down=True, up=True) == [
        ["qdisc", "del", "dev", "pptpkit3", "root"], ["qdisc", "del", "dev", "pptpkit3", "ingress"]]
    assert tc.unshape_commands("pptpkit3", down=False, up=False) == []


def test_ifb_lifecycle_commands() -> None:
    assert tc.ifb_name(42) == "pkifb42"
    assert tc.batch_text(tc.ifb_add_commands("pkifb42", 1234)) == (
        "link add name pkifb42 type ifb\nlink set dev pkifb42 up alias pptpkit-shaper:1234\n")
    assert tc.ifb_del_commands("pkifb42") == [["link", "del", "dev", "pkifb42"]]


def test_htb_burst_has_a_floor() -> None:
    assert tc.htb_burst(8) == 3000
    assert tc.htb_burst(100_000) == 250_000


@pytest.mark.parametrize("dev", ["", "a b", "x" * 16, "a\nqdisc del dev eth0 root", "a#b"])
def test_names_that_would_break_a_batch_are_refused(dev: str) -> None:
    with pytest.raises(ValueError, match="bad interface name"):
        tc.htb_commands(dev, 100, 3000)
    with pytest.raises(ValueError, match="bad interface name"):
        tc.redirect_commands("pptpkit0", dev)


def test_bad_numbers_are_refused() -> None:
    with pytest.raises(ValueError):
        tc.htb_commands("pptpkit0", 0, 3000)
    with pytest.raises(ValueError):
        tc.ifb_name(0)


LISTING = (
    "2: pkifb7: <BROADCAST,NOARP,UP,LOWER_UP> mtu 1500 qdisc pfifo_fast state UNKNOWN mode DEFAULT "
    "group default qlen 32\\    link/ether 06:6b:3a:ad:95:c9 brd ff:ff:ff:ff:ff:ff promiscuity 0 \\"
    "    ifb addrgenmode eui64 numtxqueues 1 \\    alias pptpkit-shaper:123\n"
    "3: pkifb8: <BROADCAST,NOARP> mtu 1500 \\    ifb \\    alias pptpkit-shaper:456\n"
    "4: ifb0: <BROADCAST,NOARP> mtu 1500 \\    ifb \\    alias pptpkit-shaper:123\n"
    "5: pkifb9: <BROADCAST,NOARP> mtu 1500 \\    ifb \\    alias someone-else\n"
    "6: pkifb10: <BROADCAST,NOARP> mtu 1500 \\    ifb\n"
)


def test_stale_ifbs_are_ours_of_dead_processes_only() -> None:
    # 123 is dead, 456 alive; ifb0 is not named like ours, pkifb9/pkifb10 are not marked ours.
    assert tc.stale_ifbs(LISTING, lambda pid: pid == 456) == ["pkifb7"]
    assert tc.stale_ifbs(LISTING, lambda pid: True) == []
    assert tc.stale_ifbs("", lambda pid: False) == []


def test_pid_alive() -> None:
    assert tc.pid_alive(os.getpid())
    assert tc.pid_alive(1)
    assert not tc.pid_alive(0x3FFFFFFF)


def test_run_reports_what_went_wrong() -> None:
    async def main() -> None:
        assert await tc.run([sys.executable, "-c", "import sys; sys.stdin.read()"], "x\n") is None
        error = await tc.run([sys.executable, "-c", "import sys; sys.exit('Error: no such device')"])
        assert error is not None and "status 1" in error and "no such device" in error
        error = await tc.run(["/nonexistent/tc", "-batch", "-"], "")
        assert error is not None and error.startswith("cannot run /nonexistent/tc")
        error = await tc.run([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.2)
        assert error is not None and "did not finish" in error
        assert await tc.output([sys.executable, "-c", "print('hello')"]) == (None, "hello\n")

    asyncio.run(main())
