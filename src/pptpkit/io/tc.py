"""Traffic control for one session interface: the commands as pure functions, one runner.

The shaper (:mod:`pptpkit.ops.shaper`) limits a per-session TUN in both directions:

* **down** (server -> client) is the TUN's egress: an HTB root qdisc with one class at the
  rate.  HTB rather than TBF because it accounts a GSO super-packet (the TUN takes up to 64 KiB
  TCP segments from the kernel) by its length instead of needing a bucket as large as one.
* **up** (client -> server) is the TUN's ingress, where the kernel can only police (drop), not
  shape.  We redirect the ingress to an IFB device and shape there with the same HTB.  Two
  reasons: shaping lets TCP settle at the rate instead of collapsing on drops, and policing
  would need a bucket of at least 64 KiB because our TUN writes are coalesced super-segments
  (:mod:`pptpkit.io.offload`).  (Kernels without ``act_police`` also leave no other way.)
  The cost: an IFB does not go away with the TUN, so it is deleted when the session ends,
  named ``pkifb<ifindex of the TUN>`` and marked with an alias ``pptpkit-shaper:<pid>`` so that
  a server starting after a crash deletes the ones a dead process left
  (:func:`stale_ifbs`).

Everything on the TUN itself (qdiscs, filter) goes with the interface.  The commands are built
as word lists (``tc -batch`` / ``ip -batch`` lines, one process per change instead of one per
command), tested without root; :func:`run` executes one batch on asyncio's subprocess support,
so a slow ``tc`` never blocks the loop.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable, Sequence
from typing import Final

__all__ = [
    "ALIAS_PREFIX",
    "IFB_PREFIX",
    "Command",
    "batch_text",
    "htb_burst",
    "htb_commands",
    "ifb_add_commands",
    "ifb_alias",
    "ifb_del_commands",
    "ifb_name",
    "output",
    "pid_alive",
    "redirect_commands",
    "run",
    "stale_ifbs",
    "unshape_commands",
]

#: One line of a ``tc -batch`` or ``ip -batch`` input, as words.
Command = list[str]

IFB_PREFIX: Final = "pkifb"
ALIAS_PREFIX: Final = "pptpkit-shaper:"
#: Seconds one batch may take before it is killed (and reported as failed).
RUN_TIMEOUT: Final = 10.0
#: Interface names are at most 15 characters (IFNAMSIZ less the NUL).
_IFNAMSIZ: Final = 15


def _check_dev(dev: str) -> str:
    # The batch formats split on whitespace; kernel names never hold any, but a name from a
    # setting is checked rather than trusted.
    if not dev or len(dev) > _IFNAMSIZ or any(c.isspace() or c in "\"'\\#" for c in dev):
        raise ValueError(f"bad interface name {dev!r}")
    return dev


def htb_burst(kbit: int) -> int:
    """HTB's burst for ``kbit``: 20 ms at the rate, at least two packets of 1500 octets.  HTB
    queues instead of dropping, so it needs no more than what keeps its timer from limiting
    the rate."""
    return max(kbit * 1000 // 8 // 50, 3000)


def htb_commands(dev: str, kbit: int, burst: int) -> list[Command]:
    """Egress of ``dev`` limited to ``kbit`` kbit/s (HTB, one default class; ``burst`` octets).
    ``replace``: also changes the rate of a device already shaped."""
    if kbit <= 0 or burst <= 0:
        raise ValueError("rate and burst must be above 0")
    dev = _check_dev(dev)
    rate = f"{kbit}kbit"
    return [
        ["qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default", "1"],
        ["class", "replace", "dev", dev, "parent", "1:", "classid", "1:1", "htb", "rate", rate,
         "ceil", rate, "burst", str(burst), "cburst", str(burst)],
    ]


def redirect_commands(dev: str, ifb: str) -> list[Command]:
    """Every packet entering ``dev`` redirected to the egress of ``ifb`` (an ingress qdisc and a
    u32 filter matching all)."""
    dev, ifb = _check_dev(dev), _check_dev(ifb)
    return [
        ["qdisc", "replace", "dev", dev, "handle", "ffff:", "ingress"],
        ["filter", "add", "dev", dev, "parent", "ffff:", "protocol", "all", "prio", "1", "u32",
         "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", ifb],
    ]


def unshape_commands(dev: str, *, down: bool, up: bool) -> list[Command]:
    """Remove the egress (``down``) and/or the ingress redirect (``up``) of ``dev``."""
    dev = _check_dev(dev)
    commands: list[Command] = []
    if down:
        commands.append(["qdisc", "del", "dev", dev, "root"])
    if up:
        commands.append(["qdisc", "del", "dev", dev, "ingress"])
    return commands


def ifb_name(ifindex: int) -> str:
    """The IFB of the interface with index ``ifindex``: unique while that interface lives."""
    if ifindex <= 0:
        raise ValueError(f"bad interface index {ifindex}")
    return _check_dev(f"{IFB_PREFIX}{ifindex}")


def ifb_alias(pid: int) -> str:
    return f"{ALIAS_PREFIX}{pid}"


def ifb_add_commands(ifb: str, pid: int) -> list[Command]:
    """``ip -batch`` lines creating ``ifb`` up, marked as belonging to process ``pid``."""
    ifb = _check_dev(ifb)
    return [["link", "add", "name", ifb, "type", "ifb"],
            ["link", "set", "dev", ifb, "up", "alias", ifb_alias(pid)]]


def ifb_del_commands(ifb: str) -> list[Command]:
    return [["link", "del", "dev", _check_dev(ifb)]]


def batch_text(commands: Sequence[Command]) -> str:
    """The ``-batch -`` input of ``commands``, one per line."""
    return "".join(" ".join(command) + "\n" for command in commands)


_IFB_LINE: Final = re.compile(r"^\d+:\s+([^:@\s]+)[@:].*?\balias\s+(\S+)")


def stale_ifbs(ip_output: str, alive: Callable[[int], bool]) -> list[str]:
    """From ``ip -o -d link show type ifb``: our IFBs (alias ``pptpkit-shaper:PID``) whose
    process is no longer ``alive`` - what a crashed server left."""
    stale: list[str] = []
    for line in ip_output.splitlines():
        match = _IFB_LINE.match(line)
        if match is None or not match[1].startswith(IFB_PREFIX):
            continue
        alias = match[2]
        if not alias.startswith(ALIAS_PREFIX):
            continue
        pid_text = alias[len(ALIAS_PREFIX):]
        if pid_text.isdigit() and not alive(int(pid_text)):
            stale.append(match[1])
    return stale


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (ours or another user's)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _exec(argv: Sequence[str], stdin: str | None, timeout: float) -> tuple[str | None, str]:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except OSError as exc:
        return f"cannot run {argv[0]}: {exc.strerror or exc}", ""
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(stdin.encode() if stdin is not None else None), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return f"{argv[0]} did not finish within {timeout:g} s", ""
    stdout = out.decode(errors="replace")
    if proc.returncode == 0:
        return None, stdout
    text = (err.decode(errors="replace") or stdout).strip().replace("\n", "; ")
    return f"{' '.join(argv[:2])} exited with status {proc.returncode}: {text or 'no message'}", stdout


async def run(argv: Sequence[str], stdin: str | None = None, timeout: float = RUN_TIMEOUT) -> str | None:
    """Run ``argv`` (``tc -batch -`` with ``stdin``, ``ip ...``): None when it worked, else
    what went wrong (its stderr, its exit status, or why it could not run)."""
    error, _ = await _exec(argv, stdin, timeout)
    return error


async def output(argv: Sequence[str], timeout: float = RUN_TIMEOUT) -> tuple[str | None, str]:
    """Run ``argv`` for what it prints: (the error as :func:`run` gives it, stdout)."""
    return await _exec(argv, None, timeout)
