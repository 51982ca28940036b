"""A service with queues for the ``polyport queues`` tests."""

from __future__ import annotations

from pydantic import BaseModel

from polyport import Service


class Mail(BaseModel):
    to: str


svc = Service("mailer")
outbox = svc.queue("outbox", Mail)
svc.queue("bounces", Mail)

plain = Service("plain")
