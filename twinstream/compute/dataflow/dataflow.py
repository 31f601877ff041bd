"""A dataflow: operators built from plans, driven one frontier at a time.

    df = Dataflow(
        outputs={"mv": plan},                      # name -> Plan
        exports={"mv_by_k": ArrangeBy(plan, (0,))},  # optional: indexes other dataflows import
        imports={"t_by_id": arrangement},          # optional: shared arrangements (Import nodes)
        as_of=T,                                   # first time computed (default 0)
    )
    out = df.step({"t": [(row, time, diff), ...]}, frontier=T + 1)
    out["mv"]        # consolidated (row, time, diff) updates at times in [previous, frontier)
    out[ERRORS]      # evaluation errors as ((sqlstate, message), time, diff), if any

`step` may be given updates at times >= `frontier` (kept until a later step covers them), but
never at a time below the dataflow's current frontier (those times are closed), except before
the first step has run: updates before `as_of` are advanced to `as_of`, so feeding a snapshot
(every update at or before T) with `as_of=T` hydrates the dataflow at T, and the outputs at T
are the full results. The first processed time is always `as_of`, even with no input, so
constants and global aggregates (`count(*)` over an empty table is 0) appear there.

Times are processed in order; output times are input times. A dataflow that imports
arrangements cannot pass their `upper`: its frontier is `min(frontier, import uppers)`.
"""

from __future__ import annotations

import bisect
import functools
import itertools
from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any

from twinstream.compute.dataflow.arrangement import Arrangement, Batch
from twinstream.compute.dataflow.expr import Col, Expr, PlanError, substitute
from twinstream.compute.dataflow.operators import (
    ArrangedNode,
    ArrangeNode,
    ConsolidateNode,
    ConstantNode,
    DistinctNode,
    ImportNode,
    InputNode,
    JoinNode,
    MfpNode,
    NegateNode,
    Node,
    SetOpNode,
    Tick,
    UnionNode,
    consolidate_batch,
    identity,
)
from twinstream.compute.dataflow.plan import (
    Agg,
    ArrangeBy,
    Consolidate,
    Constant,
    Distinct,
    Filter,
    Get,
    Import,
    Join,
    Map,
    Negate,
    Plan,
    Project,
    Reduce,
    SetOp,
    TopK,
    Union,
    arity,
    children,
)
from twinstream.compute.dataflow.reduce import JoinReduceNode, PlainReduceNode
from twinstream.compute.dataflow.topk import TopKNode
from twinstream.persist.types import Update

#: The key of `step`'s result holding evaluation errors `((sqlstate, message), time, diff)`.
ERRORS = "$errors"

_EMPTY: Batch = []
_time_of = itemgetter(1)


class _Mfp:
    """A map/filter/project chain normalized to (outputs, predicates) over the base input."""

    def __init__(self, base: Plan, exprs: tuple[Expr, ...], preds: tuple[Expr, ...]) -> None:
        self.base = base
        self.exprs = exprs
        self.preds = preds


def _mfp_chain(p: Plan, memo: dict[int, int]) -> _Mfp:
    if isinstance(p, Map | Filter | Project):
        inner = _mfp_chain(p.input, memo)
        if isinstance(p, Map):
            exprs = inner.exprs
            for e in p.exprs:
                exprs = (*exprs, substitute(e, exprs))
            return _Mfp(inner.base, exprs, inner.preds)
        if isinstance(p, Filter):
            new = tuple(substitute(e, inner.exprs) for e in p.predicates)
            return _Mfp(inner.base, inner.exprs, inner.preds + new)
        return _Mfp(inner.base, tuple(inner.exprs[c] for c in p.columns), inner.preds)
    n = arity(p, memo)
    return _Mfp(p, tuple(Col(i) for i in range(n)), ())


class Dataflow:
    """See the module docstring."""

    def __init__(
        self,
        outputs: Mapping[str, Plan],
        *,
        exports: Mapping[str, Plan] | None = None,
        imports: Mapping[str, Arrangement] | None = None,
        as_of: int = 0,
        name: str = "dataflow",
    ) -> None:
        self.name = name
        self.as_of = as_of
        self.frontier = as_of
        self._started = False
        self._imports_given = dict(imports or {})
        self.nodes: list[Node] = []
        self.inputs: dict[str, InputNode] = {}
        self.imports: dict[str, ImportNode] = {}
        self._memo: dict[Plan, Node] = {}
        self._arranged: dict[tuple[Plan, tuple[int, ...]], ArrangedNode] = {}
        self._arity_memo: dict[int, int] = {}
        roots: list[Plan] = list(outputs.values()) + list((exports or {}).values())
        for r in roots:
            arity(r, self._arity_memo)
        self._refs = self._count_refs(roots)
        self.outputs: dict[str, Node] = {name: self._build(p) for name, p in outputs.items()}
        self.exports: dict[str, Arrangement] = {}
        for ename, p in (exports or {}).items():
            if not isinstance(p, ArrangeBy):
                raise PlanError(f"export {ename!r} must be an ArrangeBy plan")
            node = self._arrange(p.input, p.key)
            if not isinstance(node, ArrangeNode):
                raise PlanError(f"export {ename!r} re-exports an import")
            node.arr.name = ename
            self.exports[ename] = node.arr
        self._fuse_private_arrangements()
        self._pending: dict[int, dict[str, Batch]] = {}

    # ---------------------------------------------------------------- building

    def _fuse_private_arrangements(self) -> None:
        """Let a join+reduce maintain the arrangements only it reads (one pass per delta)."""
        consumers: dict[int, int] = {}
        for n in self.nodes:
            for i in n.inputs:
                consumers[i.index] = consumers.get(i.index, 0) + 1
        shared = {id(a) for a in self.exports.values()}
        visible = {n.index for n in self.outputs.values()}

        def private(a: ArrangedNode) -> bool:
            return (
                isinstance(a, ArrangeNode)
                and consumers.get(a.index, 0) == 1
                and id(a.arr) not in shared
                and a.index not in visible
            )

        for n in self.nodes:
            if isinstance(n, JoinReduceNode) and n.left is not n.right:
                own_l, own_r = private(n.left), private(n.right)
                if own_l or own_r:
                    n.own(own_l, own_r)
                    for side, owned, is_left in ((n.left, own_l, True), (n.right, own_r, False)):
                        if owned:
                            assert isinstance(side, ArrangeNode)
                            side.owned = True
                            if own_l and own_r:
                                side.size_of = functools.partial(n.side_size, is_left)

    def _count_refs(self, roots: Sequence[Plan]) -> dict[Plan, int]:
        refs: dict[Plan, int] = {}
        stack = list(roots)
        for r in roots:
            refs[r] = refs.get(r, 0) + 1  # a root counts as one extra consumer
        seen: set[Plan] = set()
        while stack:
            p = stack.pop()
            if p in seen:
                continue
            seen.add(p)
            for c in children(p):
                refs[c] = refs.get(c, 0) + 1
                stack.append(c)
        return refs

    def _add(self, node: Node) -> Node:
        node.index = len(self.nodes)
        self.nodes.append(node)
        return node

    def _build(self, p: Plan) -> Node:
        got = self._memo.get(p)
        if got is None:
            got = self._build_new(p)
            self._memo[p] = got
        return got

    def _build_new(self, p: Plan) -> Node:
        if isinstance(p, Get):
            existing = self.inputs.get(p.name)
            if existing is not None:
                if existing.arity != p.arity:
                    raise PlanError(
                        f"input {p.name!r} used with arities {existing.arity}, {p.arity}"
                    )
                return existing
            node = InputNode(p.name, p.arity)
            self.inputs[p.name] = node
            return self._add(node)
        if isinstance(p, Import):
            return self._import(p)
        if isinstance(p, Constant):
            return self._add(ConstantNode(p.rows, p.arity))
        if isinstance(p, Map | Filter | Project):
            m = _mfp_chain(p, self._arity_memo)
            base = m.base
            if isinstance(base, Join) and self._refs.get(base, 0) <= 1:
                return self._join(base, m.exprs, m.preds)
            inner = self._build(base)
            if not m.preds and identity(m.exprs, inner.arity):
                return inner
            return self._add(MfpNode(inner, m.exprs, m.preds))
        if isinstance(p, Join):
            n = arity(p, self._arity_memo)
            return self._join(p, tuple(Col(i) for i in range(n)), ())
        if isinstance(p, Reduce):
            return self._reduce(p)
        if isinstance(p, Union):
            ins = [self._build(i) for i in p.inputs]
            return self._add(UnionNode(ins, ins[0].arity))
        if isinstance(p, Negate):
            inner = self._build(p.input)
            return self._add(NegateNode([inner], inner.arity))
        if isinstance(p, Distinct):
            return self._add(DistinctNode(self._build(p.input)))
        if isinstance(p, Consolidate):
            inner = self._build(p.input)
            return self._add(ConsolidateNode([inner], inner.arity))
        if isinstance(p, SetOp):
            return self._add(SetOpNode(self._build(p.left), self._build(p.right), p.op, p.all))
        if isinstance(p, TopK):
            return self._add(
                TopKNode(self._build(p.input), p.group_key, p.order_by, p.limit, p.offset)
            )
        if isinstance(p, ArrangeBy):
            return self._arrange(p.input, p.key)
        raise PlanError(f"not a plan node: {p!r}")

    def _reduce(self, p: Reduce) -> Node:
        src: Plan = p.input
        group_key, aggs = p.group_key, p.aggregates
        preds: tuple[Expr, ...] = ()
        if isinstance(src, Map | Filter | Project) and self._refs.get(src, 0) <= 1:
            m = _mfp_chain(src, self._arity_memo)
            src = m.base
            group_key = tuple(substitute(e, m.exprs) for e in group_key)
            aggs = tuple(
                a if a.expr is None else Agg(a.func, substitute(a.expr, m.exprs), a.distinct)
                for a in aggs
            )
            preds = m.preds
        if isinstance(src, Join) and self._refs.get(src, 0) <= 1:
            # The join emits exactly the grouping key and aggregate arguments (and applies the
            # filter), so no wide intermediate rows are built.
            needed: list[Expr] = list(group_key)
            for a in aggs:
                if a.expr is not None and a.expr not in needed:
                    needed.append(a.expr)
            where = {e: Col(i) for i, e in enumerate(needed)}
            if src.kind == "inner":
                # Fully fused: the join's matches update the aggregates directly.
                left = self._arrange(src.left, src.left_key)
                right = self._arrange(src.right, src.right_key)
                on = () if src.on is None else (src.on,)
                return self._add(JoinReduceNode(left, right, group_key, aggs, on + preds))
            join = self._join(src, tuple(needed), preds)
            group_key = tuple(where[e] for e in group_key)
            aggs = tuple(
                a if a.expr is None else Agg(a.func, where[a.expr], a.distinct) for a in aggs
            )
            return self._add(PlainReduceNode(join, group_key, aggs, ()))
        return self._add(PlainReduceNode(self._build(src), group_key, aggs, preds))

    def _import(self, p: Import) -> ImportNode:
        existing = self.imports.get(p.name)
        if existing is not None:
            return existing
        arr = self._imports_given.get(p.name)
        if arr is None:
            raise PlanError(f"import {p.name!r} is not bound to an arrangement")
        if arr.arity is not None and arr.arity != p.arity:
            raise PlanError(f"import {p.name!r} has arity {arr.arity}, plan says {p.arity}")
        node = ImportNode(p.name, arr, self.as_of)
        node.arity = p.arity
        self.imports[p.name] = node
        self._add(node)
        return node

    def _arrange(self, p: Plan, key: tuple[int, ...]) -> ArrangedNode:
        if isinstance(p, Import):
            imp = self._import(p)
            if imp.arr.key_cols == tuple(key):
                return imp
        if isinstance(p, ArrangeBy) and tuple(p.key) == tuple(key):
            return self._arrange(p.input, key)
        got = self._arranged.get((p, tuple(key)))
        if got is None:
            node = ArrangeNode(self._build(p), tuple(key))
            self._add(node)
            self._arranged[(p, tuple(key))] = node
            got = node
        return got

    def _join(self, j: Join, exprs: tuple[Expr, ...], preds: tuple[Expr, ...]) -> Node:
        left = self._arrange(j.left, j.left_key)
        right = self._arrange(j.right, j.right_key)
        return self._add(JoinNode(left, right, j.kind, j.on, exprs, preds))

    # ---------------------------------------------------------------- running

    def step(
        self, inputs: Mapping[str, Sequence[Update]], frontier: int
    ) -> dict[str, list[Update]]:
        """Take `inputs`, process every time below `frontier`, return the output updates."""
        if frontier < self.frontier and self._started:
            raise ValueError(f"{self.name}: frontier {frontier} is behind {self.frontier}")
        accepted: list[tuple[str, Sequence[Update], set[int]]] = []
        for name, updates in inputs.items():  # validate everything before taking anything
            if name not in self.inputs:
                raise KeyError(f"{self.name}: no input named {name!r}")
            if updates:
                times = set(map(_time_of, updates))  # a C loop
                for t in times:
                    self._check_time(name, t)
                accepted.append((name, updates, times))
        for name, updates, times in accepted:
            self._accept(name, updates, times)
        pending = self._pending
        effective = frontier
        for imp in self.imports.values():
            effective = min(effective, imp.arr.upper)
        result: dict[str, list[Update]] = {name: [] for name in self.outputs}
        if effective <= self.frontier:
            return result
        times = {t for t in pending if t < effective}
        lo = self.as_of + 1 if not self._started else self.frontier
        for imp in self.imports.values():
            times.update(imp.times(lo, effective))
        if not self._started:
            times.add(self.as_of)
        errors: list[Update] = []
        for t in sorted(times):
            first = not self._started
            self._started = True
            self._run(t, first, pending.pop(t, {}), result, errors)
        self.frontier = effective
        for arr in self.exports.values():
            arr.advance_upper(effective)
        for imp in self.imports.values():
            imp.advance(effective)
        if errors:
            result[ERRORS] = errors
        return result

    def _accept(self, name: str, updates: Sequence[Update], times: set[int]) -> None:
        if len(times) == 1 and isinstance(updates, list):
            # The common case: one timestamp; the list is used as is (never mutated).
            (t,) = times
            self._add_pending(name, self._check_time(name, t), updates)
            return
        # Several times (a driver catching up hands over many at once): split by time without
        # rebuilding the update tuples. Persist delivers them sorted by time, so the split is
        # slices found by bisection (C loops); any other order takes one Python pass.
        ts = list(map(_time_of, updates))
        by_time: dict[int, Batch] = {}
        if ts == sorted(ts):
            for t in times:
                part = updates[bisect.bisect_left(ts, t) : bisect.bisect_right(ts, t)]
                by_time[t] = part if isinstance(part, list) else list(part)  # one copy
        else:
            by_time = {t: [] for t in times}
            for u in updates:
                by_time[u[1]].append(u)
        parts: dict[int, list[Batch]] = {}
        for t in sorted(times):
            at = self._check_time(name, t)  # before the as-of: advanced to it
            part = by_time[t] if at == t else [(r, at, d) for r, _t, d in by_time[t]]
            parts.setdefault(at, []).append(part)
        for t, ps in parts.items():
            batch = ps[0] if len(ps) == 1 else list(itertools.chain.from_iterable(ps))
            self._add_pending(name, t, batch)

    def _check_time(self, name: str, t: int) -> int:
        if t >= self.frontier:
            return t
        if self._started:
            raise ValueError(
                f"{self.name}: update at time {t} for {name!r}, but times before "
                f"{self.frontier} are complete"
            )
        return self.as_of

    def _add_pending(self, name: str, t: int, batch: Batch) -> None:
        if batch and batch[0][1] != t:  # advanced to as_of
            batch = [(r, t, d) for r, _t, d in batch]
        slot = self._pending.setdefault(t, {})
        have = slot.get(name)
        slot[name] = batch if have is None else have + batch

    def _run(
        self,
        t: int,
        first: bool,
        batches: dict[str, Batch],
        result: dict[str, list[Update]],
        errors: list[Update],
    ) -> None:
        tick = Tick(t, first)
        for name, batch in batches.items():
            self.inputs[name].pending = batch
        outs: list[Batch] = [_EMPTY] * len(self.nodes)
        for node in self.nodes:
            if not node.inputs:
                outs[node.index] = node.tick(tick, [])
                continue
            ins = [outs[i.index] for i in node.inputs]
            if (first and node.first_tick) or any(ins):
                outs[node.index] = node.tick(tick, ins)
        for name, node in self.outputs.items():
            got = outs[node.index]
            if got:
                result[name].extend(got if node.consolidated else consolidate_batch(got, t))
        if tick.errors:
            errors.extend(consolidate_batch(tick.errors, t))

    # ---------------------------------------------------------------- introspection

    def arrangement(self, name: str) -> Arrangement:
        return self.exports[name]

    def close(self) -> None:
        """Release read holds on imported arrangements."""
        for imp in self.imports.values():
            imp.hold.release()

    def explain(self) -> str:
        lines = []
        for n in self.nodes:
            ins = ", ".join(str(i.index) for i in n.inputs)
            extra = ""
            if isinstance(n, InputNode | ImportNode):
                extra = f" {n.name}"
            if isinstance(n, ArrangedNode):
                extra += f" key={n.arr.key_cols}"
            lines.append(f"{n.index}: {n.label}({ins}){extra} arity={n.arity}")
        return "\n".join(lines)

    def state_sizes(self) -> dict[str, Any]:
        return {f"{n.index}:{n.label}": n.state_size() for n in self.nodes}
