"""The pytest plugin: options, session fixtures, parametrization and machine info.

Loaded by the root ``conftest.py``; elsewhere, ``pytest -p perfsuite.plugin``.

Tests and benchmarks ask for ``case`` (a :class:`Case`: backend, precision, batch size) and get
one test per combination of ``--backends`` x ``--precisions`` x ``--batch-sizes``, stored as three
separate parameters (``backend``, ``precision``, ``batch_size``) that every saved row has; the
``runner_pool`` fixture turns a case into a built, loaded runner, or skips with the reason it
cannot run here.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch

from perfsuite import environment, plan
from perfsuite.backends import backend_names, get_runner_class
from perfsuite.backends.base import Runner, RunSpec
from perfsuite.config import SuiteConfig, check_precision, load_suite_config, parse_batch_sizes, split_names
from perfsuite.errors import BackendUnavailable, BrokenEnvironment, InputError
from perfsuite.images import TRANSFORMS, fixture_paths, load_batch
from perfsuite.measure import MeasureSettings, RunnerFootprint
from perfsuite.models import LoadedModel, check_model_name, check_weights_choice, load_model, resolve_weights_choice
from perfsuite.timing import time_once
from perfsuite.tolerances import Tolerance, merge_overrides, parse_tolerance_options, tolerance_for

PARITY_BATCH = "parity"  # batch-size marker: the fixture images themselves (dog and cat)
#: opt-in tiers: deselected unless ``-m`` names them, or (the benchmark tiers) their file is named on the
#: command line (the default run is the regression gate's tier)
OPT_IN_MARKERS = {
    "e2e": "end-to-end pipelines, image file to label (pytest benchmarks -m e2e)",
    "ladder": "optimization ladder: roofline rates, torch.compile compile times (pytest benchmarks -m ladder)",
    "slow": "slow tests: torch.compile rows of the parity matrix and compile drills (pytest tests -m slow)",
}
#: the largest batch the end-to-end tier decodes from files per round (the report's scenario is batch 1)
E2E_MAX_BATCH = 8


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("perfsuite", "perfsuite: inference benchmarks and parity")
    group.addoption("--model", default=None, help="torchvision classification model (default: alexnet)")
    group.addoption("--weights", default=None,
                    help="auto | pretrained | random | PATH to a state_dict (default: $PERFSUITE_WEIGHTS or auto)")
    group.addoption("--backends", default=None, help=f"comma-separated, from: {', '.join(backend_names())}")
    group.addoption("--precisions", default=None, help="comma-separated, from: fp32, fp16, bf16")
    group.addoption("--batch-sizes", default=None,
                    help="comma-separated (default: 1,8,64,256 on GPU; 1,8 on CPU)")
    group.addoption("--device", default=None, help="auto | cpu | cuda | cuda:N (default: auto)")
    group.addoption("--transform", default="report", choices=TRANSFORMS,
                    help="preprocessing: the report's Resize((224,224)) or the eval Resize(256)+CenterCrop")
    group.addoption("--tolerance", action="append", default=[], metavar="PRECISION:KEY=VALUE[,...]",
                    help="override a parity tolerance, e.g. fp16:rel=0.02 (repeatable; wins over "
                         "[tool.perfsuite.tolerances])")
    group.addoption("--cudnn-benchmark", action="store_true",
                    help="set torch.backends.cudnn.benchmark (recorded in every row)")
    group.addoption("--cpu-affinity", default=None, metavar="CPUS",
                    help="pin the benchmark process to these CPUs, e.g. 2,3 (recorded in every row)")
    group.addoption("--roofline", action="store_true",
                    help="add roofline context (%% of the measured bandwidth/compute floor) to latency rows")
    group.addoption("--no-host-probe", action="store_true",
                    help="do not interleave the host-speed probe with the timed rounds")


@dataclasses.dataclass(frozen=True)
class SuiteOptions:
    """The resolved options of this session."""

    model: str
    weights: str
    backends: tuple[str, ...]
    precisions: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    device: str
    transform: str
    tolerance_overrides: dict[str, dict[str, float]]
    config: SuiteConfig
    roofline: bool = False  # roofline context in latency rows (measures the machine's rates once)
    #: precisions the benchmark tiers skip by default, with the reason: on a CPU, those it does not run
    #: natively (``environment.cpu_precision_problem``); empty when --precisions names them
    default_skips: dict[str, str] = dataclasses.field(default_factory=dict)

    def tolerance(self, precision: str) -> Tolerance:
        """The parity tolerance of ``precision`` on this session's device (fp32 under TF32 is judged as tf32)."""
        return tolerance_for(precision, environment.tf32_in_effect(self.device), self.tolerance_overrides)

    @classmethod
    def from_pytest(cls, config: pytest.Config) -> SuiteOptions:
        suite = load_suite_config(config.rootpath / "pyproject.toml"
                                  if (config.rootpath / "pyproject.toml").is_file() else None)
        device = environment.resolve_device(config.getoption("--device"))
        backends = split_names(config.getoption("--backends"), "--backends") or suite.backends
        for name in backends:
            try:
                get_runner_class(name)
            except InputError as exc:  # an unknown name, blamed on where it came from
                raise InputError(f"{'--backends' if config.getoption('--backends') else suite.source('backends')}: "
                                 f"{exc}") from None
        asked = tuple(check_precision(p, "--precisions") for p in split_names(config.getoption("--precisions"),
                                                                              "--precisions"))
        precisions = asked or suite.precisions
        batch_option = config.getoption("--batch-sizes")
        batch_sizes = parse_batch_sizes(batch_option) if batch_option is not None else suite.batch_sizes(device)
        model_option = config.getoption("--model")
        model = check_model_name(model_option or suite.model, "--model" if model_option else suite.source("model"))
        weights = check_weights_choice(*resolve_weights_choice(config.getoption("--weights"), suite.weights,
                                                               suite.source("weights")))
        return cls(
            model=model,
            weights=weights,
            backends=tuple(backends),
            precisions=tuple(precisions),
            batch_sizes=batch_sizes,
            device=device,
            transform=config.getoption("--transform"),
            tolerance_overrides=merge_overrides(suite.extra.get("tolerances"),
                                                parse_tolerance_options(config.getoption("--tolerance"))),
            config=suite,
            roofline=bool(config.getoption("--roofline")),
            default_skips={} if asked else default_precision_skips(precisions, device),
        )

    def skip_reason(self, precision: str) -> str | None:
        """Why this session's defaults leave ``precision`` out (None: they do not)."""
        return self.default_skips.get(precision)


def default_precision_skips(precisions: tuple[str, ...], device: str,
                            flags: frozenset[str] | None = None) -> dict[str, str]:
    """The precisions a default run skips on ``device``, with the reason: on a CPU those it lacks the
    instructions for (``flags``: the CPU's, read from /proc/cpuinfo when not given); on a GPU none. Where
    none of ``precisions`` is native the run keeps them all, rather than run nothing."""
    if environment.is_cuda(device):
        return {}
    flags = environment.cpu_flags() if flags is None else flags
    skips = {p: reason for p in precisions if (reason := environment.cpu_precision_problem(p, flags))}
    return skips if len(skips) < len(precisions) else {}


class Case(NamedTuple):
    """One parametrized combination (a tuple, so pytest-benchmark can store it as a param)."""

    backend: str
    precision: str
    batch_size: int | str  # an int, or PARITY_BATCH for the fixture images

    @property
    def id(self) -> str:
        size = "fixtures" if self.batch_size == PARITY_BATCH else f"b{self.batch_size}"
        return f"{self.backend}-{self.precision}-{size}"


def pytest_configure(config: pytest.Config) -> None:
    from perfsuite.fresh_process import skip_the_final_collection_at_exit

    skip_the_final_collection_at_exit()
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU; skipped with a reason elsewhere")
    config.addinivalue_line("markers", "row_params(backend=..., precision=..., batch_size=...): a benchmark's "
                                       "values of the parameters every saved row has (null: does not apply)")
    for name, text in OPT_IN_MARKERS.items():  # also for runs outside this project's pyproject.toml
        config.addinivalue_line("markers", f"{name}: {text}; deselected unless -m selects it")
    if "s" not in (config.option.reportchars or "") and "a" not in (config.option.reportchars or ""):
        config.option.reportchars = (config.option.reportchars or "") + "s"  # skip reasons, without -rs
    if config.getoption("--cudnn-benchmark"):
        torch.backends.cudnn.benchmark = True
    try:
        config._perfsuite_options = SuiteOptions.from_pytest(config)
        _apply_cpu_affinity(config.getoption("--cpu-affinity"))
        _check_weights_file(config)
        _check_cache_folder()
        _redirect_benchmark_json(config)
    except (InputError, BrokenEnvironment) as exc:
        raise pytest.UsageError(str(exc)) from None
    config._perfsuite_outcomes = OutcomeLog()
    config.pluginmanager.register(config._perfsuite_outcomes, "perfsuite-outcomes")


def _apply_cpu_affinity(value: str | None) -> None:
    if not value:
        return
    try:
        cpus = {int(item) for item in split_names(value, "--cpu-affinity")}
        os.sched_setaffinity(0, cpus)
    except (ValueError, OSError) as exc:
        allowed = ",".join(map(str, sorted(os.sched_getaffinity(0))))
        raise InputError(f"--cpu-affinity {value}: cannot pin to these CPUs ({exc}); this process may use {allowed}") \
            from None


def _check_weights_file(config: pytest.Config) -> None:
    """A weights file (``--weights PATH``) is loaded once now, so a missing, unreadable, mismatched or
    non-finite file is one usage error naming it, not an error at every test's setup; the loaded model is
    kept (:func:`_preload_model`) for the plan and the ``loaded_model`` fixture."""
    options = _options(config)
    if options.weights not in ("auto", "pretrained", "random"):
        _preload_model(config, options)


def _preload_model(config: pytest.Config, options: SuiteOptions) -> tuple[LoadedModel, float]:
    """The session's model, loaded (and timed) once: by the weights check at configure or by the plan,
    whichever comes first; the ``loaded_model`` fixture reuses it, its warnings become the first test's."""
    if getattr(config, "_perfsuite_preloaded", None) is None:
        started = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = load_model(options.model, options.weights)
        config._perfsuite_preloaded = (model, list(caught), time.perf_counter() - started)
    model, _, load_s = config._perfsuite_preloaded
    return model, load_s


def _check_cache_folder() -> None:
    """A file where the engine cache folder should be (``.perfsuite-cache``) would fail every converted
    backend's row: one usage error now. (A read-only cache may still serve every entry: checked per build.)"""
    from perfsuite.engine_cache import EngineCache

    cache = EngineCache()
    problem = cache.root_problem()
    if problem:
        raise InputError(f"engine cache {cache.root}: {problem}")


# -- --benchmark-json: checked before the run, written atomically ------------------------------------
# pytest-benchmark opens the --benchmark-json file itself (``open(path, "wb")``, no temporary file): a full
# disk truncates a valid old file, a missing folder fails after the whole run. At configure time (before
# pytest-benchmark's own, which is trylast) the path is checked by perfsuite.output's rules and, for a
# regular file or a new path, pytest-benchmark is pointed at a temporary file beside it; once it has
# written that (pytest_sessionfinish), it is fsynced and renamed onto the target. A device or FIFO is
# written through by pytest-benchmark as before; a symlink is followed.

def _redirect_benchmark_json(config: pytest.Config) -> None:
    import tempfile

    from perfsuite.output import check_output_path, is_write_through, resolve_target

    target = getattr(config.option, "benchmark_json", None)
    if target is None or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    opened = target if hasattr(target, "write") else None  # pytest-benchmark < 5.3 (argparse.FileType): already open
    if opened is not None:
        target = opened.name
    check_output_path(target, f"--benchmark-json {target}")
    if is_write_through(Path(target)) or is_write_through(resolve_target(target)):
        return
    destination = resolve_target(target)
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".tmp")
    os.close(handle)
    config._perfsuite_benchmark_json = (Path(target), Path(temporary))
    if opened is not None:  # it holds an open handle: give it one on the temporary file instead
        opened.close()
        config.option.benchmark_json = open(temporary, "wb")  # noqa: SIM115 (pytest-benchmark writes and closes it)
    else:
        config.option.benchmark_json = Path(temporary)


def pytest_unconfigure(config: pytest.Config) -> None:
    """The temporary --benchmark-json file of a session that never reached its end (a usage error raised
    by a later plugin, a crash) is removed; a finished session has already renamed or removed it."""
    redirected = getattr(config, "_perfsuite_benchmark_json", None)
    if redirected:
        redirected[1].unlink(missing_ok=True)


@pytest.hookimpl(wrapper=True, tryfirst=True)  # around pytest-benchmark's own sessionfinish, which writes the file
def pytest_sessionfinish(session: pytest.Session, exitstatus: int):
    from perfsuite.output import OutputError, describe_os_error, replace_with_file

    redirected = getattr(session.config, "_perfsuite_benchmark_json", None)
    target = redirected[0] if redirected else getattr(session.config.option, "benchmark_json", None)
    problem = None
    try:
        result = yield
    except OSError as exc:  # pytest-benchmark's open/write of --benchmark-json: a full disk, a device that refuses
        result, problem = None, f"--benchmark-json {target}: not written ({describe_os_error(exc)})"
    if redirected:
        final, temporary = redirected
        try:
            if problem is None and temporary.exists() and temporary.stat().st_size > 0:
                os.chmod(temporary, 0o644)
                replace_with_file(temporary, final, f"--benchmark-json {final}")
                reporter = session.config.pluginmanager.get_plugin("terminalreporter")
                if reporter is not None:  # pytest-benchmark named the temporary file it wrote
                    reporter.write_line(f"perfsuite: --benchmark-json: moved into place as {final}")
        except OutputError as exc:
            problem = str(exc)
        finally:
            temporary.unlink(missing_ok=True)
        if problem and final.exists():
            problem += f"; {final} left unchanged"
    if problem:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write("\n")  # after the progress line, which is not yet ended here
            reporter.write_line(f"perfsuite: error: {problem}", red=True, bold=True)
        else:
            import sys

            print(f"perfsuite: error: {problem}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.USAGE_ERROR
    return result


# -- --benchmark-compare-fail: a stored run it cannot judge is a usage error, a regression a failure --------

def pytest_sessionstart(session: pytest.Session) -> None:
    """pytest-benchmark has loaded the ``--benchmark-compare`` runs (at its configure): a stored row whose
    compared statistic is zero, negative or not finite makes every percentage against it infinite or
    meaningless, so it is refused here, naming the file, the benchmark and the field."""
    import math

    benchmark_session = getattr(session.config, "_benchmarksession", None)
    checks = getattr(benchmark_session, "compare_fail", None) or []
    for path, rows in (getattr(benchmark_session, "compared_mapping", None) or {}).items():
        for name, row in rows.items():
            for check in checks:
                value = (row.get("stats") or {}).get(check.field)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                        or value <= 0:
                    raise pytest.UsageError(
                        f"--benchmark-compare: {path}: benchmark {name}: stats.{check.field} is {value!r}; "
                        f"--benchmark-compare-fail={check.field}:... cannot judge against it (a corrupt or edited "
                        "saved run?)")


@pytest.hookimpl(wrapper=True, specname="pytest_terminal_summary")
def pytest_terminal_summary_regressions(terminalreporter: Any, exitstatus: int, config: pytest.Config):
    """pytest-benchmark ends a ``--benchmark-compare-fail`` regression by raising PerformanceRegression out
    of its terminal summary (a traceback); after its own list of what regressed, this makes it one line and
    exit 1 (tests failed)."""
    try:
        from pytest_benchmark.session import PerformanceRegression
    except ImportError:  # pytest-benchmark not installed: nothing to translate
        return (yield)
    try:
        return (yield)
    except PerformanceRegression:
        terminalreporter.write_line("perfsuite: --benchmark-compare-fail: performance regressed (listed above)",
                                    red=True, bold=True)
        session = getattr(terminalreporter, "_session", None)
        if session is not None:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        return None


def _options(config: pytest.Config) -> SuiteOptions:
    return config._perfsuite_options


#: the parameters every benchmark row stores, separately, so that pytest-benchmark (and its peers) can group
#: and slice by each: ``--benchmark-group-by=param:precision``, one CSV column each
ROW_PARAMS = ("backend", "precision", "batch_size")
#: fixtures that are a :class:`Case` built from those parameters, and the batch sizes each takes
_CASE_FIXTURES = ("case", "startup_case", "e2e_case")


def _case_batch_sizes(fixture: str, options: SuiteOptions) -> list[int]:
    if fixture == "startup_case":  # cold start: batch 1
        return [1]
    if fixture == "e2e_case":  # the report's scenario: files to labels at small batches
        return [n for n in options.batch_sizes if n <= E2E_MAX_BATCH] or [1]
    return list(options.batch_sizes)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``case``, ``startup_case``, ``e2e_case``: backend x precision x batch size, as three separate
    parameters (:data:`ROW_PARAMS`, ids like ``eager-fp16-b1``); ``parity_case``: backend x precision
    on the fixture images."""
    options = _options(metafunc.config)
    fixture = next((name for name in _CASE_FIXTURES if name in metafunc.fixturenames), None)
    if fixture is not None:
        cases = [Case(b, p, n) for b in options.backends for p in options.precisions
                 for n in _case_batch_sizes(fixture, options)]
        metafunc.parametrize(ROW_PARAMS, cases, ids=[c.id for c in cases])
    if "parity_case" in metafunc.fixturenames:
        cases = [Case(b, p, PARITY_BATCH) for b in options.backends for p in options.precisions]
        metafunc.parametrize("parity_case", cases, ids=[c.id for c in cases])


def _unparametrized(name: str) -> Any:
    raise pytest.UsageError(f"the {name!r} fixture is a parameter: ask for case, startup_case or e2e_case")


@pytest.fixture
def backend() -> str:
    """Overridden by the parametrization above (a test asking for ``case`` gets it)."""
    return _unparametrized("backend")


@pytest.fixture
def precision() -> str:
    return _unparametrized("precision")


@pytest.fixture
def batch_size() -> int:
    return _unparametrized("batch_size")


@pytest.fixture
def case(backend: str, precision: str, batch_size: int) -> Case:
    """The row's backend, precision and batch size as one :class:`Case`."""
    return Case(backend, precision, batch_size)


@pytest.fixture
def startup_case(backend: str, precision: str, batch_size: int) -> Case:
    """Batch 1 (cold start, compile time)."""
    return Case(backend, precision, batch_size)


@pytest.fixture
def e2e_case(backend: str, precision: str, batch_size: int) -> Case:
    """Batch sizes up to :data:`E2E_MAX_BATCH`."""
    return Case(backend, precision, batch_size)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    """Give every benchmark row all of :data:`ROW_PARAMS`: pytest-benchmark's ``--benchmark-group-by=param:X``
    fails on a row without ``X``. A benchmark that is not per backend/precision/batch declares its values with
    ``@pytest.mark.row_params(...)``; what it leaves out is null (does not apply)."""
    fixture = getattr(item, "funcargs", {}).get("benchmark")
    if fixture is None or not hasattr(fixture, "params"):
        return
    marker = item.get_closest_marker("row_params")
    declared = dict(marker.kwargs) if marker else {}
    fixture.params = {**dict.fromkeys(ROW_PARAMS), **declared, **(fixture.params or {})}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.option.markexpr:  # an explicit -m decides for itself
        named = {Path(arg.split("::")[0]).resolve() for arg in config.args if Path(arg.split("::")[0]).is_file()}

        def opt_in_here(item: pytest.Item) -> bool:
            if item.get_closest_marker("slow"):
                return True
            tier = any(item.get_closest_marker(name) for name in OPT_IN_MARKERS)
            return tier and Path(item.path).resolve() not in named

        opt_in = [item for item in items if opt_in_here(item)]
        if opt_in:
            config.hook.pytest_deselected(items=opt_in)
            items[:] = [item for item in items if item not in set(opt_in)]
    options = _options(config)
    for item in items:  # the benchmark tiers' defaults; parity and the unit tests run every precision
        precision = getattr(getattr(item, "callspec", None), "params", {}).get("precision")
        if precision in options.default_skips and _is_benchmark(item):
            item.add_marker(pytest.mark.skip(reason=options.default_skips[precision]))
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=f"needs a CUDA GPU; torch {torch.__version__} sees none on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _is_benchmark(item: pytest.Item) -> bool:
    """One of the suite's benchmark tiers (benchmarks/), not a unit test."""
    return "benchmark" in getattr(item, "fixturenames", ()) and "benchmarks" in Path(item.path).parts


def pytest_collection_finish(session: pytest.Session) -> None:
    """The plan, before anything runs: how many benchmarks, which will skip and why, and how long the run
    takes, estimated from a model load and an eager forward per batch size timed here, now
    (``perfsuite.plan``); then a progress line per benchmark as it finishes."""
    config = session.config
    benchmarks = [item for item in session.items if _is_benchmark(item)]
    if not benchmarks or config.option.collectonly:
        return
    options = _options(config)
    skips: dict[str, int] = {}
    kinds: dict[str, int] = {}
    planned: list[tuple[pytest.Item, str, Case | None]] = []
    for item in benchmarks:
        params = getattr(getattr(item, "callspec", None), "params", {})
        case = Case(*(params[name] for name in ROW_PARAMS)) if all(n in params for n in ROW_PARAMS) else None
        skip_marker = item.get_closest_marker("skip")
        reason = skip_marker.kwargs.get("reason", "skip marker") if skip_marker else None
        if case is not None and reason is None:
            batch = 2 if case.batch_size == PARITY_BATCH else case.batch_size
            spec = RunSpec(case.precision, batch, options.device)
            runner_class = get_runner_class(case.backend)
            reason = runner_class.unavailable_reason(spec) or runner_class.expected_skip(spec)
        if reason:
            skips[reason] = skips.get(reason, 0) + 1
        else:
            kind = item.originalname.removeprefix("test_") if hasattr(item, "originalname") else item.name
            kinds[kind] = kinds.get(kind, 0) + 1
            planned.append((item, kind, case))
    lines = [f"perfsuite plan: {len(planned)} benchmark(s) to run ({', '.join(f'{k} {n}' for k, n in kinds.items())}"
             f"), {sum(skips.values())} to skip (known before trying: a real attempt may skip more)"]
    lines += [f"perfsuite plan: skip {count}: {reason}" for reason, count in skips.items()]
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    progress = _plan_estimate(config, options, planned, reporter, lines) if planned else None
    if progress is not None:
        config.pluginmanager.register(progress, "perfsuite-progress")
    if reporter is not None:
        for line in lines:
            reporter.write_line(line)


def _plan_estimate(config: pytest.Config, options: SuiteOptions, planned: list[tuple[pytest.Item, str, Case | None]],
                   reporter: Any, lines: list[str]) -> ProgressHooks | None:
    """Load the session's model (timed; the ``loaded_model`` fixture reuses it), time an eager forward per
    batch size, and estimate each planned row; None where the model cannot be loaded (its fixture says why)."""
    from perfsuite.config import cache_root
    from perfsuite.errors import PerfsuiteError

    try:
        model, load_s = _preload_model(config, options)
    except PerfsuiteError:
        return None
    sizes = sorted({c.batch_size for _, _, c in planned if c is not None and c.batch_size != PARITY_BATCH} or {1})
    module = model.module if options.device == "cpu" else copy.deepcopy(model.module)
    precisions = [c.precision for _, _, c in planned if c is not None and c.backend == "eager"]
    warm = plan.warm_up_timings(module, sizes, options.device, load_s, lambda fn: time_once(fn, options.device)[0],
                                precisions)
    del module
    if environment.is_cuda(options.device):  # the copy's memory goes back before any row measures its own
        torch.cuda.empty_cache()
    max_time = float(config.getoption("benchmark_max_time", 1.0) or 1.0)
    min_rounds = int(config.getoption("benchmark_min_rounds", 5) or 5)
    cached = plan.export_cached(cache_root(options.config))
    built: set[tuple[str, str]] = set()
    rows = []
    for item, kind, case in planned:
        backend = case.backend if case else None
        first = case is not None and (case.backend, case.precision) not in built
        if case is not None:
            built.add((case.backend, case.precision))
        batch = case.batch_size if case and case.batch_size != PARITY_BATCH else None
        seconds = plan.row_seconds(kind, backend, batch, warm, warmup_rounds=options.config.warmup_rounds,
                                   max_time=max_time, min_rounds=min_rounds, first_build=first,
                                   export_cached=cached, precision=case.precision if case else None)
        rows.append(plan.RowPlan(item.nodeid, f"{kind} {case.id}" if case else kind, seconds))
    progress = ProgressHooks(plan.ProgressLog(rows, reporter))
    forwards = ", ".join([f"fp32 b{n} {plan.format_median(s).removeprefix('median ')}"
                          for n, s in warm.forward_s.items()]
                         + [f"{p} {f:.2g}x fp32" for p, f in warm.precision_factor.items()])
    lines.append(f"perfsuite plan: about {plan.format_seconds(progress.log.total_estimate_s)} in all, from what "
                 f"was timed here just now (model load {load_s:.2f} s; one eager forward: {forwards})")
    return progress


class ProgressHooks:
    """pytest's side of :class:`perfsuite.plan.ProgressLog`: each benchmark's median and outcome."""

    def __init__(self, log: plan.ProgressLog) -> None:
        self.log = log
        self.outcomes: dict[str, str] = {}

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Any:
        try:
            return (yield)
        finally:
            self.log.record_median(item.nodeid, plan.median_of((getattr(item, "funcargs", None) or {})
                                                               .get("benchmark")))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "teardown":
            if report.skipped or report.failed or report.when == "call":
                self.outcomes.setdefault(report.nodeid, report.outcome)
            return
        self.log.write(report.nodeid, self.outcomes.pop(report.nodeid, report.outcome))


def pytest_report_header(config: pytest.Config) -> list[str]:
    options = _options(config)
    tf32 = environment.tf32_settings()
    return [
        f"perfsuite: model={options.model} weights={options.weights} device={options.device} "
        f"backends={','.join(options.backends)} precisions={','.join(options.precisions)}"
        f"{' (skipped by default here: ' + ','.join(options.default_skips) + ')' if options.default_skips else ''} "
        f"batch_sizes={','.join(map(str, options.batch_sizes))}",
        f"perfsuite: torch {torch.__version__}, TF32 conv={tf32['cudnn_conv']} matmul={tf32['cuda_matmul']}",
        "perfsuite: opt-in tiers (deselected unless -m names them): " + "; ".join(OPT_IN_MARKERS.values()),
    ]


@pytest.hookimpl(optionalhook=True)  # only called when pytest-benchmark is active
def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    """GPU, driver, CUDA, cuDNN, TensorRT, torch and other versions into every saved run."""
    from perfsuite.gate.hardware import machine_section

    machine_info["perfsuite"] = machine_section(_options(config).device)  # + power limit, MIG mode (NVML)


class OutcomeLog:
    """Tests that were skipped or failed, with the reason: saved runs keep them (pytest-benchmark
    writes rows only for benchmarks that ran), so a skipped backend is visible to ``compare``."""

    def __init__(self) -> None:
        self.outcomes: list[dict[str, str]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not (report.skipped or report.failed):
            return
        if report.skipped and isinstance(report.longrepr, tuple):
            reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        else:  # the exception line pytest prints in its short summary
            crash = getattr(getattr(report.longrepr, "reprcrash", None), "message", None)
            reason = (crash or report.longreprtext or "").strip().split("\n")[0][:500]
        self.outcomes.append({"nodeid": report.nodeid, "outcome": "skipped" if report.skipped else "failed",
                              "when": report.when, "reason": reason})


@pytest.hookimpl(optionalhook=True)  # only called when pytest-benchmark is active
def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list, output_json: dict[str, Any]) -> None:
    """Skipped and failed tests into every saved run (schema in ``perfsuite.results``)."""
    import statistics

    log = getattr(config, "_perfsuite_outcomes", None)
    probes = [row["extra_info"]["host_probe"]["median_s"] for row in output_json.get("benchmarks", [])
              if isinstance((row.get("extra_info") or {}).get("host_probe"), dict)]
    output_json["perfsuite"] = {
        "schema_version": 1, "outcomes": list(log.outcomes) if log else [],
        # the host's speed during this run: the median of its rows' interleaved probes (see perfsuite.measure)
        "host_probe": {"median_s": statistics.median(probes), "rows": len(probes)} if probes else None,
    }


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Lines tests publish with ``record_property("perfsuite_summary", ...)`` (e.g. engine sizes), also under
    pytest-xdist, where a test's own output stays on its worker."""
    lines = [value for report in terminalreporter.getreports("passed")
             for name, value in report.user_properties if name == "perfsuite_summary"]
    if config.getoption("benchmark_compare_fail", None):
        lines.append("--benchmark-compare-fail judged one run against one saved run: with no run-to-run spread "
                     "a failure there can be noise (small-batch GPU rows move 20-30% between unchanged runs on "
                     "a shared host). Gate with several runs a side: perfsuite compare (docs/gate.md).")
    if lines:
        terminalreporter.section("perfsuite")
        for line in lines:
            terminalreporter.write_line(line)


# -- session fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def suite_options(request: pytest.FixtureRequest) -> SuiteOptions:
    return _options(request.config)


@pytest.fixture(scope="session")
def loaded_model(request: pytest.FixtureRequest, suite_options: SuiteOptions) -> LoadedModel:
    preloaded = getattr(request.config, "_perfsuite_preloaded", None)
    if preloaded is not None:  # loaded (and timed) at configure or by the plan; its warnings are the first test's
        model, caught, _ = preloaded
        for warning in caught:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        return model
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        return load_model(suite_options.model, suite_options.weights)


@pytest.fixture(scope="session")
def fixture_images(suite_options: SuiteOptions) -> torch.Tensor:
    """dog.jpg and cat.jpg, preprocessed: an (2, 3, 224, 224) fp32 CPU batch."""
    return load_batch(fixture_paths(), suite_options.transform)


@pytest.fixture(scope="session")
def reference_outputs(loaded_model: LoadedModel, fixture_images: torch.Tensor, suite_options: SuiteOptions):
    """Eager fp32, TF32 off, on the suite's device: what every backend is compared with."""
    from perfsuite.backends.eager import reference_logits

    return reference_logits(loaded_model, fixture_images, suite_options.device)


@dataclasses.dataclass
class PooledRunner:
    runner: Runner
    cold_start_s: float  # the first inference after load, synchronized
    footprint: RunnerFootprint  # memory the runner holds (see perfsuite.measure)


class RunnerPool:
    """Builds each (backend, precision, batch) runner once; keeps one alive at a time.

    Keeping only the latest bounds GPU memory, and each runner's memory figures are read around its
    own build, load and first call (tests are ordered so that a combination's uses are adjacent).
    Static unavailability and a failed real attempt that the environment explains
    (:class:`BackendUnavailable`) become a skip with the reason, remembered so that later tests of
    the same combination skip at once; any other error fails the test.
    """

    def __init__(self, model: LoadedModel, options: SuiteOptions, images: torch.Tensor) -> None:
        self.model, self.options, self.images = model, options, images
        self._current: tuple[tuple, PooledRunner] | None = None
        self._unavailable: dict[tuple, str] = {}

    def spec_for(self, case: Case) -> RunSpec:
        batch = self.images.shape[0] if case.batch_size == PARITY_BATCH else case.batch_size
        return RunSpec(case.precision, int(batch), self.options.device)

    def skip_if_unavailable(self, case: Case) -> None:
        """Skip, with the reason, what static checks or an earlier real attempt found unable to run here."""
        spec = self.spec_for(case)
        key = (case.backend, spec)
        if key not in self._unavailable:
            reason = get_runner_class(case.backend).unavailable_reason(spec)
            if reason:
                self._unavailable[key] = reason
        if key in self._unavailable:
            pytest.skip(self._unavailable[key])

    def get(self, case: Case) -> PooledRunner:
        spec = self.spec_for(case)
        key = (case.backend, spec)
        if self._current and self._current[0] == key:
            return self._current[1]
        self.skip_if_unavailable(case)
        self.release()
        runner_class = get_runner_class(case.backend)
        for module in runner_class.requires:  # a library's one-time load is not this runner's memory
            importlib.import_module(module)
        runner = runner_class(self.model, spec)
        footprint = RunnerFootprint(spec.device)
        try:
            runner.load()
            footprint.loaded()
            example = runner.prepare(self.images[:1].expand(spec.batch_size, -1, -1, -1).contiguous())
            cold_start_s, _ = time_once(lambda: runner.infer(example), spec.device)
        except BackendUnavailable as exc:
            runner.release()
            self._unavailable[key] = str(exc)
            pytest.skip(str(exc))
        except InputError as exc:  # e.g. a read-only or full engine cache: its message says it all, no frames
            runner.release()
            pytest.fail(str(exc), pytrace=False)
        footprint.sample()  # the first call's activations and workspaces, on the device
        pooled = PooledRunner(runner, cold_start_s, footprint)
        self._current = (key, pooled)
        return pooled

    def release(self) -> None:
        if self._current:
            self._current[1].runner.release()
            self._current = None


@pytest.fixture(scope="session")
def runner_pool(loaded_model: LoadedModel, suite_options: SuiteOptions,
                fixture_images: torch.Tensor) -> Iterator[RunnerPool]:
    pool = RunnerPool(loaded_model, suite_options, fixture_images)
    yield pool
    pool.release()


@pytest.fixture(scope="session")
def measure_settings(request: pytest.FixtureRequest, suite_options: SuiteOptions) -> MeasureSettings:
    """Warm-up and duration for :func:`perfsuite.measure.measure`, from pytest-benchmark's own options."""
    config = request.config
    return MeasureSettings(
        warmup_rounds=suite_options.config.warmup_rounds,
        max_time=float(config.getoption("benchmark_max_time", 1.0) or 1.0),
        min_rounds=int(config.getoption("benchmark_min_rounds", 5) or 5),
        host_probe=not config.getoption("--no-host-probe"),
        gc_disabled=bool(config.getoption("benchmark_disable_gc", False)),
    )
