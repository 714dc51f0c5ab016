"""The pytest plugin: options, session fixtures, parametrization and machine info.

Loaded by the root ``conftest.py``; elsewhere, ``pytest -p perfsuite.plugin``.

Tests and benchmarks ask for ``case`` (a :class:`Case`: backend, precision, batch size) and get
one test per combination of ``--backends`` x ``--precisions`` x ``--batch-sizes``; the
``runner_pool`` fixture turns a case into a built, loaded runner, or skips with the reason it
cannot run here.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from perfsuite import environment
from perfsuite.backends import backend_names, get_runner_class
from perfsuite.backends.base import Runner, RunSpec
from perfsuite.config import SuiteConfig, check_precision, load_suite_config, parse_batch_sizes, split_names
from perfsuite.errors import BackendUnavailable, InputError
from perfsuite.images import TRANSFORMS, fixture_paths, load_batch
from perfsuite.models import LoadedModel, check_model_name, check_weights_choice, load_model, resolve_weights_choice
from perfsuite.timing import MemoryProbe, time_once
from perfsuite.tolerances import Tolerance, merge_overrides, parse_tolerance_options, tolerance_for

PARITY_BATCH = "parity"  # batch-size marker: the fixture images themselves (dog and cat)


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
        precisions = tuple(check_precision(p, "--precisions")
                           for p in split_names(config.getoption("--precisions"), "--precisions")) or suite.precisions
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
        )


@dataclasses.dataclass(frozen=True)
class Case:
    """One parametrized combination."""

    backend: str
    precision: str
    batch_size: int | str  # an int, or PARITY_BATCH for the fixture images

    @property
    def id(self) -> str:
        size = "fixtures" if self.batch_size == PARITY_BATCH else f"b{self.batch_size}"
        return f"{self.backend}-{self.precision}-{size}"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU; skipped with a reason elsewhere")
    if config.getoption("--cudnn-benchmark"):
        torch.backends.cudnn.benchmark = True
    try:
        config._perfsuite_options = SuiteOptions.from_pytest(config)
    except InputError as exc:
        raise pytest.UsageError(str(exc)) from exc
    config._perfsuite_outcomes = OutcomeLog()
    config.pluginmanager.register(config._perfsuite_outcomes, "perfsuite-outcomes")


def _options(config: pytest.Config) -> SuiteOptions:
    return config._perfsuite_options


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``case``: backend x precision x batch size; ``parity_case``: backend x precision on the
    fixture images; ``startup_case``: backend x precision at batch 1."""
    options = _options(metafunc.config)
    if "case" in metafunc.fixturenames:
        cases = [Case(b, p, n) for b in options.backends for p in options.precisions for n in options.batch_sizes]
        metafunc.parametrize("case", cases, ids=[c.id for c in cases])
    if "parity_case" in metafunc.fixturenames:
        cases = [Case(b, p, PARITY_BATCH) for b in options.backends for p in options.precisions]
        metafunc.parametrize("parity_case", cases, ids=[c.id for c in cases])
    if "startup_case" in metafunc.fixturenames:  # cold start: batch 1
        cases = [Case(b, p, 1) for b in options.backends for p in options.precisions]
        metafunc.parametrize("startup_case", cases, ids=[c.id for c in cases])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=f"needs a CUDA GPU; torch {torch.__version__} sees none on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config: pytest.Config) -> list[str]:
    options = _options(config)
    tf32 = environment.tf32_settings()
    return [
        f"perfsuite: model={options.model} weights={options.weights} device={options.device} "
        f"backends={','.join(options.backends)} precisions={','.join(options.precisions)} "
        f"batch_sizes={','.join(map(str, options.batch_sizes))}",
        f"perfsuite: torch {torch.__version__}, TF32 conv={tf32['cudnn_conv']} matmul={tf32['cuda_matmul']}",
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
    log = getattr(config, "_perfsuite_outcomes", None)
    output_json["perfsuite"] = {"schema_version": 1, "outcomes": list(log.outcomes) if log else []}


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Lines tests publish with ``record_property("perfsuite_summary", ...)`` (e.g. engine sizes), also under
    pytest-xdist, where a test's own output stays on its worker."""
    lines = [value for report in terminalreporter.getreports("passed")
             for name, value in report.user_properties if name == "perfsuite_summary"]
    if lines:
        terminalreporter.section("perfsuite")
        for line in lines:
            terminalreporter.write_line(line)


# -- session fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def suite_options(request: pytest.FixtureRequest) -> SuiteOptions:
    return _options(request.config)


@pytest.fixture(scope="session")
def loaded_model(suite_options: SuiteOptions) -> LoadedModel:
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
    cold_start_s: float
    memory: MemoryProbe


class RunnerPool:
    """Builds each (backend, precision, batch) runner once; keeps one alive at a time.

    Keeping only the latest bounds GPU memory and makes the peak-memory figure of a runner its own
    (tests are ordered so that each combination's uses are adjacent). Static unavailability and
    a failed real attempt (:class:`BackendUnavailable`) become a skip with the reason, remembered
    so that later tests of the same combination skip at once; any other error fails the test.
    """

    def __init__(self, model: LoadedModel, options: SuiteOptions, images: torch.Tensor) -> None:
        self.model, self.options, self.images = model, options, images
        self._current: tuple[tuple, PooledRunner] | None = None
        self._unavailable: dict[tuple, str] = {}

    def spec_for(self, case: Case) -> RunSpec:
        batch = self.images.shape[0] if case.batch_size == PARITY_BATCH else case.batch_size
        return RunSpec(case.precision, int(batch), self.options.device)

    def get(self, case: Case) -> PooledRunner:
        spec = self.spec_for(case)
        key = (case.backend, spec)
        if key in self._unavailable:
            pytest.skip(self._unavailable[key])
        if self._current and self._current[0] == key:
            return self._current[1]
        self.release()
        runner_class = get_runner_class(case.backend)
        reason = runner_class.unavailable_reason(spec)
        if reason:
            self._unavailable[key] = reason
            pytest.skip(reason)
        runner = runner_class(self.model, spec)
        try:
            with MemoryProbe(spec.device) as memory:
                runner.load()
                example = runner.prepare(self.images[:1].expand(spec.batch_size, -1, -1, -1).contiguous())
                cold_start_s, _ = time_once(lambda: runner.infer(example), spec.device)
        except BackendUnavailable as exc:
            runner.release()
            self._unavailable[key] = str(exc)
            pytest.skip(str(exc))
        pooled = PooledRunner(runner, cold_start_s, memory)
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
def benchmark_settings(request: pytest.FixtureRequest, suite_options: SuiteOptions) -> dict[str, Any]:
    """Warm-up and duration for pedantic benchmarks, from pytest-benchmark's own options."""
    config = request.config
    return {
        "warmup_rounds": suite_options.config.warmup_rounds,
        "max_time": float(config.getoption("benchmark_max_time", 1.0) or 1.0),
        "min_rounds": int(config.getoption("benchmark_min_rounds", 5) or 5),
        "disabled": bool(config.getoption("benchmark_disable", False)),
    }
