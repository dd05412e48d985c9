"""Writing records: `parse` (JSON and NDJSON bodies into validated records), `partitioner`
(Kafka's murmur2 key placement and round-robin), `write` (one append per partition, all or
nothing) and `idempotency` (Idempotency-Key)."""
