"""Parameter importance per activation family, computed server-side with Optuna and cached.

Each family's complete trials form their own in-memory Optuna study (only that family's
parameters, so conditional parameters of other families never dilute the answer), scored with
Optuna's PED-ANOVA evaluator: it needs no scikit-learn and stays fast at thousands of trials.
Results are cached until the family's count of complete trials changes (see ImportanceCache).
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
)
from optuna.storages import InMemoryStorage

from service.dashboard import queries
from service.store import Database

log = logging.getLogger(__name__)

MIN_TRIALS = 5  # below this any importance estimate is noise; say so instead
MAX_TRIALS = 5000  # the best ones; enough for a stable estimate, bounded cost
# The family choice itself is constant within a family.
SKIP_PARAMS = ("activation", "family")


CacheKey = tuple[str, int, str]  # (database URL, study id, family)


class ImportanceCache:
    """Importances per (database, study, family), recomputed when new trials complete.

    Bounded, since one lives as long as the app: past `max_entries` the least recently used
    entry goes, and a study's entries go once the study is deleted (noticed on the next call
    for any study of that database) or a family no longer has complete trials.
    """

    def __init__(self, max_entries: int = 256) -> None:
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._cache: OrderedDict[CacheKey, tuple[int, dict[str, Any]]] = OrderedDict()

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)

    def entries(self) -> list[CacheKey]:
        """The cached (database URL, study id, family) keys, least recently used first."""
        with self._lock:
            return list(self._cache)

    def for_study(self, db: Database, study_id: int) -> dict[str, dict[str, Any]]:
        """{family: {"n", "importances", "evaluator", "note"}} for every family of the study."""
        counts = queries.complete_counts(db, study_id)
        out = {}
        for family, n in sorted(counts.items()):
            key = (db.url, study_id, family)
            cached = self._get(key)
            if cached is None or cached[0] != n:
                cached = (n, family_importance(db, study_id, family))
                self._put(key, cached)
            out[family] = cached[1]
        self._drop(lambda k: k[:2] == (db.url, study_id) and k[2] not in counts)
        self._drop_deleted_studies(db)
        return out

    def _get(self, key: CacheKey) -> tuple[int, dict[str, Any]] | None:
        with self._lock:
            found = self._cache.get(key)
            if found is not None:
                self._cache.move_to_end(key)
            return found

    def _put(self, key: CacheKey, value: tuple[int, dict[str, Any]]) -> None:
        with self._lock:
            self._cache[key] = value
            self._cache.move_to_end(key)
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)

    def _drop(self, stale: Callable[[CacheKey], bool]) -> None:
        with self._lock:
            for key in [k for k in self._cache if stale(k)]:
                del self._cache[key]

    def _drop_deleted_studies(self, db: Database) -> None:
        cached = {study_id for url, study_id, _ in self.entries() if url == db.url}
        gone = cached - queries.existing_studies(db, cached)
        if gone:
            self._drop(lambda k: k[0] == db.url and k[1] in gone)


def family_importance(db: Database, study_id: int, family: str) -> dict[str, Any]:
    """Importance of one family's parameters on its complete trials (never raises)."""
    rows = queries.family_params(db, study_id, family, limit=MAX_TRIALS)
    result: dict[str, Any] = {
        "n": len(rows),
        "importances": {},
        "evaluator": "PED-ANOVA (optuna)",
        "note": None,
    }
    if len(rows) < MIN_TRIALS:
        result["note"] = f"needs at least {MIN_TRIALS} complete trials (has {len(rows)})"
        return result
    distributions = family_distributions(db, study_id, family, rows)
    names = [n for n, d in distributions.items() if not d.single() and n not in SKIP_PARAMS]
    if not names:
        result["note"] = "no searched parameters in this family"
        return result
    if len({value for _, _, value in rows}) < 2:
        result["note"] = "every trial scored the same; nothing to attribute"
        return result
    try:
        result["importances"] = _evaluate(rows, {n: distributions[n] for n in names})
    except Exception as error:  # an estimate failing must not break the page
        log.warning("importance of study %s family %s failed: %s", study_id, family, error)
        result["note"] = f"could not be computed: {error}"
    return result


def family_distributions(
    db: Database, study_id: int, family: str, rows: list[tuple[int, dict[str, Any], float]]
) -> dict[str, BaseDistribution]:
    """The family's parameter distributions: Optuna's own, else inferred from the values.

    Optuna's come from the best trial whose record has every parameter the rows share (a few
    are tried: the best one's record may be gone or lack a parameter).
    """
    common = set.intersection(*(set(params) for _, params, _ in rows))
    for trial_id in queries.best_trial_ids(db, study_id, family):
        try:
            found = db.optuna.get_trial(trial_id).distributions
        except KeyError:
            continue  # its Optuna trial is gone (e.g. storage cleaned by hand): try the next
        if common <= set(found):
            return {name: found[name] for name in sorted(common)}
    return {name: _inferred([p[name] for _, p, _ in rows]) for name in sorted(common)}


def _inferred(values: list[Any]) -> BaseDistribution:
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    if numeric:
        low, high = float(min(values)), float(max(values))
        log_scale = low > 0 and high / low > 100  # spans decades: treat as a log-scale range
        return FloatDistribution(low, high, log=log_scale)
    return CategoricalDistribution(sorted({str(v) for v in values}))


def _target_quantile(n: int) -> float:
    """PED-ANOVA's "good" share: 10 % as Optuna defaults, but at least 3 trials on small studies."""
    return min(0.5, max(0.1, 3 / n))


def _evaluate(
    rows: list[tuple[int, dict[str, Any], float]], distributions: dict[str, BaseDistribution]
) -> dict[str, float]:
    trials = []
    for _, params, value in rows:
        chosen = {}
        for name, dist in distributions.items():
            raw = params[name]
            # Inferred categorical choices are strings; Optuna's own keep their JSON type.
            missing = isinstance(dist, CategoricalDistribution) and raw not in dist.choices
            chosen[name] = str(raw) if missing else raw
        trials.append(
            optuna.trial.create_trial(params=chosen, distributions=distributions, value=value)
        )
    study = optuna.create_study(storage=InMemoryStorage(), direction="maximize")
    study.add_trials(trials)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PED-ANOVA is marked experimental
        scores = optuna.importance.get_param_importances(
            study,
            evaluator=optuna.importance.PedAnovaImportanceEvaluator(
                target_quantile=_target_quantile(len(trials))
            ),
            params=list(distributions),
        )
    return {name: float(score) for name, score in scores.items()}
