"""twinstream.catalog: the durable catalog on a persist shard, fence tokens and migrations.

Start here: `DurableCatalog.open(client, OpenMode.WRITABLE, deploy_generation=G, clock=...)`;
`read_catalog_generation(client)` tells preflight which generation holds the catalog without
opening it. See doc/design/catalog-and-fencing.md.
"""

from twinstream.catalog.durable import (
    CATALOG_SHARD,
    DurableCatalog,
    OpenMode,
    read_catalog_generation,
)
from twinstream.catalog.errors import (
    CatalogError,
    CatalogOutOfSync,
    IncompatibleCatalogVersion,
    NotWritable,
    UniquenessViolation,
    UnknownCatalogData,
)
from twinstream.catalog.fence import (
    DeployGenerationFenced,
    EpochFenced,
    FenceError,
    FenceToken,
    exit_if_fenced,
)
from twinstream.catalog.migrations import DEFAULT_MIGRATIONS, Migration, newest_version
from twinstream.catalog.state import CatalogChange, CatalogState
from twinstream.catalog.txn import Transaction

__all__ = [
    "CATALOG_SHARD",
    "DEFAULT_MIGRATIONS",
    "CatalogChange",
    "CatalogError",
    "CatalogOutOfSync",
    "CatalogState",
    "DeployGenerationFenced",
    "DurableCatalog",
    "EpochFenced",
    "FenceError",
    "FenceToken",
    "IncompatibleCatalogVersion",
    "Migration",
    "NotWritable",
    "OpenMode",
    "Transaction",
    "UniquenessViolation",
    "UnknownCatalogData",
    "exit_if_fenced",
    "newest_version",
    "read_catalog_generation",
]
