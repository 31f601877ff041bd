"""An environmentd process per test module (real process, real sockets)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from twinstream.testing.environmentd import EnvironmentdProcess, environmentd_process


@pytest.fixture(scope="module")
def envd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvironmentdProcess]:
    data_dir: Path = tmp_path_factory.mktemp("envd")
    with environmentd_process(data_dir) as env:
        yield env
