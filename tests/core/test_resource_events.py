"""A resource declares the events of the operations it has, and no others.

Before, every resource declared ``.created``, ``.updated`` and ``.deleted``
whatever it could do, so ``polyport routes``, the dashboard's catalogue and
GraphQL subscriptions advertised events that could never happen.
"""

from __future__ import annotations

from pydantic import BaseModel

from polyport import Service
from polyport.core.types import ModelRef


class Note(BaseModel):
    id: int
    text: str


def test_only_the_operations_declared_publish() -> None:
    """create and delete, no update: created and deleted exist, updated does not."""
    svc = Service("notes")
    notes = svc.resource("notes", Note)

    @notes.get
    async def get_note(id: int) -> Note:
        return Note(id=id, text="")

    @notes.create
    async def create_note(text: str) -> Note:
        return Note(id=1, text=text)

    @notes.delete
    async def delete_note(id: int) -> None:
        return None

    spec = svc.spec()
    assert set(spec.events) == {"notes.created", "notes.deleted"}
    assert set(notes.events) == {"created", "deleted"}
    assert spec.events["notes.deleted"].payload == ModelRef("NoteDeleted")
    assert spec.events["notes.created"].payload == ModelRef("Note")


def test_a_read_only_resource_and_events_off_publish_nothing() -> None:
    """get and list publish nothing; ``events=False`` turns the writes' events off."""
    svc = Service("ro")
    ro = svc.resource("things", Note)
    quiet = svc.resource("quiet", Note, events=False)

    @ro.get
    async def get_thing(id: int) -> Note:
        return Note(id=id, text="")

    @quiet.create
    async def create_quiet(text: str) -> Note:
        return Note(id=1, text=text)

    assert svc.spec().events == {}


def test_the_demo_advertises_only_events_that_happen() -> None:
    """The social demo's comments have no update: no comments.updated anywhere."""
    from polyport.demo.shop import shop

    events = shop.spec().events
    assert "comments.created" in events and "comments.deleted" in events
    assert "comments.updated" not in events
    assert "orders.updated" in events  # orders do have an update
