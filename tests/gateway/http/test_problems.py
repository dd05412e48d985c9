"""The problem catalog and the mapping of storage errors onto it."""

from __future__ import annotations

import orjson
import pytest

from gateway.http.problems import CATALOG, PROBLEM_BASE, Problem, from_storage_error
from storage import errors
from storage.types import TopicConfig, TopicInfo


def test_catalog_is_well_formed() -> None:
    for slug, kind in CATALOG.items():
        assert kind.slug == slug
        assert kind.uri == PROBLEM_BASE + slug
        assert 400 <= kind.status <= 599
        assert kind.title


@pytest.mark.parametrize(
    ("exc", "slug"),
    [
        (errors.InvalidTopicName("x"), "invalid-topic-name"),
        (errors.TopicNotFound("t"), "unknown-topic"),
        (errors.TopicExists(TopicInfo("t", 2, TopicConfig())), "topic-exists"),
        (errors.PartitionNotFound("t", 9), "unknown-partition"),
        (errors.OffsetOutOfRange(1, 5, 9), "offset-out-of-range"),
        (errors.GroupNotFound("g"), "unknown-group"),
        (errors.CorruptRecord("bad crc"), "corrupt-record"),
        (errors.DiskFull("ENOSPC"), "disk-full"),
        (errors.StorageWriteError("EIO"), "storage-write-error"),
        (errors.StorageClosed("closed"), "storage-unavailable"),
        (errors.StorageUnavailable("no leader"), "storage-unavailable"),
        (errors.StorageError("?"), "internal-error"),
    ],
)
def test_every_storage_error_maps_to_a_type(exc: errors.StorageError, slug: str) -> None:
    assert from_storage_error(exc).type.slug == slug


def test_offset_out_of_range_names_the_log_bounds() -> None:
    response = from_storage_error(errors.OffsetOutOfRange(1, 5, 9)).to_response()
    assert response.status_code == 416
    assert response.media_type == "application/problem+json"
    body = orjson.loads(bytes(response.body))
    assert body["log_start_offset"] == 5
    assert body["end_offset"] == 9
    assert body["offset"] == 1


def test_retriable_errors_say_when_to_retry() -> None:
    response = from_storage_error(errors.StorageUnavailable("no leader")).to_response()
    assert response.headers["retry-after"] == "1"


def test_unknown_slug_is_a_programming_error() -> None:
    with pytest.raises(KeyError):
        Problem("no-such-type", "x")
