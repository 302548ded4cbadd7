"""The supervisor starts worker 0 alone: a server that cannot start (no privileges, the port
taken) fails once, with that worker's exit status, and no other worker is started or
restarted.  The workers here are stand-in processes, so no privileges are needed."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import pytest

from pptpkit.ops.supervisor import Supervisor
from pptpkit.vpn.pool import AddressPool
from pptpkit.vpn.workers import Ledger, LedgerLimits


def _ledger() -> Ledger:
    return Ledger(AddressPool(["198.51.100.1"], ["198.51.100.10", "198.51.100.11"]),
                  LedgerLimits(max_sessions=2, max_per_source=2, max_preauth=2, max_preauth_per_source=2))


def test_a_first_worker_that_cannot_start_is_the_only_one(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    started = tmp_path / "started"
    # Each stand-in worker notes its index (from the environment the supervisor gives it) and
    # fails as a worker without CAP_NET_RAW does: status 3.
    script = ("import os, sys; open(sys.argv[1], 'a').write(os.environ['PPTPKIT_WORKER'].split('/')[0]"
              " + '\\n'); sys.exit(3)")
    supervisor = Supervisor([str(started)], 4, _ledger(), ctl_socket=None, metrics=None,
                            executable=(sys.executable, "-c", script))
    with caplog.at_level(logging.INFO):
        code = asyncio.run(asyncio.wait_for(supervisor.run(), 30))
    assert code == 3
    assert started.read_text() == "0\n"
    assert [w.process is None for w in supervisor.workers] == [False, True, True, True]
    assert supervisor.restarts == 0 and "restarting it" not in caplog.text
    assert "the workers did not all start: worker 0 exited with 3" in caplog.text
