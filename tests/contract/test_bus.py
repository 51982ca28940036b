"""The bus contract over the in-process LocalBus (one instance per namespace)."""

from __future__ import annotations

import pytest
from tests.contract.bus_contract import BusContract, BusFactory

from polyport.core.bus import Bus, LocalBus


class TestLocalBus(BusContract):
    @pytest.fixture
    def make_bus(self) -> BusFactory:
        namespaces: dict[str, LocalBus] = {}

        def make(name: str = "bus") -> Bus:
            return namespaces.setdefault(name, LocalBus())

        return make
