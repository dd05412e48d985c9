"""The Kafka-protocol listener: Kafka clients on the gateway's own topics, offsets and
backend (`logway serve --kafka-port`, the `kafka` extra). docs/kafka.md has the design;
`dispatch` says how an API is added.

Imported only when a Kafka port is configured (gateway.app), so the plain install never
loads its extra's libraries.
"""
