"""``-v`` shows the protocol, not the libraries: pyroute2's, asyncio's, pyrad's and
prometheus_client's debugging appear only from ``-vvv``; and pppd's ``logfile`` gets a copy of
every line besides the main log."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from pptpkit.cli.common import NOISY_LOGGERS, setup_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level, {n: logging.getLogger(n).level for n in NOISY_LOGGERS}
    yield
    root.handlers[:], level, levels = saved
    root.setLevel(level)
    for name, value in levels.items():
        logging.getLogger(name).setLevel(value)


def _emit_and_read(tmp_path: Path, verbose: int) -> str:
    log = tmp_path / f"v{verbose}.log"
    setup_logging(verbose, False, str(log))
    logging.getLogger("pptpkit.ppp.lcp").debug("LCP Configure-Request id 1")
    for name in ("pyroute2.netlink", "asyncio", "pyrad.client", "prometheus_client.registry"):
        logging.getLogger(name).debug("%s internals", name)
        logging.getLogger(name).warning("%s trouble", name)
    for handler in logging.getLogger().handlers:
        handler.flush()
    return log.read_text()


def test_noisy_loggers_are_named() -> None:
    assert set(NOISY_LOGGERS) == {"asyncio", "pyroute2", "pyrad", "prometheus_client"}


@pytest.mark.parametrize("verbose", [1, 2])
def test_v_and_vv_show_the_protocol_not_the_libraries(tmp_path: Path, restore_logging: None,
                                                       verbose: int) -> None:
    text = _emit_and_read(tmp_path, verbose)
    assert "LCP Configure-Request id 1" in text
    assert "internals" not in text
    # Their warnings still count.
    for name in ("pyroute2.netlink", "asyncio", "pyrad.client", "prometheus_client.registry"):
        assert f"{name} trouble" in text


def test_vvv_shows_the_libraries_too(tmp_path: Path, restore_logging: None) -> None:
    text = _emit_and_read(tmp_path, 3)
    for name in ("pyroute2.netlink", "asyncio", "pyrad.client", "prometheus_client.registry"):
        assert f"{name} internals" in text


def test_vvv_then_v_silences_them_again(tmp_path: Path, restore_logging: None) -> None:
    _emit_and_read(tmp_path, 3)
    assert "internals" not in _emit_and_read(tmp_path, 1)


def test_logfile_copy_gets_every_line(tmp_path: Path, restore_logging: None) -> None:
    main, copy = tmp_path / "main.log", tmp_path / "copy.log"
    setup_logging(0, False, str(main), copy=str(copy))
    logging.getLogger("pptpkit.server").info("session up")
    for handler in logging.getLogger().handlers:
        handler.flush()
    assert "session up" in main.read_text() and "session up" in copy.read_text()


def test_logfile_copy_that_cannot_be_opened(tmp_path: Path, restore_logging: None) -> None:
    from pptpkit.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^logfile .*/none/x\.log: No such file or directory$"):
        setup_logging(0, False, None, copy=str(tmp_path / "none" / "x.log"))
