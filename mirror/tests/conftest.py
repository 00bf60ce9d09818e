"""Fixtures of the mirror's tests: a PEMS simulator with pinned data (`sim`), served over HTTP
(`server`), an HTTP session to speak to it (`http`), and PEMS clients pointed at it (`make_client`)
whose waits are recorded, not slept (`sleeps`)."""

from __future__ import annotations

import pytest
import requests

from mirror.pems import PemsClient, PemsSettings
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


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def make_client(server, sleeps):
    clients = []

    def make(**overrides) -> PemsClient:
        values = {
            "base_url": server.url,
            "tenant": DEFAULT_TENANT,
            "organization": "RIO",
            "username": DEFAULT_USERNAME,
            "secret": DEFAULT_PASSWORD,
            "page_size": 10_000,
            "read_timeout": 5.0,
        }
        values.update(overrides)
        client = PemsClient(PemsSettings(**values), sleep=sleeps.append)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
