"""pppd-compatible hook scripts: the argv and environment builders, and the runner (timeouts
kill the whole process group, output is bounded, a chain runs in order, the concurrency cap
holds).  Real processes, no root needed."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import pytest

from pptpkit.vpn.hooks import (
    HOOK_PATH,
    HookContext,
    HookKind,
    HookResult,
    HookRunner,
    hook_argv,
    hook_env,
    runnable,
)

CTX = HookContext(ifname="pptpkit3", local="198.51.100.1", remote="198.51.100.10", speed=115200,
                  ipparam="192.0.2.2", peername="alice", linkname="65F0A1B200000001", uid=0,
                  logname="root", pid=4242)


def test_argv_is_pppds() -> None:
    assert hook_argv("/etc/ppp/ip-up", CTX) == [
        "/etc/ppp/ip-up", "pptpkit3", "", "115200", "198.51.100.1", "198.51.100.10", "192.0.2.2"]
    # Without ipparam pppd passes five arguments, not an empty sixth.
    no_param = HookContext(ifname="ppp0", local="a", remote="b")
    assert hook_argv("/x", no_param) == ["/x", "ppp0", "", "115200", "a", "b"]


def test_env_up_and_down() -> None:
    up = hook_env(HookKind.IP_UP, CTX)
    assert up == {
        "PATH": HOOK_PATH, "IFNAME": "pptpkit3", "DEVICE": "", "SPEED": "115200", "ORIG_UID": "0",
        "PPPLOGNAME": "root", "PPPD_PID": "4242", "IPLOCAL": "198.51.100.1",
        "IPREMOTE": "198.51.100.10", "PEERNAME": "alice", "LINKNAME": "65F0A1B200000001"}
    from dataclasses import replace

    down = hook_env(HookKind.IP_DOWN, replace(CTX, connect_time=61, bytes_sent=1000, bytes_rcvd=2000,
                                              call_file="work", dns=("203.0.113.53",)))
    assert {k: down[k] for k in ("CONNECT_TIME", "BYTES_SENT", "BYTES_RCVD", "CALL_FILE", "DNS1")} == {
        "CONNECT_TIME": "61", "BYTES_SENT": "1000", "BYTES_RCVD": "2000", "CALL_FILE": "work",
        "DNS1": "203.0.113.53"}
    assert "DNS2" not in down and "CONNECT_TIME" not in up
    v6 = hook_env(HookKind.IPV6_UP, replace(CTX, local="fe80::1", remote="fe80::2", peername=None))
    assert (v6["LLLOCAL"], v6["LLREMOTE"]) == ("fe80::1", "fe80::2")
    assert "IPLOCAL" not in v6 and "PEERNAME" not in v6


def test_env_defaults_describe_this_process() -> None:
    env = hook_env(HookKind.IP_UP, HookContext(ifname="x", local="a", remote="b"))
    assert env["ORIG_UID"] == str(os.getuid()) and env["PPPD_PID"] == str(os.getpid())
    assert env["PPPLOGNAME"]


def script(tmp_path: Path, name: str, body: str, mode: int = 0o755) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(mode)
    return str(path)


def test_runnable_like_pppd(tmp_path: Path) -> None:
    assert runnable(script(tmp_path, "ok", "exit 0\n"))
    assert not runnable(script(tmp_path, "noexec", "exit 0\n", mode=0o644))
    assert not runnable(str(tmp_path / "missing")) and not runnable(None) and not runnable(str(tmp_path))


async def run_one(runner: HookRunner, argv: list[str], env: dict[str, str] | None = None,
                  kind: HookKind = HookKind.IP_UP) -> HookResult:
    task = runner.submit("chain", "SID1", kind, argv, env or {"PATH": HOOK_PATH})
    assert task is not None
    return await task


def test_script_sees_exactly_its_argv_and_env(tmp_path: Path) -> None:
    out = tmp_path / "seen"
    path = script(tmp_path, "dump", f'printf "%s\\n" "$@" > {out}.args; env > {out}.env; exit 0\n')

    async def main() -> HookResult:
        env = hook_env(HookKind.IP_UP, CTX)
        return await run_one(HookRunner(), hook_argv(path, CTX), env)

    os.environ["PPTPKIT_TEST_LEAK"] = "1"
    try:
        result = asyncio.run(main())
    finally:
        del os.environ["PPTPKIT_TEST_LEAK"]
    assert result.ok and result.status == 0
    assert Path(f"{out}.args").read_text().split("\n")[:6] == [
        "pptpkit3", "", "115200", "198.51.100.1", "198.51.100.10", "192.0.2.2"]
    env = dict(line.split("=", 1) for line in Path(f"{out}.env").read_text().splitlines())
    env.pop("PWD", None)  # the shell adds these two itself
    env.pop("SHLVL", None)
    env.pop("_", None)
    assert env == hook_env(HookKind.IP_UP, CTX)


def test_hanging_script_and_its_children_are_killed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pids = tmp_path / "pids"
    # The child ignores SIGTERM: only the group's SIGKILL ends it.
    path = script(tmp_path, "hang", f"(trap '' TERM; exec sleep 60) & echo $! > {pids}\n"
                                    "echo started; sleep 60\n")

    async def main() -> tuple[HookResult, float]:
        runner = HookRunner(timeout=0.5, kill_grace=0.3)
        start = time.monotonic()
        result = await run_one(runner, [path])
        assert runner.timed_out == 1 and runner.failed == 1
        return result, time.monotonic() - start

    with caplog.at_level(logging.INFO, logger="pptpkit.vpn.hooks"):
        result, took = asyncio.run(main())
    assert result.timed_out and not result.ok and result.status is not None and result.status < 0
    assert 0.5 <= took < 5
    assert result.output == b"started\n"
    child = int(pids.read_text())
    for _ in range(50):
        if not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the script's child survived the timeout")
    assert f"[SID1] ip-up {path}: still running after 0.5 s: killed" in caplog.text


def test_failure_is_logged_with_the_session(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = script(tmp_path, "fail", "echo 'no such table' >&2; exit 3\n")
    with caplog.at_level(logging.INFO, logger="pptpkit.vpn.hooks"):
        result = asyncio.run(run_one(HookRunner(), [path], kind=HookKind.IP_DOWN))
    assert result.status == 3 and result.output == b"no such table\n"
    assert f"[SID1] ip-down {path}: exit status 3" in caplog.text
    assert "[SID1] ip-down: no such table" in caplog.text


def test_output_is_capped(tmp_path: Path) -> None:
    path = script(tmp_path, "chatty", "head -c 100000 /dev/zero | tr '\\0' x\n")
    result = asyncio.run(run_one(HookRunner(max_output=1000), [path]))
    assert result.ok and result.output == b"x" * 1000 and result.output_dropped == 99000


def test_background_child_holding_the_pipe_does_not_hold_the_hook(tmp_path: Path) -> None:
    """A daemon started by ip-up keeps stdout open: the hook is done when the script exits, and
    the daemon is not killed."""
    pids = tmp_path / "pid"
    path = script(tmp_path, "daemon", f"sleep 30 & echo $! > {pids}; echo up\n")

    async def main() -> tuple[HookResult, float]:
        start = time.monotonic()
        result = await run_one(HookRunner(timeout=10), [path])
        return result, time.monotonic() - start

    result, took = asyncio.run(main())
    child = int(pids.read_text())
    try:
        assert result.ok and result.output == b"up\n" and took < 3
        assert Path(f"/proc/{child}").exists()
    finally:
        os.kill(child, 9)


def test_a_chain_runs_in_order_and_chains_run_side_by_side(tmp_path: Path) -> None:
    log = tmp_path / "order"
    up = script(tmp_path, "up", f"sleep 0.4; echo up-$1 >> {log}\n")
    down = script(tmp_path, "down", f"echo down-$1 >> {log}\n")

    async def main() -> float:
        runner = HookRunner()
        start = time.monotonic()
        tasks = []
        for sid in ("a", "b"):
            tasks.append(runner.submit(sid, sid, HookKind.IP_UP, [up, sid], {}))
            tasks.append(runner.submit(sid, sid, HookKind.IP_DOWN, [down, sid], {}))
        await runner.aclose()
        assert all(t is not None and t.done() for t in tasks) and runner.pending == 0
        return time.monotonic() - start

    took = asyncio.run(main())
    lines = log.read_text().split()
    assert sorted(lines) == ["down-a", "down-b", "up-a", "up-b"]
    assert lines.index("up-a") < lines.index("down-a") and lines.index("up-b") < lines.index("down-b")
    assert took < 0.75  # the two sessions' ip-up ran at the same time


def test_concurrency_cap_and_queue_cap(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    path = script(tmp_path, "count", f'n=$(ls {marks} | wc -l); echo $n > {marks}/$1; sleep 0.2\n'
                                     f'rm {marks}/$1; echo $n >> {tmp_path}/seen\n')

    async def main() -> HookRunner:
        runner = HookRunner(max_running=3, max_queued=10)
        for i in range(12):
            runner.submit(i, str(i), HookKind.IP_UP, [path, str(i)], {"PATH": HOOK_PATH})
        assert runner.pending == 10 and runner.dropped == 2
        await runner.aclose()
        return runner

    with caplog.at_level(logging.WARNING, logger="pptpkit.vpn.hooks"):
        runner = asyncio.run(main())
    seen = [int(n) for n in (tmp_path / "seen").read_text().split()]
    # Each script saw the others running beside it: never more than 3 at once.
    assert len(seen) == 10 and max(seen) <= 2 and runner.started == 10
    assert "[10] ip-up" in caplog.text and "10 hooks already waiting" in caplog.text


def test_a_script_that_cannot_start_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = tmp_path / "badinterp"
    bad.write_text("#!/nonexistent/interpreter\n")
    bad.chmod(0o755)
    with caplog.at_level(logging.WARNING, logger="pptpkit.vpn.hooks"):
        result = asyncio.run(run_one(HookRunner(), [str(bad)]))
    assert result.status is None and result.error is not None and not result.ok
    assert f"[SID1] ip-up {bad}: cannot run" in caplog.text


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        HookRunner(timeout=0)
    with pytest.raises(ValueError):
        HookRunner(max_running=0)
