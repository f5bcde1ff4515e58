"""Request and response schemas of the REST API (one family per resource; tables never leave)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from search_space.spec.limits import MAX_SEEDS
from service.db import CampaignStatus, RunState, StudyStatus, WorkerStatus
from service.db.states import described
from service.evidence import VERDICTS
from service.store.confirm import MAX_CONFIRM_TOP


def _finite(value: float | None) -> float | None:
    # JSON has no NaN/Infinity: a diverged metric is reported as null rather than breaking the body.
    return value if value is None or math.isfinite(value) else None


VERDICT_WORDS = "one of: " + ", ".join(VERDICTS) + " (docs/evidence.md)"

Metric = Annotated[float | None, PlainSerializer(_finite, return_type=float | None)]
Params = dict[str, Any]

T = TypeVar("T")

if TYPE_CHECKING:
    StudyStatusName = str
    RunStateName = str
else:
    # Query parameters take the enums' values as Literals: the OpenAPI document shows them
    # inline as before, and they are spelled out only in service.db.states.
    StudyStatusName = Literal[tuple(status.value for status in StudyStatus)]
    RunStateName = Literal[tuple(state.value for state in RunState)]


class Out(BaseModel):
    """Base of response schemas: built from domain objects or mappings."""

    model_config = ConfigDict(from_attributes=True)


# -- errors ------------------------------------------------------------------------------------
class FieldError(BaseModel):
    """One invalid field: where (dotted path, e.g. `activations.smu.alpha`) and why."""

    loc: str
    msg: str


class ErrorOut(BaseModel):
    """Every error response: what was wrong, and the request id to quote."""

    detail: str | list[FieldError]
    request_id: str


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the given error status codes."""
    described = {
        400: "the body is not valid JSON",
        401: "missing or invalid token",
        403: "not allowed for this user",
        404: "no such object",
        409: "conflicts with the object's current state",
        413: "the request body is too large",
        415: "the body's Content-Type is not one this route reads",
        422: "invalid request; `detail` lists the fields",
        503: "not ready",
    }
    return {code: {"model": ErrorOut, "description": described[code]} for code in codes}


# -- health --------------------------------------------------------------------------------------
class HealthOut(BaseModel):
    """The process is up."""

    status: Literal["ok"] = "ok"
    version: str


class ReadyOut(BaseModel):
    """The database answers and its schema is the one this code needs."""

    status: Literal["ready"] = "ready"
    database: str
    schema_revision: str


# -- users and tokens ------------------------------------------------------------------------
class UserCreate(BaseModel):
    """A new user."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")
    is_admin: bool = False


class UserPublic(Out):
    """A user."""

    id: int
    name: str
    is_admin: bool
    created_at: datetime


class TokenCreate(BaseModel):
    """A new token for a user."""

    model_config = ConfigDict(extra="forbid", strict=True)

    label: str = Field(default="", max_length=100)


class TokenPublic(Out):
    """A token's metadata; the secret is never shown again after creation."""

    id: int
    user_id: int
    prefix: str
    label: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenPublic):
    """A token just issued: `token` is shown this once."""

    token: str


class UserCreated(BaseModel):
    """A user just created, with a first token shown this once."""

    user: UserPublic
    token: str


# -- studies -----------------------------------------------------------------------------------
class Progress(Out):
    """Where a study's budget stands: trials by state and what is left to run."""

    budget: int = Field(description="trials the study runs: n_trials, or a smaller grid's size")
    complete: int
    pruned: int
    failed: int
    cancelled: int
    running: int
    queued: int = Field(description="not started yet (retries waiting + unused budget)")


class BestTrial(Out):
    """The best finished trial so far."""

    number: int | None
    value: Metric
    family: str | None
    params: Params | None = None


class StudyLinks(BaseModel):
    """Where to find the study's parts."""

    self: str
    trials: str
    leaderboard: str
    export_csv: str
    export_json: str
    dashboard: str


class StudyPublic(Out):
    """A study as listed: status, owner, progress and its best trial."""

    id: int
    name: str
    description: str
    owner: str
    owner_id: int
    status: str = Field(description=described(StudyStatus))
    priority: int
    n_trials: int = Field(description="the budget: the spec's n_trials, or a smaller grid's size")
    error: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: Progress
    best: BestTrial | None
    links: StudyLinks


class StudyCreated(StudyPublic):
    """A study just created (submit, clone, retry), with what its spec's settings contradict."""

    warnings: list[FieldError] = Field(
        default_factory=list,
        description="settings that run but not as written, e.g. a warm-up or lookahead as long "
        "as the training (`training.warmup_epochs`): the study was created; fix them by cloning "
        "it with changes",
    )


class FamilySummary(Out):
    """Finished trials of one activation family: count, best, mean ± sample std of the value."""

    family: str
    runs: int = Field(description="attempts of this family in any state")
    n: int = Field(description="complete trials with a value")
    best: Metric
    mean: Metric
    std: Metric


class StudyRef(BaseModel):
    """Another study, named and linked."""

    id: int
    name: str
    status: str
    self: str = Field(description="its API path")
    dashboard: str = Field(description="its dashboard page")


class StudyDetail(StudyPublic):
    """A study with its spec and per-family summary."""

    spec: dict[str, Any]
    families: list[FamilySummary]
    confirms: StudyRef | None = Field(
        default=None, description="the study whose best configurations this one re-trains"
    )
    confirmed_by: list[StudyRef] = Field(
        default_factory=list,
        description="confirm studies re-training this study's best configurations, oldest first",
    )
    campaign_id: int | None = Field(
        default=None, description="the campaign this study is a stage of (GET /campaigns/{id})"
    )
    stage: int | None = Field(
        default=None, description="its stage's index in the campaign (0 = first)"
    )


class Page(BaseModel, Generic[T]):
    """One page of a list; `next_cursor` continues after its last item (null at the end)."""

    items: list[T]
    total: int = Field(description="items matching the filters, over all pages")
    limit: int
    offset: int
    next_cursor: str | None


# -- trials ------------------------------------------------------------------------------------
class LiveProgress(Out):
    """A running trial's progress inside its epoch, as its worker's last heartbeat saw it."""

    phase: str | None = Field(None, description="data (decoding the data set), training, …")
    epoch: int | None = Field(None, description="0-based")
    epochs: int | None = None
    step: int | None = Field(None, description="training steps done in this epoch")
    steps: int | None = Field(None, description="training steps per epoch")
    img_per_s: Metric = Field(None, description="over the epoch's recent steps")
    eta_s: Metric = Field(None, description="seconds left in the trial, at that rate")
    seed_index: int | None = Field(None, description="0-based, of `seeds`")
    seeds: int | None = None


class TrialPublic(Out):
    """One attempt at one trial (a retry of a lost attempt is another row, same number's params)."""

    run_id: int
    number: int | None = Field(description="Optuna trial number; null while a retry waits")
    attempt: int
    retry_of: int | None
    state: str = Field(description=described(RunState))
    family: str | None
    params: Params | None
    value: Metric = Field(description="objective: validation accuracy")
    value_std: Metric
    test_acc: Metric
    epochs_done: int
    duration_s: Metric
    img_per_s: Metric
    peak_mem_bytes: int | None
    failure_reason: str | None
    failure_message: str | None
    failure_epoch: int | None
    worker_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: LiveProgress | None = Field(None, description="live, while the trial runs")


class EpochPublic(Out):
    """One epoch's report."""

    epoch: int
    train_loss: Metric
    val_acc: Metric
    img_per_s: Metric
    elapsed_s: Metric


class AttemptPublic(Out):
    """One attempt in a trial's retry history."""

    run_id: int
    number: int | None
    attempt: int
    state: str
    failure_reason: str | None
    failure_message: str | None
    worker_id: str | None
    value: Metric
    started_at: datetime | None
    finished_at: datetime | None


class TrialDetail(TrialPublic):
    """A trial with its resolved config, epochs, record, learned parameters and retries."""

    config: dict[str, Any] | None
    epochs: list[EpochPublic]
    record: dict[str, Any] | None
    activation_params: dict[str, Any] | None = Field(
        description="learned activation parameters per site (from the record)"
    )
    curves: dict[str, Any] | None = Field(description="learned activation curves (from the record)")
    log_tail: str | None
    attempts: list[AttemptPublic]


class TrialExport(TrialPublic):
    """A trial in the JSON export: everything but the bulky record."""

    config: dict[str, Any] | None
    cost: Metric = Field(None, description="a cost objective's value (spec `objectives`)")
    cost_kind: str | None = Field(None, description="step_time | params; null: no cost")
    cost_device: str | None = Field(None, description="where the cost was measured")
    on_front: bool | None = Field(None, description="on the Pareto front; null: no cost")


class StudyExport(BaseModel):
    """A study and all its trials."""

    study: StudyDetail
    trials: list[TrialExport]


# -- leaderboard -------------------------------------------------------------------------------
class Comparison(Out):
    """One family's trainings against the baseline family's (docs/evidence.md). Fractions."""

    study_id: int = Field(description="the study whose trainings these are")
    stage: Literal["search", "confirm"] = Field(
        description="search: this study's trainings (optimistic; 'promising' at most); "
        "confirm: a confirm study's fresh seeds"
    )
    metric: Literal["val_acc", "test_acc"] = Field(
        description="the accuracy compared: validation for search, test for confirm"
    )
    trainings: int = Field(description="distinct complete trainings with a value of the metric")
    mean: Metric
    ci_low: Metric = Field(description="95 % t interval of the mean (null below 2 trainings)")
    ci_high: Metric
    delta: Metric = Field(description="mean minus the baseline family's mean (same metric)")
    delta_ci_low: Metric = Field(
        description="95 % Welch–Satterthwaite interval of delta (null: too few runs)"
    )
    delta_ci_high: Metric
    p_value: Metric = Field(
        description="Welch's two-sided p-value, Holm-adjusted across the study's families"
    )
    p_raw: Metric = Field(description="Welch's p-value before Holm's correction")
    verdict: str = Field(description=VERDICT_WORDS)
    val_mean: Metric = Field(description="mean validation accuracy of these trainings")
    test_mean: Metric = Field(description="mean test accuracy of these trainings")


class LeaderboardRow(Out):
    """One family's complete trials against the baseline family."""

    family: str
    n: int = Field(description="complete trials with a value")
    mean: Metric
    std: Metric = Field(description="sample standard deviation over the complete trials")
    best: Metric = Field(description="the ranking statistic: the best complete trial's value")
    best_number: int | None = Field(description="the best trial's number")
    mean_test_acc: Metric
    delta_vs_baseline: Metric = Field(description="mean minus the baseline family's mean")
    is_baseline: bool
    rank: int = Field(description="1 = first: by best, then mean, then name")
    median: Metric
    best_std: Metric = Field(description="the best trial's standard deviation over its seeds")
    best_test_acc: Metric = Field(description="the best trial's test accuracy")
    delta_best_vs_baseline: Metric = Field(description="best minus the baseline family's best")
    states: dict[str, int] = Field(description="the family's attempts by state")
    trainings: int = Field(
        description="distinct complete trainings (trials × seeds; identical repeats once)"
    )
    search: Comparison = Field(description="this study's trainings, validation accuracy")
    confirmation: Comparison | None = Field(
        description="fresh seeds of a confirm study (this one, or this study's newest with "
        "results), test accuracy; null: not confirmed yet"
    )
    verdict: str = Field(description="the confirmation's verdict, else the search's")


class Leaderboard(BaseModel):
    """Families ranked by their best trial's value (then mean, then name); see `ranking`."""

    study_id: int
    baseline: str
    ranked_by: str = Field(description="the statistic rows are ranked by: best")
    ranking: str = Field(description="how families are ranked, in words")
    rows: list[LeaderboardRow]
    evidence: str = Field(description="what the trainings, intervals and verdicts mean")
    alpha: float = Field(description="the significance level of every verdict")
    confirms: int | None = Field(description="the study this confirm study re-trains")
    confirmed_by: list[int] = Field(description="this study's confirm studies, oldest first")
    confirmation_study_id: int | None = Field(
        description="the study whose trainings the rows' confirmations are (null: none yet)"
    )


class ConfirmRequest(BaseModel):
    """A confirm study: re-train each family's best configurations with fresh seeds."""

    model_config = ConfigDict(extra="forbid", strict=True)

    top: int = Field(
        default=1,
        ge=1,
        le=MAX_CONFIRM_TOP,
        description="configurations per family, best validation value first",
    )
    seeds: int = Field(
        default=5,
        ge=2,
        le=MAX_SEEDS,
        description="fresh seeds per configuration (at least 2: one seed has no spread)",
    )


# -- workers -----------------------------------------------------------------------------------
class WorkerPublic(Out):
    """A worker process and what it is doing."""

    id: str
    hostname: str
    pid: int
    device: str
    slot: int
    status: str = Field(description=described(WorkerStatus))
    version: str
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age_s: float
    stale: bool = Field(description="silent for longer than the grace period")
    current_run_id: int | None
    current_study_id: int | None
    current_trial_number: int | None
    current_epoch: int | None
    img_per_s: Metric = Field(description="its current trial's training rate; null while idle")
    trials_done: int
    progress: LiveProgress | None = Field(None, description="its current trial's, live")


# -- campaigns ---------------------------------------------------------------------------------
class CampaignLinks(BaseModel):
    """Where to find a campaign."""

    self: str
    dashboard: str


class CampaignPublic(Out):
    """A campaign as listed: status, owner and where its stages stand."""

    id: int
    name: str
    description: str
    owner: str
    owner_id: int
    status: str = Field(description=described(CampaignStatus))
    stage: int = Field(description="the current stage's index (0 = the first)")
    stages: int = Field(description="how many stages the campaign has")
    stage_ready: bool = Field(description="the current stage's studies are set up")
    error: str | None = Field(
        description="why it failed or ended early; studies that did not complete"
    )
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    links: CampaignLinks


class CampaignCreated(CampaignPublic):
    """A campaign just created, with what its stages' settings contradict."""

    warnings: list[FieldError] = Field(
        default_factory=list,
        description="settings of a stage that run but not as written (`stages.0.training."
        "warmup_epochs`): the campaign was created",
    )


class StageStudy(BaseModel):
    """One study of a stage (one per model), linked."""

    id: int
    name: str
    status: str = Field(description=described(StudyStatus))
    model: str | None
    trainings: int = Field(description="distinct complete trainings")
    progress: Progress
    self: str = Field(description="its API path")
    dashboard: str = Field(description="its dashboard page")


class TransferCell(BaseModel):
    """One family on one model of a stage, against that model's baseline (docs/evidence.md)."""

    family: str
    model: str | None
    study_id: int
    comparison: Comparison


class CampaignStage(BaseModel):
    """One stage of the funnel: what entered, what left, what it cost, what it found."""

    index: int
    name: str
    models: list[str | None]
    state: Literal["waiting", "setting up", "running", "ended"]
    kind: Literal["search", "confirm"] = Field(
        description="search: the first stage chose its configurations (validation, "
        "'promising' at most); confirm: promoted configurations, fresh seeds, test accuracy"
    )
    entered: int | None = Field(description="configurations that entered (null: not started)")
    left: int | None = Field(description="configurations promoted onwards (null: not yet)")
    dropped: dict[str, str] = Field(description="families min_delta dropped, with the reason")
    trainings: int
    train_s: float = Field(description="training time of the stage's runs, summed")
    wall_s: float | None = Field(description="first start to last end (or now)")
    started_at: datetime | None
    finished_at: datetime | None
    studies: list[StageStudy]
    cells: list[TransferCell] = Field(description="each family on each model vs the baseline")
    promotion: dict[str, Any] | None = Field(
        description="what this stage promoted: rule, configurations with values, dropped"
    )


class TransferTable(BaseModel):
    """Δ vs the baseline per family (rows) and model (columns) of the latest transfer stage."""

    stage: int
    models: list[str | None]
    families: list[str]
    cells: list[TransferCell]


class CampaignDetail(CampaignPublic):
    """A campaign with its document, funnel and transfer table."""

    spec: dict[str, Any]
    baseline: str
    funnel: list[CampaignStage] = Field(description="the stages in order")
    transfer: TransferTable | None = Field(
        description="the latest stage with several models, as a family × model table"
    )
