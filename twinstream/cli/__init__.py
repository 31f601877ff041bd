"""twinstream.cli: the `twinstream` command (a typer app in `main.py`).

Commands: ``twinstream bench NAME [--json]`` runs a benchmark from the registry in `bench.py`
(implementations live in the repository's ``benchmarks/`` directory). With ``--json`` the result
is exactly one JSON line on stdout and everything else goes to stderr.
"""
