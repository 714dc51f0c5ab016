"""Helpers shared by the unit tests, and how ``pytest tests`` is spread over CPUs."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from perfsuite.engine_cache import EngineCache
from perfsuite.models import LoadedModel, load_model


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """``pytest tests`` runs on pytest-xdist workers, one per CPU core (``-n auto``), each test file on one
    worker (``--dist loadscope``: a module fixture that runs many command lines in one child runs once; with
    pytest 9 and xdist 3.8, ``loadgroup`` did not keep a group together): most of the suite's time is Python
    processes starting and importing torch, which parallelizes.

    Here, not in ``addopts``: ``-n`` there would also reach ``pytest benchmarks``, and pytest-benchmark
    disables itself under xdist. It stays in one process when the command asks for anything else: ``-n`` or
    ``--dist`` given (``-n 0``: one process), ``-p no:xdist``, a file or test named rather than a folder,
    ``--collect-only``, ``--pdb``, or a ``-m`` naming the slow tier (its tests compare the timings of fresh
    processes and compile with every core; ``-n`` may still be given for it)."""
    if not config.pluginmanager.hasplugin("xdist") or hasattr(config, "workerinput"):
        return
    option = config.option
    if option.numprocesses is not None or option.dist != "no" or option.collectonly or option.usepdb:
        return
    if getattr(option, "help", False) or getattr(option, "version", False):
        return
    if re.search(r"\bslow\b", option.markexpr or "") or not config.args:
        return
    if all(Path(config.invocation_params.dir, arg).is_dir() for arg in config.args):
        option.numprocesses = "auto"
        option.dist = "loadscope"
        # pytest-benchmark turns itself off under xdist, and says so; a test that times makes its own fixture
        option.benchmark_disable = True


# -- the GPU, shared by xdist workers ----------------------------------------------------------------------
# On a GPU machine ``pytest tests`` runs ~16 workers on one GPU. Processes on one GPU take turns on it (time
# slicing), so a test that checks a timing or the device's free memory (``gpu_timing``: a sleep kernel's
# length within 2%, device time, cudaMemGetInfo) read garbage while other workers ran kernels (H100,
# 2026-12-06: a 1 ms sleep kernel timed at 5.8 ms). Such a test gets the GPU to itself: every test holds a
# shared lock while it runs, a ``gpu_timing`` test an exclusive one; a turnstile taken first keeps a waiting
# exclusive test from being starved by the stream of shared ones (a writer-preferring reader-writer lock
# from two flock(2) locks, which the kernel releases if a worker dies).
GPU_LOCKS = Path(tempfile.gettempdir()) / f"perfsuite-tests-gpu-{os.getuid()}"


@contextlib.contextmanager
def gpu_turn(exclusive: bool, folder: Path = GPU_LOCKS) -> Iterator[None]:
    """Hold the GPU shared (any test) or alone (``exclusive``) against the other processes using ``folder``."""
    import fcntl

    folder.mkdir(mode=0o700, exist_ok=True)
    turnstile = os.open(folder / "turnstile", os.O_RDWR | os.O_CREAT, 0o600)
    gpu = os.open(folder / "gpu", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        if exclusive:  # keeps the turnstile: tests that arrive now wait until this one is done
            fcntl.flock(gpu, fcntl.LOCK_EX)
        else:
            fcntl.flock(gpu, fcntl.LOCK_SH)
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        yield
    finally:
        os.close(gpu)  # closing releases the locks
        os.close(turnstile)


@pytest.fixture(autouse=True)
def _gpu_to_itself_when_timing(request: pytest.FixtureRequest) -> Iterator[None]:
    import torch

    if not (os.environ.get("PYTEST_XDIST_WORKER") and torch.cuda.is_available()):
        yield  # one process, or no GPU to share
        return
    with gpu_turn(request.node.get_closest_marker("gpu_timing") is not None):
        yield


@pytest.fixture(scope="session")
def alexnet() -> LoadedModel:
    """AlexNet with the deterministic offline weights, built once for all unit tests (do not mutate it)."""
    return load_model("alexnet", "random")


@pytest.fixture(scope="session")
def shared_exports(tmp_path_factory: pytest.TempPathFactory) -> EngineCache:
    """An engine cache for the whole ``pytest tests`` run, every xdist worker's (pytest's base temporary
    folder, above the workers' own): each ONNX export in it is made once per run (the cache builds a key once
    across processes; an export costs 12-17 s on the 2-core CI machine). Only through :func:`put_export`."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # pytest-of-USER/pytest-N, shared by the run's workers
    return EngineCache(root / "shared-onnx-exports")


def put_export(cache: EngineCache, shared: EngineCache, model: LoadedModel, precision: str,
               batch_size: int | None) -> None:
    """Copy ``model``'s ONNX export at ``precision`` and batch (``None``: dynamic) from ``shared`` into
    ``cache`` (made there first if it is the run's first), as if ``cache`` had made it: for a test that needs
    the export and does not test its making. A test that checks a miss, or the export itself, makes its own.
    Copies, never links: a test may damage its copy."""
    from perfsuite.onnx_export import export_onnx

    made = export_onnx(model, precision, batch_size, cache=shared)
    cache.root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shared.artifact_path(made.key), cache.artifact_path(made.key))
    shutil.copyfile(shared.metadata_path(made.key), cache.metadata_path(made.key))  # last: marks it complete


@pytest.fixture(scope="session")
def golden_dir(request: pytest.FixtureRequest) -> Path:
    """The goldens of the project under test: fixtures/golden below pytest's rootdir."""
    from perfsuite.golden import project_golden_dir

    return project_golden_dir(request.config.rootpath)


@pytest.fixture(scope="session")
def odd_images(tmp_path_factory) -> dict[str, Path]:
    """Real image files in every awkward mode and size, written with PIL."""
    folder = tmp_path_factory.mktemp("odd_images")
    rng = np.random.RandomState(0)
    rgb = Image.fromarray(rng.randint(0, 256, (120, 160, 3), dtype=np.uint8), "RGB")
    files = {
        "grayscale.png": rgb.convert("L"),
        "rgba.png": rgb.convert("RGBA"),
        "palette.gif": rgb.convert("P"),
        "cmyk.jpg": rgb.convert("CMYK"),
        "gray16.png": Image.fromarray(rng.randint(0, 65536, (90, 70), dtype=np.uint16)),
        "tiny.png": Image.new("RGB", (1, 1), (200, 10, 10)),
        "large.jpg": rgb.resize((6000, 4500)),
    }
    paths = {}
    for name, image in files.items():
        path = folder / name
        image.save(path)
        paths[name] = path
    return paths


@pytest.fixture(scope="session")
def broken_images(tmp_path_factory) -> dict[str, Path]:
    """Files that are not usable images, each broken in its own way."""
    folder = tmp_path_factory.mktemp("broken_images")
    dog = (Path(__file__).resolve().parent.parent / "fixtures" / "dog.jpg").read_bytes()
    paths = {
        "empty.jpg": b"",
        "truncated.jpg": dog[: len(dog) // 3],
        "text.jpg": b"this is not an image\n" * 20,
    }
    result = {}
    for name, content in paths.items():
        (folder / name).write_bytes(content)
        result[name] = folder / name
    result["missing.jpg"] = folder / "missing.jpg"
    return result


@pytest.fixture(scope="session")
def hostile_images(tmp_path_factory) -> dict[str, Path]:
    """Files that must be refused without being read (or waited on): a sparse 100 GB file that starts like
    a JPEG, a FIFO, a symlink loop, a dangling symlink, a 10000 x 10000 PNG, a float TIFF with a NaN."""
    folder = tmp_path_factory.mktemp("hostile_images")
    dog = (Path(__file__).resolve().parent.parent / "fixtures" / "dog.jpg").read_bytes()
    sparse = folder / "sparse-100GB.jpg"
    sparse.write_bytes(dog[:4096])
    os.truncate(sparse, 100 * 2**30)  # sparse: no disk space used
    os.mkfifo(folder / "fifo.jpg")
    (folder / "loop.jpg").symlink_to(folder / "loop-back.jpg")
    (folder / "loop-back.jpg").symlink_to(folder / "loop.jpg")
    (folder / "dangling.jpg").symlink_to(folder / "nowhere.jpg")
    Image.new("L", (10_000, 10_000)).save(folder / "10000x10000.png")
    pixels = np.linspace(0, 1, 30 * 20, dtype=np.float32).reshape(20, 30)
    pixels[3, 4] = np.nan
    Image.fromarray(pixels, mode="F").save(folder / "nan.tif")
    return {path.name: path for path in folder.iterdir()}
