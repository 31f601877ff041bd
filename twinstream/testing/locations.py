"""Where a test's persist data lives: the (consensus, blob) URL pair of one backend."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    backend: str
    consensus_url: str
    blob_url: str
