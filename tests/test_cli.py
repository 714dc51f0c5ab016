"""The perfsuite command: predict and doctor, on real files, in a real subprocess."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def perfsuite(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perfsuite", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def top5(stdout: str, image: str) -> list[str]:
    block = stdout.split(image, 1)[1]
    return re.findall(r"^\s+\d\. .+\(index (\d+)\)$", block, flags=re.M)[:5]


def test_predict_fixtures_prints_top5_and_times():
    result = perfsuite("predict", "fixtures/dog.jpg", "fixtures/cat.jpg", "--weights", "random", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "weights random" in out and "fingerprint 415ac74c9984" in out
    assert re.search(r"model load [\d.]+ ms, conversion [\d.]+ ms, runner load [\d.]+ ms", out)
    for image in ("fixtures/dog.jpg", "fixtures/cat.jpg"):
        assert len(top5(out, image)) == 5
        assert re.search(re.escape(image) + r" \(\d+x\d+\): inference first [\d.]+ ms, warm median [\d.]+ ms", out)
    probabilities = [float(p) for p in re.findall(r"(\d+\.\d+)%", out.split("fixtures/dog.jpg", 1)[1])[:5]]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 100.01


def test_predict_odd_images_and_refuses_broken_ones_by_name(odd_images, broken_images):
    good = [str(p) for p in odd_images.values()]
    bad = [str(broken_images["truncated.jpg"]), str(broken_images["missing.jpg"])]
    result = perfsuite("predict", *good[:3], bad[0], *good[3:], bad[1], "--weights", "random", "--device", "cpu",
                       "--backend", "onnxruntime")
    assert result.returncode == 1
    for path in good:
        assert len(top5(result.stdout, path)) == 5, path
    assert f"{bad[0]}: error: image {bad[0]}: truncated or corrupt" in result.stderr
    assert f"{bad[1]}: error: image {bad[1]}: file does not exist" in result.stderr
    assert "2 of 9 image(s) could not be read" in result.stderr


def test_predict_with_an_unavailable_backend_says_why():
    result = perfsuite("predict", "fixtures/dog.jpg", "--weights", "random", "--device", "cpu",
                       "--backend", "onnxruntime", "--precision", "bf16")
    assert result.returncode == 2
    assert "onnxruntime" in result.stderr and "bfloat16" in result.stderr


def test_bad_weights_file_is_a_clean_error(tmp_path):
    path = tmp_path / "w.pt"
    path.write_bytes(b"junk")
    result = perfsuite("predict", "fixtures/dog.jpg", "--weights", str(path), "--device", "cpu")
    assert result.returncode == 2
    assert str(path) in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("build", [False, True], ids=["checks", "built"])
def test_doctor_reports_each_backend_and_precision(build):
    result = perfsuite("doctor", "--json", "--weights", "random", "--device", "cpu", "--backends", "eager,onnxruntime",
                       *(["--build"] if build else []))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    rows = {(r["backend"], r["precision"]): r for r in report["backends"]}
    assert rows[("eager", "fp32")]["runs"] is True
    assert report["machine"]["torch"]
    assert {b for b, _ in rows} == {"eager", "onnxruntime"} and len(rows) == 6
    if build:
        # ONNX Runtime's CPU provider has no bf16 Conv: the reason comes from the real attempt.
        assert rows[("onnxruntime", "bf16")]["runs"] is False
        assert "bfloat16" in rows[("onnxruntime", "bf16")]["reason"]
        assert rows[("onnxruntime", "fp32")]["exporter"].startswith("torch.onnx dynamo")
