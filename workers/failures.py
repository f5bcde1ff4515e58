"""How a trial ends early, as the training engine raises it. Torch-free.

The run executor classifies an error by type (`isinstance`), never by its attributes: a
`TrialFailure` is a classified failure (diverged, oom, timeout, error) with its epoch; a
`TrialCancelled` a stop asked for by the callbacks (study cancelled, run reaped, worker
stopping). Anything else escaping training is a bug, recorded as an "error" with its traceback.
"""

from __future__ import annotations

FAILURE_KINDS = ("diverged", "oom", "timeout", "error")


class TrialCancelled(Exception):
    """The trial was asked to stop (study cancelled or paused, run reaped)."""


class TrialFailure(Exception):
    """A trial failed; kind is one of FAILURE_KINDS; epoch is 0-based (None: before training)."""

    def __init__(
        self, kind: str, message: str, epoch: int | None, details: str | None = None
    ) -> None:
        if kind not in FAILURE_KINDS:
            raise ValueError(f"unknown failure kind {kind!r}; valid: {', '.join(FAILURE_KINDS)}")
        super().__init__(f"{kind} at epoch {epoch}: {message}")
        self.kind = kind
        self.message = message
        self.epoch = epoch
        self.details = details  # the traceback, for kind "error"
