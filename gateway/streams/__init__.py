"""Reading the log out to clients: `log_stream` (a subscriber's read loop over its
partitions), `formats` (SSE and NDJSON framing), `response` (the streaming HTTP response),
`cursor` (the resumable SSE event id), `positions` (where a stream starts), `render` (a
record's JSON) and `group_stream` (a stream that is a consumer-group member)."""
