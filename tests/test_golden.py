"""Golden outputs: the committed goldens against the reference and against every backend x precision
available here, the file format's checks, and the ``perfsuite golden`` command.

The backend matrix comes from the backend registry (``backend_names()``), not from the suite's
configured backends, so a newly registered backend is checked against the goldens without
touching this file; one that cannot run here is skipped with its reason. ``--backends`` and
``--precisions``, when given, narrow it.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from perfsuite import environment
from perfsuite.backends import backend_names
from perfsuite.cli import main
from perfsuite.config import PRECISIONS, find_pyproject, split_names
from perfsuite.golden import (
    GoldenError,
    GoldenMissing,
    check_reference,
    compare_with_golden,
    find_golden,
    golden_path,
    load_golden,
    record_golden,
    save_golden,
)
from perfsuite.plugin import PARITY_BATCH, Case
from perfsuite.tolerances import merge_overrides, parse_tolerance_options, tolerance_for

ROOT = Path(__file__).resolve().parent.parent


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "golden_case" in metafunc.fixturenames:
        config = metafunc.config
        backends = split_names(config.getoption("--backends"), "--backends") or backend_names()
        precisions = split_names(config.getoption("--precisions"), "--precisions") or PRECISIONS
        cases = [Case(b, p, PARITY_BATCH) for b in backends for p in precisions]
        # torch.compile rows compile for minutes on a GPU: opt-in with -m slow (CI runs them on the CPU)
        metafunc.parametrize("golden_case", [
            pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.backend.startswith("compile") else [])
            for c in cases])


def _overrides(request: pytest.FixtureRequest, suite_options) -> dict:
    # --tolerance exists once the plugin registers it; until then only [tool.perfsuite.tolerances] applies.
    cli = request.config.getoption("--tolerance", default=None) or []
    return merge_overrides(suite_options.config.extra.get("tolerances"), parse_tolerance_options(cli))


@pytest.fixture(scope="module")
def golden(loaded_model, suite_options, golden_dir):
    try:
        golden = find_golden(loaded_model, suite_options.transform, golden_dir)
    except GoldenMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    return golden


# -- the committed goldens ------------------------------------------------------------------------


def test_goldens_of_the_default_model_are_committed(loaded_model, golden_dir):
    """Both transforms for alexnet with the deterministic offline weights."""
    from perfsuite.models import load_model

    model = loaded_model if (loaded_model.name, loaded_model.weights) == ("alexnet", "random") \
        else load_model("alexnet", "random")
    for transform in ("report", "eval"):
        golden = load_golden(golden_path("alexnet", model.fingerprint, transform, golden_dir))
        assert golden.fingerprint == model.fingerprint and golden.weights == "random"
        assert golden.logits.shape == (2, 1000) and golden.image_names == ("dog.jpg", "cat.jpg")
        assert golden.layers[0].name == "input" and golden.layers[-1].name == "classifier.6"


def test_reference_matches_golden(golden, reference_outputs, fixture_images, request, suite_options):
    """Eager fp32 with TF32 off on the suite's device, against the CPU-recorded golden."""
    assert golden.image_names == ("dog.jpg", "cat.jpg"), "the fixture images changed; re-record the goldens"
    report = compare_with_golden(golden, reference_outputs, tolerance_for("fp32", overrides=_overrides(
        request, suite_options)))
    assert report.passed, f"the reference moved away from {golden.path}:\n{report.report()}"


def test_reference_layers_match_golden(golden, loaded_model, request, suite_options):
    """The CPU reference now, layer by layer, and its provenance."""
    comparison, _ = check_reference(loaded_model, golden, tolerance_for("fp32", overrides=_overrides(
        request, suite_options)))
    assert comparison.passed and comparison.first_departure is None, comparison.report()
    assert not any(c.startswith("weights") for c in comparison.changes)


def test_backend_matches_golden(golden_case, golden, runner_pool, fixture_images, loaded_model, request,
                                suite_options):
    runner = runner_pool.get(golden_case).runner  # skips with the reason where it cannot run
    tolerance = tolerance_for(golden_case.precision, environment.tf32_in_effect(suite_options.device),
                              _overrides(request, suite_options))
    report = compare_with_golden(golden, runner.run(fixture_images), tolerance, loaded_model.categories)
    assert report.passed, f"{golden_case.id} against {golden.path}:\n{report.report()}"


def test_backend_nudged_past_tolerance_fails(golden, runner_pool, fixture_images, loaded_model, suite_options):
    """Negative control of the matrix: a real backend output moved past its tolerance fails, and the
    report points at the moved element."""
    runner = runner_pool.get(Case("eager", "fp32", PARITY_BATCH)).runner
    outputs = runner.run(fixture_images).clone()  # an inference tensor is read-only outside inference mode
    tolerance = suite_options.tolerance("fp32")  # judged as tf32 on a GPU where TF32 is in effect
    # Twice the error the backend already has (TF32 on a GPU, none on the CPU) plus 1.5x the tolerance:
    # the moved element is then the worst one whatever its own error was.
    existing = float((outputs - golden.logits).abs().max())
    outputs[1, 42] += 2 * existing + 1.5 * tolerance.rel * float(golden.logits.abs().max())
    report = compare_with_golden(golden, outputs, tolerance, loaded_model.categories)
    assert not report.passed
    assert report.outputs[0].worst[0].index == (1, 42) and report.outputs[0].worst[0].sample == "cat.jpg"
    assert report.outputs[0].worst[0].label == loaded_model.categories[42]


# -- the file format ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fresh(loaded_model):
    from perfsuite.golden import golden_inputs

    return record_golden(loaded_model, golden_inputs("report"))


def test_round_trip(tmp_path, fresh):
    path = save_golden(fresh, tmp_path)
    assert path == tmp_path / fresh.model / fresh.fingerprint[:16] / "report.json"
    loaded = load_golden(path)
    assert torch.equal(loaded.logits, fresh.logits) and loaded.logits.dtype == torch.float32
    assert (loaded.fingerprint, loaded.preprocessing, loaded.images, loaded.versions) == (
        fresh.fingerprint, fresh.preprocessing, fresh.images, fresh.versions)
    assert [(t.name, t.norms) for t in loaded.layers] == [(t.name, t.norms) for t in fresh.layers]
    assert all((a.sketch == b.sketch).all() for a, b in zip(loaded.layers, fresh.layers))
    metadata = json.loads(path.read_text())
    for key in ("preprocessing", "exporter", "recorded_at", "weights_fingerprint"):
        assert metadata[key]
    assert {"torch", "torchvision", "pillow", "onnxruntime"} <= set(metadata["versions"])


def _tamper(path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["logits"].update(base64=base64.b64encode(
        bytes(len(base64.b64decode(d["logits"]["base64"])))).decode()), "sha256 mismatch"),
    (lambda d: d["logits"].update(base64="not base64!"), "base64 data is corrupt"),
    (lambda d: d["logits"].update(dtype="object"), "field logits.dtype: 'object' is not one of"),
    (lambda d: d["logits"].update(shape=[3, 1000]), "bytes where shape [3, 1000]"),
    (lambda d: d.update(format_version=99), "format version 99; this perfsuite reads format versions 2"),
    (lambda d: d.pop("recorded_at"), "'recorded_at' is a required property"),
    (lambda d: d["layers"][3]["sketch"].update(sha256="0" * 64), "layer features.2 sketch: sha256 mismatch"),
    # issue 9 #7: the norms had no checksum, #4: a wrong-typed norm was a traceback, #9: "1" was called "1"
    (lambda d: d["layers"][3]["norms"].__setitem__(0, d["layers"][3]["norms"][0] * 1.5), "content sha256 mismatch"),
    (lambda d: d["layers"][3].update(norms=["big"]), "field layers[3].norms[0]: 'big' is not of type 'number'"),
    (lambda d: d.update(format_version="2"), "field format_version: '2' is a str, not a number"),
    (lambda d: d.pop("content_sha256"), "'content_sha256' is a required property"),
    (lambda d: d["images"][0].update(name="../../../etc/passwd"), "images[0].name '../../../etc/passwd' is not a "
                                                                  "plain file name"),
    (lambda d: d["images"][1].update(name="/etc/passwd"), "images[1].name '/etc/passwd' is not a plain file name"),
])
def test_tampered_golden_is_refused(tmp_path, fresh, edit, message):
    path = save_golden(fresh, tmp_path)
    _tamper(path, edit)
    with pytest.raises(GoldenError, match=r"golden .*report\.json") as info:
        load_golden(path)
    assert message in str(info.value)


def test_format_1_goldens_are_refused(tmp_path, fresh):
    """issue 16: a golden downgraded to format 1, its checksum removed and a layer norm x1.5, passed
    golden check; format 1 cannot be told from such a downgrade, so it is refused with the way out."""
    path = save_golden(fresh, tmp_path)

    def downgrade(data):
        data.update(format_version=1)
        data.pop("content_sha256")
        data["layers"][0]["norms"] = [norm * 1.5 for norm in data["layers"][0]["norms"]]
    _tamper(path, downgrade)
    with pytest.raises(GoldenError, match=r"report\.json: format 1, which has no content checksum.*"
                                          r"perfsuite golden record --overwrite"):
        load_golden(path)


def test_committed_goldens_carry_the_content_checksum(golden_dir):
    paths = sorted(golden_dir.glob("*/*/*.json"))
    assert paths and all(load_golden(p).content_verified for p in paths)


def test_unreadable_files_are_refused_without_unpickling(tmp_path, fresh):
    path = save_golden(fresh, tmp_path)
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(GoldenError, match="not valid JSON, truncated or corrupt"):
        load_golden(path)
    path.write_bytes(pickle.dumps({"logits": [1.0]}))  # a pickle is data to reject, never to load
    with pytest.raises(GoldenError, match=r"not text|not valid JSON"):
        load_golden(path)
    moved = path.parent / "eval.json"
    save_golden(fresh, tmp_path).rename(moved)
    with pytest.raises(GoldenError, match="moved or renamed by hand"):
        load_golden(moved)


def test_refuses_to_record_nan(tmp_path, fresh):
    broken = dataclasses.replace(fresh, logits=torch.full_like(fresh.logits, float("nan")))
    with pytest.raises(GoldenError, match="NaN or Inf"):
        save_golden(broken, tmp_path)


def test_other_weights_fail_clearly(loaded_model, suite_options, golden_dir):
    other = dataclasses.replace(loaded_model, fingerprint="f" * 64)
    with pytest.raises(GoldenMissing) as info:
        find_golden(other, suite_options.transform, golden_dir)
    message = str(info.value)
    assert f"weights fingerprint {'f' * 12}" in message
    assert f"goldens recorded for it: {loaded_model.fingerprint[:12]}" in message
    assert "perfsuite golden record --model alexnet" in message


# -- the command ----------------------------------------------------------------------------------


def test_check_command(tmp_path, capsys):
    """The committed golden: the reference and eager fp32 pass; eager fp16 fails under a
    --tolerance override tighter than fp16 can meet, with the full report."""
    out_file = tmp_path / "check.json"
    assert main(["golden", "check", "--weights", "random", "--device", "cpu", "--backends", "eager",
                 "--precisions", "fp32,fp16", "--tolerance", "fp16:rel=1e-6", "--json", str(out_file)]) == 1
    out = capsys.readouterr().out
    assert "provenance unchanged" in out or "differs from when the golden was recorded" in out
    assert "eager          fp32  PASS" in out and "eager          fp16  FAIL" in out
    assert "smallest tolerance that would have passed" in out and "2 passed, 1 failed, 0 skipped" in out
    rows = json.loads(out_file.read_text())["results"]
    assert [(r["backend"], r["precision"], r["outcome"]) for r in rows] == [
        ("reference", "fp32", "passed"), ("eager", "fp32", "passed"), ("eager", "fp16", "failed")]
    assert rows[2]["parity"]["outputs"]["logits"]["tolerance"]["rel"] == 1e-6


def test_check_command_fails_without_a_golden(tmp_path, capsys):
    assert main(["golden", "check", "--weights", "random", "--device", "cpu", "--golden-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "error: no golden outputs for alexnet" in err and "none is recorded for alexnet" in err
    assert main(["golden", "check", "--tolerance", "fp16=0.1"]) == 2
    assert "--tolerance 'fp16=0.1': expected PRECISION:KEY=VALUE" in capsys.readouterr().err


def test_record_is_deliberate_and_prints_what_changed(tmp_path, fresh, capsys):
    """A previous golden from an 'older torch' whose logits differ by 1%: re-recording refuses
    without --overwrite, and both times says what changed."""
    old = dataclasses.replace(fresh, logits=fresh.logits * 1.01,
                              versions={**fresh.versions, "torch": "2.11.0"}, recorded_at="2026-01-01T00:00:00+00:00")
    path = save_golden(old, tmp_path)
    before = path.read_bytes()
    command = ["golden", "record", "--weights", "random", "--golden-dir", str(tmp_path)]
    assert main(command) == 1
    captured = capsys.readouterr()
    assert f"torch: 2.11.0 -> {fresh.versions['torch']}" in captured.out
    assert "relative error" in captured.out and "logits: moved, max relative error" in captured.out
    assert "not replaced" in captured.err and "--overwrite" in captured.err
    assert path.read_bytes() == before
    assert main([*command, "--overwrite"]) == 0
    assert f"replaced {path}" in capsys.readouterr().out
    assert torch.equal(load_golden(path).logits, fresh.logits)


def test_record_refuses_another_device(capsys):
    assert main(["golden", "record", "--weights", "random", "--device", "cuda", "--golden-dir", "unused"]) == 2
    assert "goldens are recorded on the CPU" in capsys.readouterr().err


def _perfsuite_in(folder, *args: str) -> subprocess.CompletedProcess:
    """The command line run from ``folder``, with this checkout's package on the path (as an editable
    install of it would be)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "perfsuite", *args], capture_output=True, text=True, cwd=folder,
                          env=env, timeout=600)


def test_goldens_belong_to_the_project_run_from_not_the_install(tmp_path):
    """issue 9 #7: from another project, golden check finds no golden there (before: it read this
    checkout's), and golden record writes into that project, never into this checkout."""
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'other'\n")
    mine = sorted(p.stat().st_mtime_ns for p in (ROOT / "fixtures" / "golden").rglob("*.json"))
    check = _perfsuite_in(tmp_path, "golden", "check", "--weights", "random", "--device", "cpu", "--backends",
                          "eager", "--precisions", "fp32")
    assert check.returncode == 2, check.stdout + check.stderr
    assert f"under {tmp_path / 'fixtures' / 'golden'}" in check.stderr and "Traceback" not in check.stderr
    record = _perfsuite_in(tmp_path, "golden", "record", "--weights", "random")
    assert record.returncode == 0, record.stderr
    assert len(list((tmp_path / "fixtures" / "golden" / "alexnet").glob("*/report.json"))) == 1
    assert sorted(p.stat().st_mtime_ns for p in (ROOT / "fixtures" / "golden").rglob("*.json")) == mine
    nowhere = tmp_path / "sub"
    nowhere.mkdir()
    (tmp_path / "pyproject.toml").unlink()
    if find_pyproject(nowhere) is None:  # no pyproject.toml above the temporary folder either
        result = _perfsuite_in(nowhere, "golden", "check", "--weights", "random")
        assert result.returncode == 2 and "no pyproject.toml" in result.stderr and "--golden-dir" in result.stderr


def test_check_json_onto_a_folder_is_refused_before_the_work(tmp_path, capsys):
    """issue 9 #8: --json onto a folder was an IsADirectoryError after the whole check."""
    assert main(["golden", "check", "--weights", "random", "--device", "cpu", "--json", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert f"--json {tmp_path}: is a folder" in captured.err and "backends on" not in captured.out
