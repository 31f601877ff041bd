"""twinstream.balancer: the pgwire proxy in front of an environment's generations.

New connections go to the active generation (`RouteSource`: `RolloutRoute` follows the
orchestrator's rollout record, `StaticRoute` is set by hand); at a cutover, idle sessions are
moved to the new generation with their SET state and prepared statements, statements cut off by
the old generation's fence are re-sent, and a transaction that cannot survive ends in 40001.
Start at `server.py` (`Balancer`) and `session.py` (`ClientSession`); the rules are in
doc/design/cutover.md.
"""

from twinstream.balancer.retry import DEFAULT_RETRYABLE_ERRORS, RetryableError
from twinstream.balancer.route import RolloutRoute, Route, RouteSource, StaticRoute
from twinstream.balancer.server import Balancer, DdlPolicy, start_for_orchestrator
from twinstream.balancer.stats import BalancerStats, SessionInfo

__all__ = [
    "DEFAULT_RETRYABLE_ERRORS",
    "Balancer",
    "BalancerStats",
    "DdlPolicy",
    "RetryableError",
    "RolloutRoute",
    "Route",
    "RouteSource",
    "SessionInfo",
    "StaticRoute",
    "start_for_orchestrator",
]
