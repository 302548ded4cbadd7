"""The pptpd.conf and pptpd-options Debian 12 ships (taken from the installed packages and checked
against dpkg's checksums: tests/debianfiles.py) run the built-in server once localip and
remoteip are added; and every option in them, commented-out examples included, is either
honoured or an error naming the file and line."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import re
import shutil
from pathlib import Path

import pytest

from debianfiles import stock_dir
from pptpkit.auth.methods import AuthMethod
from pptpkit.cli.main import build_parser
from pptpkit.cli.server import builtin_config, server_settings
from pptpkit.compat import pptpdconf
from pptpkit.compat.pppdopts import PppdOptions
from pptpkit.errors import ConfigError
from pptpkit.vpn.settings import ServerSettings

DEBIAN = stock_dir()

POOL = "localip 198.51.100.1\nremoteip 198.51.100.10-20\n"


class Stock:
    """Copies of the stock files in ``tmp_path``: ``conf`` (pptpd.conf, its ``option`` line
    pointing at the copy of pptpd-options, localip/remoteip appended), ``options``
    (pptpd-options) and ``etc/options`` (pppd's own)."""

    def __init__(self, tmp_path: Path) -> None:
        self.etc = tmp_path / "etc"
        self.etc.mkdir(parents=True)
        shutil.copy(DEBIAN / "options", self.etc / "options")
        self.options = self.etc / "pptpd-options"
        shutil.copy(DEBIAN / "pptpd-options", self.options)
        self.conf = tmp_path / "pptpd.conf"
        text = (DEBIAN / "pptpd.conf").read_text()
        # Same line, our copy: line numbers stay those of the stock file.
        text = text.replace("option /etc/ppp/pptpd-options\n", f"option {self.options}\n")
        self.conf.write_text(text + POOL)
        (self.etc / "chap-secrets").write_text('alice pptpd "alice pw" *\n')

    def line_of(self, path: Path, text: str) -> int:
        return path.read_text().splitlines().index(text) + 1

    def uncomment(self, path: Path, line: int) -> None:
        lines = path.read_text().splitlines(keepends=True)
        assert lines[line - 1].startswith("#")
        lines[line - 1] = lines[line - 1][1:]
        path.write_text("".join(lines))

    def append(self, path: Path, text: str) -> int:
        """Append ``text`` (one line) and return its line number."""
        with path.open("a") as f:
            f.write(text + "\n")
        return len(path.read_text().splitlines())

    def settings(self, *flags: str) -> ServerSettings:
        args = build_parser().parse_args(["server", "--config", str(self.conf), *flags])
        return server_settings(args, etc_dir=str(self.etc))


@pytest.fixture
def stock(tmp_path: Path) -> Stock:
    return Stock(tmp_path)


def test_vectors_are_the_debian_files() -> None:
    # The lines that matter, so a reworded copy cannot pass for the stock file.
    conf = (DEBIAN / "pptpd.conf").read_text().splitlines()
    assert "option /etc/ppp/pptpd-options" in conf and "logwtmp" in conf
    assert "#localip 192.168.0.1" in conf and "#ppp /usr/sbin/pppd" in conf
    options = [w for w in (DEBIAN / "pptpd-options").read_text().splitlines() if w and w[0] != "#"]
    assert options == ["name pptpd", "refuse-pap", "refuse-chap", "refuse-mschap", "require-mschap-v2",
                       "require-mppe-128", "proxyarp", "nodefaultroute", "lock", "nobsdcomp", "novj",
                       "novjccomp", "nologfd"]


def test_stock_debian_files_run_the_builtin_server(stock: Stock, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        s = stock.settings()
    assert s.builtin and s.ppp_program is None and s.option_file is None
    assert s.localip == ("198.51.100.1",) and len(s.remoteip or ()) == 11
    assert s.name == "pptpd"
    assert s.auth.offered_methods() == (AuthMethod.MSCHAP_V2,) and s.auth.authenticates_peer
    assert s.mppe.required and s.mppe.bits_128 and not s.mppe.bits_40 and not s.mppe.stateful
    assert s.proxyarp
    # /etc/ppp/options (read first, as pppd does): auth, and the LCP echo.
    assert (s.echo_interval, s.echo_failure) == (30.0, 4)
    assert (s.dns, s.wins, s.verbose, s.logfile, s.mru) == ((), (), 0, None, None)
    assert s.mtu == ServerSettings().mtu
    assert s.secrets == str(stock.etc / "chap-secrets")
    # logwtmp is pptpd.conf's one keyword we cannot honour: said at its line.
    line = stock.line_of(stock.conf, "logwtmp")
    assert f"{stock.conf}:{line}: logwtmp: not supported" in caplog.text
    config = builtin_config(s)
    assert config.mru == s.mtu and config.proxyarp and config.name == "pptpd"


def test_stock_files_without_pppd_options(tmp_path: Path) -> None:
    stock = Stock(tmp_path)
    (stock.etc / "options").unlink()
    s = stock.settings()
    # Without /etc/ppp/options: pppd's defaults (no LCP echo).
    assert (s.echo_interval, s.proxyarp, s.name) == (0.0, True, "pptpd")


# -- the commented-out options of the stock files -------------------------------------------------

def _commented(path: Path) -> list[tuple[int, str]]:
    return [(n, line[1:]) for n, line in enumerate(path.read_text().splitlines(), 1)
            if re.match(r"#[a-z+-]", line)]


#: pptpd-options' commented-out options, uncommented: what each does.
OPTION_CHECKS = {
    "chapms-strip-domain": lambda s: s.mschap_strip_domain,
    "ms-dns 10.0.0.1": lambda s: s.dns == (ipaddress.IPv4Address("10.0.0.1"),),
    "ms-dns 10.0.0.2": lambda s: s.dns == (ipaddress.IPv4Address("10.0.0.2"),),
    "ms-wins 10.0.0.3": lambda s: s.wins == (ipaddress.IPv4Address("10.0.0.3"),),
    "ms-wins 10.0.0.4": lambda s: s.wins == (ipaddress.IPv4Address("10.0.0.4"),),
    "debug": lambda s: s.verbose == 1,
    "dump": lambda s: True,  # its effect is the log: test_dump_logs_the_options
}


def test_every_commented_option_of_pptpd_options_is_known() -> None:
    assert sorted(text for _, text in _commented(DEBIAN / "pptpd-options")) == sorted(OPTION_CHECKS)


@pytest.mark.parametrize(("line", "text"), _commented(DEBIAN / "pptpd-options"))
def test_commented_pptpd_options_are_honoured(stock: Stock, line: int, text: str) -> None:
    assert stock.settings() == stock.settings()  # the stock file does not have it
    before = stock.settings()
    stock.uncomment(stock.options, line)
    after = stock.settings()
    assert OPTION_CHECKS[text](after)
    if text != "dump":
        assert after != before


def _pppd_outcome(stock: Stock, line: int) -> str:
    stock.uncomment(stock.etc / "options", line)
    try:
        stock.settings()
    except ConfigError as exc:
        return str(exc)
    return "ok"


@pytest.mark.parametrize(("line", "text"), _commented(DEBIAN / "options"))
def test_commented_pppd_options_honoured_or_refused_at_their_line(stock: Stock, line: int,
                                                                  text: str) -> None:
    outcome = _pppd_outcome(stock, line)
    if outcome != "ok":
        assert outcome.startswith(f"{stock.etc / 'options'}:{line}: "), outcome


def test_some_commented_pppd_options_are_refused(tmp_path: Path) -> None:
    # So the test above cannot pass with every line accepted.
    path = DEBIAN / "options"
    outcomes = {}
    for n, (line, text) in enumerate(_commented(path)):
        stock = Stock(tmp_path / str(n))
        outcomes[text.split()[0]] = _pppd_outcome(stock, line)
    assert outcomes["proxyarp"] == outcomes["local"] == outcomes["noipdefault"] == "ok"
    assert "persist: not supported by the built-in server" in outcomes["persist"]
    assert "unsupported pppd option 'kdebug'" in outcomes["kdebug"]


@pytest.mark.parametrize(("line", "text"), _commented(DEBIAN / "pptpd.conf"))
def test_commented_pptpd_conf_keywords(stock: Stock, line: int, text: str,
                                       caplog: pytest.LogCaptureFixture) -> None:
    stock.uncomment(stock.conf, line)
    keyword = text.split()[0]
    try:
        with caplog.at_level(logging.WARNING):
            s = stock.settings()
    except ConfigError as exc:
        message = str(exc)
        if keyword in ("localip", "remoteip"):
            # Ours are appended at the end: the second one is the error.
            assert re.match(rf"{re.escape(str(stock.conf))}:1\d\d: {keyword} given twice \(first on "
                            rf"line {line}\)", message), message
        else:
            assert keyword == "delegate"
            assert message.startswith(f"{stock.conf}:{line}: delegate: the built-in PPP stack"), message
        return
    expect = {"ppp": lambda: s.ppp_program == "/usr/sbin/pppd" and not s.builtin,
              "debug": lambda: s.verbose == 1,
              # pptpd leaves ipparam out of pppd's arguments; the hook scripts get the same.
              "noipparam": lambda: s.noipparam,
              "bcrelay": lambda: f"{stock.conf}:{line}: bcrelay: not supported" in caplog.text,
              "connections": lambda: s.connections == 100}
    assert expect[keyword]()


# -- options one by one -----------------------------------------------------------------------------

#: Options the built-in server has nothing to do for, and why that is their meaning.
NOOP = ["lock", "nolock", "nobsdcomp", "nodeflate", "nopredictor1", "novj", "novjccomp", "nologfd",
        "logfd 2", "nodefaultroute", "noipx", "hide-password", "nodetach", "crtscts", "modem", "local"]


@pytest.mark.parametrize("option", NOOP)
def test_noop_options_are_accepted_and_change_nothing(stock: Stock, option: str) -> None:
    before = stock.settings()
    stock.append(stock.options, option)
    assert stock.settings() == before


@pytest.mark.parametrize(("option", "message"), [
    ("remotename gw", "remotename: not supported by the built-in server"),
    ("115200", "speed: not supported by the built-in server (only a PPP program"),
    ("ipparam 192.0.2.9", "ipparam: not supported by the built-in server"),
    ("remotenumber 192.0.2.9", "remotenumber: not supported by the built-in server"),
    ("user me", "user: not supported"),
    ("password pw", "password: not supported"),
    ("defaultroute", "defaultroute: not supported"),
    ("usepeerdns", "usepeerdns: not supported"),
    ("asyncmap 1", "asyncmap: not supported"),
    ("nopcomp", "nopcomp: not supported"),
    ("ifname ppp9", "ifname: not supported"),
    ("198.51.100.1:198.51.100.2", "LOCAL:REMOTE: not supported"),
    ("logfd 5", "logfd 5: not supported by the built-in server"),
    ("updetach", "updetach: not supported"),
    ("mtu 1600", "mtu 1600: the built-in server takes 576..1500"),
    ("mru 500", "mru 500: the built-in server takes 576..1500"),
    ("demand", "demand: dial-on-demand is not supported"),
    ("bsdcomp 15", "unsupported pppd option 'bsdcomp'"),
    ("ktune", "unsupported pppd option 'ktune'"),
])
def test_refused_options_name_their_line(stock: Stock, option: str, message: str) -> None:
    line = stock.append(stock.options, option)
    with pytest.raises(ConfigError) as info:
        stock.settings()
    assert str(info.value).startswith(f"{stock.options}:{line}: {message}"), str(info.value)


def test_original_ip_refused_at_its_line(stock: Stock) -> None:
    stock.append(stock.options, "plugin pptpd-logwtmp.so")
    line = stock.append(stock.options, "pptpd-original-ip 192.0.2.9")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(stock.options))}:{line}: pptpd-original-ip: "):
        stock.settings()


def test_mtu_and_mru(stock: Stock) -> None:
    default_mru = ServerSettings().mtu
    stock.append(stock.options, "mtu 1300")
    s = stock.settings()
    # pppd's mtu caps what we send; the MRU we ask for stays the default.
    assert (s.mtu, s.mru, builtin_config(s).mru) == (1300, default_mru, default_mru)
    stock.append(stock.options, "mru 1450")
    s = stock.settings()
    assert (s.mtu, s.mru, builtin_config(s).mru) == (1300, 1450, 1450)
    # The flag wins over the file: --mtu is the MRU too unless --mru says otherwise.
    s = stock.settings("--mtu", "1200")
    assert (s.mtu, s.mru, builtin_config(s).mru) == (1200, None, 1200)
    s = stock.settings("--mru", "1100")
    assert (s.mtu, builtin_config(s).mru) == (1300, 1100)


def test_mru_alone_is_our_mru_and_mtu(stock: Stock) -> None:
    stock.append(stock.options, "mru 1450")
    s = stock.settings()
    assert (s.mtu, builtin_config(s).mru) == (1450, 1450)


def test_logfile_is_honoured(stock: Stock, tmp_path: Path) -> None:
    stock.append(stock.options, f"logfile {tmp_path}/pptpd.log")
    assert stock.settings().logfile == f"{tmp_path}/pptpd.log"
    assert (tmp_path / "pptpd.log").exists()  # opened while the options are read, as pppd does


def test_unwritable_logfile_names_its_line(stock: Stock, tmp_path: Path) -> None:
    line = stock.append(stock.options, f"logfile {tmp_path}/no/such/dir/pptpd.log")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(stock.options))}:{line}: logfile "
                                          rf".*: No such file or directory$"):
        stock.settings()


def test_dump_logs_the_options(stock: Stock, caplog: pytest.LogCaptureFixture) -> None:
    stock.append(stock.options, "dump")
    with caplog.at_level(logging.INFO, logger="pptpkit.compat.pptpdconf"):
        stock.settings()
    assert f"options read from {stock.etc / 'options'}, {stock.options}" in caplog.text
    assert "  name = pptpd" in caplog.text and "  proxyarp = True" in caplog.text


def test_missing_option_file_is_reported_at_its_pptpd_conf_line(stock: Stock) -> None:
    stock.options.unlink()
    line = stock.line_of(stock.conf, f"option {stock.options}")
    with pytest.raises(ConfigError) as info:
        stock.settings()
    assert str(info.value) == (f"{stock.conf}:{line}: option file {stock.options}: cannot read: "
                               "No such file or directory")


def test_missing_option_file_in_program_mode(stock: Stock) -> None:
    stock.options.unlink()
    line = stock.line_of(stock.conf, f"option {stock.options}")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(stock.conf))}:{line}: option file "):
        stock.settings("--ppp-program", "/usr/sbin/pppd")


def test_every_pppd_option_field_is_taken_or_refused() -> None:
    """No PppdOptions field is left out of the built-in server: each is used, refused, or
    bookkeeping - and only one of them."""
    names = {f.name for f in dataclasses.fields(PppdOptions)}
    taken, refused = pptpdconf._BUILTIN_TAKEN, set(pptpdconf._BUILTIN_UNSUPPORTED)
    assert taken.isdisjoint(refused) and taken.isdisjoint(pptpdconf._BOOKKEEPING)
    assert names == taken | refused | pptpdconf._BOOKKEEPING
