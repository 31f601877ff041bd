"""Session variables: SET / SHOW / RESET, with PostgreSQL-compatible defaults."""

from __future__ import annotations

from dataclasses import dataclass

from twinstream.adapter.errors import INVALID_PARAMETER_VALUE, UNDEFINED_PARAMETER, AdapterError
from twinstream.adapter.temporary import TEMP_SCHEMA_ALIASES, is_temp_schema
from twinstream.adapter.timeouts import MS_SETTINGS, format_ms, parse_ms


@dataclass(frozen=True)
class VarDef:
    default: str
    #: Reported to the client with ParameterStatus when it changes.
    reported: bool = False
    #: Allowed values (lower case); None: anything.
    choices: tuple[str, ...] | None = None


VARS: dict[str, VarDef] = {
    "application_name": VarDef("", reported=True),
    "client_encoding": VarDef("UTF8", reported=True, choices=("utf8", "utf-8", "unicode")),
    "client_min_messages": VarDef("notice"),
    "cluster": VarDef("quickstart"),
    "cluster_replica": VarDef(""),
    "database": VarDef("twinstream"),
    "datestyle": VarDef("ISO, MDY", reported=True),
    "extra_float_digits": VarDef("3"),
    "idle_in_transaction_session_timeout": VarDef("0"),
    "integer_datetimes": VarDef("on", reported=True),
    "intervalstyle": VarDef("postgres", reported=True),
    "is_superuser": VarDef("on", reported=True),
    "search_path": VarDef("public"),
    "server_version": VarDef("15.0 (twinstream)", reported=True),
    "server_version_num": VarDef("150000"),
    "standard_conforming_strings": VarDef("on", reported=True, choices=("on",)),
    "statement_timeout": VarDef("0"),
    "timezone": VarDef("UTC", reported=True),
    "transaction_isolation": VarDef(
        "strict serializable", choices=("strict serializable", "serializable")
    ),
    "lock_timeout": VarDef("0"),
    "max_query_result_size": VarDef("1073741824"),
}

#: Names clients use that differ from ours.
_ALIASES = {"time zone": "timezone", "transaction isolation level": "transaction_isolation"}

#: Capitalization used in ParameterStatus (what libpq expects).
REPORTED_NAMES = {
    "datestyle": "DateStyle",
    "timezone": "TimeZone",
    "intervalstyle": "IntervalStyle",
}

#: Accepted isolation spellings -> ours (READ COMMITTED etc. run as SERIALIZABLE, as
#: Materialize does, since every read is at least serializable).
ISOLATION = {
    "strict serializable": "strict serializable",
    "serializable": "serializable",
    "repeatable read": "serializable",
    "read committed": "serializable",
    "read uncommitted": "serializable",
}


def canonical(name: str) -> str:
    low = name.lower()
    return _ALIASES.get(low, low)


def checked_value(name: str, value: str) -> str:
    """`value` as the setting `name` stores it (normalized), or 42704/22023."""
    key = canonical(name)
    vd = VARS.get(key)
    if vd is None:
        raise AdapterError(UNDEFINED_PARAMETER, f'unrecognized configuration parameter "{name}"')
    if key == "transaction_isolation":
        iso = ISOLATION.get(value.lower())
        if iso is None:
            raise AdapterError(
                INVALID_PARAMETER_VALUE,
                f'invalid value for parameter "transaction_isolation": "{value}"',
            )
        return iso
    if key in MS_SETTINGS:
        return format_ms(parse_ms(key, value))
    if vd.choices is not None and value.lower() not in vd.choices:
        raise AdapterError(
            INVALID_PARAMETER_VALUE, f'invalid value for parameter "{name}": "{value}"'
        )
    return value


class SessionVars:
    def __init__(self) -> None:
        self._values: dict[str, str] = {}
        #: The session's temporary schema (engine name), searched first; see search_path.
        self.temp_schema: str | None = None
        #: Values from before a `SET LOCAL` (None: was the default), restored when the
        #: transaction ends.
        self._before_local: dict[str, str | None] = {}
        #: What RESET returns to, where it is not the built-in default: the startup packet's
        #: settings and the system's (`ALTER SYSTEM SET`) as the session began.
        self._defaults: dict[str, str] = {}

    def get(self, name: str) -> str:
        key = canonical(name)
        if key not in VARS:
            raise AdapterError(
                UNDEFINED_PARAMETER, f'unrecognized configuration parameter "{name}"'
            )
        value = self._values.get(key)
        if value is None:
            value = self._defaults.get(key, VARS[key].default)
        return value

    def set(self, name: str, value: str | None) -> tuple[str, str] | None:
        """Set (None: reset); returns (reported name, value) if the client must be told."""
        key = canonical(name)
        vd = VARS.get(key)
        if vd is None:
            raise AdapterError(
                UNDEFINED_PARAMETER, f'unrecognized configuration parameter "{name}"'
            )
        if value is None:
            self._values.pop(key, None)
        else:
            self._values[key] = checked_value(name, value)
        if vd.reported:
            return REPORTED_NAMES.get(key, key), self.get(key)
        return None

    def set_default(self, name: str, value: str) -> tuple[str, str] | None:
        """The session's default (what RESET returns to): a startup or system setting."""
        key = canonical(name)
        self._defaults[key] = checked_value(name, value)
        if VARS[key].reported:
            return REPORTED_NAMES.get(key, key), self.get(key)
        return None

    def remember_local(self, name: str) -> None:
        """Before a `SET LOCAL`: `end_transaction` restores the value it has now (the first
        one, if the transaction sets it several times)."""
        key = canonical(name)
        if key not in VARS:
            raise AdapterError(
                UNDEFINED_PARAMETER, f'unrecognized configuration parameter "{name}"'
            )
        self._before_local.setdefault(key, self._values.get(key))

    def forget_local(self, name: str) -> None:
        """A plain SET in the transaction: its value outlives the transaction."""
        self._before_local.pop(canonical(name), None)

    def end_transaction(self) -> list[tuple[str, str | None]]:
        """The (name, value) pairs to restore after `SET LOCAL`s (None: the default)."""
        out = list(self._before_local.items())
        self._before_local.clear()
        return out

    def statement_timeout_ms(self) -> int:
        """0: no timeout."""
        text = self.get("statement_timeout")
        return 0 if text == "0" else parse_ms("statement_timeout", text)

    def search_path(self) -> list[str]:
        """The schemas names resolve in: the session's temporary schema first (as in
        PostgreSQL) unless the path names `pg_temp`/`mz_temp` somewhere else."""
        path = [p.strip().strip('"') for p in self.get("search_path").split(",") if p.strip()]
        # another session's temporary schema is never searched
        path = [p for p in path if not is_temp_schema(p) or p == self.temp_schema]
        if self.temp_schema is None:
            return path
        if any(p in TEMP_SCHEMA_ALIASES for p in path):
            return [self.temp_schema if p in TEMP_SCHEMA_ALIASES else p for p in path]
        return [self.temp_schema, *path]

    def all(self) -> list[tuple[str, str]]:
        return [(k, self.get(k)) for k in sorted(VARS)]

    def reset_all(self) -> None:
        self._values.clear()
        self._before_local.clear()
