"""Command-line parsing of ``pptpkit``: listen addresses, pptpd address lists, argv of the PPP
program, and clear errors for bad input."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pptpkit.cli.argtypes import parse_listen
from pptpkit.cli.common import exit_help
from pptpkit.cli.main import build_parser, main
from pptpkit.cli.server import pptp_server_config, program_config, server_settings
from pptpkit.errors import NOT_PERMITTED_MESSAGE, ConfigError, ExitStatus

# -- --listen ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1", ("192.0.2.1", 1723)),
        ("192.0.2.1:1724", ("192.0.2.1", 1724)),
        (":1800", (None, 1800)),
        ("0.0.0.0", (None, 1723)),
        ("*:99", (None, 99)),
    ],
)
def test_parse_listen(text: str, expected: tuple[str | None, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("192.0.2.1:0", "bad port '0'"),
        ("192.0.2.1:65536", "bad port '65536'"),
        ("192.0.2.1:x", "bad port 'x'"),
        ("example.org", "'example.org' is not an IPv4 address"),
        ("192.0.2.300:1", "'192.0.2.300' is not an IPv4 address"),
    ],
)
def test_parse_listen_errors(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse_listen(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_parse_listen_never_crashes(text: str) -> None:
    try:
        host, port = parse_listen(text)
    except argparse.ArgumentTypeError:
        return
    assert 1 <= port <= 65535
    assert host is None or host.count(".") == 3


# -- the parser as a whole ---------------------------------------------------------------------------


def _server_args(*extra: str) -> argparse.Namespace:
    return build_parser().parse_args(["server", "--ppp-program", "/bin/cat", *extra])


def test_server_options(tmp_path: Path) -> None:
    (tmp_path / "opts").write_text("")
    settings = server_settings(_server_args(
        "--localip", "198.51.100.1", "--remoteip", "198.51.100.10-50,198.51.100.60",
        "--listen", "192.0.2.1:1724", "--connections", "5", "--stimeout", "2.5", "--speed", "9600",
        "--noipparam", "--option", str(tmp_path / "opts"), "--ppp-arg=-m", "--ppp-arg", "x"))
    assert (settings.listen, settings.port) == ("192.0.2.1", 1724)
    assert settings.connections == 5 and settings.stimeout == 2.5
    program = program_config(settings)
    assert program.pool is not None and program.pool.size == 42
    assert program.program_args == ("-m", "x") and program.speed == "9600" and program.noipparam
    assert program.option_file == str(tmp_path / "opts")


def test_server_option_flag_names_an_unreadable_file(tmp_path: Path) -> None:
    settings = server_settings(_server_args("--delegate", "--option", str(tmp_path / "none")))
    with pytest.raises(ConfigError, match=rf"^--option {tmp_path}/none: cannot read: No such file"):
        program_config(settings)


def test_server_defaults_listen_everywhere() -> None:
    settings = server_settings(_server_args("--delegate"))
    assert (settings.listen, settings.port, settings.connection_limit) == (None, 1723, 100)
    assert program_config(settings).pool is None


def test_server_limits_are_honoured_exactly() -> None:
    """The limits given are the limits enforced: nothing is added to them (they were raised to
    max(--connections, --max-sessions + 16) and --max-per-source + 16 in built-in mode)."""

    pool = ("--local-ip", "198.51.100.1", "--remote-ip", "198.51.100.10-50")
    args = build_parser().parse_args(["server", *pool, "--connections", "20", "--max-per-source", "4"])
    config = pptp_server_config(server_settings(args))
    assert (config.max_connections, config.max_per_source) == (20, 4)
    # Without --connections the built-in server takes a connection per session it may hold,
    # and 16 more, so that a client beyond --max-sessions is told Busy.
    args = build_parser().parse_args(["server", *pool, "--max-sessions", "300"])
    config = pptp_server_config(server_settings(args))
    assert (config.max_connections, config.max_per_source) == (316, 16)


def test_server_flags_not_given_are_absent() -> None:
    # Only typed flags may override a config file: the server parser's default is SUPPRESS.
    given = set(vars(build_parser().parse_args(["server"])))
    assert given == {"command", "verbose", "quiet", "log"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ((), "give --localip and --remoteip, or --delegate"),
        (("--localip", "198.51.100.1"), "--remoteip is missing"),
        (("--remoteip", "198.51.100.2"), "--localip is missing"),
        (("--delegate", "--localip", "198.51.100.1"), "--delegate passes no addresses"),
    ],
)
def test_server_address_option_errors(extra: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        program_config(server_settings(_server_args(*extra)))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["server"], "give --local-ip and --remote-ip"),
        (["server", "--ppp-program", "/p", "--remoteip", "198.51.100.9-1"], "ends before it starts"),
        (["server", "--ppp-program", "/p", "--listen", "192.0.2.1:70000"], "bad port '70000'"),
        (["server", "--ppp-program", "/p", "--connections", "0"], "0 is not in 1..65535"),
        (["server", "--ppp-program", "/p"], "give --localip and --remoteip"),
        (["pty", "vpn.example"], "'vpn.example' is not an IPv4 address"),
        (["pty", "192.0.2.1", "--timeout", "-1"], "must be a positive number"),
        (["pty", "192.0.2.1", "--window", "0"], "0 is not in 1..65535"),
        ([], "required: COMMAND"),
    ],
)
def test_errors_are_clear_usage_messages(argv: list[str], message: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    # argparse's own checks exit through SystemExit, ours return the status: both must give 2.
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_pty_options() -> None:
    args = build_parser().parse_args(["pty", "192.0.2.2", "--port", "1724", "--nobuffer", "--timeout", "3",
                                      "--window", "8", "--stdin-only", "-vv"])
    assert (args.server, args.port, args.nobuffer, args.timeout, args.window, args.stdin_only,
            args.verbose) == ("192.0.2.2", 1724, True, 3.0, 8, True, 2)


def test_help_documents_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("pty", "server", "connect", "demo", "bench"):
        with pytest.raises(SystemExit) as info:
            main([command, "--help"])
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert exit_help(command).splitlines()[1] in out
    assert main(["ppp", "--help"]) == 0
    assert "  3  not permitted" in capsys.readouterr().out


# -- one exit-status table: the same failure, the same status and line in every command --------


PASSWORD_ENV_NAME = "PPTPKIT_PASSWORD"


def _pptpkit(argv: list[str], *, prefix: tuple[str, ...] = (),
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m pptpkit ARGV`` with this test's sources, no password in the environment
    unless ``env`` gives one, and stdin not a terminal (no prompt)."""
    environ = {k: v for k, v in os.environ.items() if k != PASSWORD_ENV_NAME}
    environ.update(PYTHONPATH=os.pathsep.join(sys.path), **(env or {}))
    return subprocess.run([*prefix, sys.executable, "-m", "pptpkit", *argv], capture_output=True,
                          text=True, env=environ, stdin=subprocess.DEVNULL, timeout=60)


def test_version() -> None:
    from pptpkit import __version__

    out = _pptpkit(["--version"])
    assert out.returncode == 0 and out.stdout.strip() == f"pptpkit {__version__}"


def test_a_missing_file_is_the_same_failure_everywhere(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    runs = {
        "server": _pptpkit(["server", "--config", missing]),
        "connect": _pptpkit(["connect", "192.0.2.1", "-u", "a", "--password-file", missing]),
        "ppp": _pptpkit(["ppp", "file", missing], env={"PPTPKIT_PPP_ETC": str(tmp_path)}),
        "probe": _pptpkit(["probe", "192.0.2.1", "-u", "a", "--password-file", missing]),
    }
    for command, out in runs.items():
        lines = out.stderr.strip().splitlines()
        assert out.returncode == ExitStatus.USAGE, (command, out.stderr)
        assert len(lines) == 1 and lines[0].startswith(f"pptpkit {command}: "), (command, lines)
        assert lines[0].endswith(f"{missing}: cannot read: No such file or directory"), (command, lines)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv") or not shutil.which("unshare"),
                    reason="needs root, setpriv and unshare to drop CAP_NET_RAW/CAP_NET_ADMIN")
def test_not_permitted_is_the_same_failure_everywhere(tmp_path: Path) -> None:
    # An empty network namespace (nothing leaves it) and no CAP_NET_RAW/CAP_NET_ADMIN: every
    # command that needs them must say so the same way, with pppd's "not root" status 3.
    jail = ("unshare", "--net", "setpriv", "--bounding-set", "-net_raw,-net_admin")
    pool = ["--local-ip", "192.0.2.1", "--remote-ip", "192.0.2.2-3"]
    runs = {
        "pty": _pptpkit(["pty", "192.0.2.1", "--timeout", "2"], prefix=jail),
        "connect": _pptpkit(["connect", "192.0.2.1", "-u", "a", "--timeout", "2"], prefix=jail,
                            env={PASSWORD_ENV_NAME: "pw"}),
        "server": _pptpkit(["server", *pool, "--noauth", "--no-mppe", "--no-mss-clamp", "-q",
                            "--listen", "127.0.0.1:1799", "--ctl-socket", str(tmp_path / "ctl.sock")],
                           prefix=jail),
        "ppp": _pptpkit(["ppp", "noauth", "192.0.2.1:192.0.2.2", "nologfd"], prefix=jail,
                        env={"PPTPKIT_PPP_ETC": str(tmp_path)}),
        "probe": _pptpkit(["probe", "192.0.2.1", "--timeout", "2"], prefix=jail),
    }
    for command, out in runs.items():
        assert out.returncode == ExitStatus.NOT_PERMITTED == 3, (command, out.stderr)
        lines = [ln for ln in out.stderr.splitlines() if ln.startswith(f"pptpkit {command}: ")]
        assert len(lines) == 1, (command, out.stderr)
        assert lines[0].startswith(f"pptpkit {command}: {NOT_PERMITTED_MESSAGE}: "), (command, lines)


DOCS = Path(__file__).resolve().parents[3] / "docs" / "cli.md"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                found.update({f"{name} {k}": v for k, v in _subparsers(sub).items()})
    return found


def test_docs_list_every_flag_of_every_command() -> None:
    text = DOCS.read_text()
    for name, sub in _subparsers(build_parser()).items():
        for action in sub._actions:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":
                    assert f"`{option}" in text, (name, option)


def test_docs_exit_table_is_the_code_table() -> None:
    from pptpkit.cli.common import COMMAND_EXITS

    rows = {int(cells[1]): cells for line in DOCS.read_text().splitlines()
            if (cells := [c.strip() for c in line.split("|")]) and len(cells) > 9 and cells[1].isdigit()}
    commands = ["connect", "server", "pty", "ppp", "demo", "bench", "ctl"]
    assert set(rows) == {int(s) for s in ExitStatus}
    for status, cells in rows.items():
        marked = {c for c, mark in zip(commands, cells[3:10], strict=True) if mark == "x"}
        assert marked == {c for c in commands if status in COMMAND_EXITS[c]}, status


@pytest.mark.parametrize(
    ("flags", "bits_40", "bits_128", "required", "stateful"),
    [
        ((), False, True, True, False),
        (("--mppe-stateful",), False, True, True, True),
        (("--require-mppe",), True, True, True, False),
        (("--mppe-optional", "--mppe-stateful"), True, True, False, True),
        (("--no-mppe",), False, False, False, False),
    ],
)
def test_server_mppe_flags_are_pppd_words(flags: tuple[str, ...], bits_40: bool, bits_128: bool,
                                          required: bool, stateful: bool) -> None:
    mppe = server_settings(build_parser().parse_args(["server", *flags])).mppe
    assert (mppe.bits_40, mppe.bits_128, mppe.required, mppe.stateful) == (
        bits_40, bits_128, required, stateful)


def test_server_auth_flags() -> None:
    from pptpkit.auth.methods import AuthMethod

    def offered(*flags: str) -> tuple[AuthMethod, ...]:
        return server_settings(build_parser().parse_args(["server", *flags])).auth.offered_methods()

    assert offered() == (AuthMethod.MSCHAP_V2,)
    assert set(offered("--require-pap", "--require-eap")) == {AuthMethod.PAP, AuthMethod.EAP}
    assert offered("--noauth") == ()
    with pytest.raises(ConfigError, match="contradicts"):
        offered("--noauth", "--require-pap")


def test_log_targets(tmp_path: Path) -> None:
    """An unusable --log target is one usage line, exit 2."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3] / "src")}
    bad = subprocess.run([sys.executable, "-m", "pptpkit", "server", "--log", "/nonexistent/dir/x.log"],
                         capture_output=True, text=True, env=env, timeout=30)
    assert bad.returncode == 2
    expected = "pptpkit server: --log /nonexistent/dir/x.log: No such file or directory"
    assert bad.stderr.strip().splitlines() == [expected]


def test_log_file_lines_are_timestamped(tmp_path: Path) -> None:
    import logging
    import re

    from pptpkit.cli.common import setup_logging

    log = tmp_path / "p.log"
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging(0, False, str(log))
        logging.getLogger("pptpkit.test").info("session up")
        for handler in root.handlers:
            handler.flush()
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    line = log.read_text().strip()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} pptpkit\[\d+\]: session up", line), line


def _modules_after(*words: str) -> set[str]:
    code = ("import sys\nfrom pptpkit.cli.main import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('\\n'.join(m for m in sys.modules if m.startswith('pptpkit')))")
    done = subprocess.run([sys.executable, "-c", code, *words], capture_output=True, text=True,
                          timeout=60, check=True)
    return set(done.stdout.split())


def test_ctl_and_version_do_not_load_the_server() -> None:
    # A monitoring loop runs `pptpkit ctl` every few seconds: it must not import the whole server.
    heavy = {"pptpkit.vpn.server", "pptpkit.io.dataplane", "pptpkit.cli.server"}
    assert not heavy & _modules_after("ctl", "--socket", "/nonexistent/ctl.sock", "stats")
    assert not heavy & _modules_after("--version")
    # The top-level help lists every command's summary, so it builds them all.
    assert "pptpkit.cli.server" in _modules_after("--help")


def _help(parser: argparse.ArgumentParser, name: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        parser.parse_args([name, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_a_command_alone_parses_as_in_the_full_parser(capsys: pytest.CaptureFixture[str]) -> None:
    from pptpkit.cli.main import _COMMANDS

    full = build_parser()
    for name in _COMMANDS.keys() - {"ppp"}:  # pppd's options: main hands them over untouched
        assert _help(build_parser({name}), name, capsys) == _help(full, name, capsys)
    sample = ["ctl", "--socket", "/x", "--json", "stats"]
    assert vars(build_parser({"ctl"}).parse_args(sample)) == vars(full.parse_args(sample))
