"""The ``etcd`` fixture of etcetra's tests, ours (``make test-long``; see test_etcetra.py).

etcetra's source release ships its tests without the conftest that defines the fixture they
take: an ``EtcdClient`` for the server under test. test_etcetra.py copies this file into the
release's ``tests/`` as ``conftest.py``; it is never imported by petcd's own tests. The
server is named by ``PETCD_ETCETRA_ENDPOINT`` (host:port); every key under ``/`` is deleted
after each test, so that each starts from an empty store as on a fresh server.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from etcetra import EtcdClient, HostPortPair


@pytest.fixture
async def etcd() -> AsyncIterator[EtcdClient]:
    client = EtcdClient(HostPortPair.parse(os.environ["PETCD_ETCETRA_ENDPOINT"]))
    yield client
    async with client.connect() as communicator:
        await communicator.delete_prefix("/")
