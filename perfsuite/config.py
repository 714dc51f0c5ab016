"""Suite defaults from ``[tool.perfsuite]`` in pyproject.toml.

Reading the file is the only side effect, and it happens in :func:`load_suite_config`, never when
a config object is created (nor when a command-line parser is built, so ``--help`` works whatever
the file holds). The section is checked against :data:`SECTION_SCHEMA` (JSON Schema, through
``perfsuite.validation``'s validator); the ``gate`` and ``tensorrt`` tables are then parsed by their
owners (``gate.settings``, ``backends.tensorrt``) at the same moment, so a bad value anywhere in the
section is refused before any work starts, naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

import jsonschema

from perfsuite.errors import InputError
from perfsuite.tolerances import DEFAULT_TOLERANCES, OVERRIDE_KEYS, check_overrides
from perfsuite.validation import Validator, field_path

PRECISIONS = ("fp32", "fp16", "bf16")
# Sub-tables of [tool.perfsuite] that other modules read (tolerances, the regression gate, TensorRT builds).
SUBTABLES = ("tolerances", "gate", "tensorrt")


def _list_of(items: dict[str, Any]) -> dict[str, Any]:
    # An empty list would run nothing and pass: refused like a missing value would be.
    return {"type": "array", "items": items, "minItems": 1}


SECTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "weights": {"type": "string", "minLength": 1},
        "backends": _list_of({"type": "string", "minLength": 1}),
        "precisions": _list_of({"enum": list(PRECISIONS)}),
        "batch_sizes_gpu": _list_of({"type": "integer", "minimum": 1}),
        "batch_sizes_cpu": _list_of({"type": "integer", "minimum": 1}),
        "warmup_rounds": {"type": "integer", "minimum": 0},
        "cache_dir": {"type": "string", "minLength": 1},
        # The shape only; the ranges are the Tolerance class's (``tolerances.check_overrides``).
        "tolerances": {
            "type": "object",
            "properties": {mode: {"type": "object", "additionalProperties": False,
                                  "properties": {key: {"type": "number"} for key in OVERRIDE_KEYS}}
                           for mode in DEFAULT_TOLERANCES},
            "additionalProperties": False,
        },
        "gate": {"type": "object"},  # keys and values: gate.settings
        "tensorrt": {"type": "object"},  # keys and values: backends.tensorrt.TensorRTConfig
    },
    "additionalProperties": False,
}

# How TOML names the JSON Schema types a message mentions.
_TOML_TYPES = {"object": "a table", "array": "an array", "string": "a string", "integer": "a whole number",
               "number": "a number", "boolean": "true or false"}


@dataclasses.dataclass(frozen=True)
class SuiteConfig:
    """Defaults of a suite run; the pytest options and the CLI override them."""

    model: str = "alexnet"
    weights: str = "auto"
    backends: tuple[str, ...] = ("eager", "onnxruntime")
    precisions: tuple[str, ...] = PRECISIONS
    batch_sizes_gpu: tuple[int, ...] = (1, 8, 64, 256)
    batch_sizes_cpu: tuple[int, ...] = (1, 8)
    warmup_rounds: int = 10
    cache_dir: str = ".perfsuite-cache"
    # Free-form sections later features read (e.g. [tool.perfsuite.tolerances]).
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    path: Path | None = None  # the pyproject.toml read (None: the built-in defaults)

    def batch_sizes(self, device: str) -> tuple[int, ...]:
        return self.batch_sizes_gpu if device.startswith("cuda") else self.batch_sizes_cpu

    def source(self, key: str) -> str:
        """Where ``key``'s value comes from, for messages: '/x/pyproject.toml [tool.perfsuite] model'."""
        return f"{self.path} [tool.perfsuite] {key}" if self.path else f"the default {key}"


def find_pyproject(start: Path | None = None) -> Path | None:
    """The nearest pyproject.toml at or above ``start`` (default: the working directory)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def _toml_message(error: jsonschema.ValidationError) -> str:
    if error.validator == "type":
        expected = _TOML_TYPES.get(error.validator_value, error.validator_value)
        if error.validator_value == "array" and isinstance(error.instance, str):
            expected += f', e.g. ["{error.instance}"]'
        return f"must be {expected}, not {error.instance!r}"
    if error.validator == "minItems":
        return "must not be empty (an empty list would run nothing)"
    if error.validator == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(known))
        return (f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(known)}")
    if error.validator == "enum":
        return f"{error.instance!r} is not one of {', '.join(map(str, error.validator_value))}"
    return error.message


def check_section(section: Any, where: str) -> None:
    """Refuse a ``[tool.perfsuite]`` table that does not fit :data:`SECTION_SCHEMA`, naming the key."""
    problems = list(Validator(SECTION_SCHEMA).iter_errors(section))
    if problems:
        first = jsonschema.exceptions.best_match(problems)
        key = field_path(first.absolute_path) if first.absolute_path else ""
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise InputError(f"{where}{' ' + key if key else ''}: {_toml_message(first)}{more}")


def load_suite_config(pyproject: Path | None = None) -> SuiteConfig:
    """Read and check ``[tool.perfsuite]``; a missing file or section gives the defaults."""
    path = pyproject if pyproject is not None else find_pyproject()
    if path is None:
        return SuiteConfig()
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot be read ({exc})") from exc
    tool = document.get("tool", {})
    section = tool.get("perfsuite", {}) if isinstance(tool, dict) else {}
    check_section(section, f"{path} [tool.perfsuite]")
    values = {key: tuple(value) if isinstance(value, list) else value
              for key, value in section.items() if key not in SUBTABLES}
    config = SuiteConfig(**values, extra={key: section[key] for key in SUBTABLES if key in section}, path=path)
    _check_subtables(config)
    return config


def _check_subtables(config: SuiteConfig) -> None:
    """Parse the sub-tables now with their owners' parsers, so that a bad value stops every command and
    pytest at the start rather than one test or one backend later."""
    from perfsuite.backends.tensorrt import TensorRTConfig
    from perfsuite.gate.settings import settings_from_config

    parsers = {"tolerances": lambda: check_overrides(config.extra.get("tolerances"), "[tool.perfsuite.tolerances]"),
               "gate": lambda: settings_from_config(config),
               "tensorrt": lambda: TensorRTConfig.from_mapping(config.extra.get("tensorrt", {}))}
    for table, parse in parsers.items():
        try:
            parse()
        except InputError as exc:
            raise InputError(f"{config.path}: {exc}") from None
        except TypeError as exc:  # a parser met a value of a type it does not expect
            raise InputError(f"{config.path} [tool.perfsuite.{table}]: a value of the wrong type ({exc})") from None


def split_names(value: str | None, option: str) -> list[str]:
    """'eager, onnxruntime' -> ['eager', 'onnxruntime'] (a comma-separated option); [] when the option was
    not given, and an error when it was given but names nothing (``--backends ,``, an empty variable)."""
    if value is None:
        return []
    names = [item.strip() for item in value.split(",") if item.strip()]
    if not names:
        raise InputError(f"{option} {value!r}: names nothing; give at least one, or leave the option out "
                         "for the default")
    return names


def check_precision(precision: str, source: str = "precision") -> str:
    if precision not in PRECISIONS:
        raise InputError(f"{source}: unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    return precision


def parse_batch_sizes(value: str | int | tuple | list, source: str = "--batch-sizes") -> tuple[int, ...]:
    """'1,8,64' or [1, 8, 64] -> (1, 8, 64); every size must be a positive integer."""
    items = value.split(",") if isinstance(value, str) else list(value) if not isinstance(value, int) else [value]
    sizes = []
    for item in items:
        text = str(item).strip()
        if not text.isdigit() or int(text) < 1:
            raise InputError(f"{source}: batch size {text!r} is not a positive integer")
        sizes.append(int(text))
    if not sizes:
        raise InputError(f"{source}: no batch size given")
    return tuple(sizes)


def cache_root(config: SuiteConfig) -> Path:
    """Where engines and exports are cached: $PERFSUITE_CACHE_DIR or the configured folder."""
    return Path(os.environ.get("PERFSUITE_CACHE_DIR", config.cache_dir)).expanduser()
