"""Helpers for tests and benchmarks (throwaway PostgreSQL servers, ...)."""
