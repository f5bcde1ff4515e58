"""User documents in request bodies (a study spec, a clone's changes), decoded within bounds.

Every check runs before the deep work (validation, merging, copying), whose cost and recursion
grow with the document:

- at most MAX_DEPTH levels of nesting: a few hundred levels drove the parsers, the merge and
  the checks past Python's recursion limit (a 500, not a 422); a spec needs under ten;
- at most MAX_NODES values: a spec has a few hundred;
- no YAML anchors or aliases: a spec never needs them, and 300 bytes of them expand to 50
  million nodes (a "billion laughs"), which held the server for seconds;
- no NUL in any text: PostgreSQL text cannot hold it.

Each refusal is a SpecError (a 422) naming `body` (NUL: the field). The size of a body is bounded
before it is read (service.api.limits). Decoding is CPU work: routes run it in the threadpool,
never on the event loop.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from fastapi import HTTPException, status

from search_space.spec import SpecError
from service.api.limits import MAX_BODY_BYTES

MAX_DEPTH = 64  # levels of nesting in a document; the top-level object is level 1
MAX_NODES = 100_000  # objects, lists and scalars in a document, keys included
JSON_TYPES = ("application/json",)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain")
TOO_DEEP = f"nesting too deep (at most {MAX_DEPTH} levels of objects and lists)"
TOO_MANY = f"too many values (at most {MAX_NODES} objects, lists and scalars, keys included)"
ALIASES = "YAML anchors and aliases (&name, *name) are not accepted: write each value out"
NUL = "text must not contain NUL characters"
# libyaml's parser where PyYAML was built with it: the pure-Python one took 9 s over 1 MB.
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_NODE_EVENTS = (yaml.ScalarEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent)
_OPEN_EVENTS = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
_CLOSE_EVENTS = (yaml.SequenceEndEvent, yaml.MappingEndEvent)


def is_json(media_type: str) -> bool:
    """Whether a media type (lowercase, without parameters) names JSON."""
    return media_type in JSON_TYPES or media_type.endswith("+json")


def check_media_type(media_type: str, *, what: str, yaml_too: bool) -> None:
    """415 unless the media type is JSON, YAML (with `yaml_too`) or not given."""
    if not media_type or is_json(media_type) or (yaml_too and media_type in YAML_TYPES):
        return
    accepted = "application/json or application/yaml" if yaml_too else "application/json"
    raise HTTPException(
        status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"send {what} as {accepted}, not {media_type}"
    )


def _refused(msg: str, loc: str = "") -> SpecError:
    return SpecError([{"loc": loc or "body", "msg": msg}])


def _line(event: Any) -> str:
    mark = getattr(event, "start_mark", None)
    return f" (line {mark.line + 1})" if mark is not None else ""


def _check_yaml_events(text: str) -> None:
    """Refuse anchors, aliases, nesting and size past the bounds, from the parser's events.

    The parser is a state machine (no recursion) that yields events before any node is built:
    an alias is refused before it is expanded, a deep document before the composer recurses.
    """
    depth = nodes = 0
    for event in yaml.parse(text, Loader=_YAML_LOADER):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _refused(ALIASES + _line(event))
        if isinstance(event, _NODE_EVENTS):
            nodes += 1
            if nodes > MAX_NODES:
                raise _refused(TOO_MANY + _line(event))
        if isinstance(event, _OPEN_EVENTS):
            depth += 1
            if depth > MAX_DEPTH:
                raise _refused(TOO_DEEP + _line(event))
        elif isinstance(event, _CLOSE_EVENTS):
            depth -= 1


def _load(text: str, as_json: bool) -> Any:
    try:
        if as_json:
            return json.loads(text)
        _check_yaml_events(text)
        return yaml.load(text, Loader=_YAML_LOADER)  # a safe loader: no Python objects
    except SpecError:
        raise  # a refusal above, not a syntax error
    except RecursionError as error:  # JSON nested past the interpreter's limit
        raise _refused(TOO_DEEP) from error
    except (ValueError, yaml.YAMLError) as error:
        if "maximum nesting depth" in str(error):  # libyaml's own limit (1000), met first
            raise _refused(TOO_DEEP) from error
        raise _refused(f"not valid {'JSON' if as_json else 'YAML'}: {error}") from error


def check_tree(document: Any) -> None:
    """Refuse nesting past MAX_DEPTH, more than MAX_NODES values, and NUL in any key or text.

    A walk without recursion, so that no document can drive it past Python's limit.
    """
    stack: list[tuple[Any, str, int]] = [(document, "", 1)]
    nodes = 1
    while stack:
        value, loc, depth = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                raise _refused(NUL, loc)
            continue
        if isinstance(value, dict):
            items: list[tuple[str, Any]] = []
            for key, item in value.items():
                if "\x00" in str(key):
                    raise _refused(NUL, loc)
                items.append((str(key), item))
            nodes += len(items)  # the keys; their values are counted below
        elif isinstance(value, list):
            items = [(str(index), item) for index, item in enumerate(value)]
        else:
            continue
        if depth > MAX_DEPTH:
            raise _refused(TOO_DEEP)
        nodes += len(items)
        if nodes > MAX_NODES:
            raise _refused(TOO_MANY)
        for key, item in reversed(items):  # reversed: the first NUL in document order is named
            stack.append((item, f"{loc}.{key}" if loc else key, depth + 1))


def decode(raw: bytes, media_type: str, *, what: str, yaml_too: bool) -> dict[str, Any]:
    """A body as a checked mapping: JSON for JSON types, else (with `yaml_too`) YAML.

    `what` names the document in messages ("the spec"). 413 over MAX_BODY_BYTES (for a caller
    the middleware did not bound); 415 for another media type; 422 (SpecError) for text that is
    not UTF-8, not valid, not a mapping, past the bounds above, or holding NUL.
    """
    if len(raw) > MAX_BODY_BYTES:
        raise HTTPException(413, f"{what} is at most {MAX_BODY_BYTES} bytes")
    check_media_type(media_type, what=what, yaml_too=yaml_too)
    as_json = is_json(media_type) or not yaml_too
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _refused("the body is not UTF-8 text") from error
    data = _load(text, as_json)
    if not isinstance(data, dict):
        raise _refused(f"{what} must be a mapping (an object) of fields")
    check_tree(data)
    return data
