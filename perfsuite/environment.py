"""The machine and the numeric settings every result records.

TF32: on NVIDIA GPUs PyTorch runs fp32 convolutions as TF32 by default (10-bit mantissa). The
suite reads and sets it only through the ``fp32_precision`` API (torch >= 2.9); torch 2.14 raises
when that API and the old ``allow_tf32`` flags are mixed, so the old flags are touched only on a
torch that lacks the new API.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Iterator
from typing import Any

import torch

from perfsuite.errors import InputError


def resolve_device(option: str | None) -> str:
    """'auto' (or nothing) -> 'cuda' when a GPU is visible, else 'cpu'; validates the rest."""
    if option is not None and not option.strip():
        raise InputError("--device '': names nothing; choose cpu, cuda, cuda:N or auto, or leave it out")
    if option in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if option == "cpu":
        return "cpu"
    if option == "cuda" or (option.startswith("cuda:") and option[5:].isdigit()):
        if not torch.cuda.is_available():
            raise InputError(f"--device {option}: no CUDA GPU is visible to torch {torch.__version__}")
        index = int(option[5:]) if ":" in option else 0
        if index >= torch.cuda.device_count():
            raise InputError(f"--device {option}: only {torch.cuda.device_count()} GPU(s) visible")
        return option
    raise InputError(f"--device {option!r}: choose cpu, cuda, cuda:N or auto")


def is_cuda(device: str) -> bool:
    return device.startswith("cuda")


def cuda_index(device: str) -> int:
    """The index torch means by the CUDA ``device``: N for ``cuda:N``, the current device for a bare
    ``cuda`` (what torch itself resolves it to), never a silent 0."""
    index = torch.device(device).index
    return torch.cuda.current_device() if index is None else index


def device_context(device: str) -> contextlib.AbstractContextManager[Any]:
    """``device`` made torch's current CUDA device inside the block (for libraries that use the current
    device: TensorRT's builder and execution context, CUDA graph capture, torch2trt); nothing on the CPU."""
    return torch.cuda.device(cuda_index(device)) if is_cuda(device) else contextlib.nullcontext()


def synchronize(device: str) -> None:
    """Wait for all queued GPU work on ``device``; a no-op on the CPU."""
    if is_cuda(device):
        torch.cuda.synchronize(device)


def _has_precision_api() -> bool:
    return hasattr(torch.backends.cudnn, "conv") and hasattr(torch.backends.cudnn.conv, "fp32_precision")


def tf32_settings() -> dict[str, str]:
    """The fp32 precision torch uses for cuDNN convolutions and CUDA matmuls ('tf32' or 'ieee')."""
    if _has_precision_api():
        conv = torch.backends.cudnn.conv.fp32_precision
        matmul = torch.backends.cuda.matmul.fp32_precision
        # 'none' defers to the global setting, whose default is IEEE fp32 for matmuls.
        if matmul == "none":
            matmul = torch.backends.fp32_precision if torch.backends.fp32_precision != "none" else "ieee"
        if conv == "none":
            conv = "ieee"
        return {"cudnn_conv": conv, "cuda_matmul": matmul}
    return {  # pragma: no cover - torch < 2.9
        "cudnn_conv": "tf32" if torch.backends.cudnn.allow_tf32 else "ieee",
        "cuda_matmul": "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee",
    }


def tf32_in_effect(device: str) -> bool:
    """Whether fp32 work on ``device`` runs with TF32 tensor-core math."""
    return is_cuda(device) and "tf32" in tf32_settings().values()


@contextlib.contextmanager
def tf32_disabled() -> Iterator[None]:
    """IEEE fp32 for convolutions and matmuls inside the block; the previous settings after it."""
    if _has_precision_api():
        saved = (torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision)
        torch.backends.cudnn.conv.fp32_precision = "ieee"
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        try:
            yield
        finally:
            torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = saved
    else:  # pragma: no cover - torch < 2.9
        saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@contextlib.contextmanager
def tf32_matmuls() -> Iterator[None]:
    """TF32 for CUDA matmuls inside the block (what cuDNN convolutions use by default)."""
    if not _has_precision_api():  # pragma: no cover - torch < 2.9
        saved_flag = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32 = saved_flag
        return
    saved = torch.backends.cuda.matmul.fp32_precision
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.fp32_precision = saved


def package_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def module_version(module: str) -> str | None:
    """Version of an importable module, importing it only if it is installed."""
    if importlib.util.find_spec(module) is None:
        return None
    try:
        return getattr(importlib.import_module(module), "__version__", "unknown")
    except Exception as exc:  # a broken install is worth reporting, not crashing on
        return f"broken ({type(exc).__name__}: {exc})"


@functools.lru_cache(maxsize=1)
def nvidia_driver_version() -> str | None:
    """The driver version through NVML when nvidia-ml-py is installed, else nvidia-smi."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
            return version.decode() if isinstance(version, bytes) else version
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        pass
    try:
        output = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
        return output.strip().splitlines()[0] if output.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def pci_bus_id(props: Any) -> str | None:
    """The PCI bus id of a GPU from its torch device properties, as NVML and ``nvidia-smi --query-gpu=pci.bus_id``
    write it ("00000000:3B:00.0"); None where torch does not report it. A GPU is PCI function 0."""
    parts = [getattr(props, name, None) for name in ("pci_domain_id", "pci_bus_id", "pci_device_id")]
    if any(not isinstance(part, int) for part in parts):
        return None
    domain, bus, slot = parts
    return f"{domain:08X}:{bus:02X}:{slot:02X}.0"


def gpu_uuid(props: Any) -> str | None:
    """The GPU's UUID from its torch device properties, as ``nvidia-smi --query-gpu=uuid`` writes it
    ("GPU-" and 32 hex digits in 8-4-4-4-12 groups); None where torch does not report it."""
    uuid = getattr(props, "uuid", None)
    if uuid is None:
        return None
    text = str(uuid)
    return text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"


def gpu_identity(device: str) -> dict[str, Any]:
    """Which physical GPU torch's ``device`` is: its index as torch numbers it, UUID and PCI bus id (these
    two name the card whatever ``CUDA_VISIBLE_DEVICES`` does to the numbering), and that variable."""
    index = cuda_index(device)
    props = torch.cuda.get_device_properties(index)
    return {"gpu_index": index, "gpu_uuid": gpu_uuid(props), "gpu_pci_bus_id": pci_bus_id(props),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


def gpu_info(device: str = "cuda") -> dict[str, Any]:
    """Name, compute capability, memory, multiprocessors and identity (:func:`gpu_identity`) of the CUDA
    ``device``; empty without a GPU."""
    if not torch.cuda.is_available() or not is_cuda(device):
        return {}
    props = torch.cuda.get_device_properties(cuda_index(device))
    return {
        "gpu_name": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "gpu_memory_bytes": props.total_memory,
        "multiprocessors": props.multi_processor_count,
        "l2_cache_bytes": getattr(props, "L2_cache_size", None),
        "driver": nvidia_driver_version(),
        **gpu_identity(device),
    }


def software_versions() -> dict[str, str | None]:
    """Versions of everything that can move the numbers."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": package_version("torchvision"),
        "cuda": torch.version.cuda,
        "cudnn": str(cudnn) if cudnn else None,
        "numpy": package_version("numpy"),
        "onnx": package_version("onnx"),
        "onnxscript": package_version("onnxscript"),
        "onnxruntime": package_version("onnxruntime") or package_version("onnxruntime-gpu"),
        "tensorrt": package_version("tensorrt") or package_version("tensorrt-cu12") or package_version(
            "tensorrt-cu13"
        ),
        "tensorrt_rtx": package_version("tensorrt-rtx-cu13-bindings") or package_version(
            "tensorrt-rtx-cu12-bindings"
        ),
        "perfsuite": package_version("perfsuite"),
    }


def cpu_info() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu_model": model, "cpu_count": os.cpu_count()}


#: CPU features with which a reduced precision runs natively (x86 /proc/cpuinfo ``flags``, Arm ``Features``).
#: Without one, PyTorch's CPU kernels emulate it through fp32 conversions: eager bf16 AlexNet at batch 1 took
#: 1140 ms on an AVX2-only CPU against tens of ms in fp32, so the default CPU run leaves such precisions out.
NATIVE_CPU_FEATURES: dict[str, tuple[str, ...]] = {
    "fp32": (),
    "bf16": ("avx512_bf16", "amx_bf16", "bf16"),
    "fp16": ("avx512_fp16", "amx_fp16", "asimdhp"),
}
_FEATURE_NAMES = {"avx512_bf16": "AVX-512-BF16", "amx_bf16": "AMX-BF16", "bf16": "Arm BF16",
                  "avx512_fp16": "AVX-512-FP16", "amx_fp16": "AMX-FP16", "asimdhp": "Arm FP16 (asimdhp)"}


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags from /proc/cpuinfo; None where that cannot be read (not Linux)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return None


def cpu_precision_problem(precision: str, flags: frozenset[str] | set[str] | None) -> str | None:
    """Why ``precision`` is not native on a CPU with ``flags`` (None: it is, or the flags are unknown)."""
    needed = NATIVE_CPU_FEATURES.get(precision, ())
    if not needed or flags is None or any(feature in flags for feature in needed):
        return None
    arm = platform.machine().lower() in ("aarch64", "arm64")
    names = " or ".join(_FEATURE_NAMES[f] for f in needed if f.startswith(("bf16", "asimd")) == arm)
    return (f"{precision} is not native on this CPU ({cpu_info()['cpu_model']}, "
            f"{torch.backends.cpu.get_cpu_capability()}: no {names}); emulated it runs 10-100x slower than "
            f"fp32, so the default CPU run leaves it out (--precisions fp32,{precision} runs it)")


def machine_summary(device: str) -> dict[str, Any]:
    """Everything ``perfsuite doctor`` and the benchmark machine_info report."""
    return {
        **cpu_info(),
        **(gpu_info(device) if is_cuda(device) else {}),
        **software_versions(),
        "tf32": tf32_settings(),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
    }
