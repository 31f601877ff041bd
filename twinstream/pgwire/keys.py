"""Backend keys that carry the generation, so a proxy can route a CancelRequest to the
generation that owns the session: pid = generation << 24 | counter (pid stays a positive
int32: generations 0..127, 16M sessions per process before the counter wraps)."""

from __future__ import annotations

import itertools
import secrets

from twinstream.pgwire.backend import BackendKey

GENERATION_SHIFT = 24
MAX_GENERATION = 127


class GenerationKeyAllocator:
    def __init__(self, generation: int) -> None:
        if not 0 <= generation <= MAX_GENERATION:
            raise ValueError(f"generation {generation} does not fit a backend key")
        self.generation = generation
        self._counter = itertools.count(1)

    def __call__(self) -> BackendKey:
        n = next(self._counter) % (1 << GENERATION_SHIFT) or 1
        return BackendKey((self.generation << GENERATION_SHIFT) | n, secrets.randbits(32))


def generation_of(pid: int) -> int:
    return (pid >> GENERATION_SHIFT) & 0x7F
