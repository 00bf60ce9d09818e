"""Fixtures of the mirror's tests: a PEMS simulator with pinned data (`sim`), served over HTTP
(`server`), and an HTTP session to speak to it (`http`)."""

from __future__ import annotations

import pytest
import requests

from mirror.simulator import (
    DEFAULT_API_KEY,
    DEFAULT_PASSWORD,
    DEFAULT_TENANT,
    DEFAULT_USERNAME,
    PemsSimulator,
    SimulatorServer,
)
from mirror.tests.simulator_requests import REFERENCE_TIME


@pytest.fixture
def sim() -> PemsSimulator:
    return PemsSimulator(
        orgs={"RIO": 500, "HOU": 200},
        seed=1,
        tenant=DEFAULT_TENANT,
        users={DEFAULT_USERNAME: DEFAULT_PASSWORD},
        api_keys={DEFAULT_API_KEY},
        row_cap=10000,
        session_ttl=1800.0,
        reference_time=REFERENCE_TIME,
    )


@pytest.fixture
def server(sim):
    with SimulatorServer(sim, host="127.0.0.1", port=0) as running:
        yield running


@pytest.fixture
def http():
    with requests.Session() as session:
        yield session
