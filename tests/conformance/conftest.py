"""Client conformance suite: one environmentd per test module, and the shared scenario script.

The suite runs with ``--import-mode=importlib`` (test directories are not on sys.path), so the
scenario script `scenarios.py` is loaded by path here and registered as the module
``conformance_scenarios`` for the runners' ``from conformance_scenarios import ...``.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from twinstream.testing.environmentd import EnvironmentdProcess, environmentd_process

_NAME = "conformance_scenarios"

if _NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(_NAME, Path(__file__).with_name("scenarios.py"))
    assert _spec is not None and _spec.loader is not None
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[_NAME] = _module
    _spec.loader.exec_module(_module)


@pytest.fixture(scope="module")
def envd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvironmentdProcess]:
    """A real `twinstream environmentd` process for this test module."""
    data_dir: Path = tmp_path_factory.mktemp("envd")
    with environmentd_process(data_dir) as env:
        yield env
