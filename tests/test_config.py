"""``[tool.perfsuite]``: one declared schema, true messages, and a broken file stopping every command
and pytest cleanly (issue 9 #1, #5 and #9)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from perfsuite.cli import build_parser
from perfsuite.config import load_suite_config
from perfsuite.errors import InputError

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("text,message", [
    ("warmup_round = 3", "[tool.perfsuite]: unknown key 'warmup_round'; known: backends,"),
    ("warmup_rounds = -1", "[tool.perfsuite] warmup_rounds: -1 is less than the minimum of 0"),
    ("warmup_rounds = true", "[tool.perfsuite] warmup_rounds: must be a whole number, not True"),
    ("tolerances = 5", "[tool.perfsuite] tolerances: must be a table, not 5"),
    ("model = 5", "[tool.perfsuite] model: must be a string, not 5"),
    ("cache_dir = 5", "[tool.perfsuite] cache_dir: must be a string, not 5"),
    ('backends = "eager"', """[tool.perfsuite] backends: must be an array, e.g. ["eager"], not 'eager'"""),
    ("backends = []", "[tool.perfsuite] backends: must not be empty"),
    ("precisions = []", "[tool.perfsuite] precisions: must not be empty"),
    ('precisions = ["fp64"]', "[tool.perfsuite] precisions[0]: 'fp64' is not one of fp32, fp16, bf16"),
    ("batch_sizes_cpu = [1, 0]", "[tool.perfsuite] batch_sizes_cpu[1]: 0 is less than the minimum of 1"),
    ("gate = 5", "[tool.perfsuite] gate: must be a table, not 5"),
    ("[tool.perfsuite.tolerances]\nfp64 = {rel = 0.1}", "[tool.perfsuite] tolerances: unknown key 'fp64'"),
    ("[tool.perfsuite.tolerances]\nfp16 = 5", "[tool.perfsuite] tolerances.fp16: must be a table, not 5"),
    ("[tool.perfsuite.tolerances]\nfp16 = {rell = 0.1}",
     "tolerances.fp16: unknown key 'rell'; known: atol, min_cosine, rel, rtol"),
    ("[tool.perfsuite.tolerances]\nfp16 = {rel = 2}", "tolerance fp16: rel must be in (0, 1), got 2.0"),
    # the gate's and TensorRT's own parsers, run when the file is read rather than one test later
    ('[tool.perfsuite.gate]\nthreshold = "x"', "[tool.perfsuite.gate] threshold: 'x' is not a fraction"),
    ("[tool.perfsuite.tensorrt]\nbogus = 1", "[tool.perfsuite.tensorrt]: unknown field bogus; known: "),
    ("[tool.perfsuite.tensorrt]\ncompute_capabilities = 5",
     "[tool.perfsuite.tensorrt]: field compute_capabilities: 5 is not of type 'array'"),
])
def test_bad_config_is_refused_naming_file_and_key(tmp_path, text, message):
    path = tmp_path / "pyproject.toml"
    path.write_text(f"[tool.perfsuite]\n{text}\n")
    with pytest.raises(InputError) as info:
        load_suite_config(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_good_config_keeps_its_values(tmp_path):
    path = tmp_path / "pyproject.toml"
    path.write_text('[tool.perfsuite]\nbackends = ["eager"]\nprecisions = ["fp16"]\nwarmup_rounds = 0\n'
                    '[tool.perfsuite.gate]\nthreshold = "3%"\n[tool.perfsuite.tensorrt]\nopt_batch = 4\n')
    config = load_suite_config(path)
    assert (config.backends, config.precisions, config.warmup_rounds) == (("eager",), ("fp16",), 0)
    assert config.extra == {"gate": {"threshold": "3%"}, "tensorrt": {"opt_batch": 4}}
    assert config.source("model") == f"{path} [tool.perfsuite] model"


def _run(folder: Path, *command: str) -> subprocess.CompletedProcess:
    # The config under test decides; $PERFSUITE_WEIGHTS (CI sets it) would override its weights choice.
    env = {key: value for key, value in os.environ.items() if key != "PERFSUITE_WEIGHTS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, *command], capture_output=True, text=True, cwd=folder, env=env,
                          timeout=300)


# The smallest arguments each command parses with; every registered command must be here.
COMMAND_ARGS = {
    "baseline": ["list"], "cache": ["list"], "compare": ["a.json", "b.json"], "doctor": [],
    "export": ["out.onnx"], "golden": ["check"], "predict": ["x.jpg"], "report": ["a.json", "--output", "out"],
    "upgrade-report": ["a.json", "b.json"],
}


def test_every_command_is_covered_below():
    assert set(build_parser()._subparsers._group_actions[0].choices) == set(COMMAND_ARGS)


@pytest.mark.parametrize("text,message", [
    ("cache_dir = 5", "[tool.perfsuite] cache_dir: must be a string, not 5"),  # was a TypeError traceback
    ("bogus_key = 1", "[tool.perfsuite]: unknown key 'bogus_key'"),  # was an InputError traceback
    ("[tool.perfsuite", "not valid TOML"),
])
def test_a_broken_config_stops_every_command_cleanly_and_help_still_works(tmp_path, text, message):
    (tmp_path / "pyproject.toml").write_text(text if text.startswith("[") else f"[tool.perfsuite]\n{text}\n")
    for option in ("--help", "--version"):
        result = _run(tmp_path, "-m", "perfsuite", option)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "usage: perfsuite" in _run(tmp_path, "-m", "perfsuite", "report", "--help").stdout
    commands = COMMAND_ARGS.items() if text == "cache_dir = 5" else [("doctor", [])]
    for command, args in commands:
        result = _run(tmp_path, "-m", "perfsuite", command, *args)
        assert result.returncode == 2, (command, result.stderr)
        assert result.stderr.startswith(f"perfsuite {command}: error: {tmp_path / 'pyproject.toml'}"), result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("text,message", [
    ("cache_dir = 5", "[tool.perfsuite] cache_dir: must be a string"),  # passed silently until a cache was used
    ("model = 5", "[tool.perfsuite] model: must be a string"),  # failed in a fixture with a traceback
    ('model = "resnet9000"', "[tool.perfsuite] model 'resnet9000': not a torchvision classification model"),
    ('weights = "nonsense"', "[tool.perfsuite] weights 'nonsense': neither one of"),
    ('backends = ["eagr"]', "[tool.perfsuite] backends: backend 'eagr': unknown"),
    ('backends = "eager"', "[tool.perfsuite] backends: must be an array"),  # was "backend 'e': unknown"
    ("backends = []", "[tool.perfsuite] backends: must not be empty"),  # was a silent pass, nothing saved
    ("precisions = []", "[tool.perfsuite] precisions: must not be empty"),
    ('[tool.perfsuite.gate]\nthreshold = "x"', "[tool.perfsuite.gate] threshold"),  # failed inside a test
    ("[tool.perfsuite.tensorrt]\nbogus = 1", "[tool.perfsuite.tensorrt]: unknown field bogus; known: "),
])
def test_a_broken_config_is_a_pytest_usage_error(tmp_path, text, message):
    (tmp_path / "pyproject.toml").write_text(f"[tool.perfsuite]\n{text}\n")
    (tmp_path / "test_one.py").write_text("def test_one(suite_options):\n    pass\n")
    result = _run(tmp_path, "-m", "pytest", "-p", "perfsuite.plugin", "-p", "no:cacheprovider", "test_one.py")
    assert result.returncode == 4, result.stdout + result.stderr  # pytest's usage error
    assert f"{tmp_path / 'pyproject.toml'}" in result.stderr and message in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize("option", ["--backends", "--precisions"])
def test_an_option_that_names_nothing_is_refused_not_defaulted(tmp_path, option):
    """``--backends ,`` (or an empty variable) used to fall back to the defaults."""
    (tmp_path / "test_one.py").write_text("def test_one(suite_options):\n    pass\n")
    result = _run(tmp_path, "-m", "pytest", "-p", "perfsuite.plugin", "-p", "no:cacheprovider", "test_one.py",
                  option, ",")
    assert result.returncode == 4 and f"{option} ',': names nothing" in result.stderr, result.stderr
    result = _run(tmp_path, "-m", "perfsuite", "golden", "check", "--golden-dir", str(tmp_path), option, " , ")
    assert result.returncode == 2 and f"{option} ' , ': names nothing" in result.stderr, result.stderr


def test_a_bad_model_in_the_config_is_blamed_on_the_config_not_on_an_option(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.perfsuite]\nmodel = "resnet9000"\n')
    result = _run(tmp_path, "-m", "perfsuite", "predict", str(ROOT / "fixtures" / "dog.jpg"), "--weights", "random")
    assert result.returncode == 2
    assert f"{tmp_path / 'pyproject.toml'} [tool.perfsuite] model 'resnet9000'" in result.stderr
    assert "--model" not in result.stderr
