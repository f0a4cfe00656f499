-- mapping: find a HAVIP by its address in its VPC with one index scan.
-- The forwarder answers this from memory; `havip bench lookups` asks PostgreSQL the same
-- question to compare (docs/benchmarks.md), and without this index each lookup read the
-- whole table. Not unique: a Deleted HAVIP keeps its address while a new one may take it.
CREATE INDEX havips_vpc_ip ON havips (vpc_id, ip_address);
