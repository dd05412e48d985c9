"""Idempotent appends on JetStream: the produce tag as Nats-Msg-Id, and finding the first copy.

A tagged append (storage.types.ProduceTag: a request's Idempotency-Key and fingerprint)
puts on its last message (the commit of an ADR-50 batch, or the only message)

    Nats-Msg-Id       hex of the tag's key: the stream refuses a second message with the
                      same id within its duplicate window, whichever gateway sends it
    Logway-Request    hex of the request's fingerprint, to tell a retry from a reused key

so the stream stores the append once, atomically with the records (it is one of them).
A duplicate single message is acknowledged with the first one's sequence; a duplicate
batch is refused (10201) without it, so `find_tagged` walks the stream back from its end,
1000 messages a read, for the message with that id, no further back than the window.
"""

from __future__ import annotations

from typing import Any

from nats.aio.msg import Msg

from storage.jetstream.api import JetStreamApi
from storage.jetstream.codec import parse_time_ms
from storage.types import ProduceTag

MSG_ID_HEADER = "Nats-Msg-Id"
REQUEST_HEADER = "Logway-Request"
SEARCH_BATCH = 1000


def tag_headers(tag: ProduceTag) -> dict[str, str]:
    """The headers the last message of a tagged append carries."""
    return {MSG_ID_HEADER: tag.key.hex(), REQUEST_HEADER: tag.request.hex()}


def is_request(headers: dict[str, str] | None, tag: ProduceTag) -> bool:
    """Whether a stored message with the tag's key was written for the tag's request."""
    return (headers or {}).get(REQUEST_HEADER) == tag.request.hex()


async def find_tagged(
    js: JetStreamApi, stream: str, state: dict[str, Any], tag: ProduceTag, since_ms: int
) -> Msg | None:
    """The newest message of `stream` with the tag's key as its Nats-Msg-Id, written at or
    after `since_ms`; `state` is the stream's state (first_seq, last_seq)."""
    msg_id = tag.key.hex()
    first_seq = max(1, int(state.get("first_seq", 1)))
    end = int(state.get("last_seq", 0))
    while end >= first_seq:
        start = max(first_seq, end - SEARCH_BATCH + 1)
        found: Msg | None = None
        oldest_ms: int | None = None
        seq = start
        while seq <= end:  # a read may stop short of `end` (its byte limit): read on
            messages = await js.direct_get(stream, {"seq": seq, "batch": end - seq + 1})
            if not messages:
                break
            for msg in messages:
                headers = msg.headers or {}
                if oldest_ms is None:
                    oldest_ms = parse_time_ms(headers["Nats-Time-Stamp"])
                if headers.get(MSG_ID_HEADER) == msg_id:
                    found = msg
            seq = int((messages[-1].headers or {})["Nats-Sequence"]) + 1
        if found is not None:
            return found
        if oldest_ms is None or oldest_ms < since_ms:
            return None
        end = start - 1
    return None
