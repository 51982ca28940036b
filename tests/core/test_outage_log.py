"""A loop retrying through an outage says so once, and once that it works again."""

from __future__ import annotations

import logging

import pytest

from polyport.core.errors import Unavailable
from polyport.core.logs import Outage


def test_an_outage_is_logged_once_and_its_end_once(caplog: pytest.LogCaptureFixture) -> None:
    outage = Outage(logging.getLogger("polyport.test"), "reading the thing")
    with caplog.at_level(logging.WARNING, logger="polyport.test"):
        outage.worked()  # nothing failed: nothing to say
        for _ in range(100):
            outage.failed(Unavailable("gone"), quiet=Unavailable)
        outage.worked()
        outage.worked()
        outage.failed(RuntimeError("a bug"), quiet=Unavailable)
    messages = [(r.getMessage(), bool(r.exc_info)) for r in caplog.records]
    assert messages == [
        ("reading the thing failed (gone); retrying, and saying so once it works again", False),
        ("reading the thing works again, after 100 failed tries", False),
        ("reading the thing failed (a bug); retrying, and saying so once it works again", True),
    ]
