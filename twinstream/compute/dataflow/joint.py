"""The state of a join+reduce that owns both of its arrangements: one entry per join key.

Why this layout: at a million rows the cost of an update is memory latency — every object it
touches is a likely cache miss — so a key's state is as few objects as possible:

    joint[key] = [other, x1, x2, ...]

- The *listed* side's rows are the entry's items after the first, one item per unit of
  multiplicity: an insert is a list `append`, a retraction deletes one equal item. No hashing of
  rows and no bucket object per key (a `{row: count}` bucket costs two more misses per update).
- `other` is the other side: None (no rows), a row tuple (exactly one row with count 1: the
  primary-key side of a foreign-key join, found without touching another object), or a dict
  `{row: count}` otherwise.
- Negative multiplicities of the listed side (a retraction before its insertion) are kept in
  `neg[key] = {row: count}` with count < 0, normally empty. A `(key, row)` is in at most one of
  the list and `neg`.
- An entry with no rows on either side is removed.

The listed side is the one that brings more rows in the first tick that has data (ties: left):
normally the "many" side of the join. `listed_add` and `other_add` are the general (slow) paths;
the hot paths are generated in `source` (see `reduce.JoinReduceNode`).
"""

from __future__ import annotations

from typing import Any

from twinstream.compute.dataflow.arrangement import key_source, null_key_test
from twinstream.persist.types import Row

#: `joint[key]`: `[other, listed rows...]`.
Entry = list[Any]


def listed_add(
    joint: dict[Any, Entry],
    neg: dict[Any, dict[Row, int]],
    key: Any,
    e: Entry | None,
    row: Row,
    d: int,
) -> Entry | None:
    """Add `d` copies of `row` to the listed side of `key` (entry `e`, None if absent); returns
    the entry, or None if it was removed (no rows left on either side)."""
    nk = neg.get(key)
    if d > 0 and nk is not None and row in nk:
        c = nk[row] + d  # cancel the negative count first
        if c < 0:
            nk[row] = c
            d = 0
        else:
            del nk[row]
            if not nk:
                del neg[key]
                nk = None
            d = c
    if d > 0:
        if e is None:
            e = joint[key] = [None]
        e.extend([row] * d)
    while d < 0:
        if e is not None:
            try:
                del e[e.index(row, 1)]
                d += 1
                continue
            except ValueError:
                pass
        if nk is None:
            nk = neg[key] = {}
        nk[row] = nk.get(row, 0) + d
        d = 0
    if e is not None and len(e) == 1 and e[0] is None:
        del joint[key]
        return None
    return e


def other_add(o: Any, row: Row, d: int) -> Any:
    """The other side's state `o` (a row, or a dict; not None) with `d` copies of `row` added:
    None, a row (one row, count 1) or a dict."""
    if o.__class__ is dict:
        c = o.get(row, 0) + d
        if c:
            o[row] = c
        else:
            del o[row]
        if len(o) == 1:
            ((r1, c1),) = o.items()
            if c1 == 1:
                return r1
        return o or None
    if o == row:
        c = 1 + d
        return {row: c} if c else None
    return {o: 1, row: d}


def listed_rows(joint: dict[Any, Entry], neg: dict[Any, dict[Row, int]]) -> int:
    """Distinct rows of the listed side (introspection only: hashes every row)."""
    return sum(len(set(e[1:])) for e in joint.values() if len(e) > 1) + sum(
        len(nk) for nk in neg.values()
    )


def other_rows(joint: dict[Any, Entry]) -> int:
    """Distinct rows of the other side."""
    return sum(len(o) if o.__class__ is dict else 1 for e in joint.values() if (o := e[0]))


def _indent(lines: list[str], n: int) -> list[str]:
    return [" " * n + ln for ln in lines]


def source(listed: bool, var: str, key_cols: tuple[int, ...], body: list[str]) -> str:
    """Source of `_apply(delta, joint, neg, state, touched, errs)` for one side's delta: its
    rows are named `var` (`l` or `r`), the other side's rows the other name; `listed` says
    whether this side is the listed one. `body` (indent 0) runs per matching pair with `d` the
    product of the diffs and `_t` the time, and may `continue`."""
    other = "r" if var == "l" else "l"
    null_test = null_key_test(key_cols, "k0")
    skip_null = [f"        if {null_test}: continue"] if null_test else []
    head = [
        "def _apply(delta, joint, neg, state, touched, errs):",
        "    get = state.get",
        "    jget = joint.get",
        f"    for {var}, _t, d0 in delta:",
        "        if not d0: continue",
        f"        k0 = {key_source(key_cols, var)}",
        "        _e = jget(k0)",
    ]
    if listed:
        lines = [
            *head,
            "        if d0 == 1 and not neg:",
            "            if _e is None:",
            f"                joint[k0] = [None, {var}]",
            "                continue",
            f"            _e.append({var})",
            "        elif d0 == -1 and _e is not None and not neg:",
            "            try:",
            f"                del _e[_e.index({var}, 1)]",
            "            except ValueError:",
            f"                _e = _listed_add(joint, neg, k0, _e, {var}, d0)",
            "                if _e is None: continue",
            "            else:",
            "                if len(_e) == 1 and _e[0] is None:",
            "                    del joint[k0]",
            "                    continue",
            "        else:",
            f"            _e = _listed_add(joint, neg, k0, _e, {var}, d0)",
            "            if _e is None: continue",
            *skip_null,
            "        _o = _e[0]",
            "        if _o is None: continue",
            "        if _o.__class__ is dict:",
            f"            for {other}, c in _o.items():",
            "                d = d0 * c",
            *_indent(body, 16),
            "            continue",
            f"        {other} = _o",
            "        d = d0",
            *_indent(body, 8),
        ]
    else:
        lines = [
            *head,
            "        if _e is None:",
            f"            _e = joint[k0] = [{var} if d0 == 1 else {{{var}: d0}}]",
            "        elif _e[0] is None:",
            f"            _e[0] = {var} if d0 == 1 else {{{var}: d0}}",
            "        else:",
            f"            _o = _e[0] = _other_add(_e[0], {var}, d0)",
            "            if _o is None and len(_e) == 1:",
            "                del joint[k0]",
            *skip_null,
            "        if len(_e) > 1:",
            f"            for {other} in _e[1:]:",
            "                d = d0",
            *_indent(body, 16),
            "        if neg:",
            "            _nk = neg.get(k0)",
            "            if _nk:",
            f"                for {other}, c in _nk.items():",
            "                    d = d0 * c",
            *_indent(body, 20),
        ]
    return "\n".join(lines) + "\n"


#: Names the generated source needs in its namespace.
NAMESPACE: dict[str, Any] = {"_listed_add": listed_add, "_other_add": other_add}
