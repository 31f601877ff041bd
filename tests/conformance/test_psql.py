"""Conformance through `psql` (libpq, simple query protocol, text output): the shared
scenarios with parameters inlined as literals and values compared in PostgreSQL's text form,
then psql's backslash commands, which query pg_catalog and are what people type first."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conformance_scenarios import (
    NULL_TEXT,
    SETUP,
    Outcome,
    Scenario,
    Step,
    check_step,
    inline_params,
    scenario_params,
)

from twinstream.testing.environmentd import EnvironmentdProcess

PSQL = shutil.which("psql")
pytestmark = pytest.mark.skipif(PSQL is None, reason="psql is not installed")

_MARK = "@@conformance-step "
_ERROR = re.compile(r"^(?:psql:[^:]*:\d+: )?(ERROR|FATAL):\s+([0-9A-Z]{5}): (.*)$")
_NOISE = re.compile(
    r"^(?:psql:[^:]*:\d+: )?(?:WARNING|NOTICE|INFO|DETAIL|HINT|LOCATION|CONTEXT|QUERY|LINE \d+):"
    r"|^\s*\^\s*$"
)


def psql_env(envd: EnvironmentdProcess) -> dict[str, str]:
    env = dict(os.environ)
    for key in list(env):
        if key.startswith("PG"):
            del env[key]
    env.update(
        PGHOST="127.0.0.1",
        PGPORT=str(envd.sql_port),
        PGUSER="twinstream",
        PGDATABASE="twinstream",
        PGCONNECT_TIMEOUT="10",
        PSQLRC="/dev/null",
    )
    return env


def run_psql(
    envd: EnvironmentdProcess, script: str, tmp: Path, *, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run a script file with psql -X -v ON_ERROR_STOP=0 -A -t; stdout+stderr merged."""
    path = tmp / "script.sql"
    path.write_text("\\set VERBOSITY verbose\n" + script)
    args = [
        PSQL or "psql",
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=0",
        "-A",
        "-t",
        "-P",
        f"null={NULL_TEXT}",
        "-f",
        str(path),
    ]
    if shutil.which("stdbuf"):
        args = ["stdbuf", "-oL", "-eL", *args]
    return subprocess.run(
        args,
        env=psql_env(envd),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )


def step_sql(step: Step) -> str:
    sql = inline_params(step.sql, step.params) if step.params else step.sql
    return sql.strip().rstrip(";") + ";"


def run_steps(envd: EnvironmentdProcess, steps: tuple[Step, ...], tmp: Path) -> list[Outcome]:
    """All steps in one psql session; the output is split at `\\echo` markers."""
    script = "".join(f"\\echo {_MARK}{i}\n{step_sql(s)}\n" for i, s in enumerate(steps))
    proc = run_psql(envd, script, tmp)
    chunks: dict[int, list[str]] = {}
    current: int | None = None
    for line in proc.stdout.splitlines():
        if line.startswith(_MARK):
            current = int(line[len(_MARK) :])
            chunks[current] = []
        elif current is not None:
            chunks[current].append(line)
    outcomes = []
    for i, step in enumerate(steps):
        lines = chunks.get(i)
        if lines is None:
            outcomes.append(
                Outcome(sqlstate="NORUN", message=f"psql never reached the step:\n{proc.stdout}")
            )
            continue
        out = Outcome(rows=[])
        for line in lines:
            m = _ERROR.match(line)
            if m:
                out.sqlstate, out.message = m.group(2), m.group(3)
            elif _NOISE.match(line):
                continue
            elif out.rows is not None:
                out.rows.append(tuple(line.split("|")))
        if out.sqlstate is not None:
            out.rows = None
        elif step.rows is not None and len(step.rows) > 0 and len(step.rows[0]) == 1:
            # one column: a value containing '|' must not be split
            out.rows = [("|".join(r),) for r in out.rows or []]
        outcomes.append(out)
    return outcomes


@pytest.fixture(scope="module")
def env(envd: EnvironmentdProcess, tmp_path_factory: pytest.TempPathFactory) -> EnvironmentdProcess:
    tmp = tmp_path_factory.mktemp("psql-setup")
    for i, (step, out) in enumerate(
        zip(SETUP.steps, run_steps(envd, SETUP.steps, tmp), strict=True)
    ):
        check_step(SETUP, i, step, out, text=True)
    return envd


@pytest.mark.parametrize("scenario", scenario_params("psql", max_sessions=1))
def test_scenario(env: EnvironmentdProcess, scenario: Scenario, tmp_path: Path) -> None:
    outcomes = run_steps(env, scenario.steps, tmp_path)
    for i, (step, out) in enumerate(zip(scenario.steps, outcomes, strict=True)):
        check_step(scenario, i, step, out, text=True)


# --------------------------------------------------------------------------- text output


def _one(env: EnvironmentdProcess, sql: str, tmp: Path) -> Outcome:
    return run_steps(env, (Step(sql),), tmp)[0]


TEXT_OUTPUT: list[tuple[str, str, str, str | None]] = [
    ("bool", "SELECT true, false", "t|f", None),
    ("floats", "SELECT 1.5::float4, 0.1::float8, 1e300::float8", "1.5|0.1|1e+300", None),
    ("numeric", "SELECT 12.5::numeric(10,2)", "12.50", None),
    ("timestamp", "SELECT '2024-02-29 12:34:56.5'::timestamp", "2024-02-29 12:34:56.5", None),
    (
        "timestamptz",
        "SELECT '2024-02-29 12:34:56+00'::timestamptz",
        "2024-02-29 12:34:56+00",
        None,
    ),
    ("interval", "SELECT '1 day 02:03:04'::interval", "1 day 02:03:04", None),
    (
        "uuid",
        "SELECT 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'::uuid",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        None,
    ),
    (
        "bytea",
        "SELECT '\\x00ff'::bytea",
        "\\x00ff",
        None,
    ),
    (
        "jsonb",
        "SELECT '{\"a\": [1, 2]}'::jsonb",
        '{"a": [1, 2]}',
        None,
    ),
    ("null", "SELECT NULL::text", NULL_TEXT, None),
]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        pytest.param(
            sql,
            expected,
            id=name,
            marks=[pytest.mark.xfail(strict=True, reason=bug)] if bug else [],
        )
        for name, sql, expected, bug in TEXT_OUTPUT
    ],
)
def test_text_output(env: EnvironmentdProcess, tmp_path: Path, sql: str, expected: str) -> None:
    out = _one(env, sql, tmp_path)
    assert out.sqlstate is None, out.message
    assert out.rows == [tuple(expected.split("|"))]


def test_interval_months_text(env: EnvironmentdProcess, tmp_path: Path) -> None:
    out = _one(env, "SELECT '1 year 2 mons 3 days'::interval", tmp_path)
    assert out.rows == [("1 year 2 mons 3 days",)]
    out = _one(env, "SELECT interval '-1 month 3 days', 1, interval '-1 days -04:00:00'", tmp_path)
    assert out.rows == [("-1 mons +3 days", "1", "-1 days -04:00:00")]


def test_timezone_setting_applies_to_output(env: EnvironmentdProcess, tmp_path: Path) -> None:
    outs = run_steps(
        env,
        (
            Step("SET TimeZone = 'America/New_York'"),
            Step("SELECT '2024-01-01 12:00:00+00'::timestamptz", rows=[]),
        ),
        tmp_path,
    )
    assert outs[1].rows == [("2024-01-01 07:00:00-05",)]


def test_array_text(env: EnvironmentdProcess, tmp_path: Path) -> None:
    assert _one(env, "SELECT ARRAY[1, 2]", tmp_path).rows == [("{1,2}",)]
    out = _one(env, "SELECT ARRAY['a b', NULL, ''], '{1,2}'::int4[]", tmp_path)
    assert out.rows == [('{"a b",NULL,""}', "{1,2}")]


def test_copy_from_stdin_inline(env: EnvironmentdProcess, tmp_path: Path) -> None:
    script = (
        "COPY conf_types (id, t) FROM STDIN;\n50001\tinline\n50002\t\\N\n\\.\n"
        "SELECT id, t FROM conf_types WHERE id BETWEEN 50001 AND 50009 ORDER BY id;\n"
    )
    proc = run_psql(env, script, tmp_path)
    assert proc.stdout.splitlines() == ["50001|inline", f"50002|{NULL_TEXT}"], proc.stdout


def test_copy_to_stdout(env: EnvironmentdProcess, tmp_path: Path) -> None:
    proc = run_psql(
        env, "COPY (SELECT id, name FROM conf_depts ORDER BY id) TO STDOUT;\n", tmp_path
    )
    assert proc.stdout.splitlines() == ["10\teng", "20\tsales", "30\tempty"], proc.stdout


def test_multi_statement_line_and_error_continues(env: EnvironmentdProcess, tmp_path: Path) -> None:
    proc = run_psql(env, "SELECT 1; SELECT * FROM nope; SELECT 2;\nSELECT 3;\n", tmp_path)
    lines = [ln for ln in proc.stdout.splitlines() if not _NOISE.match(ln)]
    assert lines[0] == "1"
    assert "42P01" in lines[1]
    # psql splits the line itself and sends each statement as its own Query
    assert lines[2:] == ["2", "3"], proc.stdout


# --------------------------------------------------------------------------- backslash commands

#: meta-command -> (a line that must appear in its output, why it fails today or None)
CATALOG_BUG = (
    "pg_catalog is DuckDB's: psql's {cmd} query fails ({error}); needs PostgreSQL-compatible "
    "pg_catalog relations/functions"
)

META_COMMANDS: list[tuple[str, str, str | None]] = [
    ("\\dt", "public|conf_people|table|twinstream", None),
    ("\\dt conf_*", "public|conf_types|table|twinstream", None),
    # -A -t prints no title ('Table "public.conf_depts"'): the columns are the output
    ("\\d conf_depts", "id|integer||not null|", None),
    ("\\d+ conf_depts", "id|integer||not null|", None),
    ("\\d", "public|conf_depts|table|twinstream", None),
    ("\\l", "twinstream|", None),
    ("\\dn", "public|", None),
    ("\\dv", "", None),
    ("\\di", "", None),
    ("\\du", "twinstream|", None),
    ("\\df", "", None),
    ("\\dT", "", None),
    ("\\conninfo", 'You are connected to database "twinstream"', None),
    ("\\encoding", "UTF8", None),
]


def _meta_params() -> list[object]:
    out = []
    for cmd, expect, bug in META_COMMANDS:
        marks = (
            [pytest.mark.xfail(strict=True, reason=CATALOG_BUG.format(cmd=cmd, error=bug))]
            if bug
            else []
        )
        out.append(pytest.param(cmd, expect, id=cmd.lstrip("\\").replace(" ", "_"), marks=marks))
    return out


@pytest.mark.parametrize(("command", "expect"), _meta_params())
def test_backslash_command(
    env: EnvironmentdProcess, tmp_path: Path, command: str, expect: str
) -> None:
    proc = run_psql(env, f"{command}\n", tmp_path)
    errors = [ln for ln in proc.stdout.splitlines() if _ERROR.match(ln)]
    assert not errors, f"{command} failed: {errors}"
    assert proc.returncode == 0, proc.stdout
    if expect:
        assert any(expect in ln for ln in proc.stdout.splitlines()), proc.stdout
