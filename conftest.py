"""Fixtures shared by every app's tests: a real PEMS simulator served over HTTP."""

import pytest
from django.core.cache import cache

from mirror.simulator import PemsSimulator, SimulatorServer


@pytest.fixture
def pems_server():
    """A simulator with two small organizations, served on a free localhost port."""
    simulator = PemsSimulator(orgs={"RIO": 250, "HOU": 80}, seed=1, row_cap=10_000)
    with SimulatorServer(simulator, host="127.0.0.1", port=0) as server:
        yield server


@pytest.fixture(autouse=True)
def fresh_cache():
    """Each test starts with an empty cache: login throttles count per test, not per suite."""
    cache.clear()
    yield
    cache.clear()
