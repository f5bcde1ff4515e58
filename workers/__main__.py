"""`python -m workers COMMAND …`: `worker` (training processes) or `train` (one local trial)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the command's own main(), imported lazily (torch loads only when needed)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("worker", "train"):
        print("usage: python -m workers {worker,train} [options]", file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    if command == "worker":
        from workers.worker_cli import main as worker_main

        return worker_main(rest)
    from workers.train_cli import main as train_main  # type: ignore[import-not-found,unused-ignore]

    return int(train_main(rest))


if __name__ == "__main__":
    sys.exit(main())
