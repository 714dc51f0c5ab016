"""Every JSON document perfsuite reads is checked against a declared JSON Schema (jsonschema).

Each reader declares the schema of its file once, next to the code that reads it, and calls
:func:`validate` before touching a field; the error names the file, the field and what is wrong,
so a hand-edited or foreign file is refused with exit 2 instead of a traceback deep in the
statistics. JSON's ``NaN`` and ``Infinity`` are not numbers here: no figure perfsuite writes is
ever non-finite (``results.clean_json`` turns them into ``null``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jsonschema

from perfsuite.errors import InputError


def _finite_number(checker: Any, value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_TYPES = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("number", _finite_number)
Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=_TYPES)


def field_path(path: Any) -> str:
    """['benchmarks', 3, 'stats', 'median'] -> 'benchmarks[3].stats.median' ('(top level)' if empty)."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def validate(document: Any, schema: Mapping[str, Any], where: str, error: type[InputError] = InputError) -> None:
    """Raise ``error`` naming ``where`` (the file) and the first offending field unless ``document`` fits."""
    problems = sorted(Validator(schema).iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path])
    if not problems:
        return
    first = jsonschema.exceptions.best_match(problems)
    more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
    if first.validator == "additionalProperties" and isinstance(first.instance, Mapping):
        known = first.schema.get("properties", {})
        unknown = sorted(str(key) for key in first.instance if key not in known)
        if unknown:  # name the key itself, and what is allowed there
            raise error(f"{where}: unknown field {field_path([*first.absolute_path, unknown[0]])}; known: "
                        f"{', '.join(sorted(known))}{more}")
    raise error(f"{where}: field {field_path(first.absolute_path)}: {first.message}{more}")
