"""The deferred buffer's queue and flush bookkeeping: what waits, claims, lease take-over, state moves.

Every write is one ledger transaction with a compare-and-set on the state it moves from, so
two flushers never claim the same call and a flusher whose lease was taken over cannot mark a
flush it no longer owns (see ``deferred.py`` for the whole contract).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import Connection, func, insert, select, update

from batch_pipelines.core.flush import FlushPart, WaitingCall, WaitingGroup
from batch_pipelines.ledger.database import Database
from batch_pipelines.ledger.deferred_rows import FlushRow, aware, chunks, flush_fields, flush_row, flush_values
from batch_pipelines.ledger.deferred_schema import (
    CALL_CLAIMED,
    CALL_FLUSHED,
    CALL_QUEUED,
    FLUSH_CLAIMED,
    FLUSH_COLLECTED,
    FLUSH_SUBMITTED,
    deferred_calls,
    deferred_flushes,
)


class FlushClaims:
    """The queue side of ``DeferredBuffer``: which calls wait, and moving them into flushes."""

    _db: Database
    _clock: Callable[[], datetime]

    def waiting_groups(self) -> list[WaitingGroup]:
        c = deferred_calls
        query = (
            select(
                c.c.provider, c.c.model, c.c.endpoint, func.count(), func.min(c.c.created_at), func.min(c.c.deadline)
            )
            .where(c.c.state == CALL_QUEUED)
            .group_by(c.c.provider, c.c.model, c.c.endpoint)
            .order_by(c.c.provider, c.c.model, c.c.endpoint)
        )
        with self._db.reading() as connection:
            rows = connection.execute(query).all()
        return [
            WaitingGroup(
                provider=r[0],
                model=r[1],
                endpoint=r[2],
                waiting=int(r[3]),
                oldest=aware(r[4]),
                earliest_deadline=None if r[5] is None else aware(r[5]),
            )
            for r in rows
        ]

    def depth(self) -> tuple[int, datetime | None]:
        """How many calls wait, and since when the oldest has."""
        c = deferred_calls
        with self._db.reading() as connection:
            count, oldest = connection.execute(
                select(func.count(), func.min(c.c.created_at)).where(c.c.state == CALL_QUEUED)
            ).one()
        return int(count), None if oldest is None else aware(oldest)

    def claim(
        self,
        group: WaitingGroup,
        *,
        worker: str,
        limit: int,
        plan: Callable[[list[WaitingCall]], list[FlushPart]],
        only: Sequence[str] | None = None,
    ) -> list[FlushRow]:
        """Take up to ``limit`` of the group's waiting calls (oldest first) into new flushes, one per part.

        ``only`` restricts the claim to these call ids (a call that cannot wait for its group).
        """
        c = deferred_calls

        def work(connection: Connection) -> list[FlushRow]:
            now = self._clock()
            query = (
                select(c.c.call_id, c.c.deadline)
                .where(
                    c.c.state == CALL_QUEUED,
                    c.c.provider == group.provider,
                    c.c.model == group.model,
                    c.c.endpoint == group.endpoint,
                )
                .order_by(c.c.created_at, c.c.call_id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            if only is not None:
                query = query.where(c.c.call_id.in_(list(only)))
            waiting = [WaitingCall(r.call_id, r.deadline) for r in connection.execute(query)]
            if not waiting:
                return []
            flushes: list[FlushRow] = []
            for part in plan(waiting):
                flush = FlushRow(
                    flush_id=f"dfl-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}",
                    provider=group.provider,
                    model=group.model,
                    endpoint=group.endpoint,
                    lane=part.lane,
                    state=FLUSH_CLAIMED,
                    worker=worker,
                    claimed_at=now,
                    call_count=len(part.call_ids),
                    earliest_deadline=part.earliest_deadline,
                    reason=part.reason,
                    created_at=now,
                )
                connection.execute(insert(deferred_flushes).values(**flush_values(flush, now)))
                claimed = 0
                for chunk in chunks(part.call_ids):
                    claimed += connection.execute(
                        update(c)
                        .where(c.c.call_id.in_(chunk), c.c.state == CALL_QUEUED)
                        .values(state=CALL_CLAIMED, flush_id=flush.flush_id, updated_at=now)
                    ).rowcount
                    for call_id in chunk:
                        if call_id in part.warnings:
                            connection.execute(
                                update(c).where(c.c.call_id == call_id).values(warning=part.warnings[call_id])
                            )
                if claimed != len(part.call_ids):
                    # Another flusher got some of them first: roll the whole claim back.
                    raise _LostRace(f"claimed {claimed} of {len(part.call_ids)} calls for {flush.flush_id}")
                flushes.append(flush)
            return flushes

        try:
            return self._db.write(work)
        except _LostRace:
            return []

    def take_over_stale(self, *, worker: str, lease: timedelta) -> list[FlushRow]:
        """Flushes claimed longer ago than ``lease`` and never submitted, now owned by ``worker``."""
        f = deferred_flushes
        now = self._clock()
        with self._db.reading() as connection:
            stale = connection.execute(
                select(f).where(f.c.state == FLUSH_CLAIMED, f.c.claimed_at <= now - lease).order_by(f.c.created_at)
            ).all()
        taken: list[FlushRow] = []
        for row in stale:
            old = flush_row(row._mapping)

            def work(connection: Connection, old: FlushRow = old) -> int:
                return connection.execute(
                    update(f)
                    .where(
                        f.c.flush_id == old.flush_id,
                        f.c.state == FLUSH_CLAIMED,
                        f.c.worker == old.worker,
                        f.c.claimed_at == old.claimed_at,
                    )
                    .values(worker=worker, claimed_at=now, updated_at=now)
                ).rowcount

            if self._db.write(work):
                taken.append(FlushRow(**{**flush_fields(old), "worker": worker, "claimed_at": now}))
        return taken

    def mark_submitted(self, flush_id: str, *, worker: str) -> bool:
        """The flush's batch exists (or its sync run is recorded): its calls leave the buffer."""
        f, c = deferred_flushes, deferred_calls

        def work(connection: Connection) -> bool:
            now = self._clock()
            moved = connection.execute(
                update(f)
                .where(f.c.flush_id == flush_id, f.c.state == FLUSH_CLAIMED, f.c.worker == worker)
                .values(state=FLUSH_SUBMITTED, updated_at=now)
            ).rowcount
            if moved:
                connection.execute(
                    update(c)
                    .where(c.c.flush_id == flush_id, c.c.state == CALL_CLAIMED)
                    .values(state=CALL_FLUSHED, updated_at=now)
                )
            return bool(moved)

        return self._db.write(work)

    def mark_collected(self, flush_id: str) -> bool:
        f = deferred_flushes

        def work(connection: Connection) -> bool:
            return bool(
                connection.execute(
                    update(f)
                    .where(f.c.flush_id == flush_id, f.c.state == FLUSH_SUBMITTED)
                    .values(state=FLUSH_COLLECTED, updated_at=self._clock())
                ).rowcount
            )

        return self._db.write(work)


class _LostRace(Exception):
    """Another flusher claimed some of the same calls between our read and our update."""
