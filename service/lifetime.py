"""Nothing we start outlives its parent: a child asks Linux for a signal when its parent dies.

Used by the worker slots and their supervisor (SIGHUP: hand back and stop) and by the API
server processes `serve`/`up` start (SIGTERM: finish the requests in flight and stop).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # linux/prctl.h
HANGUP = getattr(signal, "SIGHUP", signal.SIGTERM)  # "stop at once"; Windows has no SIGHUP


def die_with_parent(parent_pid: int | None, signum: int = HANGUP) -> None:
    """Ask Linux to send `signum` to this process when its parent dies (elsewhere: nothing).

    Set in the child itself (not in a preexec_fn, unsafe with threads). A parent that died
    before this call, or a system without prctl, is caught by the parent-pid watch.
    """
    if not parent_pid or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
            log.debug("prctl(PR_SET_PDEATHSIG) failed: errno %s", ctypes.get_errno())
    except (OSError, AttributeError):  # no libc symbol table here; the pid watch remains
        log.debug("prctl is not available", exc_info=True)


def parent_is(parent_pid: int | None) -> bool:
    """Whether this process still has `parent_pid` as its parent (True when none was given)."""
    return not parent_pid or os.getppid() == parent_pid
