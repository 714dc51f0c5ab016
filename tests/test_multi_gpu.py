"""On a host with several GPUs, every figure of a run comes from the GPU its ``--device`` names.

On the CPU machine: torch's CUDA calls are answered by :class:`TwoGpuHost`, a model of what torch
reports on a host with two different GPUs (no GPU exists here), and NVML by :class:`FakeNvml`, only
for the handle lookup (real nvidia-ml-py cannot run here). The device index is followed through every
path that touches the device: runner build and load, the bf16 check, ONNX Runtime's provider options,
TensorRT's execution, converted TensorRT modules, the engine target, the recorded GPU identity and
NVML's handle. The gate's notes on runs from different physical GPUs of one model run on real saved
runs (the H200 drill's) whose machine_info differ only in the card.

On a GPU machine (``@pytest.mark.gpu``): a short run on ``cuda:0`` records the UUID and PCI bus id
``nvidia-smi`` gives for that GPU; with two GPUs, the default tier on ``cuda:1`` while a matrix-product
loop loads ``cuda:0`` reads every figure from GPU 1, and the backends that use the current device
(TensorRT, CUDA graphs, ONNX Runtime's GPU providers) build and run on ``cuda:1``
(``scripts/gpu.sh multigpu`` runs them).
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
import types
import warnings
from pathlib import Path

import pytest
import torch
from child_process import child_env as shared_child_env

from perfsuite import environment, telemetry, upgrade
from perfsuite.backends.base import Runner, RunSpec
from perfsuite.backends.eager import EagerRunner
from perfsuite.backends.onnxruntime import OnnxRuntimeCudaRunner, OnnxRuntimeRunner, OnnxRuntimeTensorRTRunner
from perfsuite.cli import main
from perfsuite.engine_cache import gpu_target
from perfsuite.gate.hardware import machine_section, physical_gpu
from perfsuite.gate.runs import load_run, load_side
from perfsuite.gate.settings import GateSettings
from perfsuite.gate.tables import render_result
from perfsuite.gate.verdict import compare_runs
from perfsuite.report import render_markdown

pytestmark = pytest.mark.gpu_timing  # on a GPU shared by xdist workers, these tests have it to themselves

ROOT = Path(__file__).resolve().parent.parent
DRILL = ROOT / "docs" / "results" / "2026-12-01-h200-gate-drill" / "runs"
BASE = sorted(DRILL.glob("base-*.json"))

# two cards as torch describes them: an sm 7.5 card without bf16 at index 0, an sm 8.0 card at index 1
CARDS = [
    types.SimpleNamespace(name="Tesla T4", major=7, minor=5, total_memory=15 << 30, multi_processor_count=40,
                          L2_cache_size=4 << 20, uuid="1f2e3d4c-0000-1111-2222-333344445555",
                          pci_domain_id=0, pci_bus_id=0x3B, pci_device_id=0),
    types.SimpleNamespace(name="NVIDIA A100-SXM4-40GB", major=8, minor=0, total_memory=40 << 30,
                          multi_processor_count=108, L2_cache_size=40 << 20,
                          uuid="9a8b7c6d-aaaa-bbbb-cccc-ddddeeeeffff", pci_domain_id=0, pci_bus_id=0x86,
                          pci_device_id=0),
]
UUIDS = ["GPU-" + card.uuid for card in CARDS]
BUS_IDS = ["00000000:3B:00.0", "00000000:86:00.0"]
MIB = 1 << 20


class TwoGpuHost:
    """What torch's CUDA API answers on a host with ``cards`` (index order as torch numbers them), with a
    current device that ``torch.cuda.device`` changes and restores, as the real one does."""

    def __init__(self, cards: list) -> None:
        self.cards, self.current, self.synchronized = cards, 0, []

    def index(self, device) -> int:
        if isinstance(device, int):
            return device
        parsed = torch.device(device)
        return self.current if parsed.index is None else parsed.index

    @contextlib.contextmanager
    def device(self, device):
        previous, self.current = self.current, self.index(device)
        try:
            yield
        finally:
            self.current = previous

    def install(self, monkeypatch: pytest.MonkeyPatch) -> TwoGpuHost:
        cuda = torch.cuda
        monkeypatch.setattr(cuda, "is_available", lambda: True)
        monkeypatch.setattr(cuda, "device_count", lambda: len(self.cards))
        monkeypatch.setattr(cuda, "current_device", lambda: self.current)
        monkeypatch.setattr(cuda, "device", self.device)
        monkeypatch.setattr(cuda, "get_device_properties", lambda device=None: self.cards[self.index(
            self.current if device is None else device)])
        monkeypatch.setattr(cuda, "get_device_name", lambda device=None: self.cards[self.index(
            self.current if device is None else device)].name)
        monkeypatch.setattr(cuda, "is_bf16_supported", lambda *a, **k: self.cards[self.current].major >= 8)
        monkeypatch.setattr(cuda, "synchronize", lambda device=None: self.synchronized.append(device))
        return self


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> TwoGpuHost:
    return TwoGpuHost(CARDS).install(monkeypatch)


# -- the device index through every path ----------------------------------------------------------


def test_identity_is_that_of_the_gpu_the_device_names(host):
    info = environment.gpu_info("cuda:1")
    assert (info["gpu_name"], info["gpu_index"]) == ("NVIDIA A100-SXM4-40GB", 1)
    assert (info["gpu_uuid"], info["gpu_pci_bus_id"]) == (UUIDS[1], BUS_IDS[1])  # nvidia-smi's formats
    host.current = 1  # a bare "cuda" is torch's current device, not GPU 0
    assert environment.gpu_info("cuda")["gpu_uuid"] == UUIDS[1]
    assert gpu_target("cuda") == {"gpu": "NVIDIA A100-SXM4-40GB", "compute_capability": "8.0"}
    host.current = 0
    section = machine_section("cuda:1")
    assert (section["device"], section["gpu_uuid"], section["gpu_pci_bus_id"]) == ("cuda:1", UUIDS[1], BUS_IDS[1])
    assert environment.gpu_info("cpu") == {}


def test_pci_bus_id_needs_all_three_numbers():
    assert environment.pci_bus_id(CARDS[1]) == "00000000:86:00.0"
    assert environment.pci_bus_id(types.SimpleNamespace(pci_bus_id=0x86)) is None  # an older torch: unknown
    assert environment.gpu_uuid(types.SimpleNamespace(uuid="MIG-0123")) == "MIG-0123"


class DeviceProbeRunner(Runner):
    """Records torch's current device where a library that uses it (TensorRT, torch2trt) would act."""

    name = "device-probe"

    def __init__(self, host: TwoGpuHost, device: str) -> None:
        super().__init__(None, RunSpec("fp32", 1, device))
        self.host, self.seen = host, {}

    def _build(self) -> None:
        self.seen["build"] = self.host.current

    def _load(self) -> None:
        self.seen["load"] = self.host.current

    def infer(self, prepared):
        return prepared


def test_runner_builds_and_loads_on_its_own_device(host):
    runner = DeviceProbeRunner(host, "cuda:1")
    runner.load()
    assert runner.seen == {"build": 1, "load": 1}
    assert host.current == 0, "the previous current device is restored"
    assert set(host.synchronized) == {"cuda:1"}, "every synchronize names the run's device"


def test_bf16_support_is_asked_of_the_runs_gpu(host):
    assert EagerRunner.unavailable_reason(RunSpec("bf16", 1, "cuda:1")) is None  # the A100, while GPU 0 is current
    assert "Tesla T4 has no bf16" in EagerRunner.unavailable_reason(RunSpec("bf16", 1, "cuda:0"))


def test_onnxruntime_providers_are_told_the_gpu():
    """ONNX Runtime's GPU providers use device 0 unless told: each gets the run's device id."""
    spec = RunSpec("fp32", 1, "cuda:1")
    assert OnnxRuntimeRunner(None, spec)._providers() == [("CUDAExecutionProvider", {"device_id": 1})]
    assert OnnxRuntimeCudaRunner(None, spec)._providers() == [("CUDAExecutionProvider", {"device_id": 1})]
    tensorrt, cuda = OnnxRuntimeTensorRTRunner(None, spec)._providers()
    assert tensorrt[0] == "TensorrtExecutionProvider" and tensorrt[1]["device_id"] == 1
    assert cuda == ("CUDAExecutionProvider", {"device_id": 1})  # what TensorRT does not take runs there too
    assert OnnxRuntimeRunner(None, RunSpec("fp32", 1, "cpu"))._providers() == ["CPUExecutionProvider"]


class RecordingStream:
    cuda_stream = 1234

    def wait_event(self, event):
        pass


def test_tensorrt_executes_in_its_engines_device(host, monkeypatch):
    """TensorRT enqueues in the current device's context: it must be the engine's, whatever is current."""
    from perfsuite.backends.tensorrt import TENSORRT, EngineSession
    from perfsuite.onnx_export import INPUT_NAME, OUTPUT_NAME

    executed_on = []
    context = types.SimpleNamespace(set_tensor_address=lambda name, address: True,
                                    execute_async_v3=lambda stream: executed_on.append(host.current) or True)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: RecordingStream())
    session = object.__new__(EngineSession)
    images = types.SimpleNamespace(dtype=torch.float16, device=torch.device("cuda", 1), shape=(1, 3, 224, 224),
                                   is_contiguous=lambda: True, data_ptr=lambda: 42)
    session.__dict__.update(flavor=TENSORRT, device=torch.device("cuda", 1), _context=context, _errors=[],
                            _stream=RecordingStream(), _shape=images.shape, _logits="logits",
                            dtypes={INPUT_NAME: torch.float16, OUTPUT_NAME: torch.float16},
                            _inputs_ready=types.SimpleNamespace(record=lambda stream: None),
                            _finished=types.SimpleNamespace(record=lambda stream: None))
    assert session.run(images) == "logits"
    assert executed_on == [1] and host.current == 0


def test_converted_tensorrt_modules_run_on_the_inputs_device(host):
    """torch2trt's TRTModule allocates its outputs and picks its stream on the current device."""
    from perfsuite.backends.torch2trt import Torch2TrtRunner

    runner = Torch2TrtRunner(None, RunSpec("fp16", 1, "cuda:1"))
    runner._module = lambda prepared: host.current
    assert runner.infer(types.SimpleNamespace(device=torch.device("cuda", 1))) == 1


def test_torch_tensorrt_programs_are_cached_per_cuda_ordinal(monkeypatch):
    """A saved Torch-TensorRT program deserializes onto the ordinal it was built on: one built for cuda:1
    must not be loaded for a run on cuda:0, even of the same GPU model (TensorRT cannot exist here)."""
    from perfsuite.backends.torch_tensorrt import TorchTensorRTRunner

    TwoGpuHost([CARDS[1], CARDS[1]]).install(monkeypatch)
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.13.0"))
    model = types.SimpleNamespace(name="alexnet", fingerprint="f" * 64)
    keys = [TorchTensorRTRunner(model, RunSpec("fp16", 1, device))._key() for device in ("cuda:0", "cuda:1")]
    assert keys[0].target == keys[1].target and keys[0].digest != keys[1].digest


# -- NVML: the handle of the GPU torch means, by UUID or PCI bus id, never by index ------------------


class FakeNvml:
    """NVML's lookups on a host whose GPUs NVML numbers ``uuids`` / ``bus_ids`` (its own order)."""

    NVML_PERF_POLICY_POWER, NVML_PERF_POLICY_THERMAL, NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = range(5)

    class NVMLError(Exception):
        pass

    def __init__(self, uuids: list[str], bus_ids: list[str]) -> None:
        self.uuids, self.bus_ids, self.by_index = uuids, bus_ids, []

    def nvmlDeviceGetHandleByUUID(self, uuid):
        if uuid not in self.uuids:
            raise self.NVMLError("Not Found")
        return ("handle", self.uuids.index(uuid))

    def nvmlDeviceGetHandleByPciBusId_v2(self, bus_id):
        if bus_id not in self.bus_ids:
            raise self.NVMLError("Not Found")
        return ("handle", self.bus_ids.index(bus_id))

    def nvmlDeviceGetHandleByIndex(self, index):
        self.by_index.append(index)
        return ("handle", index)

    def nvmlDeviceGetUUID(self, handle):
        return self.uuids[handle[1]]

    def nvmlDeviceGetPciInfo(self, handle):
        return types.SimpleNamespace(busId=self.bus_ids[handle[1]].encode())

    def __getattr__(self, name):  # every other query fails, as on a GPU that does not support it
        def unsupported(*args):
            raise self.NVMLError("Not Supported")
        return unsupported


@pytest.fixture
def visible_gpu_1(monkeypatch) -> TwoGpuHost:
    """CUDA_VISIBLE_DEVICES=1: torch sees one GPU, its cuda:0, which is NVML's GPU 1."""
    return TwoGpuHost([CARDS[1]]).install(monkeypatch)


def use_nvml(monkeypatch, nvml: FakeNvml) -> FakeNvml:
    monkeypatch.setattr(telemetry, "_nvml", lambda: (nvml, None))
    telemetry._warn_unmatched.cache_clear()
    return nvml


def test_nvml_handle_is_found_by_uuid_under_renumbering(visible_gpu_1, monkeypatch):
    nvml = use_nvml(monkeypatch, FakeNvml(UUIDS, BUS_IDS))
    assert telemetry._handle(nvml, "cuda:0") == ("handle", 1)
    reading = telemetry.read_state("cuda:0")
    assert (reading["gpu_uuid"], reading["gpu_pci_bus_id"]) == (UUIDS[1], BUS_IDS[1])  # the card it read
    assert telemetry.hardware_facts("cuda:0")["nvml_gpu_uuid"] == UUIDS[1]
    assert nvml.by_index == []


def test_nvml_handle_falls_back_to_the_pci_bus_id(visible_gpu_1, monkeypatch):
    """A UUID NVML does not know (an older driver, a different form): the PCI bus id still finds the card;
    NVML's index 0 would be the other GPU."""
    nvml = use_nvml(monkeypatch, FakeNvml(["GPU-other-0", "GPU-other-1"], BUS_IDS))
    assert telemetry._handle(nvml, "cuda:0") == ("handle", 1)
    assert telemetry.read_state("cuda:0")["gpu_pci_bus_id"] == BUS_IDS[1]
    assert nvml.by_index == []


def test_no_nvml_match_reads_nothing_and_says_why(visible_gpu_1, monkeypatch):
    nvml = use_nvml(monkeypatch, FakeNvml(["GPU-other-0", "GPU-other-1"], ["00000000:01:00.0", "00000000:02:00.0"]))
    with pytest.warns(telemetry.GpuTelemetryUnavailable, match=r"NVML finds no GPU matching cuda:0 \(NVIDIA A100"):
        assert telemetry.read_state("cuda:0") is None
    assert telemetry.hardware_facts("cuda:0") == {}
    problem = telemetry.device_problem("cuda:0")
    assert f"UUID {UUIDS[1]}" in problem and f"PCI bus id {BUS_IDS[1]}" in problem
    assert nvml.by_index == [], "never GPU 0's readings in place of the run's GPU"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with telemetry.GpuWatch("cuda:0") as watch:  # said once, not once per row
            pass
    assert watch.as_dict() is None


# -- the gate: runs on different physical GPUs of one model ------------------------------------------

needs_drill = pytest.mark.skipif(len(BASE) < 10, reason="the H200 drill's runs are not in docs/results")


def on_card(sources: list[Path], folder: Path, cards: list[int]) -> list:
    """Copies of real H200 runs that differ from them only in the card (UUID and PCI bus id) recorded."""
    folder.mkdir()
    runs = []
    for source, card in zip(sources, cards):
        data = json.loads(source.read_text())
        data["machine_info"]["perfsuite"].update(gpu_uuid=UUIDS[card], gpu_pci_bus_id=BUS_IDS[card])
        (folder / source.name).write_text(json.dumps(data))
        runs.append(load_run(folder / source.name))
    return runs


@needs_drill
def test_two_cards_of_one_model_share_a_fingerprint_and_the_gate_says_so(tmp_path, capsys):
    baseline = on_card(BASE[:5], tmp_path / "baseline", [0] * 5)
    new = on_card(BASE[5:], tmp_path / "new", [1] * 5)
    assert baseline[0].fingerprint.id == new[0].fingerprint.id  # one model: one baseline serves both cards
    assert physical_gpu(new[0].machine_info).label == f"{UUIDS[1]} at {BUS_IDS[1]}"
    result = compare_runs(baseline, new, GateSettings())
    assert len(result.physical_gpus) == 1 and "different physical GPUs" in result.physical_gpus[0]
    assert UUIDS[0] in result.physical_gpus[0] and UUIDS[1] in result.physical_gpus[0]
    assert "physical GPUs: the baseline and new runs ran on different" in render_result(result)
    assert result.as_dict()["physical_gpus"] == result.physical_gpus
    assert f"Physical GPUs: {result.physical_gpus[0]}." in upgrade._hardware(result)[1]  # upgrade-report's page
    # the command line: allowed (exit as the numbers decide), said in the report and the JSON
    report = tmp_path / "gate.json"
    code = main(["compare", str(tmp_path / "baseline"), str(tmp_path / "new"), "--json", str(report)])
    assert code in (0, 3) and "different physical GPUs" in capsys.readouterr().out
    assert "different physical GPUs" in json.loads(report.read_text())["physical_gpus"][0]


@needs_drill
def test_one_side_on_several_cards_is_named(tmp_path):
    baseline = on_card(BASE[:5], tmp_path / "baseline", [0, 0, 1, 0, 1])
    new = on_card(BASE[5:8], tmp_path / "new", [0, 0, 0])
    notes = compare_runs(baseline, new, GateSettings()).physical_gpus
    assert notes == [f"the baseline runs ran on 2 physical GPUs: {UUIDS[0]} at {BUS_IDS[0]} (base-01.json, "
                     f"base-02.json, base-04.json); {UUIDS[1]} at {BUS_IDS[1]} (base-03.json, base-05.json). "
                     "Differences between the cards count as run-to-run noise (a larger MDE)"]


@needs_drill
def test_one_card_says_nothing_and_unrecorded_cards_are_named(tmp_path):
    same = on_card(BASE[:3], tmp_path / "a", [1] * 3), on_card(BASE[3:6], tmp_path / "b", [1] * 3)
    assert compare_runs(*same, GateSettings()).physical_gpus == []
    old = [load_run(path) for path in BASE[6:9]]  # recorded before perfsuite saved the card
    assert compare_runs(old, old, GateSettings()).physical_gpus == []
    notes = compare_runs(same[0], old, GateSettings()).physical_gpus
    assert notes == ["3 new run(s) did not record their physical GPU (saved before perfsuite recorded it): "
                     "base-07.json, base-08.json, base-09.json"]


@needs_drill
def test_baseline_save_and_report_name_the_cards(tmp_path, capsys):
    on_card(BASE[:3], tmp_path / "runs", [0, 1, 1])
    store = tmp_path / "store"
    assert main(["baseline", "save", str(tmp_path / "runs"), "--store", str(store)]) == 0
    err = capsys.readouterr().err
    assert "perfsuite baseline: note: the baseline runs ran on 2 physical GPUs" in err and UUIDS[0] in err
    stored = load_side(str(next(store.glob("*/baseline.json")).parent))
    assert len({run.fingerprint.id for run in stored}) == 1
    summary = render_markdown(stored)
    assert f"Physical GPUs (2 cards of this model): {UUIDS[0]} at {BUS_IDS[0]}: `run-01.json`; " in summary


# -- on a GPU machine ---------------------------------------------------------------------------------


def nvidia_smi_cards() -> list[tuple[str, str]]:
    """(UUID, PCI bus id) of every GPU, in nvidia-smi's order (PCI bus order)."""
    output = subprocess.run(["nvidia-smi", "--query-gpu=uuid,pci.bus_id", "--format=csv,noheader"],
                            capture_output=True, text=True, check=True, timeout=60).stdout
    return [tuple(part.strip() for part in line.split(",")) for line in output.strip().splitlines()]


def child_env(**extra: str) -> dict[str, str]:
    """The suite's environment for a child pytest, torch numbering GPUs as nvidia-smi does (PCI bus order)."""
    # the caller's PYTHONPATH is kept: the GPU image carries perfsuite's missing dependencies on it
    return shared_child_env(CUDA_VISIBLE_DEVICES=None, CUDA_DEVICE_ORDER="PCI_BUS_ID", PERFSUITE_WEIGHTS="random",
                            **extra)


def run_tier(tmp_path: Path, name: str, device: str, args: list[str], **env: str) -> dict:
    """One pytest run of the benchmarks on ``device``; its saved JSON."""
    output = tmp_path / f"{name}.json"
    command = [sys.executable, "-m", "pytest", *args, "--device", device, "--benchmark-json", str(output), "-q",
               "-p", "no:cacheprovider", "--rootdir", str(ROOT)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=child_env(**env), capture_output=True, text=True, timeout=500)
    print(f"[{name}] {' '.join(command[3:])} (env {env or '-'}): exit {done.returncode} after "
          f"{time.perf_counter() - started:.0f} s; {done.stdout.strip().splitlines()[-1] if done.stdout else ''}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(output.read_text())


def telemetry_cards(run: dict) -> set[tuple]:
    """(UUID, PCI bus id) of every NVML reading in the run's rows."""
    return {(reading.get("gpu_uuid"), reading.get("gpu_pci_bus_id")) for row in run["benchmarks"]
            if (row["extra_info"].get("gpu_telemetry") or None) for reading in
            (row["extra_info"]["gpu_telemetry"]["before"], row["extra_info"]["gpu_telemetry"]["after"]) if reading}


def check_run_reads(run: dict, card: tuple[str, str], index: int, nvml: bool) -> None:
    section = run["machine_info"]["perfsuite"]
    assert (section["gpu_uuid"], section["gpu_pci_bus_id"], section["gpu_index"]) == (*card, index)
    if nvml:
        assert (section["nvml_gpu_uuid"], section["nvml_gpu_pci_bus_id"]) == card
        assert telemetry_cards(run) == {card}, "every NVML reading of every row came from the run's GPU"


@pytest.mark.gpu
def test_a_run_on_cuda0_records_the_uuid_and_pci_bus_id_nvidia_smi_gives(tmp_path):
    cards = nvidia_smi_cards()
    run = run_tier(tmp_path, "cuda0", "cuda:0", ["benchmarks/test_latency.py", "--backends", "eager,onnxruntime",
                                                 "--precisions", "fp32", "--batch-sizes", "1,64",
                                                 "--benchmark-max-time", "0.05"])
    nvml = telemetry.unavailable_reason() is None
    print(f"nvidia-smi: {cards}; recorded: {run['machine_info']['perfsuite'].get('gpu_uuid')} "
          f"{run['machine_info']['perfsuite'].get('gpu_pci_bus_id')}; NVML readings: {telemetry_cards(run) or '-'}")
    check_run_reads(run, cards[0], 0, nvml)
    assert run["benchmarks"], "the run measured rows"


def matmul_load(seconds: float) -> subprocess.Popen:
    """A known load on GPU 0 (in PCI order): back-to-back 8192^2 fp16 matrix products, and 4 GiB allocated
    and freed every 50 products, so that a memory reading of GPU 0 would swing by gigabytes."""
    code = (
        "import sys, time, torch\n"
        "a = torch.randn(8192, 8192, device='cuda:0', dtype=torch.float16); b = a.clone(); n = 0\n"
        "print('ready', torch.cuda.get_device_properties(0).uuid, flush=True)\n"
        f"end = time.time() + {seconds}\n"
        "try:\n"
        "    while time.time() < end:\n"
        "        for _ in range(50):\n"
        "            a = (a @ b).clamp_(-1, 1); n += 1\n"
        "        spare = torch.empty(4 << 30, dtype=torch.uint8, device='cuda:0'); torch.cuda.synchronize()\n"
        "        del spare; torch.cuda.empty_cache()\n"
        "except KeyboardInterrupt:\n"
        "    pass\n"
        "print('products', n, 'in', round(time.time() - end + " + str(seconds) + "), 's', flush=True)\n")
    load = subprocess.Popen([sys.executable, "-c", code], env=child_env(), stdout=subprocess.PIPE, text=True)
    assert load.stdout.readline().startswith("ready"), "the load on GPU 0 did not start"
    return load


def row_figures(run: dict) -> dict[str, tuple[float, float | None, int | None]]:
    """name -> (median s, peak GPU memory bytes, other processes on the GPU)."""
    return {row["name"]: (row["stats"]["median"], row["extra_info"].get("peak_gpu_memory_bytes"),
                          (row["extra_info"].get("gpu_telemetry") or {}).get("other_processes"))
            for row in run["benchmarks"]}


@pytest.mark.gpu
def test_two_gpus_every_figure_of_a_run_on_cuda1_reads_gpu_1(tmp_path):
    """The default tier on cuda:1 while a matrix-product loop loads cuda:0, and again as cuda:0 under
    CUDA_VISIBLE_DEVICES=1: the recorded card, every NVML reading and every memory figure are GPU 1's,
    no other process is seen on it, and device-bound rows are as fast as on a quiet host."""
    if torch.cuda.device_count() < 2:
        pytest.skip(f"needs 2 CUDA GPUs; torch sees {torch.cuda.device_count()}")
    if telemetry.unavailable_reason():
        pytest.skip(f"reads NVML telemetry: {telemetry.unavailable_reason()}")
    cards = nvidia_smi_cards()
    tier = ["benchmarks", "--benchmark-max-time", "0.3"]
    quiet = run_tier(tmp_path, "quiet-cuda1", "cuda:1", tier)
    load = matmul_load(seconds=480)
    try:
        loaded = run_tier(tmp_path, "loaded-cuda1", "cuda:1", tier)
        renumbered = run_tier(tmp_path, "loaded-visible1-cuda0", "cuda:0", tier, CUDA_VISIBLE_DEVICES="1")
    finally:
        load.send_signal(signal.SIGINT)
        products = load.communicate(timeout=60)[0].strip()
    print(f"load on GPU 0 ({cards[0][0]}): {products}")
    assert load.returncode == 0 and int(products.split()[1]) > 0, f"the load did not run: {products}"
    check_run_reads(quiet, cards[1], 1, nvml=True)
    check_run_reads(loaded, cards[1], 1, nvml=True)
    check_run_reads(renumbered, cards[1], 0, nvml=True)
    assert renumbered["machine_info"]["perfsuite"]["cuda_visible_devices"] == "1"
    base, problems = row_figures(quiet), []
    print(f"{'row':<48} {'quiet':>10} {'loaded':>10} {'visible=1':>10}  peak MiB quiet/loaded/visible=1")
    for run in (loaded, renumbered):
        for name, (median, peak, others) in row_figures(run).items():
            if name not in base:
                problems.append(f"{name}: measured under load but not on the quiet host")
                continue
            quiet_median, quiet_peak, _ = base[name]
            if others:
                problems.append(f"{name}: {others} other process(es) seen on GPU 1")
            if peak is not None and quiet_peak is not None and abs(peak - quiet_peak) > max(64 * MIB, 0.1 * quiet_peak):
                problems.append(f"{name}: peak GPU memory {peak / MIB:.0f} MiB, {quiet_peak / MIB:.0f} MiB quiet")
            batch = next(row["extra_info"].get("batch_size") for row in run["benchmarks"] if row["name"] == name)
            if isinstance(batch, int) and batch >= 64 and abs(median / quiet_median - 1) > 0.10:
                problems.append(f"{name}: median {median * 1e3:.3f} ms against {quiet_median * 1e3:.3f} ms quiet")
    for name, (median, peak, _) in base.items():
        other = [row_figures(run).get(name, (None, None, None)) for run in (loaded, renumbered)]
        print(f"{name:<48} {median * 1e3:>9.3f}m " + " ".join(f"{o[0] * 1e3:>9.3f}m" if o[0] else f"{'-':>10}"
                                                               for o in other)
              + "  " + "/".join(f"{v / MIB:.0f}" if v is not None else "-" for v in (peak, other[0][1], other[1][1])))
    assert not problems, "\n".join(problems)



@pytest.mark.gpu
def test_two_gpus_tensorrt_and_graph_backends_run_on_cuda1(tmp_path):
    """The backends that use the current device (TensorRT's builder and execution context, CUDA graph
    capture, ONNX Runtime's providers) on cuda:1: built, loaded and timed there, parity checked, every
    reading GPU 1's. A backend this machine lacks skips, with its reason printed."""
    if torch.cuda.device_count() < 2:
        pytest.skip(f"needs 2 CUDA GPUs; torch sees {torch.cuda.device_count()}")
    cards = nvidia_smi_cards()
    run = run_tier(tmp_path, "device-backends-cuda1", "cuda:1", [
        "benchmarks/test_latency.py", "--backends", "tensorrt,cudagraph,onnxruntime-cuda,onnxruntime-trt",
        "--precisions", "fp16", "--batch-sizes", "1,64", "--benchmark-max-time", "0.1"])
    for outcome in run["perfsuite"]["outcomes"]:
        print(f"{outcome['outcome']}: {outcome['nodeid'].split('::')[-1]}: {outcome['reason']}")
    if not run["benchmarks"]:
        pytest.skip("no device backend could run on this machine (reasons above)")
    check_run_reads(run, cards[1], 1, nvml=telemetry.unavailable_reason() is None)
    for row in run["benchmarks"]:
        info = row["extra_info"]
        print(f"{row['name']}: {row['stats']['median'] * 1e3:.3f} ms, peak {info['peak_gpu_memory_bytes'] / MIB:.0f} "
              f"MiB on GPU 1, parity {info['parity']['passed'] if info.get('parity') else '-'}")
        assert info["peak_gpu_memory_bytes"] > 0, f"{row['name']}: nothing held on GPU 1"
