"""The JSON Schema of ``perfsuite compare --json``: the gate's result, one entry per row under ``rows``.

The rows are the gate's verdicts, not pytest-benchmark rows, so they are not under ``benchmarks``
(tools that read pytest-benchmark files take that key for timing rows). Each row has its figures
(``latency``; on CUDA rows also ``device`` and ``host``), each judged on its own: its change, spread,
MDE, adjusted p-values, threshold and verdict; ``deciding_figure`` names the one whose verdict is
the row's. Fields may be added in later versions; ``schema_version`` grows when a field changes meaning.
"""

from __future__ import annotations

from typing import Any

SCHEMA_ID = "perfsuite-compare-result"
SCHEMA_VERSION = 2  # 1: rows under "benchmarks", latency only

_VERDICTS = ["regressed", "improved", "unchanged", "unresolved", "inconclusive", "missing", "failed", "new"]
_NUMBER = {"type": ["number", "null"]}
_FRACTION = {"type": "number", "minimum": 0}
_P = {"type": ["number", "null"], "minimum": 0, "maximum": 1}
_VALUES = {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}}
_OPTIONAL_VALUES = {"type": ["array", "null"], "items": {"type": "number", "exclusiveMinimum": 0}}
_TEXTS = {"type": "array", "items": {"type": "string"}}

#: one figure's comparison (``TimeComparison``); in a figure also its threshold and verdict
_TIME_PROPERTIES: dict[str, Any] = {
    "baseline": _VALUES, "new": _VALUES, "baseline_probe": _OPTIONAL_VALUES, "new_probe": _OPTIONAL_VALUES,
    "effect": {"type": "number"}, "raw_effect": {"type": "number"}, "probe_change": _NUMBER, "slope": _NUMBER,
    "baseline_spread": _NUMBER, "pooled_spread": _NUMBER, "mde": _NUMBER,
    "p_slower": _P, "p_faster": _P, "p_slower_adjusted": _P, "p_faster_adjusted": _P,
    "standard_error": _NUMBER, "df": {"type": ["integer", "null"], "minimum": 1},
}
_TIME = {"type": ["object", "null"], "properties": _TIME_PROPERTIES, "required": ["baseline", "new", "effect", "mde"]}
_FIGURE = {
    "type": "object",
    "properties": {**_TIME_PROPERTIES, "verdict": {"enum": _VERDICTS}, "threshold": _FRACTION,
                   "min_effect": _FRACTION, "note": {"type": ["string", "null"]},
                   "interval_95": {"type": ["array", "null"], "items": {"type": "number"}, "minItems": 2,
                                   "maxItems": 2}},
    "required": ["verdict", "threshold", "effect", "raw_effect", "mde", "p_slower_adjusted", "p_faster_adjusted"],
}
_ROW = {
    "type": "object",
    "properties": {
        "key": {"type": "string"}, "name": {"type": "string"}, "backend": {"type": ["string", "null"]},
        "kind": {"type": ["string", "null"]}, "verdict": {"enum": _VERDICTS}, "failing": {"type": "boolean"},
        "informational": {"type": "boolean"},
        "deciding_figure": {"enum": ["latency", "device", "host", None]},
        "called_by": {"type": "array", "items": {"enum": ["latency", "device", "host"]}},
        "notes": _TEXTS, "time": _TIME,
        "figures": {"type": "object", "propertyNames": {"enum": ["latency", "device", "host"]},
                    "additionalProperties": _FIGURE},
        "figures_not_recorded": _TEXTS,
        "figures_unavailable": {"type": "object", "additionalProperties": {"type": "string"}},
        "left_out": {"type": "array", "items": {"type": "object", "required": ["side", "run", "reason"]}},
        "memory": {"type": "array", "items": {
            "type": "object", "required": ["metric", "baseline", "new", "verdict"],
            "properties": {"metric": {"type": "string"}, "baseline": {"type": "number"}, "new": {"type": "number"},
                           "verdict": {"enum": _VERDICTS}}}},
    },
    "required": ["key", "name", "verdict", "failing", "informational", "deciding_figure", "figures", "notes"],
}

COMPARE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "perfsuite compare --json: the regression gate's result",
    "type": "object",
    "properties": {
        "schema": {"const": SCHEMA_ID},
        "schema_version": {"const": SCHEMA_VERSION},
        "passed": {"type": "boolean"},
        "outcome": {"enum": ["pass", "fail", "undecided"]},
        "exit_code": {"enum": [0, 1, 3]},
        "settings": {"type": "object", "required": ["threshold", "host_threshold", "alpha", "power",
                                                     "informational"]},
        "statistics": {"type": "object", "required": ["family_size", "mde_alpha", "mde_power"]},
        "hardware": {"type": "object", "required": ["id", "label"]},
        "counts": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
        "informational": _TEXTS,
        "backend_failures": _TEXTS,
        "physical_gpus": _TEXTS,
        "baseline_runs": _TEXTS, "new_runs": _TEXTS,
        "rows": {"type": "array", "items": _ROW},
    },
    "required": ["schema", "schema_version", "passed", "outcome", "exit_code", "settings", "counts", "rows"],
    "not": {"required": ["benchmarks"]},
}
