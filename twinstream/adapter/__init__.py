"""twinstream.adapter: the coordinator — sessions, the timestamp oracle, DDL, writes, reads.

Start here: `oracle.TimestampOracle` (timestamps shared by every process through consensus).
"""
