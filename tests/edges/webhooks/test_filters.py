"""Event-type filters of webhook subscriptions: whole strings only."""

from __future__ import annotations

import pytest

from polyport.edges.webhooks.endpoints import check_filter


@pytest.mark.parametrize("good", ["orders.*", "*.created", "orders.#", "*", "orders.+", "#"])
def test_filters_of_the_documented_forms_pass(good: str) -> None:
    """Dotted names with +, * and a final #."""
    assert check_filter(good) == good


@pytest.mark.parametrize("bad", ["orders.*\n", "orders..created", "Orders.*", "orders.#.x", ""])
def test_anything_else_is_refused_including_a_trailing_newline(bad: str) -> None:
    """'$' in re.match accepted 'orders.*' followed by a newline; fullmatch does not."""
    with pytest.raises(ValueError, match="invalid event type filter"):
        check_filter(bad)
