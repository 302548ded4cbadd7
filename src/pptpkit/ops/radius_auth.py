"""Authentication through RADIUS: the built-in server's verifier, and what the answer says.

With RADIUS servers configured, the sessions' authenticators do not read a secrets file: each
peer's Response (or PAP password) becomes an Access-Request (:mod:`pptpkit.radius.access`,
the attributes pppd's radius plugin and accel-ppp send), and the Access-Accept or -Reject is
the verdict.  The secret never reaches this server, so MS-CHAPv2's proof that the server knows
the password (``S=``, RFC 2548 MS-CHAP2-Success) and the MPPE keys (MS-MPPE-Send/Recv-Key,
or MS-CHAP-MPPE-Keys after MS-CHAPv1) must come from the answer; an Accept without them fails
the login rather than leaving a client unproven or a tunnel without keys.

The Accept's other attributes are kept on the session (``Session.access``): Framed-IP-Address
(the pool when it says 255.255.255.254), Session-Timeout and Idle-Timeout apply when the
session comes up, Class and Acct-Interim-Interval go to accounting.  Everything else it sends
is logged once per session by name, never dropped in silence.

An outage: after the client engine's retransmissions and failover, the login fails with a
clean PPP Failure and one log line per outage (not per login: a login storm during an outage
would otherwise flood the log); sessions already up are not touched.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
from typing import TYPE_CHECKING

from pptpkit.auth.base import (
    ChapMd5Credentials,
    ExternalVerdict,
    KeyMaterial,
    MppeStartKeys,
    MsChapV1Credentials,
    MsChapV1HashKeys,
    MsChapV2Credentials,
    PapCredentials,
)
from pptpkit.io.radius import RadiusUdpClient
from pptpkit.io.throttle import LogThrottle, left_out_text
from pptpkit.ops.shaper import radius_rate
from pptpkit.ppp.session_config import VerificationNeeded
from pptpkit.radius.access import (
    AccessResult,
    CallInfo,
    FramedAddress,
    chap_request,
    mschapv1_request,
    mschapv2_request,
    pap_request,
    parse_access_answer,
)
from pptpkit.radius.client import (
    AccessAccepted,
    AccessChallenged,
    AccessRejected,
    RadiusBusyError,
    RadiusClientConfig,
    ServerDown,
    ServerUp,
)
from pptpkit.radius.packet import Attribute
from pptpkit.radius.settings import RadiusSetup

if TYPE_CHECKING:
    from pptpkit.pptp.server import PptpServer
    from pptpkit.vpn.server import BuiltinSessions, Session

__all__ = ["RadiusAuth"]

log = logging.getLogger(__name__)


class RadiusAuth:
    """The :class:`~pptpkit.ops.ServerExtension` that verifies logins with RADIUS.

    ``outcomes`` counts the Access-Request results (accept, reject, challenge, timeout, busy,
    error) for metrics and ``pptpkit ctl stats``.
    """

    def __init__(self, setup: RadiusSetup) -> None:
        assert setup.auth is not None
        self.setup = setup
        self.config: RadiusClientConfig = setup.auth
        self.client: RadiusUdpClient | None = None
        self.outcomes: collections.Counter[str] = collections.Counter()
        self._timeout_log = LogThrottle()
        self._sessions: BuiltinSessions | None = None

    async def start(self, sessions: BuiltinSessions, server: PptpServer) -> None:
        self.client = await RadiusUdpClient.open(self.config, on_server_event=self._server_event)
        self._sessions = sessions
        sessions.verifier = self.verify
        log.info("RADIUS authentication: %s", ", ".join(s.label for s in self.config.servers))

    async def stop(self) -> None:
        if self._sessions is not None and self._sessions.verifier == self.verify:
            self._sessions.verifier = None
        if self.client is not None:
            self.client.close()
            self.client = None

    def _server_event(self, event: ServerDown | ServerUp) -> None:
        if isinstance(event, ServerDown):
            log.warning("RADIUS server %s does not answer; trying the others first", event.server)
        else:
            log.info("RADIUS server %s answers again", event.server)

    async def verify(self, session: Session, event: VerificationNeeded) -> ExternalVerdict:
        client = self.client
        if client is None:
            return ExternalVerdict(ok=False, reason="RADIUS is not running")
        call = CallInfo(nas_port=session.call.call_id, client_address=session.source,
                        server_address=session.call.local_address)
        attributes = _request(self.setup, call, event)
        try:
            answer = await client.access_request(attributes)
        except RadiusBusyError:
            self.outcomes["busy"] += 1
            log.warning("[%s] RADIUS: too many requests waiting; login of %r refused", session.id,
                        event.username)
            return ExternalVerdict(ok=False, reason="RADIUS request queue full")
        if isinstance(answer, AccessAccepted):
            self.outcomes["accept"] += 1
            return self._accepted(session, event, parse_access_answer(True, answer.attributes), answer.server)
        if isinstance(answer, AccessRejected):
            self.outcomes["reject"] += 1
            result = parse_access_answer(False, answer.attributes)
            _log_unused(session, result)
            replies = "; ".join(result.reply_messages)
            return ExternalVerdict(
                ok=False, reason=f"Access-Reject from {answer.server}" + (f": {replies}" if replies else ""),
                message=replies[:200], failure_message=_error_text(result))
        if isinstance(answer, AccessChallenged):
            self.outcomes["challenge"] += 1
            why = f"Access-Challenge from {answer.server}: not supported for {event.method.name}"
            return ExternalVerdict(ok=False, reason=why)
        self.outcomes["timeout"] += 1
        left_out = self._timeout_log(asyncio.get_running_loop().time())
        if left_out is not None:
            log.warning("RADIUS: no answer from %s; logins fail until a server answers%s",
                        ", ".join(answer.servers), left_out_text(left_out))
        return ExternalVerdict(ok=False, reason="no RADIUS server answered")

    def _accepted(self, session: Session, event: VerificationNeeded, result: AccessResult,
                  server: str) -> ExternalVerdict:
        creds = event.credentials
        keys: KeyMaterial | None = None
        if isinstance(creds, MsChapV2Credentials):
            if result.mppe_keys is not None:
                keys = MppeStartKeys(send=result.mppe_keys.send, recv=result.mppe_keys.recv)
        elif isinstance(creds, MsChapV1Credentials):
            if result.mschapv1_nt_key is not None:
                keys = MsChapV1HashKeys(nt_password_hash_hash=result.mschapv1_nt_key,
                                        challenge=creds.challenge)
            elif result.mppe_keys is not None:
                keys = MppeStartKeys(send=result.mppe_keys.send, recv=result.mppe_keys.recv)
        sessions = self._sessions
        mppe_required = sessions is not None and sessions.config.mppe.required
        if keys is None and mppe_required and isinstance(creds, MsChapV1Credentials | MsChapV2Credentials):
            self.outcomes["error"] += 1
            why = (f"Access-Accept from {server} without MPPE keys, and MPPE is required (enable "
                   "use_mppe in the RADIUS server's mschap)")
            return ExternalVerdict(ok=False, reason=why)
        if keys is not None and not _key_sizes_ok(keys):
            self.outcomes["error"] += 1
            return ExternalVerdict(ok=False, reason=f"Access-Accept from {server}: MPPE keys of bad size")
        if result.framed_ip is FramedAddress.CLIENT_CHOOSES:
            log.info("[%s] RADIUS lets the user choose an address; one is assigned from the pool",
                     session.id)
        elif isinstance(result.framed_ip, ipaddress.IPv4Address) and sessions is not None:
            holder = sessions.holder_of(result.framed_ip)
            if holder is not None and holder is not session:
                return ExternalVerdict(ok=False, reason=f"Framed-IP-Address {result.framed_ip} is in use by "
                                                        f"session {holder.id}")
        session.access = result
        _log_unused(session, result)
        success = (result.chap2_success if isinstance(creds, MsChapV2Credentials) else None)
        return ExternalVerdict(ok=True, message="; ".join(result.reply_messages)[:200],
                               authenticator_response=success, key_material=keys)


def _request(setup: RadiusSetup, call: CallInfo, event: VerificationNeeded) -> tuple[Attribute, ...]:
    nas, user, creds = setup.nas, event.username, event.credentials
    if isinstance(creds, PapCredentials):
        return pap_request(nas, call, user, creds.password)
    if isinstance(creds, ChapMd5Credentials):
        return chap_request(nas, call, user, ident=creds.identifier, challenge=creds.challenge,
                            response=creds.response)
    if isinstance(creds, MsChapV1Credentials):
        return mschapv1_request(nas, call, user, ident=creds.identifier, challenge=creds.challenge,
                                lm_response=creds.lm_response, nt_response=creds.nt_response,
                                use_nt=creds.use_nt)
    return mschapv2_request(nas, call, user, ident=creds.identifier,
                            authenticator_challenge=creds.authenticator_challenge,
                            peer_challenge=creds.peer_challenge, nt_response=creds.nt_response,
                            flags=creds.flags)


def _error_text(result: AccessResult) -> bytes | None:
    return result.chap_error.encode("ascii", "replace") if result.chap_error else None


def _key_sizes_ok(keys: KeyMaterial) -> bool:
    if isinstance(keys, MppeStartKeys):
        return len(keys.send) >= 16 and len(keys.recv) >= 16
    if isinstance(keys, MsChapV1HashKeys):
        return len(keys.nt_password_hash_hash) == 16
    return True


def _log_unused(session: Session, result: AccessResult) -> None:
    """What the answer carried that the server does not act on, said once per session."""
    names = list(result.unused)
    if result.framed_pool is not None:
        names.append(f"Framed-Pool {result.framed_pool!r} (one pool: --remote-ip)")
    others = [f for f in result.filter_ids if radius_rate((f,)) is None]
    if others:
        names.append(f"Filter-Id {', '.join(repr(f) for f in others)} (only DOWN[/UP] rates are applied)")
    if names:
        log.warning("[%s] RADIUS attributes not applied: %s", session.id, ", ".join(names))
