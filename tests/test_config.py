"""``[tool.perfsuite]``: one declared schema, true messages, and a broken file stopping every command
and pytest cleanly (issue 9 #1, #5 and #9)."""

from __future__ import annotations

from pathlib import Path

import pytest
from child_process import CommandResult, child_env, run_modules_in_one_child

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


# The smallest arguments each command parses with; every registered command must be here.
COMMAND_ARGS = {
    "baseline": ["list"], "cache": ["list"], "compare": ["a.json", "b.json"], "doctor": [],
    "export": ["out.onnx"], "golden": ["check"], "predict": ["x.jpg"], "report": ["a.json", "--output", "out"],
    "upgrade-report": ["a.json", "b.json"],
}


def test_every_command_is_covered_below():
    assert set(build_parser()._subparsers._group_actions[0].choices) == set(COMMAND_ARGS)


BROKEN_FOR_COMMANDS = [
    ("cache_dir = 5", "[tool.perfsuite] cache_dir: must be a string, not 5"),  # was a TypeError traceback
    ("bogus_key = 1", "[tool.perfsuite]: unknown key 'bogus_key'"),  # was an InputError traceback
    ("[tool.perfsuite", "not valid TOML"),
]
BROKEN_FOR_PYTEST = [
    ("cache_dir = 5", "[tool.perfsuite] cache_dir: must be a string"),  # passed silently until a cache was used
    ("model = 5", "[tool.perfsuite] model: must be a string"),  # failed in a fixture with a traceback
    ('model = "resnet9000"', "[tool.perfsuite] model 'resnet9000': not a classification model of torchvision"),
    ('weights = "nonsense"', "[tool.perfsuite] weights 'nonsense': neither one of"),
    ('backends = ["eagr"]', "[tool.perfsuite] backends: backend 'eagr': unknown"),
    ('backends = "eager"', "[tool.perfsuite] backends: must be an array"),  # was "backend 'e': unknown"
    ("backends = []", "[tool.perfsuite] backends: must not be empty"),  # was a silent pass, nothing saved
    ("precisions = []", "[tool.perfsuite] precisions: must not be empty"),
    ('[tool.perfsuite.gate]\nthreshold = "x"', "[tool.perfsuite.gate] threshold"),  # failed inside a test
    ("[tool.perfsuite.tensorrt]\nbogus = 1", "[tool.perfsuite.tensorrt]: unknown field bogus; known: "),
]
EMPTY_OPTIONS = ["--backends", "--precisions"]
PYTEST = ["-p", "perfsuite.plugin", "-p", "no:cacheprovider", "test_one.py"]


@pytest.fixture(scope="module")
def command_lines(tmp_path_factory) -> dict[tuple[str, str], tuple[Path, list[CommandResult]]]:
    """Every command line of the tests below, run in one Python child (see tests/child_process.py): each
    stops at its arguments or its config, so one interpreter serves them all, ``python -m`` style, instead
    of ~40 of 2-10 s each. Keyed by (test, case): (the folder it ran in, its results in order)."""
    planned: dict[tuple[str, str], tuple[Path, list[tuple[Path, str, list[str]]]]] = {}

    def folder_with(config: str | None) -> Path:
        folder = tmp_path_factory.mktemp("config")
        if config is not None:
            (folder / "pyproject.toml").write_text(config)
        (folder / "test_one.py").write_text("def test_one(suite_options):\n    pass\n")
        return folder

    for text, _ in BROKEN_FOR_COMMANDS:
        folder = folder_with(text if text.startswith("[") else f"[tool.perfsuite]\n{text}\n")
        calls = [(folder, "perfsuite", ["--help"]), (folder, "perfsuite", ["--version"]),
                 (folder, "perfsuite", ["report", "--help"])]
        commands = COMMAND_ARGS.items() if text == "cache_dir = 5" else [("doctor", [])]
        calls += [(folder, "perfsuite", [command, *args]) for command, args in commands]
        planned["commands", text] = folder, calls
    for text, _ in BROKEN_FOR_PYTEST:
        folder = folder_with(f"[tool.perfsuite]\n{text}\n")
        planned["pytest", text] = folder, [(folder, "pytest", PYTEST)]
    for option in EMPTY_OPTIONS:
        folder = folder_with(None)
        planned["empty", option] = folder, [(folder, "pytest", [*PYTEST, option, ","]),
                                            (folder, "perfsuite", ["golden", "check", "--golden-dir", str(folder),
                                                                   option, " , "])]
    folder = folder_with('[tool.perfsuite]\nmodel = "resnet9000"\n')
    planned["model", ""] = folder, [(folder, "perfsuite", ["predict", str(ROOT / "fixtures" / "dog.jpg"),
                                                           "--weights", "random"])]
    # The config under test decides; $PERFSUITE_WEIGHTS (CI sets it) would override its weights choice.
    results = iter(run_modules_in_one_child([call for _, calls in planned.values() for call in calls],
                                            env=child_env(PERFSUITE_WEIGHTS=None)))
    return {key: (folder, [next(results) for _ in calls]) for key, (folder, calls) in planned.items()}


@pytest.mark.parametrize("text,message", BROKEN_FOR_COMMANDS)
def test_a_broken_config_stops_every_command_cleanly_and_help_still_works(command_lines, text, message):
    folder, (help_, version, report_help, *commands) = command_lines["commands", text]
    for result in (help_, version):
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "usage: perfsuite" in report_help.stdout
    assert len(commands) == (len(COMMAND_ARGS) if text == "cache_dir = 5" else 1)
    for result in commands:
        command = result.argv[0]
        assert result.returncode == 2, (command, result.stderr)
        assert result.stderr.startswith(f"perfsuite {command}: error: {folder / 'pyproject.toml'}"), result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("text,message", BROKEN_FOR_PYTEST)
def test_a_broken_config_is_a_pytest_usage_error(command_lines, text, message):
    folder, (result,) = command_lines["pytest", text]
    assert result.returncode == 4, result.stdout + result.stderr  # pytest's usage error
    assert f"{folder / 'pyproject.toml'}" in result.stderr and message in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize("option", EMPTY_OPTIONS)
def test_an_option_that_names_nothing_is_refused_not_defaulted(command_lines, option):
    """``--backends ,`` (or an empty variable) used to fall back to the defaults."""
    _, (in_pytest, in_golden) = command_lines["empty", option]
    assert in_pytest.returncode == 4 and f"{option} ',': names nothing" in in_pytest.stderr, in_pytest.stderr
    assert in_golden.returncode == 2 and f"{option} ' , ': names nothing" in in_golden.stderr, in_golden.stderr


def test_a_bad_model_in_the_config_is_blamed_on_the_config_not_on_an_option(command_lines):
    folder, (result,) = command_lines["model", ""]
    assert result.returncode == 2
    assert f"{folder / 'pyproject.toml'} [tool.perfsuite] model 'resnet9000'" in result.stderr
    assert "--model" not in result.stderr


def test_command_lines_in_one_child_are_each_as_python_m_runs_them(tmp_path):
    """The check of the runner above (on standard-library modules: no torch to import): exit statuses,
    each command's own outputs, and an exception shown with its traceback, not hidden."""
    (tmp_path / "not.json").write_text("[tool.perfsuite]\n")
    help_, usage, message, crash = run_modules_in_one_child(
        [(tmp_path, "json.tool", ["--help"]), (tmp_path, "json.tool", ["--no-such-option"]),
         (tmp_path, "json.tool", ["not.json"]), (tmp_path, "perfsuite_no_such_module", [])], env=child_env())
    assert [r.returncode for r in (help_, usage, message, crash)] == [0, 2, 1, 1]
    assert "usage:" in help_.stdout and help_.stderr == "" and usage.stdout == ""
    assert "unrecognized arguments: --no-such-option" in usage.stderr and "usage:" not in help_.stderr
    assert "Expecting value" in message.stderr and "Traceback" not in message.stderr  # SystemExit(message)
    assert "Traceback" in crash.stderr and "No module named perfsuite_no_such_module" in crash.stderr
