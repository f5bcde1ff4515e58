"""docs/spec.md: generated from the spec models, current, complete, and its example valid."""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from search_space.recipes import PROXY_RECIPE
from search_space.spec import (
    DATASET_NAMES,
    PRUNER_NAMES,
    SAMPLER_NAMES,
    DatasetSpec,
    PrunerSpec,
    SamplerSpec,
    parse_spec,
)
from tools import docs, spec_docs


def _text() -> str:
    return spec_docs.DOC_PATH.read_text(encoding="utf-8")


def _headings(text: str) -> list[tuple[int, str]]:
    """(line index, heading text) of every Markdown heading outside code blocks."""
    found, in_code = [], False
    for i, line in enumerate(text.splitlines()):
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (match := re.match(r"#+ (.+)$", line)):
            found.append((i, match.group(1)))
    return found


def _section(text: str, heading: str) -> str:
    """The body of a heading, up to the next heading of any level."""
    lines, headings = text.splitlines(), _headings(text)
    starts = [i for i, h in headings if h == heading]
    assert len(starts) == 1, f"{len(starts)} headings {heading!r}"
    ends = [i for i, _ in headings if i > starts[0]]
    return "\n".join(lines[starts[0] + 1 : ends[0] if ends else len(lines)])


def test_docs_are_current() -> None:
    assert _text() == spec_docs.render(), "docs/spec.md is stale: run python -m search_space.docs"
    assert docs.main(["--check"]) == 0


def test_check_fails_on_a_stale_file_and_writing_fixes_it(tmp_path: Path) -> None:
    assert docs.main(["--docs-dir", str(tmp_path), "--check"]) == 1
    assert docs.main(["--docs-dir", str(tmp_path)]) == 0
    assert (tmp_path / "spec.md").read_text(encoding="utf-8") == spec_docs.render()
    (tmp_path / "spec.md").write_text("old\n", encoding="utf-8")
    assert docs.main(["--docs-dir", str(tmp_path), "--check"]) == 1


def test_the_examples_parse_and_are_the_same_study() -> None:
    example = _section(_text(), spec_docs.EXAMPLE_HEADING)
    blocks = re.findall(r"```yaml\n(.*?)```", example, re.S)
    assert len(blocks) == 2  # as written, and as stored with every field annotated
    written, stored = (parse_spec(block) for block in blocks)
    assert written == stored
    assert written == parse_spec(spec_docs.EXAMPLE_PATH.read_text(encoding="utf-8"))
    config = json.loads(re.findall(r"```json\n(.*?)```", example, re.S)[0])
    assert set(config) == {
        "dataset",
        "model",
        "training",
        "activation",
        "seed",
        "seeds",
        "timeout_s",
    }
    assert config == spec_docs.example_trial_config(written)


def test_every_field_of_every_part_has_a_row() -> None:
    text = _text()
    documented = {section.schema_type.__name__ for section in spec_docs.SECTIONS}
    for section in spec_docs.SECTIONS:
        body = _section(text, section.title)
        fields = typing.get_type_hints(section.schema_type, include_extras=False)
        for name in fields:
            if name.startswith("__"):
                continue
            assert re.search(rf"^\| `{name}` \|", body, re.M), (section.title, name)
        # A nested part of the spec must be a section of its own.
        for info in getattr(section.schema_type, "model_fields", {}).values():
            if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
                assert info.annotation.__name__ in documented, info.annotation


@pytest.mark.parametrize(
    ("model", "names"),
    [(SamplerSpec, SAMPLER_NAMES), (PrunerSpec, PRUNER_NAMES), (DatasetSpec, DATASET_NAMES)],
)
def test_the_names_shown_are_the_spec_constants(
    model: type[BaseModel], names: tuple[str, ...]
) -> None:
    assert tuple(model.model_json_schema()["properties"]["name"]["enum"]) == names
    title = next(s.title for s in spec_docs.SECTIONS if s.schema_type is model)
    assert "{" + ", ".join(names) + "}" in _section(_text(), title)


def test_links_inside_the_document_resolve() -> None:
    text = _text()
    headings = [h for _, h in _headings(text)]
    anchors = {spec_docs.anchor(h) for h in headings}
    targets = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert targets and targets <= anchors, targets - anchors
    assert len(anchors) == len(headings), "two headings share an anchor"
    for other in re.findall(r"\]\(([a-z_]+\.md)(?:#[^)]*)?\)", text):
        assert (spec_docs.DOC_PATH.parent / other).exists(), other


def test_recipe_values_are_shown() -> None:
    recipes = _section(_text(), "Model recipes")
    assert f"| `lr` | `0.1` | **`{PROXY_RECIPE['lr']}`** |" in recipes
    assert f"**`{PROXY_RECIPE['augment']['crop_padding']}`**" in recipes
