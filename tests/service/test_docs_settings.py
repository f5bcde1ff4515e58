"""The documentation states every setting and the trial config's real shape (no drift)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from search_space.spec import DatasetSpec
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_readme_settings_table_lists_every_setting_with_its_default() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `ACTSEARCH_")]
    documented = {name for row in rows for name in re.findall(r"`ACTSEARCH_([A-Z_]+)`", row)}
    assert documented == {name.upper() for name in Settings.model_fields}
    by_name = {
        name: row
        for row in rows
        for name in re.findall(r"`ACTSEARCH_([A-Z_]+)`", row.split("|")[1])
    }
    defaults = Settings.model_fields
    assert str(defaults["port"].default) in by_name["PORT"].split("|")[2]
    assert defaults["host"].default in by_name["HOST"].split("|")[2]
    assert defaults["log_level"].default in by_name["LOG_LEVEL"].split("|")[2]


def test_architecture_trial_config_example_has_the_dataset_keys_suggest_config_emits() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("### The resolved trial config", 1)[1]
    example = json.loads(section.split("```json", 1)[1].split("```", 1)[0])
    # suggest_config emits spec.dataset.model_dump(): every field, "path" included.
    assert list(example["dataset"]) == list(DatasetSpec().model_dump(mode="json"))
