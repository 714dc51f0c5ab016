"""Build a torchvision classification model with the weights the user chose.

Weights choices (``--weights`` / ``PERFSUITE_WEIGHTS``):

``pretrained``  torchvision's default weights enum (AlexNet: ``AlexNet_Weights.IMAGENET1K_V1``),
                loaded through torch's hub cache; downloads when the network allows.
``auto``        ``pretrained`` when the file is already in the hub cache (no network attempt),
                else ``random`` with a warning.
``random``      deterministic weights that are identical on every torch version and platform.
a path          a local state_dict, loaded with ``weights_only=True`` and checked against the model.

Every result records the choice and a sha256 fingerprint of the weights actually used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from perfsuite.environment import package_version
from perfsuite.errors import BrokenEnvironment, InputError, WeightsError

RANDOM_SEED = 20261127
WEIGHTS_CHOICES = ("auto", "pretrained", "random")


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A model in eval mode on the CPU in fp32, and what identifies its weights."""

    name: str
    module: torch.nn.Module
    weights: str  # "pretrained", "random" or "file"
    weights_source: str  # enum name, file path, or the random recipe
    fingerprint: str  # sha256 of the state_dict (names, dtypes, shapes, bytes)
    categories: tuple[str, ...]
    load_seconds: float = 0.0

    @property
    def short_fingerprint(self) -> str:
        return self.fingerprint[:12]

    def describe(self) -> dict[str, str]:
        """The fields every result row records about the model."""
        return {
            "model": self.name,
            "weights": self.weights,
            "weights_source": self.weights_source,
            "weights_fingerprint": self.fingerprint,
        }


def matching_torchvision(torch_version: str) -> str:
    """The torchvision release series built against ``torch_version`` ('2.14.1+cpu' -> '0.29'): since torch 2.0
    each torch 2.N pairs with torchvision 0.(N+15)."""
    parts = torch_version.split("+")[0].split(".")
    if len(parts) >= 2 and parts[0] == "2" and parts[1].isdigit():
        return f"0.{int(parts[1]) + 15}"
    return "the release made for it"


def install_hint() -> str:
    """How to install torch and torchvision builds that belong together, from the index this torch came from."""
    torch_version = torch.__version__
    local = torch_version.split("+")[1] if "+" in torch_version else None
    index = f" --index-url https://download.pytorch.org/whl/{local}" if local else ""
    pair = matching_torchvision(torch_version)
    torchvision_pin = f"torchvision=={pair}.*" if pair.startswith("0.") else "torchvision"
    return (f"install matching builds from one index: pip install torch=={torch_version.split('+')[0]} "
            f"{torchvision_pin}{index}")


def _torchvision_models():
    """``torchvision.models``; a torchvision that is missing or does not fit this torch is a
    :class:`BrokenEnvironment` naming both versions and the fix, not an import traceback."""
    try:
        import torchvision.models
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] != "torchvision":
            raise
        raise BrokenEnvironment(f"torchvision is not installed (torch {torch.__version__} is); {install_hint()}") \
            from None
    except Exception as exc:  # e.g. "operator torchvision::nms does not exist": built for another torch
        raise BrokenEnvironment(
            f"torchvision {package_version('torchvision') or '(version unknown)'} does not work with torch "
            f"{torch.__version__}: importing it failed with {type(exc).__name__}: {str(exc).splitlines()[0]}. "
            f"The two must be builds made for each other; {install_hint()}") from None
    return torchvision.models


def available_models() -> list[str]:
    """Names of torchvision's image classification models."""
    tv_models = _torchvision_models()
    return sorted(tv_models.list_models(module=tv_models))


def _default_weights_enum(name: str):
    tv_models = _torchvision_models()
    try:
        return tv_models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError):
        return None


def _categories(name: str) -> tuple[str, ...]:
    enum = _default_weights_enum(name)
    if enum is not None and "categories" in enum.meta:
        return tuple(enum.meta["categories"])
    return ()


def pretrained_cache_path(name: str) -> Path | None:
    """Where torch's hub cache keeps ``name``'s default pretrained weights (whether or not present)."""
    enum = _default_weights_enum(name)
    if enum is None:
        return None
    filename = os.path.basename(enum.url)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def state_dict_fingerprint(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().to("cpu").contiguous()
        digest.update(key.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        # reshape(-1) first: a 0-d tensor (BatchNorm's num_batches_tracked) cannot be viewed as bytes
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy() if tensor.numel() else b"")  # no copy
    return digest.hexdigest()


def deterministic_state_dict(
    reference: dict[str, torch.Tensor], seed: int = RANDOM_SEED
) -> dict[str, torch.Tensor]:
    """Weights that are bit-identical on every platform and torch version.

    Each tensor comes from numpy's legacy ``RandomState`` (whose stream numpy guarantees stable),
    seeded by the seed and the tensor's name, so the result does not depend on iteration order.
    Only ``random_sample`` is used: integer arithmetic plus one exact scaling, no libm calls.
    Scales follow the standard initializers, so activations and logits stay in a realistic
    range and fp16 never overflows:

    - conv/linear weights: He-uniform, bound sqrt(6 / fan_in) (variance 2/fan_in keeps ReLU
      activations at a constant scale through the network);
    - their biases: uniform, bound 1/sqrt(fan_in) (torch's default for biases);
    - normalization: weight 1, bias 0, running mean 0, running var 1.
    """

    def uniform(name: str, shape: tuple[int, ...], bound: float) -> torch.Tensor:
        name_seed = int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:4], "little")
        sample = np.random.RandomState(name_seed).random_sample(shape).reshape(-1)  # float64 in [0, 1)
        # (sample * 2 - 1) * bound, in place and in cache-sized pieces: the same operations in the same order
        # (bit-identical), without three fresh arrays of 8 bytes a weight (2.7 s for AlexNet, now 0.8 s)
        weights = np.empty(sample.size, dtype=np.float32)
        for start in range(0, sample.size, 1 << 16):
            piece = sample[start:start + (1 << 16)]
            piece *= 2.0
            piece -= 1.0
            piece *= bound
            weights[start:start + (1 << 16)] = piece
        return torch.from_numpy(weights.reshape(shape))

    result: dict[str, torch.Tensor] = {}
    for name, tensor in reference.items():
        shape = tuple(tensor.shape)
        prefix, _, leaf = name.rpartition(".")
        if not tensor.is_floating_point():
            result[name] = torch.zeros(shape, dtype=tensor.dtype)  # e.g. BatchNorm's num_batches_tracked
        elif leaf == "running_mean":
            result[name] = torch.zeros(shape)
        elif leaf == "running_var":
            result[name] = torch.ones(shape)
        elif tensor.ndim >= 2:
            fan_in = int(np.prod(shape[1:]))
            result[name] = uniform(name, shape, (6.0 / fan_in) ** 0.5)
        elif leaf == "bias" and reference.get(f"{prefix}.weight", tensor).ndim >= 2:
            weight_shape = reference[f"{prefix}.weight"].shape
            fan_in = int(np.prod(weight_shape[1:]))
            result[name] = uniform(name, shape, 1.0 / fan_in**0.5)
        elif leaf == "weight":
            result[name] = torch.ones(shape)  # normalization scale
        else:
            result[name] = torch.zeros(shape)  # normalization shift and other 1-D parameters
    return result


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"weights file {path}: does not exist")
    if path.stat().st_size == 0:
        raise WeightsError(f"weights file {path}: is empty")
    try:
        # weights_only: never unpickle arbitrary objects from a file we did not write.
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for bad or unsafe pickles
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(
            f"weights file {path}: not a PyTorch state_dict (torch.load with weights_only=True: {first_line})"
        ) from exc
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise WeightsError(f"weights file {path}: holds {type(loaded).__name__}, not a state_dict of tensors")
    return loaded


def _check_fits(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str,
                finite_known: bool = False) -> None:
    expected = model.state_dict()
    problems = [f"missing {k}" for k in expected if k not in state_dict]
    problems += [f"unexpected {k}" for k in state_dict if k not in expected]
    problems += [
        f"{k}: shape {tuple(state_dict[k].shape)} where the model has {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise WeightsError(f"weights {source} do not fit model {type(model).__name__}: {shown}")
    if not finite_known:  # the deterministic random weights are finite by construction
        check_finite_weights(state_dict, source)


def check_finite_weights(state_dict: dict[str, torch.Tensor], source: str) -> None:
    """NaN or Inf in a weight makes every output meaningless (and every parity check vacuous): refused,
    naming the first tensor that holds one."""
    for name, tensor in state_dict.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise WeightsError(f"weights {source}: tensor {name} holds {bad} NaN or Inf value(s)")


def _pretrained_state_dict(name: str) -> tuple[dict[str, torch.Tensor], str]:
    enum = _default_weights_enum(name)
    if enum is None:
        raise WeightsError(f"model {name!r} has no pretrained weights in torchvision; use --weights random")
    cache = pretrained_cache_path(name)
    try:
        state = torch.hub.load_state_dict_from_url(enum.url, progress=False, check_hash=True, weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"pretrained weights for {name} ({type(enum).__name__}.{enum.name}) could not be loaded: {exc}. "
            f"They are expected in torch's hub cache at {cache} (downloaded from {enum.url} when the network "
            "allows). Offline choices: copy that file there, pass --weights PATH to a local state_dict, or "
            "--weights random for deterministic random weights."
        ) from exc
    return state, f"{type(enum).__name__}.{enum.name}"


def resolve_weights_choice(option: str | None, default: str = "auto",
                           default_origin: str = "the default weights") -> tuple[str, str]:
    """(choice, where it came from): --weights, else $PERFSUITE_WEIGHTS, else the suite default
    (``default_origin`` names it in messages, e.g. the pyproject.toml key)."""
    if option is not None and not option.strip():
        raise InputError("--weights '': names nothing; give auto, pretrained, random or a file, or leave it out")
    if option:
        return option, "--weights"
    if "PERFSUITE_WEIGHTS" in os.environ and not os.environ["PERFSUITE_WEIGHTS"].strip():
        raise InputError("$PERFSUITE_WEIGHTS is set but empty; set it to auto, pretrained, random or a file, "
                         "or unset it")
    if os.environ.get("PERFSUITE_WEIGHTS"):
        return os.environ["PERFSUITE_WEIGHTS"], "$PERFSUITE_WEIGHTS"
    return default, default_origin


def check_model_name(name: str, origin: str = "--model") -> str:
    """``name`` if torchvision has such a classification model; else an error naming ``origin``."""
    names = available_models()
    if name not in names:
        version = package_version("torchvision") or "(version unknown)"
        if name == "alexnet" or not names:  # the suite's own model: this torchvision is not one the suite can use
            raise BrokenEnvironment(f"{origin} {name!r}: torchvision {version} (with torch {torch.__version__}) "
                                    f"has no such model ({len(names)} classification models); {install_hint()}")
        raise InputError(f"{origin} {name!r}: not a classification model of torchvision {version} "
                         "(e.g. alexnet, resnet18)")
    return name


def check_weights_choice(choice: str, origin: str = "--weights") -> str:
    """``choice`` if it is one of WEIGHTS_CHOICES or looks like a file path; else an error naming ``origin``."""
    if choice not in WEIGHTS_CHOICES and not Path(choice).suffix and not Path(choice).expanduser().exists():
        raise InputError(f"{origin} {choice!r}: neither one of {', '.join(WEIGHTS_CHOICES)} nor an existing file")
    return choice


def load_model(name: str = "alexnet", weights: str = "auto", *, name_origin: str = "--model",
               weights_origin: str = "--weights") -> LoadedModel:
    """Build ``name`` in eval mode on the CPU in fp32 with the chosen weights; the origins name where
    the two values came from (an option, a pyproject.toml key) in error messages."""
    import time

    started = time.perf_counter()
    check_model_name(name, name_origin)
    check_weights_choice(weights, weights_origin)
    # Built without storage (meta device) and given the chosen weights' tensors: torchvision's own random
    # initialization would be thrown away (0.6 s of AlexNet's start-up in every process that loads it).
    # torchvision is imported outside the meta context: tensors made at its import must be real.
    models = _torchvision_models()
    with torch.device("meta"):
        model = models.get_model(name, weights=None).eval()

    choice = weights
    if weights == "auto":
        cache = pretrained_cache_path(name)
        if cache is not None and cache.is_file():
            choice = "pretrained"
        else:
            choice = "random"
            warnings.warn(
                f"no pretrained weights for {name} in torch's hub cache ({cache}); using deterministic "
                "random weights (pass --weights pretrained to download them)",
                stacklevel=2,
            )

    if choice == "pretrained":
        state, source = _pretrained_state_dict(name)
        kind = "pretrained"
    elif choice == "random":
        state = deterministic_state_dict(model.state_dict())
        source = f"numpy RandomState seed {RANDOM_SEED}, He-uniform"
        kind = "random"
    else:
        path = Path(choice).expanduser()
        state = _load_file(path)
        source, kind = str(path), "file"

    _check_fits(model, state, source, finite_known=kind == "random")
    expected = model.state_dict()  # each tensor in the model's dtype and layout, as load_state_dict's copy gave it
    model.load_state_dict({k: v.to(dtype=expected[k].dtype, device="cpu", memory_format=torch.contiguous_format)
                           for k, v in state.items()}, assign=True)
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):  # a buffer no state_dict holds
        model = models.get_model(name, weights=None).eval()  # built for real, as before
        model.load_state_dict(state)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return LoadedModel(
        name=name,
        module=model,
        weights=kind,
        weights_source=source,
        fingerprint=state_dict_fingerprint(model.state_dict()),
        categories=_categories(name),
        load_seconds=time.perf_counter() - started,
    )
