"""Loads `_runtime_helpers.py` by path (the suite runs with --import-mode=importlib, so test
directories are not on sys.path) and provides `store`: a persist location, in memory or on
SQLite + files (or PostgreSQL, marked `postgres`), from which each simulated process opens
its own client."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

_NAME = "_runtime_helpers"

if _NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(_NAME, Path(__file__).with_name(f"{_NAME}.py"))
    assert _spec is not None and _spec.loader is not None
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[_NAME] = _module
    _spec.loader.exec_module(_module)


@pytest.fixture(params=["mem", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    s = sys.modules[_NAME].Store(request.param, tmp_path, url)
    try:
        yield s
    finally:
        await s.close()
