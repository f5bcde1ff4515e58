"""Advance the campaigns of a database once, SIGKILLing this process just before a chosen SQL
statement: `python -m tests.service.advance_kill_at REGEX URL [NTH]`.

Fault injection for the exactly-once stage transition: the hook is on every SQLAlchemy engine
of the process (ours and Optuna's), so the kill lands between two real writes of the real
code (`Campaigns.advance`), as a power cut or an OOM kill of an API process or a worker would.
NTH (default 1): the match to die at, so a kill can land between two enqueued trials.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine


def main() -> int:
    """Arm the kill, then advance once (exit 0 if the statement never ran)."""
    pattern = re.compile(sys.argv[1], re.IGNORECASE | re.DOTALL)
    url = sys.argv[2]
    nth = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    seen = [0]

    @event.listens_for(Engine, "before_cursor_execute")
    def _kill(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if pattern.search(statement):
            seen[0] += 1
            if seen[0] >= nth:
                print(f"advance_kill_at: killing before {statement[:60]!r}", file=sys.stderr)
                sys.stderr.flush()
                os.kill(os.getpid(), signal.SIGKILL)

    from service.store import Store

    store = Store.open(url)
    print(f"advanced: {store.campaigns.advance()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
