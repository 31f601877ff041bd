"""The scalar IR: SQL three-valued logic, NULL propagation, arithmetic and functions."""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

import pytest

from twinstream.compute.dataflow.expr import (
    NULL,
    Case,
    Cast,
    Col,
    EvalError,
    Expr,
    Lit,
    PlanError,
    call,
    compile_predicate,
    compile_scalar,
    error_row,
    validate,
)

T, F, N = Lit(True), Lit(False), NULL


def ev(e: Expr, row: tuple[Any, ...] = ()) -> Any:
    return compile_scalar(e)(row)


def kleene_and(a: bool | None, b: bool | None) -> bool | None:
    if a is False or b is False:
        return False
    if a is None or b is None:
        return None
    return True


def kleene_or(a: bool | None, b: bool | None) -> bool | None:
    if a is True or b is True:
        return True
    if a is None or b is None:
        return None
    return False


VALUES3 = [True, False, None]


@pytest.mark.parametrize(("a", "b"), list(itertools.product(VALUES3, VALUES3)))
def test_and_or_truth_tables(a: bool | None, b: bool | None) -> None:
    row = (a, b)
    assert ev(call("and", Col(0), Col(1)), row) is kleene_and(a, b)
    assert ev(call("or", Col(0), Col(1)), row) is kleene_or(a, b)
    # Predicate context: TRUE only.
    assert compile_predicate(call("and", Col(0), Col(1)))(row) is (kleene_and(a, b) is True)
    assert compile_predicate(call("or", Col(0), Col(1)))(row) is (kleene_or(a, b) is True)
    # NOT in predicate context: NOT (a AND b) is TRUE iff (a AND b) is FALSE.
    assert compile_predicate(call("not", call("and", Col(0), Col(1))))(row) is (
        kleene_and(a, b) is False
    )
    assert compile_predicate(call("not", call("or", Col(0), Col(1))))(row) is (
        kleene_or(a, b) is False
    )


@pytest.mark.parametrize("a", VALUES3)
def test_not(a: bool | None) -> None:
    assert ev(call("not", Col(0)), (a,)) is (None if a is None else not a)


def test_variadic_and_or() -> None:
    assert ev(call("and", T, T, N)) is None
    assert ev(call("and", T, N, F)) is False
    assert ev(call("or", F, N, T)) is True
    assert ev(call("or", F, F)) is False


@pytest.mark.parametrize("op", ["=", "<>", "<", "<=", ">", ">="])
def test_comparisons_with_null(op: str) -> None:
    assert ev(call(op, Col(0), Lit(1)), (None,)) is None
    assert ev(call(op, Lit(1), Col(0)), (None,)) is None
    assert ev(call(op, Col(0), NULL), (1,)) is None
    assert compile_predicate(call(op, Col(0), Lit(1)))((None,)) is False
    assert compile_predicate(call("not", call(op, Col(0), Lit(1))))((None,)) is False


def test_comparisons() -> None:
    assert ev(call("=", Col(0), Lit(2)), (2,)) is True
    assert ev(call("<>", Col(0), Lit(2)), (2,)) is False
    assert ev(call("<", Col(0), Col(1)), ("a", "b")) is True
    assert ev(call(">=", Col(0), Lit(Decimal("1.5"))), (2,)) is True


def test_arithmetic_null_propagation() -> None:
    for op in ["+", "-", "*", "/", "%"]:
        assert ev(call(op, Col(0), Lit(2)), (None,)) is None
        assert ev(call(op, Lit(2), Col(0)), (None,)) is None
    assert ev(call("neg", Col(0)), (None,)) is None
    assert ev(call("+", call("*", Col(0), Lit(3)), Col(1)), (2, 1)) == 7


def test_integer_division_truncates_toward_zero() -> None:
    assert ev(call("/", Lit(7), Lit(2))) == 3
    assert ev(call("/", Lit(-7), Lit(2))) == -3
    assert ev(call("%", Lit(-7), Lit(2))) == -1
    assert ev(call("%", Lit(7), Lit(-2))) == 1
    assert ev(call("/", Lit(7.0), Lit(2))) == 3.5
    assert ev(call("/", Lit(Decimal("7")), Lit(Decimal("2")))) == Decimal("3.5")


def test_division_by_zero() -> None:
    with pytest.raises(EvalError) as exc:
        ev(call("/", Lit(1), Lit(0)))
    assert exc.value.sqlstate == "22012"
    with pytest.raises(EvalError):
        ev(call("%", Lit(1), Lit(0)))
    # NULL wins over the error: the division is not evaluated.
    assert ev(call("/", NULL, Lit(0))) is None


def test_is_null_and_distinct_from() -> None:
    assert ev(call("is_null", Col(0)), (None,)) is True
    assert ev(call("is_not_null", Col(0)), (None,)) is False
    assert ev(call("is_distinct_from", Col(0), Col(1)), (None, None)) is False
    assert ev(call("is_distinct_from", Col(0), Col(1)), (None, 1)) is True
    assert ev(call("is_distinct_from", Col(0), Col(1)), (1, 1)) is False
    assert ev(call("is_not_distinct_from", Col(0), Col(1)), (None, None)) is True
    assert ev(call("is_not_distinct_from", Col(0), Col(1)), (2, None)) is False
    assert compile_predicate(call("not", call("is_null", Col(0))))((1,)) is True


def test_case() -> None:
    e = Case(
        ((call(">", Col(0), Lit(10)), Lit("big")), (call(">", Col(0), Lit(0)), Lit("small"))),
        Lit("other"),
    )
    assert ev(e, (11,)) == "big"
    assert ev(e, (5,)) == "small"
    assert ev(e, (-1,)) == "other"
    assert ev(e, (None,)) == "other"  # a NULL condition does not fire
    assert ev(Case(((call("=", Col(0), Lit(1)), Lit(1)),), NULL), (2,)) is None


def test_coalesce_nullif_greatest_least_in() -> None:
    assert ev(call("coalesce", Col(0), Col(1), Lit(3)), (None, None)) == 3
    assert ev(call("coalesce", Col(0), Col(1), Lit(3)), (None, 2)) == 2
    assert ev(call("coalesce", Col(0)), (None,)) is None
    assert ev(call("coalesce", call("+", Col(0), Lit(1)), Lit(0)), (None,)) == 0
    assert ev(call("nullif", Col(0), Lit(1)), (1,)) is None
    assert ev(call("nullif", Col(0), Lit(1)), (2,)) == 2
    assert ev(call("nullif", Col(0), NULL), (2,)) == 2
    assert ev(call("greatest", Col(0), Lit(3), NULL), (5,)) == 5
    assert ev(call("least", Col(0), Lit(3), NULL), (5,)) == 3
    assert ev(call("greatest", NULL, NULL)) is None
    assert ev(call("in", Col(0), Lit(1), Lit(2)), (2,)) is True
    assert ev(call("in", Col(0), Lit(1), Lit(2)), (3,)) is False
    assert ev(call("in", Col(0), Lit(1), NULL), (3,)) is None
    assert ev(call("in", Col(0), Lit(1), NULL), (1,)) is True
    assert ev(call("in", Col(0), Lit(1)), (None,)) is None


def test_text_functions() -> None:
    assert ev(call("||", Col(0), Lit("x")), ("a",)) == "ax"
    assert ev(call("||", Col(0), Lit("x")), (None,)) is None
    assert ev(call("||", Lit("n="), Col(0)), (5,)) == "n=5"
    assert ev(call("||", Lit("b="), Col(0)), (True,)) == "b=true"
    assert ev(call("lower", Col(0)), ("AbC",)) == "abc"
    assert ev(call("upper", Col(0)), (None,)) is None
    assert ev(call("length", Col(0)), ("héllo",)) == 5
    assert ev(call("substr", Col(0), Lit(2), Lit(3)), ("abcdef",)) == "bcd"
    assert ev(call("substr", Col(0), Lit(0), Lit(3)), ("abcdef",)) == "ab"
    assert ev(call("substr", Col(0), Lit(3)), ("abcdef",)) == "cdef"
    assert ev(call("trim", Col(0)), ("  a b ",)) == "a b"
    assert ev(call("like", Col(0), Lit("a%c_")), ("abbcd",)) is True
    assert ev(call("like", Col(0), Lit("a%c_")), ("abbc",)) is False
    assert ev(call("like", Col(0), Lit("a.c")), ("abc",)) is False
    assert ev(call("like", Col(0), NULL), ("abc",)) is None


def test_numeric_functions() -> None:
    assert ev(call("abs", Col(0)), (-3,)) == 3
    assert ev(call("round", Lit(Decimal("2.5")))) == Decimal("3")
    assert ev(call("round", Lit(Decimal("2.345")), Lit(2))) == Decimal("2.35")
    assert ev(call("floor", Lit(-1.5))) == -2.0
    assert ev(call("ceil", Lit(Decimal("1.2")))) == Decimal("2")
    assert ev(call("abs", NULL)) is None


def test_casts() -> None:
    assert ev(Cast(Col(0), "int"), ("42",)) == 42
    assert ev(Cast(Col(0), "int"), (2.5,)) == 3  # rounds half away from zero
    assert ev(Cast(Col(0), "int"), (None,)) is None
    assert ev(Cast(Col(0), "text"), (1.5,)) == "1.5"
    assert ev(Cast(Col(0), "text"), (False,)) == "false"
    assert ev(Cast(Col(0), "numeric"), ("1.25",)) == Decimal("1.25")
    assert ev(Cast(Col(0), "float"), (3,)) == 3.0
    assert ev(Cast(Col(0), "bool"), ("yes",)) is True
    with pytest.raises(EvalError) as exc:
        ev(Cast(Col(0), "int"), ("x1",))
    assert exc.value.sqlstate == "22P02"


def test_literal_equality_includes_type() -> None:
    assert Lit(1) != Lit(1.0)
    assert Lit(1) != Lit(True)
    assert Lit(1) == Lit(1)
    assert len({Lit(1), Lit(1.0), Lit(True)}) == 3


def test_validate() -> None:
    validate(call("+", Col(0), Col(1)), 2)
    with pytest.raises(PlanError):
        validate(Col(2), 2)
    with pytest.raises(PlanError):
        validate(call("frobnicate", Col(0)), 1)
    with pytest.raises(PlanError):
        validate(call("not", Col(0), Col(0)), 1)
    with pytest.raises(PlanError):
        validate(Cast(Col(0), "money"), 1)


def test_error_rows() -> None:
    assert error_row(EvalError("22012", "division by zero")) == ("22012", "division by zero")
    assert error_row(ZeroDivisionError())[0] == "22012"
    assert error_row(TypeError("x"))[0] == "42804"
