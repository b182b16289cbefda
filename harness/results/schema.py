"""The run record's JSON Schema (docs/run-record.schema.json): loading it, and checking records against it.

Checking needs the ``jsonschema`` package (the ``dev`` extra); writing and reading records do not.
A problem is reported as ``<file>: <JSON path>: <what is wrong>``; an undocumented key is named as such, with
the file to add it to, so that a new key cannot land without its meaning and unit.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

from ..errors import WsibenchError

SCHEMA_FILE = Path(__file__).resolve().parent.parent.parent / "docs" / "run-record.schema.json"


class RecordError(WsibenchError, ValueError):
    """A run record that cannot be read, or does not match its schema; the message names the file."""


@functools.lru_cache(maxsize=None)
def load_schema(path: str | Path = SCHEMA_FILE) -> dict:
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: the run-record schema is missing (it ships in the repository's docs/)")
    return json.loads(path.read_text())


def _declared(schema: dict, root: dict) -> set[str]:
    """Keys a (sub)schema declares, through $ref and allOf."""
    keys = set(schema.get("properties", {}))
    ref = schema.get("$ref", "")
    if ref.startswith("#/"):
        target = root
        for part in ref[2:].split("/"):
            target = target[part]
        keys |= _declared(target, root)
    for sub in schema.get("allOf", []):
        keys |= _declared(sub, root)
    return keys


def problems(record: dict, source: str = "summary.json", schema: dict | None = None) -> list[str]:
    """Every way the record departs from the schema, one line each, in document order."""
    import jsonschema

    schema = schema or load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    out = []
    for e in sorted(validator.iter_errors(record), key=lambda e: list(map(str, e.absolute_path))):
        if e.validator in ("additionalProperties", "unevaluatedProperties") and isinstance(e.instance, dict):
            extra = sorted(set(e.instance) - _declared(e.schema, schema))
            what = (f"undocumented key{'s' if len(extra) > 1 else ''} {', '.join(map(repr, extra))}: document "
                    f"{'them' if len(extra) > 1 else 'it'} in docs/run-record.schema.json (meaning, unit, when null)")
        else:
            what = e.message
        out.append(f"{source}: {e.json_path}: {what}")
    return out


def check(record: dict, source: str = "summary.json") -> None:
    """Raise RecordError naming the file and the JSON path of the first problem."""
    found = problems(record, source)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise RecordError(found[0] + more)
