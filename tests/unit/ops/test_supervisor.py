"""The supervisor's merging of the workers' control answers and metrics (sans-IO), and the
worker slot from the environment."""

from __future__ import annotations

import json

import pytest

from pptpkit.errors import ConfigError
from pptpkit.ops.supervisor import WORKER_ENV, merge_ctl, merge_metrics, worker_slot


def _line(obj: dict[str, object]) -> bytes:
    return json.dumps(obj).encode()


def test_sessions_of_every_worker_oldest_first_with_their_worker() -> None:
    a = {"ok": True, "mode": "builtin",
         "sessions": [{"id": "A2", "started": 20.0}, {"id": "A1", "started": 5.0}]}
    b = {"ok": True, "mode": "builtin", "sessions": [{"id": "B1", "started": 10.0}]}
    out = json.loads(merge_ctl(_line({"cmd": "sessions"}), [a, None, b]))
    assert [(s["id"], s["worker"]) for s in out["sessions"]] == [("A1", 0), ("B1", 2), ("A2", 0)]


def test_kill_and_show_find_the_worker_that_has_it() -> None:
    missing = {"ok": False, "error": "no session X", "kind": "no-such-session"}
    kill = _line({"cmd": "kill", "id": "X"})
    killed = {"ok": True, "killed": ["X"]}
    assert json.loads(merge_ctl(kill, [missing, killed])) == killed
    assert json.loads(merge_ctl(kill, [missing, missing]))["kind"] == "no-such-session"
    shown = {"ok": True, "mode": "builtin", "session": {"id": "X"}}
    assert json.loads(merge_ctl(_line({"cmd": "show", "id": "X"}), [missing, shown])) == shown
    kill_user = merge_ctl(_line({"cmd": "kill", "user": "u"}), [{"ok": True, "killed": ["a"]},
                                                               {"ok": True, "killed": ["b"]}])
    assert json.loads(kill_user)["killed"] == ["a", "b"]


def test_stats_are_summed_and_reload_fails_if_one_fails() -> None:
    s1 = {"ok": True, "mode": "builtin",
          "stats": {"sessions": 2, "refused": {"preauth": 1}, "gre_socket": None}}
    s2 = {"ok": True, "mode": "builtin", "stats": {"sessions": 3, "refused": {"preauth": 4},
                                                   "gre_socket": {"received": 7}}}
    stats = json.loads(merge_ctl(_line({"cmd": "stats"}), [s1, s2, None]))["stats"]
    assert stats == {"sessions": 5, "refused": {"preauth": 5}, "gre_socket": {"received": 7}, "workers": 3,
                     "workers_answering": 2}
    bad = {"ok": False, "error": "x:1: bad", "kind": "reload-failed"}
    assert json.loads(merge_ctl(_line({"cmd": "reload"}), [{"ok": True, "reloaded": True}, bad])) == bad
    assert json.loads(merge_ctl(b"nonsense", [s1]))["kind"] == "bad-request"
    assert json.loads(merge_ctl(_line({"cmd": "stats"}), [None, None]))["kind"] == "internal"


def test_metrics_summed_by_name_and_labels() -> None:
    w0 = ("# HELP pptpkit_sessions_up Sessions with IPCP up.\n# TYPE pptpkit_sessions_up gauge\n"
          "pptpkit_sessions_up 3.0\n"
          "# HELP pptpkit_refusals Calls refused.\n# TYPE pptpkit_refusals counter\n"
          'pptpkit_refusals_total{reason="preauth"} 1.0\n'
          "# HELP pptpkit_session_setups Calls.\n# TYPE pptpkit_session_setups counter\n"
          "pptpkit_session_setups_total 4.0\npptpkit_session_setups_created 1700000010.5\n")
    w1 = ("# HELP pptpkit_sessions_up Sessions with IPCP up.\n# TYPE pptpkit_sessions_up gauge\n"
          "pptpkit_sessions_up 2.0\n"
          "# HELP pptpkit_refusals Calls refused.\n# TYPE pptpkit_refusals counter\n"
          'pptpkit_refusals_total{reason="per_source"} 2.0\n'
          'pptpkit_refusals_total{reason="preauth"} 5.0\n'
          "# HELP pptpkit_session_setups Calls.\n# TYPE pptpkit_session_setups counter\n"
          "pptpkit_session_setups_total 1.0\npptpkit_session_setups_created 1700000001.25\n")
    text = merge_metrics([w0, w1], "# TYPE pptpkit_workers gauge\npptpkit_workers 2.0\n").decode()
    lines = text.splitlines()
    assert "pptpkit_sessions_up 5.0" in lines
    assert 'pptpkit_refusals_total{reason="preauth"} 6.0' in lines
    assert 'pptpkit_refusals_total{reason="per_source"} 2.0' in lines
    assert "pptpkit_session_setups_total 5.0" in lines
    assert "pptpkit_session_setups_created 1700000001.25" in lines
    assert lines.count("# TYPE pptpkit_refusals counter") == 1
    # Samples stay under their family's header.
    assert lines.index('pptpkit_refusals_total{reason="per_source"} 2.0') < lines.index(
        "# HELP pptpkit_session_setups Calls.")
    assert lines[-1] == "pptpkit_workers 2.0"


def test_worker_slot() -> None:
    env = {WORKER_ENV: "1/2/7", "OTHER": "x"}
    slot = worker_slot(env)
    assert slot is not None and (slot.index, slot.count, slot.fd) == (1, 2, 7)
    assert WORKER_ENV not in env and slot.call_ids.low == 0x8000
    assert worker_slot({}) is None
    for bad in ("1/2", "2/2/7", "a/b/c"):
        with pytest.raises(ConfigError):
            worker_slot({WORKER_ENV: bad})


def test_dae_verdicts_of_the_workers_make_one_answer() -> None:
    from pptpkit.ops.dae import merge_verdicts
    from pptpkit.radius.dae import ErrorCause

    not_found = {"ok": True, "ack": False, "error": int(ErrorCause.SESSION_CONTEXT_NOT_FOUND)}
    assert merge_verdicts([not_found, {"ok": True, "ack": True, "error": None}]) == (True, None)
    assert merge_verdicts([not_found, not_found]) == (False, ErrorCause.SESSION_CONTEXT_NOT_FOUND)
    unsupported = {"ok": True, "ack": False, "error": int(ErrorCause.UNSUPPORTED_ATTRIBUTE)}
    assert merge_verdicts([not_found, unsupported]) == (False, ErrorCause.UNSUPPORTED_ATTRIBUTE)
    assert merge_verdicts([]) == (False, ErrorCause.RESOURCES_UNAVAILABLE)
