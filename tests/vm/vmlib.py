"""Python side of pptpkit's QEMU test VM (``tools/vm/pkvm``), for tests.

The VM runs Debian's real pppd, pptpd and pptp-linux on a real kernel. The host end of its
network is the namespace :data:`NAMESPACE` (:data:`HOST_ADDR` on a bridge, the guest at
:data:`GUEST_ADDR`, nothing routed anywhere else). :class:`GuestVm` boots and stops it (through
``pkvm``), runs shell commands in the guest over the 9p command channel, drives the guest's
PPTP server (``pk-server``) and client (``pk-client``) roles, reads the guest logs straight from
the shared directory and runs host commands inside :data:`NAMESPACE`.

Fixtures: ``vm_session`` boots the VM once per test run and stops it at the end (unless
``PKVM_KEEP=1``); ``vm`` hands it to a test, booting it again if an earlier test took it down.
A test module makes them available by importing ``vm_fixture`` and ``vm_session_fixture``
(pytest registers them under their ``name=``, so test parameters ``vm`` / ``vm_session``
shadow no import).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import require, require_binary, require_root

REPO = Path(__file__).resolve().parents[2]
PKVM = REPO / "tools" / "vm" / "pkvm"

# These mirror tools/vm/settings.sh, which honours the same environment overrides.
NAMESPACE = os.environ.get("PKVM_NS", "pkvm-host")
BRIDGE = os.environ.get("PKVM_BRIDGE", "pkvmbr0")
TAP = os.environ.get("PKVM_TAP", "pkvmtap0")
STATE_DIR = Path(os.environ.get("PKVM_STATE", "/run/pptpkit-vm"))
HOST_ADDR = os.environ.get("PKVM_HOST_ADDR", "192.0.2.1")
GUEST_ADDR = os.environ.get("PKVM_GUEST_ADDR", "192.0.2.2")

# What the guest's pptpd hands out, and the credentials every role uses.
SERVER_PPP_ADDR = "198.51.100.1"
USER = "alice"
PASSWORD = "wonderland"

# pppd log lines worth waiting for (pppd pads "local" to line up with "remote").
MPPE_128_ENABLED = "MPPE 128-bit stateless compression enabled"
LOCAL_IP_LINE = "local  IP address"
REMOTE_IP_LINE = "remote IP address"

# pppd exit statuses (pppd(8), "EXIT STATUS").
PPPD_EXIT_SIGNALLED = 5
PPPD_EXIT_PEER_AUTH_FAILED = 19
PPPD_EXIT_MPPE_UNAVAILABLE = 10

SERVER_LOG = "pppd-server.log"
SYSLOG = "messages"
LINKS_LOG = "links.log"

_MAX_OUTPUT = 4 << 20  # bytes of guest command output read back; a runaway command cannot eat RAM


class VmError(RuntimeError):
    """The VM or its command channel failed (not: a guest command exited non-zero)."""


@dataclass(frozen=True, kw_only=True)
class GuestResult:
    """A finished guest command: its exit status (124 = killed at its time limit) and output."""

    command: str
    status: int
    output: str

    def check(self) -> GuestResult:
        if self.status != 0:
            raise VmError(f"guest command failed with status {self.status}: {self.command}\n{self.output}")
        return self


@dataclass(frozen=True, kw_only=True)
class ClientStatus:
    """State of a guest pptp-linux + pppd client, as ``pk-client`` reports it.

    ``state``: ``up`` (IPCP done), ``down`` (was up, gone), ``connecting``, ``exited`` (pppd
    ended before the link came up) or ``stopped`` (never started). ``exit_status`` is pppd's
    exit status once it has exited.
    """

    name: str
    state: str
    running: bool
    pid: int | None
    exit_status: int | None
    iface: str
    local: str
    remote: str
    mppe: str
    log_name: str

    @property
    def up(self) -> bool:
        return self.state == "up"


def _parse_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isupper():
            fields[key] = value
    return fields


def _opt_int(value: str) -> int | None:
    return int(value) if value.strip().isdigit() else None


def _client_status(name: str, output: str) -> ClientStatus:
    fields = _parse_fields(output)
    if "STATE" not in fields:
        raise VmError(f"pk-client printed no status:\n{output}")
    return ClientStatus(
        name=name,
        state=fields["STATE"],
        running=fields.get("RUNNING") == "1",
        pid=_opt_int(fields.get("PID", "")),
        exit_status=_opt_int(fields.get("EXIT", "")),
        iface=fields.get("IFACE", ""),
        local=fields.get("LOCAL", ""),
        remote=fields.get("REMOTE", ""),
        mppe=fields.get("MPPE", ""),
        log_name=f"pppd-client-{name}.log",
    )


def _role_args(
    *,
    open_: bool,
    auth: str | None,
    mppe: str | None,
    pppd_options: Sequence[str],
) -> list[str]:
    args: list[str] = []
    if open_:
        args.append("--open")
    if auth is not None:
        args += ["--auth", auth]
    if mppe is not None:
        args += ["--mppe", mppe]
    for option in pppd_options:
        args += ["--pppd-opt", option]
    return args


class GuestVm:
    """Handle on the one pptpkit test VM (a second handle controls the same VM)."""

    def __init__(self, *, pkvm: Path = PKVM, state_dir: Path = STATE_DIR, namespace: str = NAMESPACE):
        self.pkvm = pkvm
        self.state_dir = state_dir
        self.namespace = namespace
        self._seq = 0

    @property
    def share(self) -> Path:
        """Host directory the guest sees as /pk (cmd/, out/, log/, state/)."""
        return self.state_dir / "share"

    # -- lifecycle ------------------------------------------------------------------------

    def qemu_pid(self) -> int | None:
        """Pid of the VM's qemu, None when it is not running."""
        pidfile = self.state_dir / "qemu.pid"
        try:
            pid = int(pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        return pid if str(pidfile).encode() in cmdline else None

    def is_running(self) -> bool:
        return self.qemu_pid() is not None and (self.share / "state" / "ready").exists()

    def _pkvm(self, *args: str, timeout: float) -> str:
        try:
            done = subprocess.run(
                [str(self.pkvm), *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise VmError(f"pkvm {' '.join(args)}: no answer within {timeout} s") from exc
        output = done.stdout.decode(errors="replace")
        if done.returncode != 0:
            raise VmError(f"pkvm {' '.join(args)} failed ({done.returncode}):\n{output}")
        return output

    def up(self, *, timeout: float = 900.0) -> None:
        """Boot the VM unless it runs; the first call may build the image (about a minute)."""
        if not self.is_running():
            self._pkvm("up", timeout=timeout)

    def down(self) -> None:
        """Stop qemu and remove tap, bridge and namespace."""
        self._pkvm("down", timeout=60.0)

    # -- guest commands -----------------------------------------------------------------------

    def exec(self, command: str, *, timeout: float = 60.0, check: bool = False) -> GuestResult:
        """Run a bash command line in the guest (as root, cwd /root, stdin /dev/null).

        The guest kills it after ``timeout`` seconds (status 124). With ``check`` a non-zero
        status raises :class:`VmError`.
        """
        if not self.is_running():
            raise VmError("the VM is not running")
        limit = max(1, int(timeout + 0.999))
        self._seq += 1
        ident = f"py{os.getpid()}-{time.monotonic_ns()}-{self._seq}"
        cmd_dir, out_dir = self.share / "cmd", self.share / "out"
        part = cmd_dir / f"{ident}.part"
        part.write_text(f"# pk-timeout: {limit}\n{command}\n")
        part.rename(cmd_dir / f"{ident}.sh")
        rc_file, out_file = out_dir / f"{ident}.rc", out_dir / f"{ident}.out"
        # The guest enforces the limit itself; allow for its poll interval and slow TCG.
        deadline = time.monotonic() + limit + 15.0
        while not rc_file.exists():
            if time.monotonic() > deadline:
                raise VmError(f"no exit status from the guest after {limit} s: {command}")
            if self.qemu_pid() is None:
                raise VmError(f"the VM died while running: {command}")
            time.sleep(0.05)
        status = int(rc_file.read_text().strip())
        with out_file.open("rb") as stream:
            output = stream.read(_MAX_OUTPUT).decode(errors="replace")
        rc_file.unlink()
        out_file.unlink()
        result = GuestResult(command=command, status=status, output=output)
        return result.check() if check else result

    # -- host side (namespace NAMESPACE) ----------------------------------------------------

    def host_argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *argv]

    def host(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 30.0,
        input: bytes | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a host command inside the VM's host-side namespace and wait for it."""
        return subprocess.run(
            self.host_argv(argv), input=input, capture_output=True, timeout=timeout, check=check
        )

    def host_popen(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """Start a host command inside the namespace; the caller must end it (see :func:`stop`)."""
        return subprocess.Popen(self.host_argv(argv), **kwargs)  # type: ignore[call-overload,no-any-return]

    # -- guest PPTP server (pptpd + pppd) ----------------------------------------------------

    def start_server(
        self,
        *,
        open_: bool = False,
        auth: str | None = None,
        mppe: str | None = None,
        deflate: bool = False,
        listen: str | None = None,
        pppd_options: Sequence[str] = (),
    ) -> None:
        """(Re)start the guest's pptpd; empties :data:`SERVER_LOG`.

        Default is the production setup (MS-CHAPv2 only, MPPE-128 required); ``open_`` accepts
        PAP/CHAP/MS-CHAP/MS-CHAPv2 without MPPE. ``auth``: mschapv2|mschap|chap|pap|any|none;
        ``mppe``: require|40|stateful|optional|none; ``deflate`` lets pppd offer CCP deflate;
        ``pppd_options``: extra pppd option lines such as ``"mtu 1400"``.
        """
        args = _role_args(open_=open_, auth=auth, mppe=mppe, pppd_options=pppd_options)
        if deflate:
            args.append("--deflate")
        if listen is not None:
            args += ["--listen", listen]
        self.exec(shlex.join(["pk-server", *args]), timeout=60.0, check=True)

    def stop_server(self) -> None:
        self.exec("pk-server --stop", timeout=60.0, check=True)

    # -- guest PPTP client (pptp-linux + pppd) ----------------------------------------------

    def start_client(
        self,
        target: str = HOST_ADDR,
        *,
        name: str = "default",
        open_: bool = False,
        auth: str | None = None,
        mppe: str | None = None,
        user: str | None = None,
        password: str | None = None,
        netns: str | None = None,
        timeout: float = 30.0,
        wait: bool = True,
        pppd_options: Sequence[str] = (),
    ) -> ClientStatus:
        """Start a client (replacing one of the same ``name``) and, with ``wait``, return once
        the link is up, pppd has exited, or ``timeout`` passed. ``netns`` runs it in that guest
        network namespace. Defaults: alice/wonderland, MS-CHAPv2, MPPE-128 required.
        """
        args = [target, "--name", name, "--timeout", str(int(timeout))]
        args += _role_args(open_=open_, auth=auth, mppe=mppe, pppd_options=pppd_options)
        if user is not None:
            args += ["--user", user]
        if password is not None:
            args += ["--password", password]
        if netns is not None:
            args += ["--netns", netns]
        if not wait:
            args.append("--no-wait")
        result = self.exec(shlex.join(["pk-client", *args]), timeout=timeout + 30.0)
        return _client_status(name, result.output)

    def client_status(self, name: str = "default") -> ClientStatus:
        result = self.exec(shlex.join(["pk-client", "--status", "--name", name]))
        return _client_status(name, result.output)

    def wait_client_exit(self, name: str = "default", *, timeout: float = 30.0) -> ClientStatus:
        """Wait until the client's pppd has exited (``exit_status`` stays None on timeout)."""
        command = shlex.join(["pk-client", "--wait-exit", str(int(timeout)), "--name", name])
        return _client_status(name, self.exec(command, timeout=timeout + 10.0).output)

    def stop_client(self, name: str = "default") -> ClientStatus:
        result = self.exec(shlex.join(["pk-client", "--stop", "--name", name]), check=True)
        return _client_status(name, result.output)

    # -- logs ---------------------------------------------------------------------------

    def log_path(self, name: str) -> Path:
        """Host path of a guest log: :data:`SYSLOG`, :data:`SERVER_LOG`, ``pppd-client-NAME.log``,
        :data:`LINKS_LOG` (``up|down IFACE LOCAL REMOTE IPPARAM`` per PPP link event)."""
        if "/" in name or name.startswith("."):
            raise ValueError(f"bad log name {name!r}")
        return self.share / "log" / name

    def console_log(self) -> str:
        return (self.state_dir / "console.log").read_text(errors="replace")

    def log_size(self, name: str) -> int:
        """Current length of a log; pass it as ``since`` to look only at what comes later."""
        try:
            return self.log_path(name).stat().st_size
        except FileNotFoundError:
            return 0

    def wait_until(self, command: str, timeout: float, what: str, *, logs: Sequence[str] = ()) -> str:
        """Run ``command`` in the guest until it exits 0 and return its output; on timeout fail
        with ``what`` and the named guest logs."""
        end = time.monotonic() + timeout
        while True:
            result = self.exec(command)
            if result.status == 0:
                return result.output
            if time.monotonic() >= end:
                detail = "\n".join(f"--- {name}:\n{self.read_log(name)}" for name in logs)
                raise AssertionError(f"timed out waiting for {what}: {result.output}\n{detail}")
            time.sleep(0.3)

    def add_client_namespace(self, netns: str, host_if: str, server_addr: str, client_addr: str,
                             *, before: str = "", after: str = "") -> None:
        """A guest network namespace ``netns`` joined to the guest by the veth pair
        ``{host_if}0``/``{host_if}1`` (server side ``server_addr``, inside ``client_addr``, /26),
        replacing any left by an earlier run; ``before``/``after`` are extra shell lines."""
        self.exec(
            f"""
            set -e
            {before}
            ip netns del {netns} 2>/dev/null || true
            ip link del {host_if}0 2>/dev/null || true
            ip netns add {netns}
            ip link add {host_if}0 type veth peer name {host_if}1 netns {netns}
            ip addr add {server_addr}/26 dev {host_if}0
            ip link set {host_if}0 up
            ip -n {netns} link set lo up
            ip -n {netns} addr add {client_addr}/26 dev {host_if}1
            ip -n {netns} link set {host_if}1 up
            ip netns exec {netns} ping -c 1 -W 3 {server_addr}
            {after}
            """,
            check=True,
        )

    def read_log(self, name: str, *, since: int = 0) -> str:
        try:
            with self.log_path(name).open("rb") as stream:
                stream.seek(since)
                return stream.read(_MAX_OUTPUT).decode(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(
        self, name: str, pattern: str | re.Pattern[str], *, since: int = 0, timeout: float = 30.0
    ) -> str:
        """Wait until a line of log ``name`` (after offset ``since``) contains ``pattern`` (a
        plain string) or matches it (a compiled regex, searched); return that line."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.read_log(name, since=since).splitlines():
                if (pattern in line) if isinstance(pattern, str) else pattern.search(line):
                    return line
            if time.monotonic() > deadline:
                tail = "\n".join(self.read_log(name, since=since).splitlines()[-20:])
                raise VmError(f"{pattern!r} not in guest log {name} after {timeout} s; it ends:\n{tail}")
            time.sleep(0.1)


def stop(process: subprocess.Popen[bytes], *, grace: float = 3.0) -> int:
    """End a process started with :meth:`GuestVm.host_popen`: SIGTERM, then SIGKILL."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def parse_status_fields(text: str) -> Mapping[str, str]:
    """``KEY=VALUE`` lines (what pk-client and the guest state files hold) as a dict."""
    return _parse_fields(text)


@pytest.fixture(scope="session", name="vm_session")
def vm_session_fixture() -> Iterator[GuestVm]:
    """The VM, booted once for the whole test run; stopped at the end unless PKVM_KEEP=1."""
    require_root()
    require_binary("qemu-system-x86_64")
    require(PKVM.exists(), f"{PKVM} missing")
    machine = GuestVm()
    try:
        machine.up()
    except BaseException:
        # A boot that failed half-way can leave qemu and the namespace behind.
        machine.down()
        raise
    yield machine
    if os.environ.get("PKVM_KEEP") != "1":
        machine.down()


@pytest.fixture(name="vm")
def vm_fixture(vm_session: GuestVm) -> GuestVm:
    """The session's VM, booted again if an earlier test stopped it."""
    vm_session.up()
    return vm_session
