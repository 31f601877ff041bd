"""Operators: the nodes of a running dataflow.

Within a dataflow, time is processed one timestamp at a time, in order. For time `t` every node
gets the deltas of its inputs at `t` as batches (lists of `(row, t, diff)` updates, all at `t`)
and returns its own delta at `t` (its output times are its input times). Batches are never
mutated once handed on (they may be shared by several consumers and by arrangement logs). A
node whose inputs are all empty is skipped, except on the dataflow's first time
(`Tick.first`), when nodes that produce something from nothing (constants, global aggregates)
run.

Scalar work (map/filter/project, join output, aggregate arguments) is compiled to Python source
per operator; evaluation errors become `(error_row, t, diff)` updates in `Tick.errors`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from twinstream.compute.dataflow.arrangement import (
    Arrangement,
    Batch,
    Bucket,
    Key,
    Lookup,
    ReadHold,
    apply_lines,
    key_source,
    null_key_test,
    subtract,
)
from twinstream.compute.dataflow.expr import Codegen, Col, Expr, build, error_row, row_ref
from twinstream.persist.types import Row


class Tick:
    """What a node knows about the time being processed."""

    __slots__ = ("errors", "first", "time")

    def __init__(self, time: int, first: bool) -> None:
        self.time = time
        self.first = first
        self.errors: Batch = []


class Node:
    """An operator. `inputs` are upstream nodes; `tick` computes the output delta at a time."""

    first_tick: bool = False  # run on the first time even with empty inputs
    consolidated: bool = False  # output batches never hold two updates of one row
    label: ClassVar[str] = "node"

    def __init__(self, inputs: Sequence[Node], arity: int) -> None:
        self.inputs = list(inputs)
        self.arity = arity
        self.index = -1  # position in the dataflow's topological order

    def tick(self, tick: Tick, ins: list[Batch]) -> Batch:
        raise NotImplementedError

    def state_size(self) -> int:
        """Rows (or groups) of state this operator holds (for introspection)."""
        return 0


class ArrangedNode(Node):
    """A node whose output is also available as an arrangement (join inputs)."""

    arr: Arrangement

    def lookup_new(self, tick: Tick) -> Lookup:
        """Contents including the delta at `tick.time`."""
        return self.arr.lookup(tick.time)


def old_lookup(tick: Tick, new: Lookup, side: ArrangedNode, delta: Batch) -> Lookup:
    """Lookups of `side` excluding `delta` (its contents before this time)."""
    if tick.first:
        return _empty_lookup  # a dataflow's first time starts from nothing
    if not delta:
        return new
    by_key = side.arr.by_key(delta)

    def old(k: Key) -> Bucket | None:
        dk = by_key.get(k)
        m = new(k)
        return m if dk is None else subtract(m, dk)

    return old


def _empty_lookup(k: Key) -> Bucket | None:
    return None


# ---------------------------------------------------------------- sources


class InputNode(Node):
    """A collection fed through `Dataflow.step` (the dataflow hands it its batch)."""

    label = "input"

    def __init__(self, name: str, arity: int) -> None:
        super().__init__([], arity)
        self.name = name
        self.pending: Batch = []

    def tick(self, tick: Tick, ins: list[Batch]) -> Batch:
        out, self.pending = self.pending, []
        return out


class ConstantNode(Node):
    label = "constant"
    first_tick = True

    def __init__(self, rows: Sequence[tuple[Row, int]], arity: int) -> None:
        super().__init__([], arity)
        self.rows = [(r, d) for r, d in rows if d]

    def tick(self, tick: Tick, ins: list[Batch]) -> Batch:
        t = tick.time
        return [(r, t, d) for r, d in self.rows] if tick.first else []


class ImportNode(ArrangedNode):
    """A shared arrangement owned elsewhere: its deltas at our times, and lookups as of them.

    On the first time the delta is the arrangement's whole contents as of that time."""

    label = "import"

    def __init__(self, name: str, arr: Arrangement, as_of: int) -> None:
        super().__init__([], arr.arity if arr.arity is not None else 0)
        self.name = name
        self.arr = arr
        self.hold: ReadHold = arr.reader(as_of)
        self._deltas: dict[int, Batch] = {}

    def times(self, lo: int, hi: int) -> list[int]:
        """Times in [lo, hi) at which the arrangement changed (and remember their deltas)."""
        got = self.arr.deltas(lo, hi)
        for t, batch in got:
            self._deltas[t] = batch
        return [t for t, _ in got]

    def tick(self, tick: Tick, ins: list[Batch]) -> Batch:
        if tick.first:
            self._deltas.pop(tick.time, None)
            t = tick.time
            return [(r, t, c) for r, c in self.arr.snapshot(t)]
        return self._deltas.pop(tick.time, [])

    def advance(self, frontier: int) -> None:
        for t in [t for t in self._deltas if t < frontier]:
            del self._deltas[t]
        self.hold.advance(frontier)


class ArrangeNode(ArrangedNode):
    """Arranges its input by `key` (the arrangement is this dataflow's; may be exported)."""

    label = "arrange"

    def __init__(self, input: Node, key: tuple[int, ...], name: str = "") -> None:
        super().__init__([input], input.arity)
        self.arr = Arrangement(key, input.arity, name)
        #: Maintained by its only consumer (see `JoinReduceNode.own`), not by `tick`.
        self.owned = False
        #: If set, the rows this arrangement holds (its owner keeps them elsewhere).
        self.size_of: Callable[[], int] | None = None

    def tick(self, tick: Tick, ins: list[Batch]) -> Batch:
        batch = ins[0]
        if self.owned:
            self.arr.mark_applied(tick.time)  # its single consumer applies the batch
        else:
            self.arr.apply(tick.time, batch)
        return batch

    def lookup_new(self, tick: Tick) -> Lookup:
        return self.arr.state.get

    def state_size(self) -> int:
        return len(self.arr) if self.size_of is None else self.size_of()


# ---------------------------------------------------------------- map / filter / project


def identity(exprs: Sequence[Expr], arity: int) -> bool:
    return len(exprs) == arity and all(
        isinstance(e, Col) and e.index == i for i, e in enumerate(exprs)
    )


def tuple_of(items: Any) -> str:
    xs = list(items)
    if len(xs) == 1:
        return f"({xs[0]},)"
    return "(" + ", ".join(xs) + ")"


def compile_mfp(
    exprs: Sequence[Expr], preds: Sequence[Expr], in_arity: int, name: str = "_mfp"
) -> Callable[[Batch], Batch]:
    """A function batch -> batch keeping rows where all `preds` are TRUE, mapped to `exprs`."""
    g = Codegen(row_ref("r"))
    out = "r" if identity(exprs, in_arity) else tuple_of(g.expr(e) for e in exprs)
    cond = " and ".join(g.pred(p) for p in preds)
    where = f" if {cond}" if cond else ""
    src = f"def {name}(batch):\n    return [({out}, t, d) for r, t, d in batch{where}]\n"
    fn: Callable[[Batch], Batch] = build(src, g.namespace(), name)
    return fn


def run_guarded(fn: Callable[[Batch], Batch], batch: Batch, errors: Batch) -> Batch:
    """`fn(batch)`; if it raises, row by row, sending failing rows to `errors`."""
    try:
        return fn(batch)
    except Exception:
        out: Batch = []
        for u in batch:
            try:
                out.extend(fn([u]))
            except Exception as e:
                errors.append((error_row(e), u[1], u[2]))
        return out


class MfpNode(Node):
    """Map/filter/project fused: keep rows where all `preds` are TRUE, output `exprs`."""

    label = "mfp"

    def __init__(self, input: Node, exprs: Sequence[Expr], preds: Sequence[Expr]) -> None:
        super().__init__([input], len(exprs))
        self.exprs = tuple(exprs)
        self.preds = tuple(preds)
        self.fn = compile_mfp(self.exprs, self.preds, input.arity)

    def tick(self, tick: Tick, ins: list[Batch]) -> Batch:
        return run_guarded(self.fn, ins[0], tick.errors)


# ---------------------------------------------------------------- linear operators


class UnionNode(Node):
    label = "union"

    def tick(self, tick: Tick, ins: list[Batch]) -> Batch:
        nonempty = [b for b in ins if b]
        if len(nonempty) == 1:
            return nonempty[0]
        return [u for b in nonempty for u in b]


class NegateNode(Node):
    label = "negate"

    def tick(self, tick: Tick, ins: list[Batch]) -> Batch:
        return [(r, t, -d) for r, t, d in ins[0]]


def consolidate_batch(batch: Batch, t: int) -> Batch:
    """Sum the diffs of equal rows (all updates at time `t`) and drop zeros."""
    acc: dict[Row, int] = {}
    get = acc.get
    for r, _t, d in batch:
        acc[r] = get(r, 0) + d
    return [(r, t, d) for r, d in acc.items() if d]


class ConsolidateNode(Node):
    label = "consolidate"
    consolidated = True

    def tick(self, tick: Tick, ins: list[Batch]) -> Batch:
        return consolidate_batch(ins[0], tick.time)


# ---------------------------------------------------------------- distinct and set operations


class DistinctNode(Node):
    """Each row whose count is positive, once."""

    label = "distinct"
    consolidated = True

    def __init__(self, input: Node) -> None:
        super().__init__([input], input.arity)
        self.counts: dict[Row, int] = {}

    def tick(self, tick: Tick, ins: list[Batch]) -> Batch:
        counts = self.counts
        get = counts.get
        old: dict[Row, int] = {}
        for r, _t, d in ins[0]:
            c = get(r, 0)
            if r not in old:
                old[r] = c
            c += d
            if c:
                counts[r] = c
            else:
                counts.pop(r, None)
        t = tick.time
        out: Batch = []
        for r, o in old.items():
            was, now = o > 0, get(r, 0) > 0
            if was != now:
                out.append((r, t, 1 if now else -1))
        return out

    def state_size(self) -> int:
        return len(self.counts)


def _setop_fn(op: str, all_: bool) -> Callable[[int, int], int]:
    if op == "except" and all_:
        return lambda a, b: max(a - b, 0)
    if op == "except":
        return lambda a, b: 1 if a > 0 and b <= 0 else 0
    if all_:
        return lambda a, b: max(min(a, b), 0)
    return lambda a, b: 1 if a > 0 and b > 0 else 0


class SetOpNode(Node):
    """EXCEPT / INTERSECT (set or ALL): output count is a function of both inputs' counts."""

    label = "setop"
    consolidated = True

    def __init__(self, left: Node, right: Node, op: str, all_: bool) -> None:
        super().__init__([left, right], left.arity)
        self.f = _setop_fn(op, all_)
        self.a: dict[Row, int] = {}
        self.b: dict[Row, int] = {}

    def tick(self, tick: Tick, ins: list[Batch]) -> Batch:
        f, a, b = self.f, self.a, self.b
        old: dict[Row, int] = {}
        for counts, batch in ((a, ins[0]), (b, ins[1])):
            for r, _t, d in batch:
                if r not in old:
                    old[r] = f(a.get(r, 0), b.get(r, 0))
                c = counts.get(r, 0) + d
                if c:
                    counts[r] = c
                else:
                    counts.pop(r, None)
        t = tick.time
        out: Batch = []
        for r, o in old.items():
            n = f(a.get(r, 0), b.get(r, 0))
            if n != o:
                out.append((r, t, n - o))
        return out

    def state_size(self) -> int:
        return len(self.a) + len(self.b)


# ---------------------------------------------------------------- joins


def join_colref(nl: int) -> Callable[[int], str]:
    """Column references over a join's concatenated row: `l[i]`, then `r[i - nl]`."""
    return lambda i: f"l[{i}]" if i < nl else f"r[{i - nl}]"


def probe_loop(
    side: str, key_cols: tuple[int, ...], body: list[str], maintain: bool = False
) -> list[str]:
    """Lines looping over a delta batch of one join side (`l` or `r` rows with `d0` diffs)
    and, for each, over the matching rows of the other side (from `get`), with `d` the
    product diff, `_t` the time; `body` (already indented 12) runs per matching pair.
    With `maintain`, each delta row is first applied to `astate` (this side's arrangement
    state, keyed like the join)."""
    delta, other = ("l", "r") if side == "left" else ("r", "l")
    null_test = null_key_test(key_cols, "k0")
    lines = [
        f"    for {delta}, _t, d0 in delta:",
        f"        k0 = {key_source(key_cols, delta)}",
    ]
    if maintain:
        lines += _indent8(apply_lines(delta, "k0", "d0", "astate", "aget"))
    if null_test:
        lines.append(f"        if {null_test}: continue")
    lines += [
        "        m = get(k0)",
        "        if m is None: continue",
        f"        for {other}, c in m.items():",
        "            d = d0 * c",
    ]
    return lines + body


def _indent8(lines: list[str]) -> list[str]:
    return ["        " + ln for ln in lines]


class JoinNode(Node):
    """Equi-join of two arranged inputs (delta join: dL x R_old + L_new x dR), inner or outer.

    `exprs`/`preds` are a fused map/filter/project over the concatenated row (left columns then
    right columns); `on` is the residual join condition (decides which rows are padded for
    outer joins). Rows whose key has a NULL never match. For an inner join `on` is just one
    more predicate.
    """

    label = "join"

    def __init__(
        self,
        left: ArrangedNode,
        right: ArrangedNode,
        kind: str,
        on: Expr | None,
        exprs: Sequence[Expr],
        preds: Sequence[Expr],
    ) -> None:
        super().__init__([left, right], len(exprs))
        self.left, self.right = left, right
        self.nl, self.nr = left.arity, right.arity
        self.kind = kind
        self.pad_left = kind in ("left", "full")  # unmatched left rows are output
        self.pad_right = kind in ("right", "full")
        self.on = on
        inner_preds = list(preds) if on is None else [on, *preds]
        self.probe_left = self._compile_probe("left", exprs, inner_preds)
        self.probe_right = self._compile_probe("right", exprs, inner_preds)
        self.out_fn = compile_mfp(exprs, preds, self.nl + self.nr, "_join_out")
        self.match: Callable[[Row, Row], bool] | None = None
        if on is not None:
            g = Codegen(join_colref(self.nl))
            src = f"def _match(l, r):\n    return bool({g.pred(on)})\n"
            self.match = build(src, g.namespace(), "_match")
        self.lnull: Row = (None,) * self.nl
        self.rnull: Row = (None,) * self.nr

    def _compile_probe(
        self, side: str, exprs: Sequence[Expr], preds: Sequence[Expr]
    ) -> Callable[[Batch, Lookup, Batch, Batch], None]:
        g = Codegen(join_colref(self.nl))
        whole = identity(exprs, self.nl + self.nr)
        out = "l + r" if whole else tuple_of(g.expr(e) for e in exprs)
        cond = " and ".join(g.pred(p) for p in preds)
        body = ["            try:"]
        if cond:
            body += [f"                if {cond}:", f"                    ap(({out}, _t, d))"]
        else:
            body += [f"                ap(({out}, _t, d))"]
        body += [
            "            except Exception as e:",
            "                errs.append((_error_row(e), _t, d))",
        ]
        key_cols = self.left.arr.key_cols if side == "left" else self.right.arr.key_cols
        lines = ["def _probe(delta, get, out, errs):", "    ap = out.append"]
        lines += probe_loop(side, key_cols, body)
        fn: Callable[[Batch, Lookup, Batch, Batch], None] = build(
            "\n".join(lines) + "\n", g.namespace(), "_probe"
        )
        return fn

    def tick(self, tick: Tick, ins: list[Batch]) -> Batch:
        d_l, d_r = ins
        out: Batch = []
        errs = tick.errors
        l_new = self.left.lookup_new(tick)
        r_new = self.right.lookup_new(tick)
        r_old = old_lookup(tick, r_new, self.right, d_r)
        if d_l:
            self.probe_left(d_l, r_old, out, errs)
        if d_r:
            self.probe_right(d_r, l_new, out, errs)
        if self.pad_left or self.pad_right:
            l_old = old_lookup(tick, l_new, self.left, d_l)
            padded: Batch = []
            if self.pad_left:
                self._pad(tick, d_l, d_r, l_old, l_new, r_old, r_new, True, padded)
            if self.pad_right:
                self._pad(tick, d_r, d_l, r_old, r_new, l_old, l_new, False, padded)
            if padded:
                out.extend(run_guarded(self.out_fn, padded, errs))
        return out

    def _pad(
        self,
        tick: Tick,
        d_this: Batch,
        d_other: Batch,
        this_old: Lookup,
        this_new: Lookup,
        other_old: Lookup,
        other_new: Lookup,
        this_is_left: bool,
        out: Batch,
    ) -> None:
        """Unmatched rows of one side, padded with NULLs: new unmatched minus old unmatched."""
        t = tick.time
        this_arr = self.left.arr if this_is_left else self.right.arr
        other_arr = self.right.arr if this_is_left else self.left.arr
        nkey = len(this_arr.key_cols)
        keys: set[Key] = set()
        for r, _t, d in d_this:
            k = this_arr.key_of(r)
            if _has_null(k, nkey):
                out.append((self._padded(r, this_is_left), t, d))  # never matches
            else:
                keys.add(k)
        for r, _t, _d in d_other:
            k = other_arr.key_of(r)
            if not _has_null(k, nkey):
                keys.add(k)
        for k in keys:
            old = self._unmatched(this_old(k), other_old(k), this_is_left)
            new = self._unmatched(this_new(k), other_new(k), this_is_left)
            if old is new:
                continue
            diff: dict[Row, int] = dict(new) if new else {}
            if old:
                for r, c in old.items():
                    v = diff.get(r, 0) - c
                    if v:
                        diff[r] = v
                    else:
                        diff.pop(r, None)
            for r, c in diff.items():
                out.append((self._padded(r, this_is_left), t, c))

    def _unmatched(
        self, mine: Bucket | None, theirs: Bucket | None, mine_left: bool
    ) -> Bucket | None:
        if not mine:
            return None
        if not theirs:
            return mine
        match = self.match
        if match is None:
            return None
        if mine_left:
            got = {r: c for r, c in mine.items() if not any(match(r, o) for o in theirs)}
        else:
            got = {r: c for r, c in mine.items() if not any(match(o, r) for o in theirs)}
        return got or None

    def _padded(self, r: Row, is_left: bool) -> Row:
        return r + self.rnull if is_left else self.lnull + r


def _has_null(k: Key, nkey: int) -> bool:
    if nkey == 0:
        return False
    if nkey == 1:
        return k is None
    assert isinstance(k, tuple)
    return None in k
