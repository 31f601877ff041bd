"""Fence tokens and fence errors: how a newer process takes the catalog from an older one.

`FenceToken(deploy_generation, epoch)` orders generation first, then epoch. A writable open
writes a token larger than every durable one; any older writer's next commit fails with
`FenceError.DeployGeneration` (a newer generation took over: exit 0) or `FenceError.Epoch` (a
newer process of the same generation: a double run or a bug, crash).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn

log = logging.getLogger(__name__)

MIN_EPOCH = 1


@dataclass(frozen=True, order=True)
class FenceToken:
    deploy_generation: int
    epoch: int

    def __post_init__(self) -> None:
        if self.deploy_generation < 0:
            raise ValueError(f"deploy generation {self.deploy_generation} < 0")
        if self.epoch < MIN_EPOCH:
            raise ValueError(f"epoch {self.epoch} < {MIN_EPOCH}")

    def to_json(self) -> dict[str, Any]:
        return {"deploy_generation": self.deploy_generation, "epoch": self.epoch}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> FenceToken:
        return cls(int(raw["deploy_generation"]), int(raw["epoch"]))


class FenceError(Exception):
    """This process no longer owns the catalog."""

    DeployGeneration: ClassVar[type[DeployGenerationFenced]]
    Epoch: ClassVar[type[EpochFenced]]


class DeployGenerationFenced(FenceError):
    """A higher deploy generation holds the catalog: exit cleanly."""

    def __init__(self, current: int, fence: int) -> None:
        assert fence > current, f"fence generation {fence} must exceed ours {current}"
        super().__init__(f"fenced out by generation {fence} (this process is generation {current})")
        self.current = current
        self.fence = fence


class EpochFenced(FenceError):
    """A newer process of the same generation holds the catalog: a double run or a bug."""

    def __init__(self, current: int, fence: int) -> None:
        assert fence > current, f"fence epoch {fence} must exceed ours {current}"
        super().__init__(f"fenced out by epoch {fence} (this process has epoch {current})")
        self.current = current
        self.fence = fence


FenceError.DeployGeneration = DeployGenerationFenced
FenceError.Epoch = EpochFenced


def fence_error(current: FenceToken, fence: FenceToken) -> FenceError:
    """The error for `current` seeing a larger durable `fence` token."""
    assert fence > current, f"{fence} does not fence {current}"
    if fence.deploy_generation > current.deploy_generation:
        return DeployGenerationFenced(current.deploy_generation, fence.deploy_generation)
    return EpochFenced(current.epoch, fence.epoch)


def exit_if_fenced(err: BaseException) -> None:
    """Process-level reaction: a generation fence exits 0 (no crash loop); anything else,
    including an epoch fence, propagates and crashes the process."""
    if isinstance(err, DeployGenerationFenced):
        log.warning("fenced out by generation %d; exiting", err.fence)
        print(f"fenced out by generation {err.fence}", file=sys.stderr, flush=True)
        _exit_clean()


def _exit_clean() -> NoReturn:
    sys.exit(0)
