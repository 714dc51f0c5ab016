"""Options the gate's subcommands share (threshold settings, storage)."""

from __future__ import annotations

import argparse

from perfsuite.config import load_suite_config
from perfsuite.gate.settings import STATISTICS, GateSettings, settings_from_config


def _percent(value: float, digits: int = 0) -> str:
    return f"{value:.{digits}%}".replace("%", "%%")  # argparse %-formats help strings


def add_settings_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("thresholds (default: [tool.perfsuite.gate] in pyproject.toml, else shown)")
    defaults = GateSettings()
    group.add_argument("--threshold",
                       help=f"smallest change that counts, e.g. 5%% (default {_percent(defaults.threshold)})")
    group.add_argument("--alpha", help=f"one-sided significance of the U test over runs (default {defaults.alpha})")
    group.add_argument("--single-run-threshold", dest="single_run_threshold",
                       help="change needed when a side has too few runs for the test "
                            f"(default 3 x threshold: {_percent(defaults.single_run_threshold)})")
    group.add_argument("--memory-threshold", dest="memory_threshold",
                       help=f"relative memory growth that regresses (default {_percent(defaults.memory_threshold)})")
    group.add_argument("--memory-floor-mib", dest="memory_floor_mib", type=float,
                       help="memory growth below this many MiB never regresses (default 64)")
    group.add_argument("--cv-threshold", dest="cv_threshold",
                       help="CV above which a benchmark is flagged unstable "
                            f"(default {_percent(defaults.cv_threshold, 1)})")
    group.add_argument("--host-contention", dest="host_contention",
                       help="leave out runs during which other processes used more of the CPU than this "
                            f"(default {_percent(defaults.host_contention)})")
    group.add_argument("--statistic", choices=STATISTICS, help="per-run value compared (default median)")
    group.add_argument("--require-backends", dest="require_backends",
                       help="comma-separated backends that must have results in every new run")
    group.add_argument("--fail-on-inconclusive", dest="fail_on_inconclusive", action="store_true", default=None,
                       help="exit 1 on an inconclusive verdict too")


def settings_from_args(args: argparse.Namespace) -> GateSettings:
    keys = ("threshold", "alpha", "single_run_threshold", "memory_threshold", "memory_floor_mib", "cv_threshold",
            "host_contention", "statistic", "require_backends", "fail_on_inconclusive")
    return settings_from_config(load_suite_config(), {key: getattr(args, key, None) for key in keys})


def add_storage_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", default=".benchmarks",
                        help="pytest-benchmark storage folder for run ids (default: .benchmarks)")


def baseline_dir(args: argparse.Namespace) -> str:
    return args.store or settings_from_config(load_suite_config()).baseline_dir
