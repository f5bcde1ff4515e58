"""States spelled once (service.db.states) and timestamps that read back as aware UTC everywhere."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import DateTime, select, text

from service.db import (
    FINISHED_RUN_STATES,
    Base,
    RunState,
    StudyStatus,
    Token,
    User,
    UTCDateTime,
    WorkerStatus,
)
from service.store import Store
from tests.service.conftest import add_trial, new_person, spec

PLUS_TWO = timezone(timedelta(hours=2))


# -- timestamps --------------------------------------------------------------------------------
def test_every_timestamp_column_is_utc() -> None:
    timestamps = [
        f"{table.name}.{column.name}"
        for table in Base.metadata.tables.values()
        for column in table.columns
        if isinstance(column.type, DateTime | UTCDateTime)
    ]
    assert len(timestamps) > 10
    not_utc = [
        f"{table.name}.{column.name}"
        for table in Base.metadata.tables.values()
        for column in table.columns
        if isinstance(column.type, DateTime) and not isinstance(column.type, UTCDateTime)
    ]
    assert not_utc == []


@pytest.mark.parametrize(
    "written",
    [
        datetime(2024, 3, 1, 12, 30, 5, 123456, tzinfo=PLUS_TWO),  # another zone: converted
        datetime(2024, 3, 1, 10, 30, 5, 123456),  # naive: taken as UTC
        datetime(2024, 3, 1, 10, 30, 5, 123456, tzinfo=timezone.utc),
    ],
    ids=["plus-two", "naive", "utc"],
)
def test_timestamps_read_back_as_the_same_instant_in_utc(store: Store, written: datetime) -> None:
    """On both databases: aware, UTC, the instant that was written (SQLite keeps no offset)."""
    user = new_person(store, "clock")
    with store.db.session() as session:
        row = session.get(User, user.info.id)
        assert row is not None
        row.created_at = written
    with store.db.session() as session:
        read = session.scalar(select(User.created_at).where(User.id == user.info.id))
        listed = [u.created_at for u in store.users.list() if u.id == user.info.id]
    expected = datetime(2024, 3, 1, 10, 30, 5, 123456, tzinfo=timezone.utc)
    for moment in (read, *listed):
        assert moment is not None
        assert moment.tzinfo is timezone.utc and moment == expected


def test_token_use_is_recorded_against_aware_timestamps(store: Store) -> None:
    """authenticate() compares last_used_at with now on both databases (no repair needed)."""
    person = new_person(store, "token")
    with store.db.session() as session:
        token = session.scalars(select(Token).where(Token.user_id == person.info.id)).one()
        token.last_used_at = datetime(2000, 1, 1, tzinfo=PLUS_TWO)
    assert store.users.authenticate(person.token) is not None
    (info,) = store.users.tokens(person.info.id)
    assert info.last_used_at is not None and info.last_used_at.tzinfo is timezone.utc
    assert info.last_used_at > datetime(2020, 1, 1, tzinfo=timezone.utc)  # refreshed


# -- states --------------------------------------------------------------------------------------
def test_states_are_their_values_wherever_they_are_used() -> None:
    assert [s.value for s in RunState] == [
        "queued", "running", "complete", "pruned", "failed", "cancelled"
    ]  # fmt: skip
    assert [s.value for s in StudyStatus] == [
        "queued", "running", "paused", "completed", "cancelled", "failed"
    ]  # fmt: skip
    assert [s.value for s in WorkerStatus] == ["idle", "busy", "stopped", "lost"]
    assert RunState.COMPLETE == "complete" and str(RunState.COMPLETE) == "complete"
    assert f"{StudyStatus.PAUSED}" == "paused" and {"lost": 1}[WorkerStatus.LOST] == 1
    assert "complete" in FINISHED_RUN_STATES and "running" not in FINISHED_RUN_STATES


def _query_enum(document: dict[str, Any], path: str, name: str) -> list[str]:
    parameters = document["paths"][path]["get"]["parameters"]
    schema = next(p for p in parameters if p["name"] == name)["schema"]
    return list(schema["items"]["enum"])


def test_the_api_documents_the_enums_values(client: Any) -> None:
    document = client.get("/api/v1/openapi.json").json()
    assert _query_enum(document, "/api/v1/studies", "status") == [s.value for s in StudyStatus]
    trials = "/api/v1/studies/{study_id}/trials"
    assert _query_enum(document, trials, "state") == [s.value for s in RunState]
    schemas = document["components"]["schemas"]
    status = schemas["StudyPublic"]["properties"]["status"]["description"]
    assert status == "queued | running | paused | completed | cancelled | failed"
    assert schemas["WorkerPublic"]["properties"]["status"]["description"] == (
        "idle | busy | stopped | lost"
    )


def test_rows_hold_the_plain_values(store: Store) -> None:
    """Members written through the store land as the strings the columns always held."""
    person = new_person(store, "states")
    study, _ = store.studies.create(person.info, spec())
    add_trial(store, study.id, state="running", worker_id="w-states")
    store.workers.heartbeat("w-states")
    store.studies.transition(study.id, "pause")
    with store.db.session() as session:
        raw = session.execute(
            text(
                "SELECT s.status, r.state FROM as_studies s JOIN as_runs r ON r.study_id = s.id "
                "WHERE s.id = :id"
            ),
            {"id": study.id},
        ).one()
        worker = session.execute(
            text("SELECT status FROM as_workers WHERE id = 'w-states'")
        ).scalar_one_or_none()
    assert tuple(raw) == ("paused", "running")
    assert worker in (None, "idle")
