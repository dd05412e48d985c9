"""Kafka's classic consumer groups: the pure state machine of one group (`classic`), the
asyncio service the group APIs use (`service.KafkaGroups`), and the consumer protocol's
subscription and assignment bytes (`consumer_protocol`)."""
