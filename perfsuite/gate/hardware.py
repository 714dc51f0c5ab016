"""The hardware a run was measured on, and the software it ran.

Runs are comparable only on the same hardware. The fingerprint of a GPU run is the GPU model,
compute capability, memory size (whole GiB, so that a driver reserving a few MiB more does not
split it), enforced power limit, MIG mode and the host CPU model: small-batch latency is host-bound
(AlexNet fp16 batch 1 took 424 µs on one H200 machine and 842 µs on another with the same GPU).
The fingerprint of a CPU run is the CPU model and logical core count. A field that could not be
read (``None``: power limit and MIG mode without nvidia-ml-py) is unknown and never a mismatch;
those NVML fields are checked where both runs know them but are not part of the id, so installing
nvidia-ml-py does not move a baseline.
Software (torch, TensorRT, CUDA, cuDNN, driver, onnxruntime, ...) is not part of it: a software
upgrade on the same hardware is exactly the change a comparison measures, and the report shows
it at the top as the change under test.

The physical card is not part of it either: runs record the GPU's UUID and PCI bus id
(:func:`physical_gpu`), so that a baseline recorded on one card of a model can gate runs on another
card of that model (CI runners of one pool hand out whichever card is free), and
:func:`physical_gpu_notes` says where the compared runs came from different cards.

Fields come from ``machine_info["perfsuite"]``, which the pytest plugin fills from
:func:`machine_section`. A run saved without it (plain pytest-benchmark) falls back to
pytest-benchmark's own CPU fields and counts as a CPU run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

GPU_FIELDS = ("gpu_name", "compute_capability", "gpu_memory_gib", "power_limit_w", "mig_mode", "cpu_model")
#: read through NVML, so unknown without nvidia-ml-py: compared where both runs know them, not in the id
NVML_FIELDS = ("power_limit_w", "mig_mode")
CPU_FIELDS = ("cpu_model", "cpu_count")
#: which card a GPU run ran on (torch's view, and NVML's where it read the card): recorded, not in the fingerprint
IDENTITY_FIELDS = ("gpu_uuid", "gpu_pci_bus_id", "nvml_gpu_uuid", "nvml_gpu_pci_bus_id", "cuda_visible_devices")
SOFTWARE_FIELDS = ("torch", "torchvision", "tensorrt", "tensorrt_rtx", "cuda", "cudnn", "driver", "onnxruntime",
                   "onnx", "onnxscript", "numpy", "python", "perfsuite")
GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class HardwareFingerprint:
    """What a run's hardware must match; ``id`` names its baseline folder."""

    kind: str  # "gpu" or "cpu"
    fields: tuple[tuple[str, Any], ...]
    source: str = "perfsuite"  # or "pytest-benchmark" for runs saved without the perfsuite plugin

    def as_dict(self) -> dict[str, Any]:
        return dict(self.fields)

    @property
    def id(self) -> str:
        """A folder- and cache-key-safe name: kind, readable model, and a hash of the fields every run
        records (not the NVML ones: installing nvidia-ml-py must not move a baseline)."""
        fields = [[name, value] for name, value in self.fields if name not in NVML_FIELDS]
        digest = hashlib.sha256(json.dumps([self.kind, fields], sort_keys=True, default=str).encode())
        model = self.as_dict().get("gpu_name" if self.kind == "gpu" else "cpu_model") or "unknown"
        slug = re.sub(r"[^a-z0-9]+", "-", str(model).lower()).strip("-")[:40].strip("-")
        return f"{self.kind}-{slug}-{digest.hexdigest()[:10]}"

    @property
    def label(self) -> str:
        values = self.as_dict()
        if self.kind == "gpu":
            power = values.get("power_limit_w")
            extras = [f"sm {values.get('compute_capability')}", f"{values.get('gpu_memory_gib')} GiB",
                      f"{power} W" if power is not None else "power limit unknown",
                      f"MIG {values.get('mig_mode') or 'unknown'}"]
            return f"{values.get('gpu_name')} ({', '.join(extras)}) on {values.get('cpu_model') or 'an unknown CPU'}"
        return f"{values.get('cpu_model')} ({values.get('cpu_count')} logical cores)"


def _section(machine_info: Mapping[str, Any]) -> Mapping[str, Any] | None:
    section = machine_info.get("perfsuite")
    return section if isinstance(section, Mapping) else None


def fingerprint(machine_info: Mapping[str, Any]) -> HardwareFingerprint:
    """The fingerprint of a saved run's ``machine_info``."""
    section = _section(machine_info)
    if section is None:
        cpu = machine_info.get("cpu") if isinstance(machine_info.get("cpu"), Mapping) else {}
        model = cpu.get("brand_raw") or machine_info.get("processor") or machine_info.get("machine")
        return HardwareFingerprint("cpu", (("cpu_model", model), ("cpu_count", cpu.get("count"))),
                                   source="pytest-benchmark")
    if str(section.get("device", "cpu")).startswith("cuda"):
        memory = section.get("gpu_memory_bytes")
        values = {**section, "gpu_memory_gib": round(memory / GIB) if isinstance(memory, (int, float)) else None}
        return HardwareFingerprint("gpu", tuple((name, values.get(name)) for name in GPU_FIELDS))
    return HardwareFingerprint("cpu", tuple((name, section.get(name)) for name in CPU_FIELDS))


def software(machine_info: Mapping[str, Any]) -> dict[str, Any]:
    """Versions that may differ between compared runs (the change under test)."""
    section = _section(machine_info) or {"python": machine_info.get("python_version")}
    return {name: section.get(name) for name in SOFTWARE_FIELDS if name in section}


def mismatches(expected: HardwareFingerprint, actual: HardwareFingerprint) -> list[tuple[str, Any, Any]]:
    """(field, expected, actual) for every field known on both sides that differs, and the kind of device."""
    rows: list[tuple[str, Any, Any]] = []
    if expected.kind != actual.kind:
        rows.append(("device", expected.kind, actual.kind))
    left, right = expected.as_dict(), actual.as_dict()
    for name in dict.fromkeys([*left, *right]):
        if left.get(name) is not None and right.get(name) is not None and left[name] != right[name]:
            rows.append((name, left[name], right[name]))
    return rows


def machine_section(device: str) -> dict[str, Any]:
    """What the plugin stores as ``machine_info["perfsuite"]``: machine summary plus NVML facts."""
    from perfsuite import telemetry
    from perfsuite.environment import machine_summary

    return {"device": device, **machine_summary(device), **telemetry.hardware_facts(device)}


def current_fingerprint(device: str) -> HardwareFingerprint:
    """The fingerprint this machine's runs on ``device`` will have."""
    return fingerprint({"perfsuite": machine_section(device)})


@dataclasses.dataclass(frozen=True)
class PhysicalGpu:
    """The card a GPU run ran on: its UUID and PCI bus id as ``nvidia-smi`` writes them."""

    uuid: str | None
    pci_bus_id: str | None

    @property
    def key(self) -> str:
        """What tells two cards apart: the UUID where recorded, else the PCI bus id (one host only)."""
        return self.uuid or f"PCI {self.pci_bus_id}"

    @property
    def label(self) -> str:
        return " at ".join(part for part in (self.uuid, self.pci_bus_id) if part)


def physical_gpu(machine_info: Mapping[str, Any]) -> PhysicalGpu | None:
    """The card of a GPU run, or None: a CPU run, or a run saved before perfsuite recorded it."""
    section = _section(machine_info)
    if section is None or not str(section.get("device", "cpu")).startswith("cuda"):
        return None
    uuid, bus_id = section.get("gpu_uuid"), section.get("gpu_pci_bus_id")
    return PhysicalGpu(str(uuid), str(bus_id) if bus_id else None) if uuid else (
        PhysicalGpu(None, str(bus_id)) if bus_id else None)


def _cards_of(runs: Sequence[tuple[str, Mapping[str, Any]]]) -> tuple[dict[str, list[str]], list[str]]:
    """card label -> names of the runs on it; names of GPU runs that did not record their card."""
    cards: dict[str, tuple[str, list[str]]] = {}  # key -> (label, runs)
    unknown = []
    for name, machine_info in runs:
        card = physical_gpu(machine_info)
        if card is not None:
            cards.setdefault(card.key, (card.label, []))[1].append(name)
        elif str((_section(machine_info) or {}).get("device", "cpu")).startswith("cuda"):
            unknown.append(name)
    return dict(cards.values()), unknown


def physical_gpu_notes(baseline: Sequence[tuple[str, Mapping[str, Any]]],
                       new: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """What a comparison must say about the physical GPUs of its runs, each given as (name, machine_info):
    the runs of one side on several cards, the two sides on different cards, runs that did not record
    their card while others did. Empty where every run ran on one card, or on the CPU."""
    sides = {"baseline": _cards_of(baseline), "new": _cards_of(new)}
    notes = []
    for side, (cards, _) in sides.items():
        if len(cards) > 1:
            listing = "; ".join(f"{label} ({', '.join(names)})" for label, names in cards.items())
            notes.append(f"the {side} runs ran on {len(cards)} physical GPUs: {listing}. Differences "
                         "between the cards count as run-to-run noise (a larger MDE)")
    base_cards, new_cards = set(sides["baseline"][0]), set(sides["new"][0])
    if base_cards and new_cards and not base_cards & new_cards:
        notes.append(f"the baseline and new runs ran on different physical GPUs (baseline: "
                     f"{', '.join(sorted(base_cards))}; new: {', '.join(sorted(new_cards))}): a difference between "
                     "the cards is part of the change measured")
    if base_cards or new_cards:
        for side, (_, unknown) in sides.items():
            if unknown:
                notes.append(f"{len(unknown)} {side} run(s) did not record their physical GPU (saved before "
                             f"perfsuite recorded it): {', '.join(unknown)}")
    return notes
