"""Options several subcommands share (model, weights, device, backend, precision)."""

from __future__ import annotations

import argparse

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
