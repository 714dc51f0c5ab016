"""Options the gate's subcommands share (threshold settings, storage)."""

from __future__ import annotations

import argparse

from perfsuite.config import load_suite_config
from perfsuite.gate.settings import INCONCLUSIVE_ACTIONS, STATISTICS, GateSettings, settings_from_config


def _percent(value: float, digits: int = 0) -> str:
    return f"{value:.{digits}%}".replace("%", "%%")  # argparse %-formats help strings


def add_settings_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("statistics (default: [tool.perfsuite.gate] in pyproject.toml, else shown)")
    defaults = GateSettings()
    group.add_argument("--threshold",
                       help="the slowdown the gate must catch: each row's minimum detectable effect (MDE) is held "
                            f"against it, e.g. 5%% (default {_percent(defaults.threshold)})")
    group.add_argument("--host-threshold", dest="host_threshold",
                       help="the same for the host-side figures (latency, host time) of rows that also have device "
                            f"time, which carry the host's noise (default {_percent(defaults.host_threshold)})")
    group.add_argument("--min-effect", dest="min_effect",
                       help="a significant change smaller than this counts as unchanged (default: half the "
                            f"threshold, {_percent(defaults.min_effect, 1)})")
    group.add_argument("--alpha", help="error rate of one whole gate run: Benjamini-Hochberg over its rows' "
                                       f"t-tests (default {defaults.alpha})")
    group.add_argument("--power", help="power at which each row's MDE is stated "
                                       f"(default {_percent(defaults.power)})")
    group.add_argument("--inconclusive", choices=INCONCLUSIVE_ACTIONS,
                       help="what a row that could not tell a change from noise does to the gate: undecided "
                            "(exit 3, the default), fail (exit 1) or pass (exit 0)")
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
    group.add_argument("--informational",
                       help="comma-separated row kinds shown with verdicts that never decide the gate (default "
                            f"{','.join(defaults.informational)}; 'none' gates every row)")


def settings_from_args(args: argparse.Namespace) -> GateSettings:
    keys = ("threshold", "host_threshold", "informational", "min_effect", "alpha", "power", "inconclusive",
            "memory_threshold", "memory_floor_mib", "cv_threshold", "host_contention", "statistic", "require_backends")
    return settings_from_config(load_suite_config(), {key: getattr(args, key, None) for key in keys})


def add_storage_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", default=".benchmarks",
                        help="pytest-benchmark storage folder for run ids (default: .benchmarks)")


def baseline_dir(args: argparse.Namespace) -> str:
    return args.store or settings_from_config(load_suite_config()).baseline_dir
