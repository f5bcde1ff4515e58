"""`actsearch worker`: start one training process per GPU slot against the shared database.

With `--ray`, the slots are Ray actors placed, restarted and scaled by a Ray cluster instead
(workers.ray_driver; Ray is imported only then).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING

from pydantic import ValidationError

from service.settings import Settings

if TYPE_CHECKING:
    from workers.options import SlotOptions
    from workers.supervisor import Slot

log = logging.getLogger("actsearch.worker")

EXAMPLES = """\
examples:
  actsearch worker                      all GPUs (one process each), or one CPU process
  actsearch worker --gpus 0,1 --per-gpu 2
  actsearch worker --gpus cpu --studies 3,5 --max-trials 10
  ACTSEARCH_DATABASE_URL=postgresql+psycopg://user@db-host/actsearch actsearch worker --data /data
  actsearch worker --ray auto --per-gpu 2 --max-slots 64     slots on the running Ray cluster

Every process claims the next trial of the highest-priority runnable study, trains it, reports
each epoch and repeats. SIGTERM or Ctrl-C: the current epoch finishes, then the run is handed back
(retried with the same parameters) unless it was in its last epoch; press again to stop at once.

--ray: one Ray actor per slot (1/N of a GPU with --per-gpu N), restarted when it dies; as many
as the queue's runnable and running trials, up to --max-slots, given back once the queue has
been shorter for --release-after seconds (docs/scale.md).
"""


def build_parser() -> argparse.ArgumentParser:
    """The `actsearch worker` options."""
    parser = argparse.ArgumentParser(
        prog="actsearch worker",
        description="Run training workers: one OS process per GPU slot.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--gpus",
        default=None,
        help="GPUs to use: 0,1 | all | cpu | auto (default auto: all GPUs if any, else cpu)",
    )
    parser.add_argument(
        "--per-gpu", type=int, default=1, help="worker processes per GPU (default 1)"
    )
    parser.add_argument(
        "--studies", default=None, help="only work on these study ids, e.g. 3,5 (default: all)"
    )
    parser.add_argument(
        "--max-trials",
        type=int,
        default=None,
        help="each process exits after this many trials (default: run until stopped)",
    )
    parser.add_argument(
        "--data", default=None, help="CIFAR data: a torchvision root, image folder or tarball"
    )
    parser.add_argument(
        "--database-url", default=None, help="SQLAlchemy URL (default: ACTSEARCH_DATABASE_URL)"
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING")
    ray = parser.add_argument_group("on a Ray cluster (pip install 'actsearch[ray]')")
    ray.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS|auto",
        help="run the slots as Ray actors: on the cluster at ADDRESS (e.g. ray://head:10001), "
        "auto (the cluster `ray start` joined here), or, without a value, RAY_ADDRESS or a new "
        "local Ray; --gpus is then auto, all (GPU slots) or cpu",
    )
    ray.add_argument(
        "--max-slots",
        type=int,
        default=None,
        help="at most this many slots (default: what the cluster holds at start)",
    )
    ray.add_argument(
        "--min-slots", type=int, default=0, help="keep this many slots even when idle (default 0)"
    )
    ray.add_argument(
        "--release-after",
        type=float,
        default=None,
        metavar="SECONDS",
        help="give slots back once the queue has needed fewer for this long (default 60)",
    )
    ray.add_argument(
        "--ray-cpus-per-slot",
        type=float,
        default=1.0,
        metavar="N",
        help="CPUs each slot reserves; a CPU slot trains with that many threads (default 1)",
    )
    # Set by the supervisor for each child process (and --parent-pid by `actsearch up` for the
    # supervisor: it stops when that process dies); not for people.
    parser.add_argument("--slot", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--gpu-label", default="", help=argparse.SUPPRESS)
    parser.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def parse_ids(text: str | None) -> tuple[int, ...] | None:
    """Study ids from '3,5' → (3, 5); None or '' → None (every study)."""
    if not text:
        return None
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(
            f"--studies {text!r}: give study ids separated by commas, e.g. 3,5"
        ) from None


def main(argv: list[str] | None = None) -> int:
    """Entry point of `actsearch worker` (and, with --slot, of each slot's process)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = _settings(args)
        studies = parse_ids(args.studies)
        if args.max_trials is not None and args.max_trials < 1:
            raise ValueError("--max-trials must be at least 1")
        if args.ray is not None:
            _check_ray_args(args)
    except ValueError as error:
        parser.error(str(error))
    who = "supervisor" if args.slot is None else f"slot {args.slot}"
    _configure_logging(settings.log_level, "ray driver" if args.ray is not None else who)
    if args.ray is not None:
        return _run_ray(settings, args, studies)
    if args.slot is not None:
        return _run_slot(settings, args, studies)
    return _supervise(settings, args)


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, object] = {}
    if args.database_url:
        overrides["database_url"] = args.database_url
    if args.data:
        overrides["data"] = args.data
    if args.log_level:
        overrides["log_level"] = args.log_level.upper()
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
            for e in error.errors()
        )
        raise ValueError(problems) from None


def _configure_logging(level: str, who: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s {who} %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    # Optuna logs every finished trial at INFO and alembic its schema check; our lines say more.
    for noisy in ("optuna", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _supervise(settings: Settings, args: argparse.Namespace) -> int:
    from service.lifetime import die_with_parent
    from workers.supervisor import EXIT_FATAL, Supervisor, cpu_threads, plan_slots

    die_with_parent(args.parent_pid)  # started by `actsearch up`: end with it

    try:
        slots = plan_slots(args.gpus, args.per_gpu)
        _check_named_gpus(slots, args.gpus)
    except ValueError as error:
        print(f"actsearch worker: error: {error}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    # Children read the same settings from the environment (keeps passwords out of `ps`).
    env["ACTSEARCH_DATABASE_URL"] = settings.resolved_database_url
    env["ACTSEARCH_HOME"] = str(settings.home)
    env["ACTSEARCH_LOG_LEVEL"] = settings.log_level
    if settings.data:
        env["ACTSEARCH_DATA"] = settings.data
    command = [sys.executable, "-m", "workers", "worker", *_passed_on(args)]
    log.info(
        "starting %d worker process(es) on %s (database %s)",
        len(slots),
        ", ".join(sorted({"cpu" if s.gpu is None else f"gpu {s.gpu}" for s in slots})),
        _redact(settings.resolved_database_url),
    )
    supervisor = Supervisor(
        slots, command, env=env, threads=cpu_threads(slots), parent_pid=args.parent_pid
    )
    code = supervisor.run()
    if code == EXIT_FATAL:
        print("actsearch worker: error: the workers cannot run (see above)", file=sys.stderr)
    return code


def _check_ray_args(args: argparse.Namespace) -> None:
    """Refuse what does not apply to Ray slots before connecting to a cluster."""
    gpus = (args.gpus or "auto").strip().lower()
    if gpus not in ("auto", "all", "cpu"):
        raise ValueError(
            f"--ray --gpus {args.gpus}: Ray assigns the GPUs; give --gpus auto, all or cpu"
        )
    if args.max_trials is not None:
        raise ValueError("--max-trials does not apply with --ray: the queue decides the slots")
    if args.per_gpu < 1:
        raise ValueError(f"--per-gpu must be at least 1, not {args.per_gpu}")
    if args.ray_cpus_per_slot <= 0:
        raise ValueError(f"--ray-cpus-per-slot must be above 0, not {args.ray_cpus_per_slot}")
    if args.max_slots is not None and args.max_slots < 1:
        raise ValueError(f"--max-slots must be at least 1, not {args.max_slots}")
    if args.min_slots < 0 or (args.max_slots is not None and args.min_slots > args.max_slots):
        raise ValueError("--min-slots must be between 0 and --max-slots")
    if args.release_after is not None and args.release_after < 0:
        raise ValueError(f"--release-after must be 0 or more, not {args.release_after}")


def _run_ray(settings: Settings, args: argparse.Namespace, studies: tuple[int, ...] | None) -> int:
    from workers.ray_driver import DriverOptions, RayDriver, RayUnavailable
    from workers.ray_scaling import RELEASE_AFTER_S

    options = DriverOptions(
        address=args.ray,
        gpus=(args.gpus or "auto").strip().lower(),
        per_gpu=args.per_gpu,
        cpus_per_slot=args.ray_cpus_per_slot,
        max_slots=args.max_slots,
        min_slots=args.min_slots,
        release_after_s=RELEASE_AFTER_S if args.release_after is None else args.release_after,
        studies=studies,
    )
    try:
        return RayDriver(settings, options).run()
    except (RayUnavailable, ValueError) as error:
        print(f"actsearch worker: error: {error}", file=sys.stderr)
        return 2


def _check_named_gpus(slots: list[Slot], gpus: str | None) -> None:
    """GPUs named by number must exist: a slot on a missing one would crash and restart forever."""
    from workers.supervisor import visible_gpus

    named = sorted({slot.gpu for slot in slots if slot.gpu is not None})
    if not named:
        return
    visible = visible_gpus()
    missing = [gpu for gpu in named if gpu not in visible]
    if missing:
        here = f"GPUs visible here: {', '.join(visible)}" if visible else "no CUDA GPU is visible"
        raise ValueError(
            f"--gpus {gpus}: no GPU {', '.join(missing)} on this machine ({here}); "
            "name visible GPUs, or use --gpus all or --gpus cpu"
        )


def _passed_on(args: argparse.Namespace) -> list[str]:
    passed: list[str] = []
    if args.studies:
        passed += ["--studies", args.studies]
    if args.max_trials is not None:
        passed += ["--max-trials", str(args.max_trials)]
    return passed


def _run_slot(settings: Settings, args: argparse.Namespace, studies: tuple[int, ...] | None) -> int:
    from service.lifetime import die_with_parent
    from workers.options import SlotOptions
    from workers.supervisor import EXIT_FATAL
    from workers.worker import FatalWorkerError, SlotWorker

    die_with_parent(args.parent_pid)  # SIGHUP when the supervisor dies: hand back, exit

    options = SlotOptions(
        slot=args.slot,
        device=args.device,
        gpu_label=args.gpu_label,
        studies=studies,
        max_trials=args.max_trials,
        parent_pid=args.parent_pid,
        threads=args.threads,
    )
    try:
        _check_slot_gpu(options)
        code = SlotWorker(settings, options).run()
    except FatalWorkerError as error:
        log.error("%s", error)
        code = EXIT_FATAL
    # Everything is stored and the connections are closed; skip the interpreter's teardown of
    # torch's module graph, which takes seconds and delays the supervisor's shutdown.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _check_slot_gpu(options: SlotOptions) -> None:
    """A CUDA slot must see its GPU: without it every restart would crash in the same way."""
    from workers.worker import FatalWorkerError

    if options.gpu_unusable:
        raise FatalWorkerError(
            f"slot {options.slot}: GPU {options.gpu_label or '?'} is not usable here (torch sees "
            f"no CUDA device with CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}"
            ": no GPU of that number, or no working NVIDIA driver); `nvidia-smi -L` lists the "
            "GPUs: name them with --gpus, or use --gpus cpu"
        )


def _redact(url: str) -> str:
    """The URL without its password, for logs."""
    head, sep, tail = url.partition("@")
    if not sep or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, credentials = head.partition("//")
    user = credentials.split(":", 1)[0]
    return f"{scheme}//{user}:***@{tail}"
