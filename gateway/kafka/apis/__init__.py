"""The Kafka APIs this broker serves, one module each (see gateway.kafka.dispatch)."""

from __future__ import annotations

from gateway.kafka.apis import (
    api_versions,
    create_topics,
    delete_topics,
    fetch,
    find_coordinator,
    init_producer_id,
    list_offsets,
    metadata,
    produce,
    sasl_authenticate,
    sasl_handshake,
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
    sasl_handshake.API,
    sasl_authenticate.API,
)
