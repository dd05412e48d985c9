"""The Kafka APIs this broker serves, one module each (see gateway.kafka.dispatch)."""

from __future__ import annotations

from gateway.kafka.apis import (
    api_versions,
    create_topics,
    delete_topics,
    describe_groups,
    fetch,
    find_coordinator,
    heartbeat,
    init_producer_id,
    join_group,
    leave_group,
    list_groups,
    list_offsets,
    metadata,
    offset_commit,
    offset_fetch,
    produce,
    sasl_authenticate,
    sasl_handshake,
    sync_group,
)
from gateway.kafka.dispatch import Api

APIS: tuple[Api, ...] = (
    api_versions.API,
    metadata.API,
    produce.API,
    fetch.API,
    list_offsets.API,
    create_topics.API,
    delete_topics.API,
    init_producer_id.API,
    find_coordinator.API,
    join_group.API,
    sync_group.API,
    heartbeat.API,
    leave_group.API,
    offset_commit.API,
    offset_fetch.API,
    describe_groups.API,
    list_groups.API,
    sasl_handshake.API,
    sasl_authenticate.API,
)
