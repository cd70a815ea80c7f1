"""Fixtures of the client suite: a shared broker per module and a fresh topic per test.

- ``server``: the address of the module's broker (``module_broker``).
- ``admin``: an ``Admin`` on it.
- ``new_topic(partitions=1, **config)``: creates a topic only this test uses and returns its name.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator

import pytest

from logstore.client import Admin
from tests.broker_fixture import BrokerProcess


@pytest.fixture(scope="module")
def server(module_broker: BrokerProcess) -> str:
    return module_broker.address


@pytest.fixture(scope="module")
def admin(server: str) -> Iterator[Admin]:
    with Admin(server, timeout=10.0) as client:
        yield client


@pytest.fixture
def new_topic(admin: Admin, request: pytest.FixtureRequest) -> Callable[..., str]:
    def create(partitions: int = 1, **config: object) -> str:
        hint = re.sub(r"[^A-Za-z0-9_-]", "-", request.node.name)[:50]
        name = f"{hint}-{uuid.uuid4().hex[:6]}"
        admin.create_topic(name, partitions, config)
        return name

    return create
