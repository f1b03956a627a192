"""Session-wide fixtures: real peers on loopback. Area-specific fixtures live beside their tests."""

from __future__ import annotations

import pytest

import cloud_trainer.train  # noqa: F401  (first: PyTorch's threads wait passively, see its docstring)
from tests.support.peers import Mosquitto, mosquitto_binary


@pytest.fixture
def mosquitto(tmp_path):
    """A fresh Mosquitto broker for one test (restart it with ``.restart()``)."""
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed; `make setup` installs it with apt-get")
    broker = Mosquitto(tmp_path / "mosquitto").start()
    yield broker
    broker.stop()
