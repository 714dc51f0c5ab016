"""Weights selection: random (deterministic), local file, auto, pretrained; fingerprints."""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch

from perfsuite.errors import InputError, WeightsError
from perfsuite.images import fixture_paths, load_batch
from perfsuite.models import load_model, pretrained_cache_path, resolve_weights_choice

# The deterministic random AlexNet is the same on every platform and torch version: this value was
# computed with torch 2.14.1 on x86-64 and is checked on the GPU machine's torch 2.11 too.
ALEXNET_RANDOM_FINGERPRINT = "415ac74c99842a6ebfcbf44fc3a5579f7792728e7a6f861120c5259e62376c3a"


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """An empty torch hub cache, so no test sees or writes the user's."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # a set_dir() elsewhere would win over TORCH_HOME
    return tmp_path / "torch" / "hub"


def test_random_weights_are_deterministic_across_platforms(alexnet):
    assert alexnet.fingerprint == ALEXNET_RANDOM_FINGERPRINT
    assert alexnet.weights == "random"
    assert load_model("alexnet", "random").fingerprint == alexnet.fingerprint


def test_random_logits_are_in_a_realistic_range(alexnet):
    with torch.inference_mode():
        logits = alexnet.module(load_batch(fixture_paths()))
        half = copy.deepcopy(alexnet.module).half()(load_batch(fixture_paths()).half())
    # Fan-in scaling keeps logits O(1..10): tiny logits would make every top-1 a near tie,
    # huge ones would overflow fp16 (max 65504).
    assert 1.0 < float(logits.abs().max()) < 1000.0
    assert float(logits.std()) > 0.5
    assert torch.isfinite(half).all()


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_other_torchvision_models_load_the_same_way(name):
    model = load_model(name, "random")
    with torch.inference_mode():
        logits = model.module(load_batch(fixture_paths()))
    assert logits.shape == (2, 1000) and torch.isfinite(logits).all()
    assert len(model.categories) == 1000


def test_unknown_model_is_refused():
    with pytest.raises(InputError, match="not_a_model"):
        load_model("not_a_model", "random")


def test_state_dict_file_round_trip(tmp_path, alexnet):
    path = tmp_path / "alexnet.pt"
    torch.save(alexnet.module.state_dict(), path)
    loaded = load_model("alexnet", str(path))
    assert loaded.weights == "file" and loaded.weights_source == str(path)
    assert loaded.fingerprint == alexnet.fingerprint


def test_state_dict_with_wrong_shapes_is_refused(tmp_path, alexnet):
    state = dict(alexnet.module.state_dict())
    state["classifier.6.weight"] = torch.zeros(10, 4096)
    path = tmp_path / "wrong.pt"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"classifier\.6\.weight: shape \(10, 4096\)"):
        load_model("alexnet", str(path))


def test_state_dict_of_another_model_is_refused(tmp_path):
    path = tmp_path / "resnet.pt"
    torch.save(load_model("resnet18", "random").module.state_dict(), path)
    with pytest.raises(WeightsError, match=r"missing features\.0\.weight"):
        load_model("alexnet", str(path))


class Payload:
    """An arbitrary object: unpickling it must be refused (weights_only=True)."""


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("content,message", [
    (b"", "empty"),
    (b"not a checkpoint at all", "weights_only=True"),
    (pickle.dumps(Payload()), "weights_only=True"),
], ids=["empty", "garbage", "arbitrary-pickle"])
def test_bad_weight_files_are_refused_by_name(tmp_path, content, message):
    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=message) as info:
        load_model("alexnet", str(path))
    assert str(path) in str(info.value)


def test_missing_weights_file_and_unknown_choice(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_model("alexnet", str(tmp_path / "absent.pth"))
    with pytest.raises(InputError, match="neither one of"):
        load_model("alexnet", "pretrianed")


def test_auto_falls_back_to_random_with_a_warning(empty_hub):
    with pytest.warns(UserWarning, match="no pretrained weights"):
        model = load_model("alexnet", "auto")
    assert model.weights == "random"
    assert model.fingerprint == ALEXNET_RANDOM_FINGERPRINT


def test_auto_uses_the_cached_pretrained_file(empty_hub, alexnet):
    # A real state_dict placed where torch's hub cache keeps AlexNet's pretrained weights.
    cache = pretrained_cache_path("alexnet")
    assert cache.parent.parent == empty_hub
    cache.parent.mkdir(parents=True)
    state = {k: v * 0.5 for k, v in alexnet.module.state_dict().items()}
    torch.save(state, cache)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning: the cache hit is silent
        model = load_model("alexnet", "auto")
    assert model.weights == "pretrained"
    assert model.weights_source == "AlexNet_Weights.IMAGENET1K_V1"
    assert model.fingerprint != ALEXNET_RANDOM_FINGERPRINT


def test_pretrained_unreachable_names_the_cache_and_offline_choices(empty_hub, monkeypatch):
    # The download itself cannot happen here (no network); stand in for its failure.
    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(WeightsError) as info:
        load_model("alexnet", "pretrained")
    message = str(info.value)
    assert str(pretrained_cache_path("alexnet")) in message
    assert "--weights random" in message and "--weights PATH" in message


def test_weights_choice_order(monkeypatch):
    monkeypatch.setenv("PERFSUITE_WEIGHTS", "random")
    assert resolve_weights_choice(None) == ("random", "$PERFSUITE_WEIGHTS")
    assert resolve_weights_choice("pretrained") == ("pretrained", "--weights")
    monkeypatch.delenv("PERFSUITE_WEIGHTS")
    assert resolve_weights_choice(None, "auto", "pyproject.toml [tool.perfsuite] weights") == (
        "auto", "pyproject.toml [tool.perfsuite] weights")


def _fake_torchvision(folder, init_text: str, version: str = "0.99.0"):
    """A stand-in for a torchvision build that does not belong to the installed torch (a broken install
    cannot be made here without a network): a package that fails the way such a build does, with metadata."""
    package = folder / "torchvision"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(init_text)
    info = folder / f"torchvision-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torchvision\nVersion: {version}\n")
    return folder


def test_a_torchvision_built_for_another_torch_is_refused_with_both_versions_and_the_fix(tmp_path):
    """pytest: a usage error (exit 4, no INTERNALERROR); the CLI: exit 2, one line."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    fake = _fake_torchvision(tmp_path / "site", 'raise RuntimeError("operator torchvision::nms does not exist")\n')
    from child_process import child_env

    # the fake first; the caller's PYTHONPATH kept (the GPU image carries perfsuite's dependencies on it)
    env = child_env(PYTHONPATH=os.pathsep.join(filter(None, [str(fake), str(root), os.environ.get("PYTHONPATH")])),
                    PERFSUITE_WEIGHTS="random")
    major_minor = torch.__version__.split("+")[0]
    pytest_run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "benchmarks",
                                 "--collect-only", "-q"], cwd=root, env=env, capture_output=True, text=True,
                                timeout=300, check=False)
    assert pytest_run.returncode == 4, pytest_run.stdout + pytest_run.stderr
    message = pytest_run.stderr
    assert "INTERNALERROR" not in message and "Traceback" not in message
    assert "torchvision 0.99.0" in message and f"torch {torch.__version__}" in message
    assert "operator torchvision::nms does not exist" in message
    expected_pair = f"torchvision==0.{int(major_minor.split('.')[1]) + 15}.*"
    assert f"pip install torch=={major_minor} {expected_pair}" in message
    cli_run = subprocess.run([sys.executable, "-m", "perfsuite", "predict", str(root / "fixtures" / "dog.jpg")],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert cli_run.returncode == 2 and "Traceback" not in cli_run.stderr, cli_run.stderr
    assert "torchvision 0.99.0 does not work with torch" in cli_run.stderr


def test_a_torchvision_without_the_model_is_a_broken_environment(monkeypatch):
    from perfsuite import models
    from perfsuite.errors import BrokenEnvironment

    monkeypatch.setattr(models, "available_models", lambda: ["resnet18"])
    with pytest.raises(BrokenEnvironment, match=r"torchvision \S+ \(with torch .*\) has no such model.*pip install"):
        models.check_model_name("alexnet")
    with pytest.raises(InputError, match="not a classification model of torchvision"):
        models.check_model_name("resnet1000")


def test_matching_torchvision_pairs():
    from perfsuite.models import matching_torchvision

    assert matching_torchvision("2.14.1+cpu") == "0.29" and matching_torchvision("2.9.0") == "0.24"


def test_a_model_with_a_buffer_no_state_dict_holds_is_built_for_real(alexnet, monkeypatch):
    """The model is built on the meta device and given the weights' tensors; a non-persistent buffer (in no
    state_dict) would be left on the meta device, without values. Such a model is built again for real."""
    import perfsuite.models as models

    real = models._torchvision_models()

    class WithScale:  # torchvision.models, whose models carry a buffer outside their state_dict
        def __getattr__(self, name):
            return getattr(real, name)

        @staticmethod
        def get_model(name, **kwargs):
            model = real.get_model(name, **kwargs)
            model.register_buffer("scale", torch.full((1,), 2.0), persistent=False)
            return model

    monkeypatch.setattr(models, "_torchvision_models", WithScale)
    loaded = load_model("alexnet", "random")
    assert not any(t.is_meta for t in (*loaded.module.parameters(), *loaded.module.buffers()))
    assert loaded.module.scale.tolist() == [2.0]
    assert loaded.fingerprint == alexnet.fingerprint  # the same weights
    assert torch.equal(loaded.module.features[0].weight, alexnet.module.features[0].weight)
