"""Consumer groups coordinated through JetStream by two "gateways" (two ConsumerGroups,
each on its own connection) on the real 3-node cluster: the group's state lives only in
the KV bucket, so members on both gateways share one assignment per generation."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import pytest

from gateway.backends import membership_store
from gateway.groups.errors import FencedGeneration, UnknownMember
from gateway.groups.membership import Membership
from gateway.groups.service import ConsumerGroups
from storage.jetstream import JetStreamBackend
from storage.types import TopicConfig, TopicPartition
from tests.nats_cluster import NatsCluster, fresh_namespace

pytestmark = [pytest.mark.nats, pytest.mark.timeout(60)]

SESSION_TIMEOUT_S = 2.0
WAIT_S = 20.0  # a guard against hanging only; nothing asserts a duration
PARTITIONS = 6


class Gateways:
    def __init__(self, cluster: NatsCluster) -> None:
        self.cluster = cluster
        self.namespace = fresh_namespace()
        self.backends: list[JetStreamBackend] = []
        self.groups: list[ConsumerGroups] = []

    async def start(self) -> ConsumerGroups:
        backend = await JetStreamBackend.open(
            self.cluster.urls, replicas=3, namespace=self.namespace
        )
        groups = ConsumerGroups(
            backend, membership_store(backend), session_timeout_s=SESSION_TIMEOUT_S
        )
        self.backends.append(backend)
        self.groups.append(groups)
        return groups

    async def stop(self) -> None:
        for groups in self.groups:
            await groups.close()
        for backend in self.backends:
            await backend.close()


@pytest.fixture
async def gateways(nats_cluster: NatsCluster) -> AsyncIterator[Gateways]:
    gws = Gateways(nats_cluster)
    try:
        async with heartbeating(gws.groups):
            yield gws
    finally:
        await gws.stop()


@contextlib.asynccontextmanager
async def heartbeating(groups: Sequence[ConsumerGroups]) -> AsyncIterator[None]:
    """Heartbeat every live member of `groups` (what a stream does after each write)."""

    async def beat() -> None:
        while True:
            for each in groups:
                for g in list(each._groups.values()):
                    for member in list(g.members.values()):
                        with contextlib.suppress(UnknownMember):
                            member.heartbeat()
            await asyncio.sleep(SESSION_TIMEOUT_S / 6)

    task = asyncio.ensure_future(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def settled(members: Sequence[Membership]) -> int:
    """Wait until every member holds the same generation and together they own each
    partition exactly once; return that generation."""
    async with asyncio.timeout(WAIT_S):
        while True:
            generations = {m.generation for m in members}
            owned = sorted(p for m in members for p in m.partitions)
            if len(generations) == 1 and owned == list(range(PARTITIONS)):
                for m in members:  # hand the assignment out, as a stream does
                    if m.assignment.generation != m.generation:
                        await m.changed()
                return generations.pop()
            waits = [asyncio.ensure_future(m.changed()) for m in members]
            _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)


async def test_members_on_two_gateways_share_one_assignment(gateways: Gateways) -> None:
    a, b = await gateways.start(), await gateways.start()
    await gateways.backends[0].create_topic("orders", PARTITIONS, TopicConfig())
    a1 = await a.join("g", "orders")
    b1 = await b.join("g", "orders")
    a2 = await a.join("g", "orders")
    members = [a1, b1, a2]
    generation = await settled(members)
    assert all(m.partitions for m in members), [m.partitions for m in members]
    description_a, description_b = await a.describe("g"), await b.describe("g")
    assert description_a.generation == description_b.generation == generation
    assert description_a.members == description_b.members

    # A member leaving on one gateway: the others (on both) cover its partitions.
    await a2.leave()
    later = await settled([a1, b1])
    assert later > generation
    assert not a2.active


async def test_commits_are_fenced_across_gateways(gateways: Gateways) -> None:
    a, b = await gateways.start(), await gateways.start()
    backend = gateways.backends[0]
    await backend.create_topic("orders", PARTITIONS, TopicConfig())
    a1 = await a.join("g", "orders")
    old = await settled([a1])
    partition = a1.partitions[0]
    await a1.commit(old, {partition: 0})
    b1 = await b.join("g", "orders")  # a new generation, decided on the other gateway
    new = await settled([a1, b1])
    assert new > old
    with pytest.raises(FencedGeneration):
        await a.commit("g", a1.member_id, old, {_tp(partition): 0})
    owned = b1.partitions[0]
    await b1.commit(new, {owned: 0})
    with pytest.raises(UnknownMember):
        await b.commit("g", "nobody", new, {_tp(owned): 0})


async def test_a_dead_gateways_members_expire_and_survivors_take_over(
    gateways: Gateways,
) -> None:
    a, b = await gateways.start(), await gateways.start()
    await gateways.backends[0].create_topic("orders", PARTITIONS, TopicConfig())
    a1 = await a.join("g", "orders")
    b1 = await b.join("g", "orders")
    b2 = await b.join("g", "orders")
    before = await settled([a1, b1, b2])
    # Gateway b dies: its connection goes, so its members' heartbeats stop.
    await gateways.backends[1].close()
    after = await settled([a1])
    assert after > before
    assert a1.partitions == tuple(range(PARTITIONS))
    description = await a.describe("g")
    assert [m.member_id for m in description.members] == [a1.member_id]


def _tp(partition: int) -> TopicPartition:
    return TopicPartition("orders", partition)
