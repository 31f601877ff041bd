"""GROUP BY: per-group aggregate state, updated in place, one generated function per Reduce.

Per group the state is a list: `[last output row, row count, <aggregate slots>...]`.

- count(*): the row count.
- count(x): the non-NULL count.
- sum(x), avg(x): non-NULL count, int/Decimal sum, float count, and the float sum as an exact
  integer multiple of 2**-1074 (rounded once on output, so retractions leave no drift).
- min(x), max(x): a multiset `{value: count}` and the cached extreme, recomputed from the
  multiset only when the extreme itself is retracted.
- count(DISTINCT x): a multiset and the distinct count.
- sum/avg(DISTINCT x): a multiset, summed per changed group.
- bool_and/bool_or: non-NULL count and TRUE count.

At the end of a time every group touched at that time emits `(old row, -1), (new row, +1)`
when its row changed. A group whose row count drops to zero disappears; the global aggregate
(empty group key) always has exactly one row, PostgreSQL's answer over empty input being
`count = 0` and NULL for the other aggregates.
"""

from __future__ import annotations

import decimal
import math
from collections.abc import Callable, Sequence
from typing import Any

from twinstream.compute.dataflow import joint as joint_layout
from twinstream.compute.dataflow.arrangement import Batch, Lookup
from twinstream.compute.dataflow.expr import Codegen, EvalError, Expr, build, row_ref
from twinstream.compute.dataflow.operators import (
    ArrangedNode,
    Node,
    Tick,
    join_colref,
    old_lookup,
    probe_loop,
)
from twinstream.compute.dataflow.plan import Agg

_SCALE_BITS = 1074  # every finite double is an integer multiple of 2**-1074
_SCALE = 1 << _SCALE_BITS


class _Dirty:
    __slots__ = ()

    def __repr__(self) -> str:
        return "DIRTY"


_DIRTY = _Dirty()


def _fx(v: float) -> int:
    """A finite float as an exact integer multiple of 2**-1074."""
    if not math.isfinite(v):
        raise EvalError("22003", "sum/avg of a non-finite double precision value")
    n, den = v.as_integer_ratio()
    return n << (_SCALE_BITS - den.bit_length() + 1)


def _sum_out(nn: int, s: Any, nf: int, fs: int) -> Any:
    if nn <= 0:
        return None
    if nf == 0:
        return s
    return (fs + int(s) * _SCALE) / _SCALE  # int / int: correctly rounded


def _avg_out(nn: int, s: Any, nf: int, fs: int) -> Any:
    if nn <= 0:
        return None
    if nf:
        return (fs + int(s) * _SCALE) / (_SCALE * nn)
    if isinstance(s, int):
        return decimal.Decimal(s) / decimal.Decimal(nn)
    return s / nn


def _distinct_values(ms: dict[Any, int]) -> list[Any]:
    return [v for v, c in ms.items() if c > 0]


def _sum_distinct(ms: dict[Any, int]) -> Any:
    vs = _distinct_values(ms)
    if not vs:
        return None
    if any(isinstance(v, float) for v in vs):
        return math.fsum(vs)
    return sum(vs)


def _avg_distinct(ms: dict[Any, int]) -> Any:
    vs = _distinct_values(ms)
    if not vs:
        return None
    if any(isinstance(v, float) for v in vs):
        return math.fsum(vs) / len(vs)
    s = sum(vs)
    if isinstance(s, int):
        return decimal.Decimal(s) / decimal.Decimal(len(vs))
    return s / len(vs)


def _extreme(st: list[Any], j: int, pick: Callable[[list[Any]], Any]) -> Any:
    cur = st[j + 1]
    if cur is _DIRTY:
        vs = _distinct_values(st[j])
        cur = st[j + 1] = pick(vs) if vs else None
    return cur


_NS: dict[str, Any] = {
    "_fx": _fx,
    "_sum_out": _sum_out,
    "_avg_out": _avg_out,
    "_sum_distinct": _sum_distinct,
    "_avg_distinct": _avg_distinct,
    "_extreme": _extreme,
    "_DIRTY": _DIRTY,
    "_min": min,
    "_max": max,
}


def _indent(lines: list[str], n: int) -> list[str]:
    return [" " * n + ln for ln in lines]


class ReduceNode(Node):
    """GROUP BY `group_key` computing `aggs`, with an optional fused filter in front:
    `group_key`, aggregate arguments and `preds` are expressions over the input rows."""

    label = "reduce"
    consolidated = True

    def __init__(
        self,
        input: Node | Sequence[Node],
        group_key: Sequence[Expr],
        aggs: Sequence[Agg],
        preds: Sequence[Expr] = (),
        *,
        arity_out: int | None = None,
    ) -> None:
        inputs = [input] if isinstance(input, Node) else list(input)
        super().__init__(inputs, len(group_key) + len(aggs))
        self.group_key = tuple(group_key)
        self.aggs = tuple(aggs)
        self.is_global = not group_key
        self.first_tick = self.is_global
        self.state: dict[Any, list[Any]] = {}
        self._init: Callable[[], list[Any]] = lambda: []
        self._emit: Callable[[dict[Any, list[Any]], dict[Any, list[Any]], Batch, int], None]
        self.default_row: tuple[Any, ...] = ()

    def _codegen(self, g: Codegen, preds: Sequence[Expr]) -> tuple[list[str], dict[str, Any]]:
        """The per-input-row body (indent 0; uses `r`... via `g`, `d`, `_t`) and namespace;
        also sets `_init`, `_emit` and `default_row`."""
        vals: dict[Expr, str] = {}
        try_lines: list[str] = []
        for p in preds:
            try_lines.append(f"if not {g.pred(p)}: continue")
        nk = len(self.group_key)
        if nk == 0:
            try_lines.append("k = ()")
        elif nk == 1:
            try_lines.append(f"k = {g.expr(self.group_key[0])}")
        else:
            try_lines.append("k = (" + ", ".join(g.expr(e) for e in self.group_key) + ")")
        floats: set[str] = set()
        for a in self.aggs:
            if a.expr is not None and a.expr not in vals:
                v = f"v{len(vals)}"
                vals[a.expr] = v
                try_lines.append(f"{v} = {g.expr(a.expr)}")
            if a.func in ("sum", "avg") and not a.distinct and a.expr is not None:
                floats.add(vals[a.expr])
        for v in sorted(floats):
            try_lines.append(f"f{v} = _fx({v}) if {v}.__class__ is float else None")

        init: list[str] = ["None", "0"]
        upd: list[str] = ["st[1] += d"]
        outs: list[str] = []
        defaults: list[Any] = []
        for a in self.aggs:
            j = len(init)
            v = vals[a.expr] if a.expr is not None else ""
            f = a.func
            if f == "count" and a.expr is None:
                outs.append("st[1]")
                defaults.append(0)
                continue
            defaults.append(0 if f == "count" else None)
            if f == "count" and not a.distinct:
                init.append("0")
                upd += [f"if {v} is not None:", f"    st[{j}] += d"]
                outs.append(f"st[{j}]")
            elif f in ("sum", "avg") and not a.distinct:
                init += ["0", "0", "0", "0"]
                upd += [
                    f"if {v} is not None:",
                    f"    st[{j}] += d",
                    f"    if f{v} is None:",
                    f"        st[{j + 1}] += {v} * d",
                    "    else:",
                    f"        st[{j + 2}] += d",
                    f"        st[{j + 3}] += f{v} * d",
                ]
                fn = "_sum_out" if f == "sum" else "_avg_out"
                outs.append(f"{fn}(st[{j}], st[{j + 1}], st[{j + 2}], st[{j + 3}])")
            elif f in ("min", "max"):
                init += ["{}", "None"]
                cmp = "<" if f == "min" else ">"
                upd += [
                    f"if {v} is not None:",
                    f"    ms = st[{j}]",
                    f"    cc = ms.get({v}, 0) + d",
                    "    if cc:",
                    f"        ms[{v}] = cc",
                    "    else:",
                    f"        ms.pop({v}, None)",
                    f"    cur = st[{j + 1}]",
                    "    if cc > 0:",
                    f"        if cur is not _DIRTY and (cur is None or {v} {cmp} cur):",
                    f"            st[{j + 1}] = {v}",
                    f"    elif cur is not _DIRTY and cur is not None and {v} == cur:",
                    f"        st[{j + 1}] = _DIRTY",
                ]
                outs.append(f"_extreme(st, {j}, _{f})")
            elif f in ("count", "sum", "avg") and a.distinct:
                init += ["{}", "0"]
                upd += [
                    f"if {v} is not None:",
                    f"    ms = st[{j}]",
                    f"    pc = ms.get({v}, 0)",
                    "    cc = pc + d",
                    "    if cc:",
                    f"        ms[{v}] = cc",
                    "    else:",
                    f"        ms.pop({v}, None)",
                    "    if (pc > 0) != (cc > 0):",
                    f"        st[{j + 1}] += 1 if cc > 0 else -1",
                ]
                if f == "count":
                    outs.append(f"st[{j + 1}]")
                elif f == "sum":
                    outs.append(f"_sum_distinct(st[{j}])")
                else:
                    outs.append(f"_avg_distinct(st[{j}])")
            elif f in ("bool_and", "bool_or"):
                init += ["0", "0"]
                upd += [
                    f"if {v} is not None:",
                    f"    st[{j}] += d",
                    f"    if {v}:",
                    f"        st[{j + 1}] += d",
                ]
                test = f"st[{j + 1}] == st[{j}]" if f == "bool_and" else f"st[{j + 1}] > 0"
                outs.append(f"(None if st[{j}] <= 0 else {test})")
            else:  # pragma: no cover - plan validation rejects these
                raise ValueError(f"unsupported aggregate {a}")

        if nk == 0:
            row = "(" + "".join(o + ", " for o in outs) + ")"
        elif nk == 1:
            row = "(k, " + "".join(o + ", " for o in outs) + ")"
        else:
            row = "k + (" + "".join(o + ", " for o in outs) + ")"
        init_src = "[" + ", ".join(init) + "]"
        body = [
            "try:",
            *_indent(try_lines, 4),
            "except Exception as e:",
            "    errs.append((_error_row(e), _t, d))",
            "    continue",
            "st = get(k)",
            "if st is None:",
            f"    st = state[k] = {init_src}",
            "touched[k] = st",
            *upd,
        ]
        empty = "_DEFAULT" if nk == 0 else "None"
        drop = "" if nk == 0 else "\n        if n == 0:\n            del state[k]"
        emit_src = f"""
def _emit(touched, state, out, t):
    for k, st in touched.items():
        n = st[1]
        new = {row} if n > 0 else {empty}
        old = st[0]
        if new != old:
            if old is not None:
                out.append((old, t, -1))
            if new is not None:
                out.append((new, t, 1))
            st[0] = new{drop}
"""
        ns = g.namespace()
        ns.update(_NS)
        self.default_row = tuple(defaults)
        ns["_DEFAULT"] = self.default_row
        self._emit = build(emit_src, ns, "_emit")
        self._init = build(f"def _init():\n    return {init_src}\n", ns, "_init")
        return body, ns

    def _start(self, tick: Tick) -> tuple[Batch, dict[Any, list[Any]]]:
        touched: dict[Any, list[Any]] = {}
        if self.is_global and tick.first and () not in self.state:
            # The global group exists from the start: it emits its row (the empty-input
            # answer unless there is input) at the first time.
            touched[()] = self.state[()] = self._init()
        return [], touched

    def state_size(self) -> int:
        return len(self.state)


class PlainReduceNode(ReduceNode):
    """Reduce over one input collection."""

    def __init__(
        self, input: Node, group_key: Sequence[Expr], aggs: Sequence[Agg], preds: Sequence[Expr]
    ) -> None:
        super().__init__(input, group_key, aggs, preds)
        body, ns = self._codegen(Codegen(row_ref("r")), preds)
        src = "\n".join(
            [
                "def _apply(batch, state, touched, errs):",
                "    get = state.get",
                "    for r, _t, d in batch:",
                *_indent(body, 8),
            ]
        )
        self._apply: Callable[[Batch, dict[Any, list[Any]], dict[Any, list[Any]], Batch], None]
        self._apply = build(src + "\n", ns, "_apply")

    def tick(self, tick: Tick, ins: list[Batch]) -> Batch:
        out, touched = self._start(tick)
        self._apply(ins[0], self.state, touched, tick.errors)
        self._emit(touched, self.state, out, tick.time)
        return out


class JoinReduceNode(ReduceNode):
    """An inner equi-join feeding a reduce, fused: the join's matches update the aggregate
    state directly (no joined rows are built). Expressions range over the concatenated row.

    A side whose arrangement is private to this node (`own`, decided by the dataflow once the
    graph is built) is also maintained here, in the same loop that probes the other side:
    one pass over the delta instead of two, and the other side's lookups need no "old"
    view (the owned side is updated after the probes that must not see its delta)."""

    label = "join+reduce"

    def __init__(
        self,
        left: ArrangedNode,
        right: ArrangedNode,
        group_key: Sequence[Expr],
        aggs: Sequence[Agg],
        preds: Sequence[Expr],
    ) -> None:
        super().__init__([left, right], group_key, aggs, preds)
        self.left, self.right = left, right
        self._preds = tuple(preds)
        self.own_left = self.own_right = False
        self.joint: dict[Any, joint_layout.Entry] = {}
        self.neg: dict[Any, dict[Any, int]] = {}
        #: Which side's rows are listed in `joint` (decided by the first tick with data).
        self.left_listed = True
        self._layout_decided = False
        self._compile()

    def own(self, left: bool, right: bool) -> None:
        """Maintain the left/right arrangement here (its `ArrangeNode` must not apply it).
        Owning both, the two sides share one dict with one entry per key (`joint`, layout in
        `joint.py`): a delta row finds its own side's rows and the other side's with one
        lookup."""
        self.own_left, self.own_right = left, right
        if left and right:
            self.joint = {}
            self.neg = {}
        self._compile()

    def side_size(self, left: bool) -> int:
        """Distinct rows of an owned side kept in `joint`."""
        if left == self.left_listed:
            return joint_layout.listed_rows(self.joint, self.neg)
        return joint_layout.other_rows(self.joint)

    def _compile(self) -> None:
        g = Codegen(join_colref(self.left.arity))
        body, ns = self._codegen(g, self._preds)
        if self.own_left and self.own_right:
            ns.update(joint_layout.NAMESPACE)
            fns = [
                build(joint_layout.source(listed, var, arr.key_cols, body), dict(ns), "_apply")
                for listed, var, arr in (
                    (self.left_listed, "l", self.left.arr),
                    (not self.left_listed, "r", self.right.arr),
                )
            ]
            self._apply_left, self._apply_right = fns
            return
        fns = []
        for side, arr, owned in (
            ("left", self.left.arr, self.own_left),
            ("right", self.right.arr, self.own_right),
        ):
            lines = [
                "def _apply(delta, get_other, state, touched, errs, astate):",
                "    get = state.get",
                "    aget = None if astate is None else astate.get",
                *probe_loop(side, arr.key_cols, _indent(body, 12), maintain=owned),
            ]
            lines = [ln.replace("m = get(k0)", "m = get_other(k0)") for ln in lines]
            fns.append(build("\n".join(lines) + "\n", dict(ns), "_apply"))
        self._apply_left, self._apply_right = fns

    def tick(self, tick: Tick, ins: list[Batch]) -> Batch:
        d_l, d_r = ins
        out, touched = self._start(tick)
        errs = tick.errors
        left, right = self.left, self.right
        if self.own_left and self.own_right:
            if not self._layout_decided and (d_l or d_r):
                # List the side that brings more rows (normally the "many" side).
                self._layout_decided = True
                assert not self.joint and not self.neg
                if len(d_r) > len(d_l):
                    self.left_listed = False
                    self._compile()
            # Left first: its probes see the right side as before this time; then the right
            # side's probes see the left side with its delta.
            if d_l:
                self._apply_left(d_l, self.joint, self.neg, self.state, touched, errs)
            if d_r:
                self._apply_right(d_r, self.joint, self.neg, self.state, touched, errs)
            self._emit(touched, self.state, out, tick.time)
            return out
        if d_l:
            r_old: Lookup
            if self.own_right:  # not updated yet: its state is the old contents
                r_old = right.arr.state.get
            else:
                r_old = old_lookup(tick, right.lookup_new(tick), right, d_r)
            own = left.arr.state if self.own_left else None
            self._apply_left(d_l, r_old, self.state, touched, errs, own)
        if d_r:
            own = right.arr.state if self.own_right else None
            self._apply_right(d_r, left.lookup_new(tick), self.state, touched, errs, own)
        self._emit(touched, self.state, out, tick.time)
        return out
