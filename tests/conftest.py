"""Shared fixtures. Tests never read ../shared: a user's fresh clone has none."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
