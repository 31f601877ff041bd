"""The `safety` marker: matrix cells with real processes (select with `-m safety`)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "safety: upgrade safety matrix cells (real processes, ~1 min each)"
    )
