"""``pptpkit server`` announces, as its Maximum Channels, the calls per control connection it
actually accepts: a PNS honouring it (our call manager does) never has a call refused for
being one too many, and never opens connections it did not need."""

from __future__ import annotations

import pytest
from control_harness import Link, of_type

from pptpkit.control import (
    CallFailed,
)
from pptpkit.control.messages import GeneralError, StartControlConnectionReply
from pptpkit.pptp.server import PptpServerConfig


@pytest.mark.parametrize("max_calls", [None, 1, 3])
def test_announced_limit_is_the_enforced_limit(max_calls: int | None) -> None:
    config = PptpServerConfig() if max_calls is None else PptpServerConfig(max_calls=max_calls)
    link = Link(server_config=config.control_config()).up()
    sccrp = link.to_client[0]
    assert isinstance(sccrp, StartControlConnectionReply)
    assert sccrp.max_channels == config.max_calls > 0
    for _ in range(sccrp.max_channels):
        link.call()
    assert of_type(link.client_events, CallFailed) == []
    extra = link.client.open_call(link.now)
    link.pump()
    [failed] = of_type(link.client_events, CallFailed)
    assert failed.call_id == extra and failed.error_code == GeneralError.NO_RESOURCE
