"""Catalog errors other than fences (see fence.py)."""

from __future__ import annotations


class CatalogError(Exception):
    """Base class of catalog errors."""


class NotWritable(CatalogError):
    """A write to a catalog opened read-only, or a non-writable open of an empty catalog."""


class IncompatibleCatalogVersion(CatalogError):
    """The durable catalog_version is newer than this binary understands."""


class UnknownCatalogData(CatalogError):
    """The catalog holds kinds or values this binary cannot decode (written by a newer one)."""


class CatalogOutOfSync(CatalogError):
    """The catalog changed under a writer without a fence: two writers, a bug."""


class UniquenessViolation(CatalogError):
    """A transaction would insert an existing key or delete a missing one."""
