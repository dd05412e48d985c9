"""Consumer-group churn: many members joining and leaving in bursts, time until settled.

Each member is a task that behaves like a group stream: it heartbeats and follows its
assignment with `await membership.changed()`. A burst is a set of concurrent joins and
leaves (or members going silent until their session expires). The group is settled when
the generation stops changing, every live member has been handed the current generation,
and their partitions cover the topic exactly once. Runs the adapter over a real
EmbeddedBackend in a temporary directory.

    .venv/bin/python -m bench.groups --members 100 --partitions 128 --assignor sticky
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from gateway.backends import membership_store
from gateway.groups.assignors import ASSIGNORS, DEFAULT_ASSIGNOR
from gateway.groups.errors import UnknownGroup, UnknownMember
from gateway.groups.membership import Membership
from gateway.groups.service import ConsumerGroups
from storage.embedded import EmbeddedBackend
from storage.types import Durability, DurabilityPolicy, TopicConfig

GROUP = "bench"
TOPIC = "bench-topic"


@dataclass
class Member:
    membership: Membership
    task: asyncio.Task[None]


@dataclass(frozen=True)
class BurstResult:
    name: str
    settle_ms: float
    generations: int
    moved: int  # partitions whose owner changed, counting those of departed members


class Swarm:
    def __init__(self, groups: ConsumerGroups, heartbeat_s: float) -> None:
        self.groups = groups
        self.heartbeat_s = heartbeat_s
        self.members: dict[str, Member] = {}
        self.silent: set[str] = set()
        self.progress = asyncio.Event()  # set whenever a member takes an assignment or goes

    async def _follow(self, membership: Membership) -> None:
        """What a group stream does: heartbeat, and take each new assignment."""
        try:
            while True:
                if membership.member_id not in self.silent:
                    membership.heartbeat()
                try:
                    async with asyncio.timeout(self.heartbeat_s):
                        await membership.changed()
                except TimeoutError:
                    continue
                self.progress.set()
        except UnknownMember:
            self.progress.set()

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            self.progress.clear()
            await self.progress.wait()

    async def join(self) -> None:
        membership = await self.groups.join(GROUP, TOPIC)
        task = asyncio.create_task(self._follow(membership))
        self.members[membership.member_id] = Member(membership, task)

    async def leave(self, member_id: str) -> None:
        member = self.members.pop(member_id)
        await member.membership.leave()
        await member.task

    def owners(self) -> dict[int, str]:
        return {
            p: member_id
            for member_id, member in self.members.items()
            if member.membership.active
            for p in member.membership.assignment.partitions
        }

    def settled(self, partitions_count: int) -> bool:
        live = [m.membership for m in self.members.values() if m.membership.active]
        if not live:
            return True
        generation = live[0].generation
        if any(m.generation != generation or m.assignment.generation != generation for m in live):
            return False
        owned = sorted(p for m in live for p in m.assignment.partitions)
        return owned == list(range(partitions_count))


async def _burst(
    name: str,
    swarm: Swarm,
    partitions_count: int,
    actions: list[Callable[[], Awaitable[None]]],
) -> BurstResult:
    before_owners = swarm.owners()
    before_generation = await _generation(swarm.groups)
    started = time.perf_counter()
    await asyncio.gather(*(action() for action in actions))
    await swarm.wait_until(lambda: swarm.settled(partitions_count))
    settle_ms = (time.perf_counter() - started) * 1000
    for member_id in [m for m, member in swarm.members.items() if not member.membership.active]:
        await swarm.members.pop(member_id).task
    after = swarm.owners()
    moved = sum(1 for p, owner in before_owners.items() if after.get(p) != owner)
    generations = await _generation(swarm.groups) - before_generation
    return BurstResult(name, settle_ms, generations, moved)


async def _generation(groups: ConsumerGroups) -> int:
    try:
        return (await groups.describe(GROUP)).generation
    except UnknownGroup:
        return 0


async def _expiry_burst(swarm: Swarm, partitions_count: int, victims: list[str]) -> BurstResult:
    """Members stop heartbeating without leaving; timed from that moment, so the figure
    includes the session timeout (plus up to one heartbeat interval)."""
    before_owners = swarm.owners()
    before_generation = await _generation(swarm.groups)
    swarm.silent.update(victims)
    silenced = time.perf_counter()
    await swarm.wait_until(
        lambda: (
            not any(swarm.members[v].membership.active for v in victims)
            and swarm.settled(partitions_count)
        )
    )
    settle_ms = (time.perf_counter() - silenced) * 1000
    for member_id in victims:
        await swarm.members.pop(member_id).task
        swarm.silent.discard(member_id)
    after = swarm.owners()
    moved = sum(1 for p, owner in before_owners.items() if after.get(p) != owner)
    generations = await _generation(swarm.groups) - before_generation
    return BurstResult(f"{len(victims)} expire silently", settle_ms, generations, moved)


async def run(
    members: int, partitions: int, rounds: int, assignor: str, session_timeout_s: float
) -> list[list[BurstResult]]:
    rng = random.Random(42)
    all_rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        backend = await EmbeddedBackend.open(Path(tmp), DurabilityPolicy(Durability.ALWAYS))
        await backend.create_topic(TOPIC, partitions, TopicConfig())
        groups = ConsumerGroups(
            backend,
            membership_store(backend),
            session_timeout_s=session_timeout_s,
            assignor=assignor,
        )
        swarm = Swarm(groups, heartbeat_s=session_timeout_s / 5)
        try:
            for _ in range(rounds):
                results = [
                    await _burst(f"{members} join", swarm, partitions, [swarm.join] * members)
                ]
                half = members // 2
                leaving = rng.sample(sorted(swarm.members), half)
                results.append(
                    await _burst(
                        f"{half} leave + {half} join",
                        swarm,
                        partitions,
                        [*(partial(swarm.leave, m) for m in leaving), *[swarm.join] * half],
                    )
                )
                victims = rng.sample(sorted(swarm.members), members // 10)
                results.append(await _expiry_burst(swarm, partitions, victims))
                results.append(
                    await _burst(
                        f"{len(swarm.members)} leave",
                        swarm,
                        partitions,
                        [partial(swarm.leave, m) for m in sorted(swarm.members)],
                    )
                )
                all_rounds.append(results)
        finally:
            await groups.close()
            await backend.close()
    return all_rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--assignor", choices=sorted(ASSIGNORS), default=DEFAULT_ASSIGNOR.name)
    parser.add_argument("--session-timeout-s", type=float, default=1.0)
    args = parser.parse_args()
    rounds = asyncio.run(
        run(args.members, args.partitions, args.rounds, args.assignor, args.session_timeout_s)
    )
    print(
        f"assignor={args.assignor} members={args.members} partitions={args.partitions}"
        f" rounds={args.rounds} session_timeout_s={args.session_timeout_s}"
    )
    print("| burst | settle ms (median) | settle ms (max) | generations | partitions moved |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for index, first in enumerate(rounds[0]):
        column = [r[index] for r in rounds]
        print(
            f"| {first.name} | {statistics.median(r.settle_ms for r in column):.1f}"
            f" | {max(r.settle_ms for r in column):.1f}"
            f" | {statistics.median(r.generations for r in column):.0f}"
            f" | {statistics.median(r.moved for r in column):.0f} |"
        )


if __name__ == "__main__":
    main()
