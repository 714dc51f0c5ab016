"""Golden outputs: the reference logits recorded once, committed, and checked after every upgrade.

Comparing two backends in one run cannot notice that the reference itself moved (a new torch,
torchvision or Pillow, another CPU). A golden pins it: eager fp32 on the CPU (where TF32 does not
exist) for every fixture image, per model, weights fingerprint and preprocessing transform.

Layout: ``<project>/fixtures/golden/<model>/<first 16 hex digits of the fingerprint>/<transform>.json``,
where the project is the one being tested: pytest's rootdir, or for the command line the folder of the
nearest pyproject.toml at or above the working directory (never the folder perfsuite is installed
in, so an editable install used from another checkout reads and writes that checkout's goldens).
One JSON document per golden (written atomically), declared by :data:`GOLDEN_SCHEMA`, holding

- the logits, as little-endian float32 bytes in base64 with their sha256, verified on read
  (nothing is ever unpickled);
- metadata: weights fingerprint and source, the preprocessing (the transform's own description),
  the fixture images' sha256, the sha256 of the preprocessed input batch, the ONNX exporter,
  the versions of everything that can move the numbers, the CPU, and the date;
- a trace of every layer: each leaf module's output (and the input) reduced to its per-sample
  L2 norm and a 32-bucket CountSketch (each element added, with a fixed random sign, into one of
  32 fixed random buckets). The sketch is linear, so sketch(new) - sketch(old) = sketch(new - old),
  and ||sketch(x)|| estimates ||x|| (to ~25% with 32 buckets): enough to tell rounding noise
  (1e-7) from a real change (1e-2) layer by layer, and so to say where outputs first depart;
- ``content_sha256`` (format 2): the sha256 of the whole document without this field, as canonical
  JSON (sorted keys, no spaces), so that the layer norms, names and shapes, the image list and the
  provenance are covered too, not only the arrays.

Format 1 files (no ``content_sha256``) are refused: nothing would tell a real format 1 golden from a
format 2 one downgraded by hand, its checksum removed and a layer norm or the provenance edited, and a
check against it would pass. ``perfsuite golden record --overwrite`` re-records it as format 2.

Image names are plain file names in the fixtures folder (``images.FIXTURES_DIR``); a golden naming
an absolute path or one with a folder in it is refused, so a golden file never makes the suite read
a file elsewhere.

Re-recording is deliberate (``perfsuite golden record --overwrite``); see docs/parity.md.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import difflib
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from perfsuite.comparator import ParityReport, compare
from perfsuite.errors import InputError
from perfsuite.images import FIXTURES_DIR, build_transform, fixture_paths, load_image
from perfsuite.models import LoadedModel
from perfsuite.results import read_json_file, write_json_atomic
from perfsuite.tolerances import Tolerance
from perfsuite.validation import validate

FORMAT = "perfsuite-golden"
FORMAT_VERSION = 2  # written; READABLE_VERSIONS are read
READABLE_VERSIONS = (2,)  # format 1 (no content checksum) is refused, see the module docstring
REFERENCE = "eager fp32 on the CPU (TF32 does not apply there)"
SKETCH_BUCKETS = 32
SKETCH_SEED = 20261128
_ARRAY_DTYPES = {"float32": "<f4", "float64": "<f8"}  # the only dtypes a golden may hold


class GoldenError(InputError):
    """A golden file that cannot be used: missing, corrupt, tampered with or misplaced."""


class GoldenMissing(GoldenError):
    """No golden was recorded for this model, weights fingerprint and transform."""


# -- inputs and the traced reference -----------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class GoldenInputs:
    """The fixture images, preprocessed, and what produced them."""

    transform: str  # the suite's name for it ("report", "eval")
    preprocessing: str  # the transform's own description (torchvision's repr)
    paths: tuple[Path, ...]
    batch: torch.Tensor  # (N, 3, 224, 224) fp32 on the CPU

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.paths)


def golden_inputs(transform: str = "report", paths: Sequence[str | Path] | None = None,
                  preprocess: Callable[[Any], torch.Tensor] | None = None) -> GoldenInputs:
    """Load and preprocess the fixture images (or ``paths``); ``preprocess`` replaces the
    transform named ``transform``, e.g. to rehearse a preprocessing change."""
    function = preprocess if preprocess is not None else build_transform(transform)
    files = tuple(Path(p) for p in (paths if paths is not None else fixture_paths()))
    if not files:
        raise InputError("golden: no input image given")
    batch = torch.stack([function(load_image(p)) for p in files]).to(torch.float32).contiguous()
    return GoldenInputs(transform, repr(function), files, batch)


@dataclasses.dataclass(frozen=True, eq=False)
class LayerTrace:
    """One layer's output, reduced: per-sample L2 norm and CountSketch (see the module docstring)."""

    name: str
    kind: str  # the module's class name, or "input"
    shape: tuple[int, ...]  # one sample's
    norms: tuple[float, ...]
    sketch: np.ndarray  # (samples, SKETCH_BUCKETS) float64


@lru_cache(maxsize=64)
def _sketch_plan(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bucket and sign of every element of a ``size``-element vector: fixed on every platform
    (numpy's legacy RandomState stream is guaranteed stable), seeded by the size."""
    seed = int.from_bytes(hashlib.sha256(f"{SKETCH_SEED}:{size}".encode()).digest()[:4], "little")
    state = np.random.RandomState(seed)
    buckets = np.floor(state.random_sample(size) * SKETCH_BUCKETS).astype(np.int64)
    signs = np.where(state.random_sample(size) < 0.5, -1.0, 1.0)
    return torch.from_numpy(buckets), torch.from_numpy(signs)


def trace_layer(name: str, kind: str, output: torch.Tensor) -> LayerTrace:
    values = output.detach().to("cpu", torch.float64).reshape(output.shape[0], -1)
    buckets, signs = _sketch_plan(values.shape[1])
    sketch = torch.zeros(values.shape[0], SKETCH_BUCKETS, dtype=torch.float64)
    sketch.index_add_(1, buckets, values * signs)
    return LayerTrace(name, kind, tuple(output.shape[1:]), tuple(float(n) for n in values.norm(dim=1)),
                      sketch.numpy())


def trace_reference(model: LoadedModel, images: torch.Tensor) -> tuple[torch.Tensor, tuple[LayerTrace, ...]]:
    """The reference logits (``eager.reference_logits`` on the CPU) and a trace of every layer."""
    from perfsuite.backends.eager import reference_logits

    traces = [trace_layer("input", "input", images)]

    def record(name: str) -> Callable:
        # Reduce inside the hook: in-place ReLUs overwrite a layer's output right after it returns.
        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                traces.append(trace_layer(name, type(module).__name__, output))
        return hook

    handles = [module.register_forward_hook(record(name)) for name, module in model.module.named_modules()
               if name and not any(True for _ in module.children())]
    try:
        logits = reference_logits(model, images, "cpu")
    finally:
        for handle in handles:
            handle.remove()
    return logits, tuple(traces)


# -- the golden record -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Golden:
    """Reference logits of one model, weights fingerprint and transform, with their provenance."""

    model: str
    weights: str
    weights_source: str
    fingerprint: str
    transform: str
    preprocessing: str
    images: tuple[tuple[str, str], ...]  # (file name, sha256 of the file)
    input_sha256: str  # of the preprocessed float32 batch
    logits: torch.Tensor  # (N, classes) float32
    layers: tuple[LayerTrace, ...]
    exporter: dict[str, Any]
    versions: dict[str, Any]
    machine: str
    recorded_at: str
    path: Path | None = None  # where it was read from
    content_verified: bool = True  # False for a format 1 file: only its arrays carry a checksum

    @property
    def image_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.images)

    def describe(self) -> str:
        unverified = "" if self.content_verified else (
            "; format 1: only its arrays are checksummed, not its layer norms or metadata (re-record with "
            "--overwrite to write format 2)")
        return (f"{self.model}, weights {self.weights} {self.fingerprint[:12]}, transform {self.transform}, "
                f"{len(self.images)} images, recorded {self.recorded_at} with torch {self.versions.get('torch')}, "
                f"torchvision {self.versions.get('torchvision')}{unverified}")


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tensor_sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(np.ascontiguousarray(tensor.detach().cpu().numpy(), dtype="<f4").tobytes()).hexdigest()


def _versions() -> dict[str, Any]:
    from perfsuite.environment import package_version, software_versions

    return {**software_versions(), "pillow": package_version("pillow")}


def record_golden(model: LoadedModel, inputs: GoldenInputs) -> Golden:
    """Run the reference on ``inputs`` now and describe everything that produced it."""
    from perfsuite.environment import cpu_info
    from perfsuite.onnx_export import EXPORTER, OPSET

    logits, layers = trace_reference(model, inputs.batch)
    return Golden(
        model=model.name,
        weights=model.weights,
        weights_source=model.weights_source,
        fingerprint=model.fingerprint,
        transform=inputs.transform,
        preprocessing=inputs.preprocessing,
        images=tuple((p.name, _sha256_file(p)) for p in inputs.paths),
        input_sha256=_tensor_sha256(inputs.batch),
        logits=logits.to(torch.float32).contiguous(),
        layers=layers,
        exporter={"exporter": EXPORTER, "opset": OPSET},
        versions=_versions(),
        machine=str(cpu_info()["cpu_model"]),
        recorded_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )


# -- storage -----------------------------------------------------------------------------------


def project_golden_dir(project_root: Path | None = None) -> Path:
    """``<project>/fixtures/golden``: the project is ``project_root`` (pytest passes its rootdir), else
    the folder of the nearest pyproject.toml at or above the working directory."""
    from perfsuite.config import find_pyproject

    if project_root is None:
        pyproject = find_pyproject()
        if pyproject is None:
            raise GoldenError(f"no pyproject.toml in {Path.cwd()} or above, so no project to find the goldens "
                              "in (<project>/fixtures/golden): run perfsuite from the project, or pass --golden-dir")
        project_root = pyproject.parent
    return Path(project_root) / "fixtures" / "golden"


def golden_path(model_name: str, fingerprint: str, transform: str, root: Path) -> Path:
    return Path(root) / model_name / fingerprint[:16] / f"{transform}.json"


_SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_SIZES = {"type": "array", "items": {"type": "integer", "minimum": 0}}
_ARRAY = {
    "type": "object",
    "required": ["dtype", "shape", "sha256", "base64"],
    "properties": {"dtype": {"enum": list(_ARRAY_DTYPES)}, "shape": _SIZES, "sha256": _SHA256,
                   "base64": {"type": "string"}, "encoding": {"type": "string"}},
}
_TEXT = {"type": "string"}
GOLDEN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["format", "format_version", "model", "weights", "weights_source", "weights_fingerprint",
                 "transform", "preprocessing", "images", "input_sha256", "exporter", "versions", "machine",
                 "recorded_at", "logits", "layers"],
    "properties": {
        "format": {"const": FORMAT},
        "format_version": {"enum": list(READABLE_VERSIONS)},
        "model": _TEXT, "weights": _TEXT, "weights_source": _TEXT, "weights_fingerprint": _SHA256,
        "transform": _TEXT, "preprocessing": _TEXT, "reference": _TEXT, "machine": _TEXT, "recorded_at": _TEXT,
        "images": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["name", "sha256"],
            "properties": {"name": {"type": "string", "minLength": 1}, "sha256": _SHA256}}},
        "input_sha256": _SHA256,
        "exporter": {"type": "object"},
        "versions": {"type": "object"},
        "logits": _ARRAY,
        "layers": {"type": "array", "items": {
            "type": "object", "required": ["name", "kind", "shape", "norms", "sketch"],
            "properties": {"name": _TEXT, "kind": _TEXT, "shape": _SIZES,
                           "norms": {"type": "array", "items": {"type": "number"}}, "sketch": _ARRAY}}},
        "content_sha256": _SHA256,
    },
    "if": {"properties": {"format_version": {"const": 2}}},
    "then": {"required": ["content_sha256"]},
}


def _encode_array(array: np.ndarray) -> dict[str, Any]:
    dtype = "float32" if array.dtype == np.float32 else "float64"
    data = np.ascontiguousarray(array, dtype=_ARRAY_DTYPES[dtype]).tobytes()
    return {"dtype": dtype, "shape": list(array.shape), "encoding": "base64 of little-endian bytes",
            "sha256": hashlib.sha256(data).hexdigest(), "base64": base64.b64encode(data).decode("ascii")}


def _decode_array(entry: dict[str, Any], where: str) -> np.ndarray:
    """An array the schema has checked the fields of: its data, verified against its sha256 and shape."""
    dtype, shape = entry["dtype"], entry["shape"]
    try:
        data = base64.b64decode(entry["base64"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise GoldenError(f"{where}: the base64 data is corrupt ({exc})") from exc
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise GoldenError(f"{where}: sha256 mismatch: the data was altered or corrupted after it was recorded")
    expected = math.prod(shape) * np.dtype(_ARRAY_DTYPES[dtype]).itemsize
    if len(data) != expected:
        raise GoldenError(f"{where}: {len(data)} bytes where shape {shape} of {dtype} needs {expected}")
    return np.frombuffer(data, dtype=_ARRAY_DTYPES[dtype]).reshape(shape).astype(dtype)


def content_sha256(document: dict[str, Any]) -> str:
    """The sha256 of ``document`` without its ``content_sha256``, as canonical JSON."""
    body = {key: value for key, value in document.items() if key != "content_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def golden_document(golden: Golden) -> dict[str, Any]:
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": golden.model,
        "weights": golden.weights,
        "weights_source": golden.weights_source,
        "weights_fingerprint": golden.fingerprint,
        "transform": golden.transform,
        "preprocessing": golden.preprocessing,
        "images": [{"name": name, "sha256": sha} for name, sha in golden.images],
        "input_sha256": golden.input_sha256,
        "reference": REFERENCE,
        "exporter": golden.exporter,
        "versions": golden.versions,
        "machine": golden.machine,
        "recorded_at": golden.recorded_at,
        "logits": _encode_array(golden.logits.numpy()),
        "layers": [{"name": t.name, "kind": t.kind, "shape": list(t.shape), "norms": list(t.norms),
                    "sketch": _encode_array(t.sketch)} for t in golden.layers],
    }
    return {**document, "content_sha256": content_sha256(document)}


def save_golden(golden: Golden, root: Path) -> Path:
    """Write atomically to its place under ``root``; refuses a reference with NaN or Inf."""
    if not torch.isfinite(golden.logits).all():
        raise GoldenError(f"golden {golden.model}/{golden.transform}: the reference logits have NaN or Inf "
                          "values; refusing to record them")
    path = golden_path(golden.model, golden.fingerprint, golden.transform, root)
    write_json_atomic(path, golden_document(golden))
    return path


def _check_image_name(name: str, where: str, index: int) -> str:
    if name in (".", "..") or Path(name).is_absolute() or Path(name).name != name or "\\" in name:
        raise GoldenError(f"{where}: field images[{index}].name {name!r} is not a plain file name: a golden names "
                          f"images in the fixtures folder ({FIXTURES_DIR}) and never points outside it")
    return name


def load_golden(path: str | Path) -> Golden:
    """Read and verify a golden file; a :class:`GoldenError` naming the file (and the field) for anything wrong."""
    path = Path(path)
    where = f"golden {path}"
    data = read_json_file(path, where, GoldenError)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise GoldenError(f"{where}: not a perfsuite golden file (no \"format\": \"{FORMAT}\")")
    version = data.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise GoldenError(f"{where}: field format_version: {version!r} is a {type(version).__name__}, not a "
                          f"number (this perfsuite reads format versions {', '.join(map(str, READABLE_VERSIONS))})")
    if version == 1:
        raise GoldenError(f"{where}: format 1, which has no content checksum: its layer norms, image list and "
                          "provenance cannot be verified (a downgraded, edited file would look the same); "
                          "re-record it with: perfsuite golden record --overwrite")
    if version not in READABLE_VERSIONS:
        raise GoldenError(f"{where}: format version {version}; this perfsuite reads format versions "
                          f"{', '.join(map(str, READABLE_VERSIONS))} (a newer perfsuite wrote it?)")
    validate(data, GOLDEN_SCHEMA, where, GoldenError)
    images = tuple((_check_image_name(i["name"], where, n), i["sha256"]) for n, i in enumerate(data["images"]))
    logits = _decode_array(data["logits"], f"{where}: logits")
    if logits.ndim != 2 or logits.shape[0] != len(images):
        raise GoldenError(f"{where}: logits of shape {logits.shape} do not match {len(images)} images")
    layers = tuple(LayerTrace(layer["name"], layer["kind"], tuple(layer["shape"]), tuple(map(float, layer["norms"])),
                              _decode_array(layer["sketch"], f"{where}: layer {layer['name']} sketch"))
                   for layer in data["layers"])
    if version >= 2 and content_sha256(data) != data["content_sha256"]:
        raise GoldenError(f"{where}: content sha256 mismatch: a field (layer norms, names, image list or "
                          "provenance) was edited after the golden was recorded")
    fingerprint, transform = data["weights_fingerprint"], data["transform"]
    if path.parent.name != fingerprint[:16] or path.stem != transform:
        raise GoldenError(f"{where}: holds fingerprint {fingerprint[:16]} and transform {transform!r} but is "
                          f"stored as {path.parent.name}/{path.name}; it was moved or renamed by hand")
    return Golden(
        model=data["model"], weights=data["weights"], weights_source=data["weights_source"],
        fingerprint=fingerprint, transform=transform, preprocessing=data["preprocessing"],
        images=images, input_sha256=data["input_sha256"],
        logits=torch.from_numpy(logits.copy()), layers=layers, exporter=data["exporter"],
        versions=data["versions"], machine=data["machine"], recorded_at=data["recorded_at"], path=path,
        content_verified=version >= 2,
    )


def recorded_goldens(model_name: str, root: Path) -> list[str]:
    """One line per golden file recorded for ``model_name`` (unreadable ones say why)."""
    lines = []
    for path in sorted((Path(root) / model_name).glob("*/*.json")):
        try:
            golden = load_golden(path)
            lines.append(f"{golden.fingerprint[:12]} ({golden.weights}: {golden.weights_source}), transform "
                         f"{golden.transform}, recorded {golden.recorded_at}")
        except GoldenError as exc:
            lines.append(f"{path}: unreadable ({exc})")
    return lines


def weights_option(model: LoadedModel) -> str:
    return model.weights_source if model.weights == "file" else model.weights


def find_golden(model: LoadedModel, transform: str, root: Path) -> Golden:
    """The golden of ``model``'s weights fingerprint and ``transform``; :class:`GoldenMissing`
    (never a silent pass) when none was recorded."""
    path = golden_path(model.name, model.fingerprint, transform, root)
    if path.is_file():
        golden = load_golden(path)
        if golden.fingerprint != model.fingerprint or golden.model != model.name:
            raise GoldenError(f"golden {path}: records {golden.model} {golden.fingerprint[:16]}, not "
                              f"{model.name} {model.fingerprint[:16]}")
        return golden
    others = recorded_goldens(model.name, root)
    listing = ("; goldens recorded for it: " + "; ".join(others)) if others else f"; none is recorded for {model.name}"
    raise GoldenMissing(
        f"no golden outputs for {model.name} with weights fingerprint {model.fingerprint[:12]} "
        f"({model.weights}: {model.weights_source}) and transform {transform!r} under {root}{listing}. "
        "Outputs cannot be checked against a golden of other weights. If these weights are intended, record "
        f"their golden deliberately: perfsuite golden record --model {model.name} --weights "
        f"{weights_option(model)} --transform {transform}"
    )


# -- comparing ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LayerChange:
    """How far one layer's output moved from the golden: ||sketch(new - old)|| / ||sketch(old)||."""

    name: str
    kind: str
    change: float  # nan where the new output has NaN or Inf values
    nonfinite: bool


def layer_changes(old: Sequence[LayerTrace], new: Sequence[LayerTrace]) -> tuple[LayerChange, ...]:
    """Per layer, in execution order, as far as both traces have the same layers."""
    changes = []
    for before, after in zip(old, new):
        if before.name != after.name or before.sketch.shape != after.sketch.shape:
            break
        nonfinite = not all(math.isfinite(n) for n in after.norms)
        base = float(np.linalg.norm(before.sketch))
        moved = float(np.linalg.norm(after.sketch - before.sketch))
        change = math.nan if nonfinite else (moved / base if base > 0 else (0.0 if moved == 0 else math.inf))
        changes.append(LayerChange(after.name, after.kind, change, nonfinite))
    return tuple(changes)


def metadata_changes(old: Golden, new: Golden) -> list[str]:
    """What differs between two goldens' provenance, one line (or block) per item."""
    lines: list[str] = []

    def note(label: str, before: Any, after: Any) -> None:
        if before != after:
            lines.append(f"{label}: {before} -> {after}")

    note("model", old.model, new.model)
    note("weights fingerprint", old.fingerprint[:16], new.fingerprint[:16])
    note("weights", f"{old.weights} ({old.weights_source})", f"{new.weights} ({new.weights_source})")
    note("transform", old.transform, new.transform)
    if old.preprocessing != new.preprocessing:
        diff = [line for line in difflib.ndiff(old.preprocessing.splitlines(), new.preprocessing.splitlines())
                if line[:1] in "-+"]
        lines.append("preprocessing changed:\n" + "\n".join(f"    {line}" for line in diff))
    old_images, new_images = dict(old.images), dict(new.images)
    for name in sorted(set(old_images) | set(new_images)):
        note(f"image {name} sha256", (old_images.get(name) or "absent")[:16], (new_images.get(name) or "absent")[:16])
    note("preprocessed input sha256", old.input_sha256[:16], new.input_sha256[:16])
    note("exporter", old.exporter, new.exporter)
    for key in sorted(set(old.versions) | set(new.versions)):
        note(key, old.versions.get(key), new.versions.get(key))
    note("CPU", old.machine, new.machine)
    return lines


@dataclasses.dataclass(frozen=True)
class GoldenComparison:
    """The current reference against a golden: numbers, provenance and where they depart."""

    golden: Golden
    current: Golden
    parity: ParityReport
    changes: tuple[str, ...]
    layers: tuple[LayerChange, ...]
    threshold: float  # a layer "departs" when its change exceeds this (the fp32 tolerance)

    @property
    def passed(self) -> bool:
        return self.parity.passed

    @property
    def first_departure(self) -> LayerChange | None:
        return next((c for c in self.layers if c.nonfinite or not c.change <= self.threshold), None)

    def report(self) -> str:
        lines = [f"golden: {self.golden.path or '(not saved)'}", f"  {self.golden.describe()}"]
        if self.changes:
            lines.append("differs from when the golden was recorded:")
            lines.extend(f"  {c}" for c in self.changes)
        else:
            lines.append("provenance unchanged since the golden was recorded")
        lines.append("reference (eager fp32, CPU) against the golden:")
        lines.extend(f"  {line}" for line in self.parity.report().splitlines())
        lines.extend(self._layer_lines())
        return "\n".join(lines)

    def _layer_lines(self) -> list[str]:
        if not self.layers:
            return ["layers: the golden's layer trace does not match this model's layers"]
        first = self.first_departure
        if first is None:
            largest = max(self.layers, key=lambda c: c.change)
            return [f"layers: every layer within {self.threshold:.0e} of the golden (largest change "
                    f"{largest.change:.1e} at {largest.name})"]
        at = self.layers.index(first)
        lines = [f"where the outputs depart from the golden (relative change of each layer's output, from its "
                 f"{SKETCH_BUCKETS}-bucket CountSketch; a layer departs above {self.threshold:.0e}):"]
        shown = self.layers[max(0, at - 3):at + 1]
        if at > 3:
            lines.append(f"    ... {at - 3} earlier layers within {self.threshold:.0e}")
        for change in shown:
            value = "NaN/Inf" if change.nonfinite else f"{change.change:.1e}"
            marker = "  <- first departure" if change is first else ""
            lines.append(f"    {change.name:<16}{change.kind:<20}{value:>9}{marker}")
        later = self.layers[at + 1:]
        if later:
            finite = [c.change for c in later if not c.nonfinite]
            bad = len(later) - len(finite)
            lines.append(f"    ... {len(later)} later layers"
                         + (f", largest change {max(finite):.1e}" if finite else "")
                         + (f", {bad} with NaN/Inf" if bad else ""))
        lines.append("  => " + self._diagnosis(first))
        return lines

    def _diagnosis(self, first: LayerChange) -> str:
        if first.name == "input":
            if dict(self.golden.images) != dict(self.current.images):
                cause = "the image files changed (see their sha256 above)"
            elif self.golden.preprocessing != self.current.preprocessing:
                cause = "the image files are unchanged and the preprocessing changed (see above)"
            else:
                cause = ("the image files and the transform's description are unchanged, so the library that "
                         "decodes or resizes them moved (compare the torchvision and Pillow versions above)")
            return f"the preprocessed input already differs from the golden's: {cause}"
        if first.nonfinite:
            return f"NaN/Inf first appear in the output of {first.name} ({first.kind}): look at its weights and inputs"
        weights = ("the weights differ from the golden's" if self.golden.fingerprint != self.current.fingerprint
                   else "the weights are the golden's, so a kernel or library moved")
        return (f"the input matches; the first layer that departs is {first.name} ({first.kind}), "
                f"change {first.change:.1e}: {weights}")


def compare_with_golden(golden: Golden, outputs: torch.Tensor, tolerance: Tolerance,
                        categories: Sequence[str] = ()) -> ParityReport:
    """A backend's outputs on the golden's images against the golden logits."""
    return compare(golden.logits, outputs, tolerance, categories=categories, sample_names=golden.image_names)


def compare_goldens(golden: Golden, current: Golden, tolerance: Tolerance,
                    categories: Sequence[str] = ()) -> GoldenComparison:
    """``current`` (usually :func:`record_golden` run now) against ``golden``."""
    return GoldenComparison(
        golden=golden,
        current=current,
        parity=compare_with_golden(golden, current.logits, tolerance, categories),
        changes=tuple(metadata_changes(golden, current)),
        layers=layer_changes(golden.layers, current.layers),
        threshold=tolerance.rel,
    )


def inputs_for(golden: Golden, preprocess: Callable[[Any], torch.Tensor] | None = None,
               folder: Path = FIXTURES_DIR) -> GoldenInputs:
    """The golden's own images from ``folder``, preprocessed with its transform (or ``preprocess``)."""
    return golden_inputs(golden.transform, [folder / name for name in golden.image_names], preprocess)


def check_reference(model: LoadedModel, golden: Golden, tolerance: Tolerance,
                    inputs: GoldenInputs | None = None) -> tuple[GoldenComparison, GoldenInputs]:
    """Run the reference now on the golden's images and compare it with the golden."""
    inputs = inputs if inputs is not None else inputs_for(golden)
    current = record_golden(model, inputs)
    return compare_goldens(golden, current, tolerance, model.categories), inputs
