"""The produce path's one call into schemas: check a parsed request against the topic's
newest schema version and stamp each record with it, before anything is written."""

from __future__ import annotations

from gateway.context import Context
from gateway.produce.parse import ProduceBatch
from gateway.schemas.registry import enforce


async def enforce_schema(ctx: Context, topic: str, batch: ProduceBatch, ndjson: bool) -> None:
    """Replace the batch's records by their stamped copies, or raise the 422 that names
    each value that does not match (pointers into the request: /records/7/value/amount, or
    /7/value/amount for NDJSON lines). A topic without a schema is left as it is."""
    compiled = await ctx.schemas.active(ctx.backend, topic)
    if compiled is not None:
        batch.records = enforce(compiled, topic, batch.records, "/" if ndjson else "/records/")
