"""The GitHub workflows: valid against GitHub's schema, and every perfsuite command they run exists
with the options they pass (a renamed option must break this test, not the nightly GPU job)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from perfsuite.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
PLACEHOLDER = "1"  # stands for ${{ expressions }} and $VARIABLES: a valid path, count and name alike


def load_workflow(path: Path) -> dict:
    yaml = pytest.importorskip("ruamel.yaml", reason="reading workflows needs ruamel.yaml (pip install "
                                                       "'perfsuite[dev]', it comes with check-jsonschema)")
    return yaml.YAML(typ="safe").load(path.read_text())


def run_scripts(workflow: dict) -> list[str]:
    return [step["run"] for job in workflow["jobs"].values() for step in job.get("steps", []) if "run" in step]


def commands(script: str, program: str) -> list[list[str]]:
    """Each ``program ...`` command line of a shell script, continuation lines joined, as argv."""
    script = re.sub(r"\$\{\{.*?\}\}", PLACEHOLDER, script.replace("\\\n", " "))
    substituted = re.findall(r"\$\(([^()]*)\)", script)  # $(command) inside another line
    found = []
    for line in [*script.splitlines(), *substituted]:
        words = shlex.split(line.strip(), comments=True) if line.strip() else []
        if words and words[0] == program:
            found.append([re.sub(r"^\$\{?\w+\}?$", PLACEHOLDER, w) for w in words[1:]])
    return found


def perfsuite_commands() -> list[list[str]]:
    return [argv for path in WORKFLOWS for script in run_scripts(load_workflow(path))
            for argv in commands(script, "perfsuite")]


def test_workflows_exist():
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "gpu-benchmarks.yml"}


def test_workflows_match_the_github_schema():
    pytest.importorskip("check_jsonschema", reason="needs check-jsonschema (pip install 'perfsuite[dev]')")
    completed = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
         *map(str, WORKFLOWS)], capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_every_perfsuite_command_parses():
    found = perfsuite_commands()
    subcommands = {argv[0] if argv[0] != "baseline" else f"baseline {argv[1]}" for argv in found}
    assert subcommands >= {"baseline fingerprint", "baseline record", "baseline save", "compare", "report", "doctor"}
    parser = build_parser()
    for argv in found:
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"workflow command does not parse: perfsuite {shlex.join(argv)}")


def test_benchmark_options_after_double_dash_exist():
    """Options the workflows pass to pytest through ``baseline record --`` are real pytest options."""
    passed = {word.split("=")[0] for argv in perfsuite_commands() if argv[:2] == ["baseline", "record"]
              for word in argv[argv.index("--") + 1:] if word.startswith("--")}
    assert passed >= {"--backends", "--device"}
    help_text = subprocess.run([sys.executable, "-m", "pytest", "--help", "-p", "no:cacheprovider"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout
    missing = sorted(option for option in passed if not re.search(rf"(^|[\s,]){re.escape(option)}\b", help_text))
    assert not missing, f"pytest does not know {missing}"


def test_the_checks_can_fail():
    """Negative control: a misspelt option is caught by the same parsing."""
    (argv,) = commands('perfsuite compare "$BASELINE" results/runs --treshold 5%', "perfsuite")
    assert argv[:2] == ["compare", PLACEHOLDER]
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)
