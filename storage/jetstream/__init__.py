"""The JetStream backend (the `jetstream` extra, nats-py): storage.backend.Backend over a
NATS JetStream cluster.

    codec.py    names and record layout in JetStream (pure functions, no I/O)
    api.py      raw JetStream API requests over one NATS connection
    kv.py       key-value buckets over that API (KvBucket; KeyValue for the gateway)
    notify.py   waiting for records: per-partition notifiers on RePublish subjects
    backend.py  JetStreamBackend, built from the above
"""

from storage.jetstream.backend import JetStreamBackend
from storage.jetstream.kv import KeyValue, KvChange, RevisionConflict

__all__ = ["JetStreamBackend", "KeyValue", "KvChange", "RevisionConflict"]
