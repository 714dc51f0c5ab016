"""What several subcommands share: model, weights, device, backend and precision options, loading
the model, and checking output paths before any work is done."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from perfsuite.backends import backend_names
from perfsuite.config import PRECISIONS
from perfsuite.errors import InputError
from perfsuite.images import TRANSFORMS


def add_model_options(parser: argparse.ArgumentParser) -> None:
    # Defaults are resolved when the command runs, not here: building the parser (and so --help and
    # --version) must not read pyproject.toml, which may be the very thing that is broken.
    parser.add_argument("--model", default=None, help="torchvision model (default: [tool.perfsuite] model, "
                                                      "else alexnet)")
    parser.add_argument("--weights", default=None,
                        help="auto | pretrained | random | PATH (default: $PERFSUITE_WEIGHTS, else "
                             "[tool.perfsuite] weights, else auto)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument("--transform", default="report", choices=TRANSFORMS,
                        help="preprocessing (default: report)")


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="eager", choices=backend_names(), help="default: eager")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="default: fp32")


def model_choice(model: str | None, weights: str | None) -> tuple[str, str, str, str]:
    """(model name, where it came from, weights choice, where it came from): the options, else
    ``$PERFSUITE_WEIGHTS`` (weights), else ``[tool.perfsuite]``, else the built-in defaults."""
    from perfsuite.config import load_suite_config
    from perfsuite.models import resolve_weights_choice

    suite = load_suite_config()
    weights_choice, weights_origin = resolve_weights_choice(weights, suite.weights, suite.source("weights"))
    return (model or suite.model, "--model" if model else suite.source("model"), weights_choice, weights_origin)


def load_model_reporting_warnings(model_name: str | None, weights: str | None):
    """``load_model`` with ``--model``/``--weights`` and their defaults (see :func:`model_choice`); its
    warnings (e.g. the fallback to random weights) go to stderr as one line each."""
    from perfsuite.models import load_model

    name, name_origin, choice, weights_origin = model_choice(model_name, weights)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_model(name, choice, name_origin=name_origin, weights_origin=weights_origin)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    return model


def check_output_file(value: str | Path, option: str) -> Path:
    """The path of a file a command will write, checked before the work starts by
    :func:`perfsuite.output.check_output_path` (not empty, not a folder, a writable folder with room; a
    device or FIFO is written through, a symlink followed, anything else refused)."""
    from perfsuite.output import check_output_path

    return check_output_path(value, f"{option} {value}" if str(value) else option)


def check_output_folder(value: str | Path, option: str) -> Path:
    """A folder a command will write files into, made now (with its parents), before the work starts."""
    from perfsuite.output import check_output_folder_writable, describe_os_error

    if not str(value):
        raise InputError(f"{option}: the path is empty (an unset variable?)")
    path = Path(value).absolute()
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {value}: is a file, not a folder")
    check_output_folder_writable(path, f"{option} {value}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{option} {value}: cannot be made ({describe_os_error(exc)})") from exc
    return Path(value)


def write_output(path: Path, option: str, text: str, append: bool = False) -> None:
    """Write ``text`` by :mod:`perfsuite.output`'s rules (or append it); a failure (disk full, permissions
    changed) names the option and says the old file was left unchanged."""
    from perfsuite.output import write_text

    write_text(path, text, f"{option} {path}", append=append)
