"""Run one real worker slot that SIGKILLs itself just before a chosen SQL statement runs.

Fault injection for the reconciler's tests: `python kill_at.py REGEX [actsearch worker args]`.
The hook is on every SQLAlchemy engine of the process (ours and Optuna's), so the kill lands
between two real writes of the real worker code, as a power cut or an OOM kill would.
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
    """Arm the kill, then run the slot."""
    pattern = re.compile(sys.argv[1], re.IGNORECASE | re.DOTALL)

    @event.listens_for(Engine, "before_cursor_execute")
    def _kill(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if pattern.search(statement):
            print(f"kill_at: killing before {statement[:60]!r}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    from workers.worker_cli import main as worker_main

    return worker_main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
