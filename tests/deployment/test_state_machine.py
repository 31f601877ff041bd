"""The deployment state machine and the leader API's answers in every state (pure)."""

from __future__ import annotations

import pytest

from twinstream.deployment.state import Deployment, DeploymentState


def test_status_mapping_and_forward_only() -> None:
    d = Deployment()
    assert d.handle().status() == "Initializing"
    d.advance(DeploymentState.CATCHING_UP)
    assert d.handle().status() == "Initializing", "CatchingUp shows as Initializing"
    with pytest.raises(AssertionError):
        d.advance(DeploymentState.INITIALIZING)
    with pytest.raises(AssertionError):
        d.advance(DeploymentState.IS_LEADER)
    d.advance(DeploymentState.READY_TO_PROMOTE)
    assert d.handle().status() == "ReadyToPromote"


@pytest.mark.parametrize(
    ("path", "promote_ok", "skip_ok"),
    [
        ([], False, False),
        ([DeploymentState.CATCHING_UP], False, True),
        ([DeploymentState.CATCHING_UP, DeploymentState.READY_TO_PROMOTE], True, True),
        ([DeploymentState.IS_LEADER], True, True),
    ],
)
def test_promote_and_skip_in_each_state(
    path: list[DeploymentState], promote_ok: bool, skip_ok: bool
) -> None:
    d = Deployment()
    for s in path:
        d.advance(s)
    h = d.handle()
    skip = h.try_skip_catchup()
    assert skip.ok is skip_ok
    if not skip_ok:
        assert "cannot skip catchup" in skip.message
    promote = h.try_promote()
    assert promote.ok is promote_ok
    if not promote_ok:
        assert promote.message == "cannot promote leader while initializing"
    # idempotent
    assert h.try_promote().ok is promote_ok


def test_promote_moves_to_promoting_once() -> None:
    d = Deployment()
    d.advance(DeploymentState.CATCHING_UP)
    d.advance(DeploymentState.READY_TO_PROMOTE)
    assert d.handle().try_promote().ok
    assert d.current() is DeploymentState.PROMOTING
    assert d.promote_requested.is_set()
    assert d.handle().try_promote().ok
    assert d.current() is DeploymentState.PROMOTING
    d.advance(DeploymentState.IS_LEADER)
    assert d.handle().status() == "IsLeader"


def test_skip_in_catching_up_fires() -> None:
    d = Deployment()
    d.advance(DeploymentState.CATCHING_UP)
    assert not d.skip_catchup.is_set()
    assert d.handle().try_skip_catchup().ok
    assert d.skip_catchup.is_set()
