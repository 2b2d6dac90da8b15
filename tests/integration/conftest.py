"""Fixtures for the integration tier: a real waitress coordinator and real worker processes."""
from __future__ import annotations

import pytest

from tests.integration.procs import ADMIN_KEY, WORKER_KEY, Api, Coordinator, stop_all

pytestmark = pytest.mark.integration


@pytest.fixture
def coordinator_factory(tmp_path):
    """Build coordinators on temp data dirs; stopped at teardown."""
    made: list[Coordinator] = []

    def make(env: dict[str, str] | None = None, threads: int = 32, name: str = "coord") -> Coordinator:
        coord = Coordinator(tmp_path / name, env=env, threads=threads)
        made.append(coord)
        return coord

    yield make
    for coord in made:
        coord.kill()


@pytest.fixture
def coordinator(coordinator_factory):
    """A started coordinator with default settings."""
    return coordinator_factory().start()


@pytest.fixture
def admin(coordinator) -> Api:
    """An API session with the admin key."""
    return Api(coordinator.url, ADMIN_KEY)


@pytest.fixture
def worker_api(coordinator) -> Api:
    """An API session with the worker key."""
    return Api(coordinator.url, WORKER_KEY)


@pytest.fixture
def workers():
    """A list to put worker processes in; all are killed at teardown."""
    procs: list = []
    yield procs
    stop_all(procs)
