"""Two PppSessions on the shared :mod:`enginepair`, with a seeded lossy wire between them."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address
from typing import Any

from enginepair import End, EnginePair, packet_end
from pptpkit.auth.base import AuthenticatorConfig, PeerConfig
from pptpkit.auth.methods import AuthMethod
from pptpkit.auth.policy import AuthPolicy
from pptpkit.auth.secrets import StaticSecrets
from pptpkit.ppp.session import PppSession
from pptpkit.ppp.session_config import LinkDown, LinkUp, MppePolicy, SessionConfig, SessionRole

SERVER_NAME = "pptpd"
USER = "alice"
PASSWORD = "s3cret-Pa55"
SERVER_ADDRESS = IPv4Address("198.51.100.1")
CLIENT_ADDRESS = IPv4Address("198.51.100.2")
DNS = (IPv4Address("203.0.113.53"), IPv4Address("203.0.113.54"))

Tamper = Callable[[str, bytes], bytes | None]


def counter_source(seed: int) -> Callable[[], int]:
    rng = random.Random(seed)
    return lambda: rng.getrandbits(32)


def bytes_source(seed: int) -> Callable[[int], bytes]:
    rng = random.Random(seed)
    return lambda n: rng.randbytes(n)


def id_source(seed: int) -> Callable[[], bytes]:
    rng = random.Random(seed)
    return lambda: rng.randbytes(8)


def server_config(
    method: AuthMethod | None = AuthMethod.MSCHAP_V2,
    *,
    mppe: MppePolicy | None = None,
    secrets: StaticSecrets | None = None,
    **overrides: Any,
) -> SessionConfig:
    policy = AuthPolicy(require=frozenset({method})) if method is not None else AuthPolicy()
    authenticator = AuthenticatorConfig(
        name=SERVER_NAME,
        secrets=secrets or StaticSecrets({(USER, SERVER_NAME): PASSWORD}),
        random=bytes_source(1),
    )
    kwargs: dict[str, Any] = dict(
        role=SessionRole.SERVER,
        auth_policy=policy,
        authenticator=authenticator,
        local_address=SERVER_ADDRESS,
        peer_address=CLIENT_ADDRESS,
        dns_servers=DNS,
        magic_source=counter_source(2),
        ipv6_id_source=id_source(3),
        mppe=mppe or MppePolicy(),
    )
    kwargs.update(overrides)
    return SessionConfig(**kwargs)


def client_config(
    *, password: str = PASSWORD, username: str = USER, mppe: MppePolicy | None = None, **overrides: Any
) -> SessionConfig:
    kwargs: dict[str, Any] = dict(
        role=SessionRole.CLIENT,
        peer=PeerConfig(username=username, password=password, random=bytes_source(4)),
        request_dns=True,
        magic_source=counter_source(5),
        ipv6_id_source=id_source(6),
        mppe=mppe or MppePolicy(),
    )
    kwargs.update(overrides)
    return SessionConfig(**kwargs)


class SessionPair(EnginePair):
    """``client`` and ``server`` joined by a wire ("cs": client to server, "sc": back).

    ``loss``/``duplicate``/``reorder`` are probabilities applied per frame under ``seed``;
    ``tamper(direction, frame)`` may rewrite or (returning None) drop a frame.  ``lossy_data_only``
    keeps control frames intact so that tests about data loss stay about data loss.  Each wire's
    ``frames`` is every frame sent (before loss), ``delivered`` the IP packets that came out.
    """

    def __init__(
        self,
        client: SessionConfig,
        server: SessionConfig,
        *,
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        seed: int = 0,
        tamper: Tamper | None = None,
        lossy_data_only: bool = False,
    ) -> None:
        self.client = PppSession(client, 0.0)
        self.server = PppSession(server, 0.0)
        super().__init__(
            _session_end(self.client), _session_end(self.server),
            names=("client", "server"), directions=("cs", "sc"), now=0.0, rounds=500,
        )
        self.rng = random.Random(seed)
        self.loss, self.duplicate, self.reorder = loss, duplicate, reorder
        self.lossy_data_only = lossy_data_only
        self.tamper = tamper
        self._sending_data = False

    def session(self, side: str) -> PppSession:
        return self.client if side == "client" else self.server

    def start(self) -> None:
        self.server.open(self.now)
        self.client.open(self.now)
        self.pump()

    def transform(self, direction: str, unit: bytes) -> Sequence[bytes]:
        frame: bytes | None = unit
        if self.tamper is not None:
            frame = self.tamper(direction, unit)
            if frame is None:
                return ()
        lossy = self._sending_data or not self.lossy_data_only
        if lossy and self.loss and self.rng.random() < self.loss:
            return ()
        if lossy and self.duplicate and self.rng.random() < self.duplicate:
            return (frame, frame)
        return (frame,)

    def reorder_batch(self, direction: str, batch: list[bytes]) -> list[bytes]:
        if self.reorder:
            for i in range(len(batch) - 1):
                if self.rng.random() < self.reorder:
                    batch[i], batch[i + 1] = batch[i + 1], batch[i]
        return batch

    def send(self, side: str, packet: bytes) -> bytes | None:
        """Hand ``packet`` to ``side``'s data plane; the frame (or None) it produced."""
        frame = self.session(side).send_packet(packet, self.now)
        if frame is not None:
            self._sending_data = True
            try:
                self.offer("cs" if side == "client" else "sc", frame)
            finally:
                self._sending_data = False
        return frame

    def link_up(self, side: str) -> LinkUp | None:
        ups = self.of_type(side, LinkUp)
        return ups[-1] if ups else None

    def link_down(self, side: str) -> LinkDown | None:
        downs = self.of_type(side, LinkDown)
        assert len(downs) <= 1, f"{side} reported LinkDown {len(downs)} times"
        return downs[0] if downs else None


def _session_end(session: PppSession) -> End:
    # A session can hold frames it has not offered yet (its output queue); the pair is quiet
    # only when that is empty too.
    end = packet_end(session, receive="receive_frame", send="frames_to_send")
    end.busy = lambda: bool(session._out)
    return end


def ipv4_packet(n: int, size: int = 60) -> bytes:
    """A recognisable IPv4-looking packet (version nibble 4); the session does not parse more."""
    body = n.to_bytes(4, "big") * (size // 4)
    return bytes((0x45, 0)) + size.to_bytes(2, "big") + body[: size - 4]


def ipv6_packet(n: int, size: int = 80) -> bytes:
    body = n.to_bytes(4, "big") * (size // 4)
    return bytes((0x60, 0, 0, 0)) + body[: size - 4]
