"""The compute runtime: dataflows fed from persist shards, written back to persist shards.

    runner = DataflowRunner(client, plan, {"u1": "shard-orders"}, "shard-mv", read_only=False)
    runner.start()                       # hydrate at the as-of, then follow the inputs
    await runner.hydrated.wait()
    runner.write_frontier                # W: output complete below it
    async for batch in runner.subscribe(): ...   # OutputBatch(lower, upper, updates, errors)
    runner.allow_writes()                # a read-only runner starts writing, in place
    await runner.stop()

`runner.py` is the driver (as-of selection, leased read holds, hydration, listens, stepping);
`sink.py` the self-correcting persist sink several replicas may run against one shard;
`correction.py` its consolidated buffer. A library: the replica process and the SQL/DDL
integration wrap it. See doc/design/compute.md ("Runtime and sinks").
"""

from twinstream.compute.runtime.correction import Correction
from twinstream.compute.runtime.runner import (
    OUTPUT,
    DataflowRunner,
    OutputBatch,
    Subscription,
    plan_inputs,
)
from twinstream.compute.runtime.sink import PersistSink, SinkStats

__all__ = [
    "OUTPUT",
    "Correction",
    "DataflowRunner",
    "OutputBatch",
    "PersistSink",
    "SinkStats",
    "Subscription",
    "plan_inputs",
]
