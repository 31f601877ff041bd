"""twinstream.storage: sources — load generators, webhooks, PostgreSQL CDC.

A source is one or more persist OUTPUT shards (one per subsource) plus a PROGRESS shard that
binds upstream offsets to timestamps (reclocking). The leader's ingestion appends data and the
new binding in ONE group commit (`adapter/group_commit.py`): same oracle timestamp as table
writes, atomic across shards, fenced like every leader write. A restarted or promoted
ingestion resumes from the durable binding, so nothing is emitted twice or skipped. A read-only
generation follows the output shards like tables and appends nothing.

Start here: `manager.py` (`SourceManager`: the coordinator's hooks), then `ingest.py` (the
ingestion loop), `progress.py` (the remap collection), `generators.py` (COUNTER, AUCTION),
`webhook.py` (the HTTP endpoint), `upsert.py` (ENVELOPE UPSERT: per-key state, its
follower in read-only generations and the handover), `pg_source.py` (PostgreSQL sources over
the CDC library in `postgres/`), `status.py` (`mz_source_statuses`), `create.py` (CREATE
SOURCE / CREATE SECRET -> catalog items). See doc/design/sources.md.
"""
