"""Blob store in a local directory: write to a temp file, fsync, rename, fsync the directory,
so a reader sees either nothing or the whole value."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote

from twinstream.persist.errors import LocationUnavailable

T = TypeVar("T")


class FileBlob:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._made = False

    def _ensure_root(self) -> None:
        if not self._made:
            self.root.mkdir(parents=True, exist_ok=True)
            self._made = True

    def _path(self, key: str) -> Path:
        return self.root / quote(key, safe="")

    def _set(self, key: str, data: bytes) -> None:
        final = self._path(key)
        tmp = self.root / f".tmp-{uuid.uuid4().hex}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        dfd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def _get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def _delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def _list(self, prefix: str) -> list[str]:
        keys = [unquote(p.name) for p in self.root.iterdir() if not p.name.startswith(".tmp-")]
        return sorted(k for k in keys if k.startswith(prefix))

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        def run() -> T:
            try:
                self._ensure_root()
                return fn(*args)
            except OSError as e:
                raise LocationUnavailable(f"file blob {self.root}: {e}") from e

        return await asyncio.to_thread(run)

    async def get(self, key: str) -> bytes | None:
        return await self._call(self._get, key)

    async def set(self, key: str, data: bytes) -> None:
        await self._call(self._set, key, data)

    async def delete(self, key: str) -> None:
        await self._call(self._delete, key)

    async def list_keys(self, prefix: str) -> list[str]:
        return await self._call(self._list, prefix)

    async def close(self) -> None:
        return None
