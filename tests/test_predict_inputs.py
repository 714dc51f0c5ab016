"""predict on inputs that used to be classified in silence (issue 16): 32-bit integer images outside any
greyscale range, weights that make the logits overflow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from perfsuite.cli import main
from perfsuite.errors import InputError
from perfsuite.images import load_image

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("value,message", [(-5000, "range from -5000 to -5000"), (70000, "range from 70000 to 70000")])
def test_out_of_range_integer_images_are_refused(tmp_path, value, message):
    """issue 16: int32 pixels of -5000 were clipped to black and classified (Shetland sheepdog 52.49%)."""
    path = tmp_path / "int.tif"
    Image.fromarray(np.full((40, 50), value, dtype=np.int32)).save(path)
    assert Image.open(path).mode == "I"
    with pytest.raises(InputError, match=f"{message}, outside 0..65535"):
        load_image(path)
    in_range = tmp_path / "fine.tif"
    Image.fromarray(np.full((40, 50), 30000, dtype=np.int32)).save(in_range)
    assert load_image(in_range).mode == "RGB"  # 16-bit values in an int32 image stay usable


def test_predict_refuses_an_image_and_nonfinite_outputs_by_name(tmp_path, capsys):
    """Non-finite logits (finite weights so large the activations overflow) printed ``nan%``, exit 0."""
    state = torchvision.models.alexnet().state_dict()
    for name in ("features.0.weight", "features.3.weight", "classifier.1.weight"):
        state[name] = torch.full_like(state[name], 1e30)
    weights = tmp_path / "overflow.pt"
    torch.save(state, weights)
    negative = tmp_path / "int_negative.tif"
    Image.fromarray(np.full((40, 50), -5000, dtype=np.int32)).save(negative)
    dog = str(ROOT / "fixtures" / "dog.jpg")
    assert main(["predict", dog, str(negative), "--weights", str(weights), "--device", "cpu"]) == 1
    captured = capsys.readouterr()
    assert f"{dog}: error: the model's output holds" in captured.err and "NaN or Inf logit" in captured.err
    assert f"{negative}: error: image {negative}: 32-bit integer pixels range from -5000" in captured.err
    assert "nan%" not in captured.out
