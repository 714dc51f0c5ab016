"""Options several subcommands share (model, weights, device, backend, precision)."""

from __future__ import annotations

import argparse
import sys
import warnings

from perfsuite.backends import backend_names
from perfsuite.config import PRECISIONS, load_suite_config
from perfsuite.images import TRANSFORMS


def add_model_options(parser: argparse.ArgumentParser) -> None:
    suite = load_suite_config()
    parser.add_argument("--model", default=suite.model, help=f"torchvision model (default: {suite.model})")
    parser.add_argument("--weights", default=None,
                        help="auto | pretrained | random | PATH (default: $PERFSUITE_WEIGHTS or "
                             f"{suite.weights})")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument("--transform", default="report", choices=TRANSFORMS,
                        help="preprocessing (default: report)")


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="eager", choices=backend_names(), help="default: eager")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="default: fp32")


def load_model_reporting_warnings(model_name: str, weights: str | None):
    """``load_model`` with ``--weights``/``$PERFSUITE_WEIGHTS``; its warnings (e.g. the fallback to random
    weights) go to stderr as one line each."""
    from perfsuite.models import load_model, resolve_weights_choice

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_model(model_name, resolve_weights_choice(weights))
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    return model
