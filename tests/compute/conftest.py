"""The compute tests' shared helpers live in `_compute_helpers.py`. The suite runs with
``--import-mode=importlib`` (test directories are not on sys.path), so load that file by path
here — conftest.py is imported before the test modules of this directory — and register it
under its module name for the test modules' ``from _compute_helpers import ...``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_NAME = "_compute_helpers"

if _NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(_NAME, Path(__file__).with_name(f"{_NAME}.py"))
    assert _spec is not None and _spec.loader is not None
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[_NAME] = _module
    _spec.loader.exec_module(_module)
