"""Locations are URLs: `sqlite:///path/consensus.db`, `postgres://user@host:port/db`,
`file:///path/blob`, `mem://` (tests)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from twinstream.persist.fileblob import FileBlob
from twinstream.persist.location import Blob, Consensus
from twinstream.persist.mem import MemBlob, MemConsensus


def open_consensus(url: str) -> Consensus:
    scheme = urlparse(url).scheme
    if scheme == "sqlite":
        from twinstream.persist.sqlite import SqliteConsensus

        return SqliteConsensus(Path(unquote(urlparse(url).path)))
    if scheme in ("postgres", "postgresql"):
        from twinstream.persist.postgres import PostgresConsensus

        return PostgresConsensus(url)
    if scheme == "mem":
        return MemConsensus()
    raise ValueError(f"unsupported consensus URL {url!r} (sqlite:///..., postgres://..., mem://)")


def open_blob(url: str) -> Blob:
    scheme = urlparse(url).scheme
    if scheme == "file":
        return FileBlob(Path(unquote(urlparse(url).path)))
    if scheme in ("postgres", "postgresql"):
        from twinstream.persist.postgres import PostgresBlob

        return PostgresBlob(url)
    if scheme == "mem":
        return MemBlob()
    raise ValueError(f"unsupported blob URL {url!r} (file:///..., postgres://..., mem://)")


def default_consensus_url(data_dir: Path) -> str:
    return f"sqlite://{data_dir.resolve() / 'consensus.db'}"


def default_blob_url(data_dir: Path) -> str:
    return f"file://{data_dir.resolve() / 'blob'}"
