"""Read queries for the API and dashboard: filtering, sorting, pagination and summaries in SQL.

Nothing here loads a study's trials into Python to page or aggregate them. By concern:
`paging` (limits, sorts, cursors), `summaries` (study lists, progress, family statistics), `detail` (one study's page),
`trials` (pages, one trial, exports), `leaderboard` (the ranked families), `evidence` (the
trainings behind each family's statistics), `workers`, `pareto` (a multi-objective study's
Pareto front: the front needs every complete trial's two values, read in one indexed query).
"""

from service.store.queries.detail import StudyDetailView, StudyLink, study_detail
from service.store.queries.evidence import Comparison
from service.store.queries.leaderboard import (
    EVIDENCE,
    RANKING,
    LeaderboardView,
    LeaderRow,
    baseline_family,
    leaderboard,
    rank_key,
)
from service.store.queries.paging import MAX_LIMIT, InvalidQuery, PageResult
from service.store.queries.summaries import (
    STUDY_SORTS,
    BestRun,
    FamilyStats,
    StudySummary,
    best_run,
    family_stats,
    list_studies,
    progress,
    study_aggregates,
)
from service.store.queries.trials import (
    TRIAL_SORTS,
    ParamRange,
    TrialView,
    export_trials,
    list_trials,
    trial_detail,
)
from service.store.queries.workers import list_workers

__all__ = [
    "EVIDENCE",
    "MAX_LIMIT",
    "RANKING",
    "STUDY_SORTS",
    "TRIAL_SORTS",
    "BestRun",
    "Comparison",
    "FamilyStats",
    "InvalidQuery",
    "LeaderRow",
    "LeaderboardView",
    "PageResult",
    "ParamRange",
    "StudyDetailView",
    "StudyLink",
    "StudySummary",
    "TrialView",
    "baseline_family",
    "best_run",
    "export_trials",
    "family_stats",
    "leaderboard",
    "list_studies",
    "list_trials",
    "list_workers",
    "progress",
    "rank_key",
    "study_aggregates",
    "study_detail",
    "trial_detail",
]
