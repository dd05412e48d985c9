"""Consumer groups: the pure coordinator (`coordinator`, `assignors`), the asyncio service
the routes use (`service.ConsumerGroups`), members' handles (`membership`), and the stores
that decide membership in this process (`memory_store`) or across gateways
(`jetstream_store`, imported only with the jetstream backend)."""
