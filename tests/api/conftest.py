"""Fixtures for the HTTP gateway tests (helpers in http_support.py).

``gateway`` (one per session) is a real ``memspace serve`` with its HTTP gateway on a free
port; teardown checks exit code 0 and that no process of its tree is left.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from http_support import Gateway, start_gateway


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    yield from start_gateway(tmp_path_factory.mktemp("http") / "data")


@pytest.fixture(scope="session")
def http(gateway: Gateway) -> httpx.Client:
    return gateway.client()


