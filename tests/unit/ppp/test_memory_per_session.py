"""Memory held per session by the engines (the scale benchmark's RSS per session).

Budgets are about 1.5x what the engines take now; before the slimming pass (instance dicts,
eager deques, one random generator per control connection) they took 15 KiB.
"""

from __future__ import annotations

import gc
import tracemalloc

from pptpkit.auth.mschap import MsChapV2Authenticator
from pptpkit.control import CallIdAllocator, ControlConfig, ControlConnection, Role
from pptpkit.gre import GreCall, GreCallConfig
from pptpkit.lab.bench.agent import session_config
from pptpkit.ppp.ccp import CcpEngine
from pptpkit.ppp.ipcp import IpcpEngine
from pptpkit.ppp.ipv6cp import Ipv6cpEngine
from pptpkit.ppp.lcp import LcpEngine
from pptpkit.ppp.session import PppSession
from pptpkit.ppp.session_config import SessionRole

N = 300
BUDGET = 6 * 1024  # bytes per (PPP session + control connection + GRE call)


def _one(cfg: object, ccfg: ControlConfig, ids: CallIdAllocator, i: int) -> tuple[object, ...]:
    session = PppSession(cfg, 0.0)  # type: ignore[arg-type]
    session.open(0.0)
    session.frames_to_send()
    return (session, ControlConnection(ccfg, now=0.0, call_ids=ids),
            GreCall(GreCallConfig(call_id=i, peer_call_id=i)))


def test_engines_per_session_within_budget() -> None:
    cfg = session_config(SessionRole.SERVER, "stateless", echo_interval=10.0)
    ccfg = ControlConfig(role=Role.SERVER)
    ids = CallIdAllocator(max_in_use=N + 10)
    _one(cfg, ccfg, ids, 0)  # warm every lazy module-level cache first
    ids = CallIdAllocator(max_in_use=N + 10)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        keep = [_one(cfg, ccfg, ids, i) for i in range(N)]
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    per = sum(s.size_diff for s in after.compare_to(before, "filename")) / N
    assert len(keep) == N
    assert per <= BUDGET, f"{per:.0f} bytes per session"


def test_per_session_objects_have_no_instance_dict() -> None:
    cfg = session_config(SessionRole.SERVER, "stateless", echo_interval=10.0)
    session, conn, gre = _one(cfg, ControlConfig(role=Role.SERVER), CallIdAllocator(), 1)
    for obj in (session, conn, gre, LcpEngine(), IpcpEngine(), Ipv6cpEngine(), CcpEngine()):
        assert not hasattr(obj, "__dict__"), type(obj).__name__
    for cls in (MsChapV2Authenticator,):
        assert "__dict__" not in dir(cls), cls.__name__
