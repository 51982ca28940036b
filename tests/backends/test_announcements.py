"""The bus's wire encoding: every pair survives, messages keep their bound, junk is refused."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from polyport.backends.announcements import MAX_MESSAGE, MAX_SEQ, decode, encode, pack

pairs_strategy = st.lists(
    st.tuples(st.text(max_size=40), st.integers(min_value=0, max_value=MAX_SEQ)), max_size=300
)


@settings(max_examples=300, deadline=None)
@given(pairs=pairs_strategy, limit=st.integers(min_value=600, max_value=9000))
def test_every_pair_survives_within_the_bound(pairs: list[tuple[str, int]], limit: int) -> None:
    """Any channel text and any seq: each message fits the bound, is ASCII, and the
    messages decode to exactly the pairs given (a repeated pair once). 40 characters
    escaped as surrogate pairs take 482 bytes: every channel fits the smallest bound."""
    messages, left_out = encode(pairs, limit)
    assert left_out == 0
    decoded = []
    for message in messages:
        assert len(message) <= limit
        assert message.isascii() and b"\x00" not in message
        got = decode(message)
        assert got is not None
        decoded += got
    assert len(decoded) == len(set(pairs))
    assert set(decoded) == set(pairs)


def test_a_channel_is_written_once_per_message() -> None:
    """Pairs group by channel, in the order channels first appear."""
    messages, _ = encode([("a/b", 1), ("c", 2), ("a/b", 3), ("a/b", 1)], 8000)
    assert messages == [b'["a/b",1,3,"c",2]']
    assert decode(messages[0]) == [("a/b", 1), ("a/b", 3), ("c", 2)]


def test_messages_fill_up_to_the_bound_exactly() -> None:
    """A message is closed only when the next seq would not fit."""
    messages, _ = encode([("c", seq) for seq in range(1000, 3000)], 7999)
    assert all(len(m) <= 7999 for m in messages)
    assert all(len(m) > 7999 - 6 for m in messages[:-1])  # no room left for ",dddd]"


def test_unusable_pairs_are_left_out_and_counted() -> None:
    """A seq out of range or not an int, a channel that is not text or cannot fit: counted."""
    given = [
        ("ok", 1),
        ("bad", -1),
        ("bad", MAX_SEQ + 1),
        ("bad", True),
        ("\ud800", 2),
        (3, 4),
        ("x" * 100, 5),
    ]
    messages, left_out = encode(given, 60)  # type: ignore[arg-type]
    assert left_out == 6
    assert [decode(m) for m in messages] == [[("ok", 1)]]


def test_control_and_non_ascii_characters_are_escaped() -> None:
    """NUL, newlines and any script travel as JSON escapes, so every engine carries them."""
    channel = "caf\u00e9/\x00\n\u4e16/\U0001f600"
    messages, _ = encode([(channel, 7)], 8000)
    assert messages[0].isascii()
    assert decode(messages[0]) == [(channel, 7)]


@settings(max_examples=300, deadline=None)
@given(
    channels=st.lists(st.text(max_size=40), max_size=300, unique=True),
    limit=st.integers(min_value=600, max_value=9000),
)
def test_packed_messages_fit_the_bound_whatever_the_seqs(channels: list[str], limit: int) -> None:
    """Channels packed for seqs not yet known, then written with the longest seq, as
    PostgreSQL's append writes them: each message fits the bound and decodes to its
    channels, in order; every channel is in one message, and message numbers only grow."""
    packed, left_out = pack([(channel, n) for n, channel in enumerate(channels)], limit)
    assert left_out == 0
    assert [n for _, n, _ in packed] == list(range(len(channels)))
    numbers = [message for _, _, message in packed]
    assert numbers == sorted(numbers)
    decoded = []
    for number in sorted(set(numbers)):
        names = [name for name, _, message in packed if message == number]
        body = "[" + ",".join(f"{name},{MAX_SEQ}" for name in names) + "]"
        assert body.isascii() and len(body) <= limit
        got = decode(body)
        assert got is not None
        decoded += [channel for channel, _ in got]
    assert decoded == channels


def test_packing_leaves_out_what_encode_leaves_out() -> None:
    """A channel that is not text, or that alone with a seq overflows the bound, is counted."""
    packed, left_out = pack([("ok", 1), ("\ud800", 2), ("x" * 100, 3)], 60)
    assert left_out == 2
    assert packed == [('"ok"', 1, 0)]


def test_anything_else_is_malformed() -> None:
    """Only a non-empty array of channels each followed by seqs is a message."""
    for junk in [
        b"",
        b"\xff",
        b"[]",
        b"{}",
        b"1",
        b'"a"',
        b"[1]",
        b'[1,"a"]',
        b'["a"]',
        b'["a",1,"b"]',
        b'["a",-1]',
        b'["a",1.0]',
        b'["a",true]',
        b'["a",null]',
        b'["a",[1]]',
        b'["a",' + str(MAX_SEQ + 1).encode() + b"]",
        b'["\\ud800",1]',
        b"[" * 10_000 + b"]" * 10_000,
        b'["a",' + b"1," * (MAX_MESSAGE // 2) + b"1]",  # valid, but larger than any sent
    ]:
        assert decode(junk) is None, junk[:40]
    assert decode('["a",1]') == [("a", 1)]  # text as the PostgreSQL driver hands it
