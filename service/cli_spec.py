"""Spec files at the command line: reading them, YAML errors that name the file, `validate`,
and a clone's changes (`--set key=value`, `--changes FILE`).

The spec package (pydantic, no torch) is imported only by `validate`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from service.cli_views import print_warnings
from service.client import field_lines

if TYPE_CHECKING:
    from search_space.spec import StudySpec


class CliError(Exception):
    """A user's mistake at the command line: the message says what was wrong and what to do."""


def read_spec_file(name: str, what: str = "spec file") -> tuple[Path, str]:
    """The path and text of a spec (or changes) file; CliError when it cannot be one."""
    path = Path(name)
    if path.is_dir():
        found = (p.name for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
        # The quick start first: examples/ also holds campaigns (docs/campaigns.md).
        examples = sorted(found, key=lambda name: (name != "quickstart.yaml", name))
        hint = f", e.g. {path / examples[0]}" if examples else ""
        raise CliError(f"{path} is a directory: give a {what} (YAML or JSON){hint}")
    if not path.exists():
        raise CliError(f"{what} {path} does not exist")
    try:
        return path, path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise CliError(f"{path} is not UTF-8 text: give a {what} (YAML or JSON)") from error
    except OSError as error:
        raise CliError(f"cannot read {path}: {error.strerror or error}") from error


def yaml_error(path: Path | str, error: yaml.YAMLError) -> str:
    """A YAML syntax error naming the file and line: "spec.yaml, line 3, column 7: …"."""
    mark = getattr(error, "problem_mark", None)
    where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
    problem = getattr(error, "problem", None) or str(error)
    context = getattr(error, "context", None)
    context_mark = getattr(error, "context_mark", None)
    if context and context_mark is not None:
        context += f" at line {context_mark.line + 1}"
    return f"{where}: {problem}" + (f" ({context})" if context else "")


def load_yaml(path: Path | str, text: str) -> Any:
    """A file's YAML (or JSON) document; CliError naming the file and line on a syntax error."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise CliError(f"not valid YAML/JSON: {yaml_error(path, error)}") from error


def invalid(path: Path | str, fields: list[dict[str, Any]]) -> CliError:
    """A spec's field errors, one `field: message` line each, under the file's name."""
    lines = field_lines(fields)
    return CliError("\n".join([f"invalid spec {path}:", *(f"  {line}" for line in lines)]))


# -- validate ----------------------------------------------------------------------------------
def cmd_validate(args: argparse.Namespace) -> int:
    """Check a spec here, as the API would, and say what its trials will be like."""
    from search_space.spec import SpecError, parse_spec, spec_warnings

    path, text = read_spec_file(args.spec)
    data = load_yaml(path, text)
    try:
        spec = parse_spec(data, submission=True)
    except SpecError as error:
        raise invalid(path, error.errors) from error
    print(f"{path}: valid")
    for line in describe(spec):
        print(line)
    warnings = spec_warnings(spec)
    print_warnings(warnings, f"{path}: ", file=sys.stdout)  # here they are the answer
    if not warnings:
        print("  no warnings")
    return 0


def _value(value: Any) -> str:
    """A fixed value or distribution as a person writes it: 0.05, 0.01 … 0.4 (log), a | b."""
    from search_space.spec import Choices, Range

    if isinstance(value, Choices):
        return " | ".join(str(c) for c in value.choices)
    if isinstance(value, Range):
        step = f", step {value.step}" if value.step is not None else ""
        return f"{value.low} … {value.high}" + (" (log)" if value.log else "") + step
    return str(value)


def describe(spec: StudySpec) -> list[str]:
    """What the study will run: budget, sampler, one trial's setting, and the search space."""
    from search_space.spec import grid_size

    budget = spec.n_trials
    if spec.sampler.name == "grid":
        budget = min(budget, grid_size(spec))
    t, data = spec.training, spec.dataset
    subset = f", {data.train_subset} training images" if data.train_subset else ""
    families = [f"{key} (baseline)" if key in spec.baselines else key for key in spec.activations]
    lines = [
        f"  study {spec.name!r}: {budget} trials, {spec.sampler.name} sampler, "
        f"{spec.pruner.name} pruner, {spec.seeds} seed(s) per trial",
        f"  each trial: {_value(spec.model.name)} on {data.name} (val {data.val_size}{subset});"
        f" epochs {_value(t.epochs)}, batch {_value(t.batch_size)}, {_value(t.optimizer)}, "
        f"lr {_value(t.lr)}, {_value(t.schedule)} schedule, warm-up {_value(t.warmup_epochs)} "
        "epochs",
        f"  families: {', '.join(families)}",
    ]
    dims = spec.search_space()
    lines.append(f"  searched ({len(dims)}):" if dims else "  searched: nothing")
    width = max((len(d.name) for d in dims), default=0)
    lines += [f"    {d.name:<{width}}  {_value(d.dist)}" for d in dims]
    return lines


# -- a clone's changes -------------------------------------------------------------------------
def _set(changes: dict[str, Any], keys: list[str], value: Any) -> None:
    node = changes
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[keys[-1]] = value


def clone_changes(changes_file: str | None, settings: list[str]) -> dict[str, Any]:
    """A clone's JSON merge patch: --changes FILE's mapping, then each --set key=value on top
    (values are YAML: 5 is a number, null removes the field, {low: 1, high: 4} a range)."""
    changes: dict[str, Any] = {}
    if changes_file:
        path, text = read_spec_file(changes_file, "changes file")
        data = load_yaml(path, text)
        if not isinstance(data, dict):
            raise CliError(f"{path}: the changes must be a mapping, e.g. training: {{epochs: 5}}")
        changes = data
    for item in settings:
        key, equals, raw = item.partition("=")
        keys = key.strip().split(".")
        if not equals or not all(keys):
            raise CliError(f"--set {item!r}: give KEY=VALUE, e.g. --set training.epochs=5")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as error:
            raise CliError(f"--set {item!r}: {yaml_error('the value', error)}") from error
        _set(changes, keys, value)
    return changes
