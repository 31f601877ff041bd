"""Benchmarks, run with ``twinstream bench NAME [--json]`` (see README.md here).

The modules are loaded by file path by `twinstream.cli.bench`; each has ``async run(opts)``.
"""
