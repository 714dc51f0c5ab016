"""``perfsuite upgrade-report``: the page, on real saved runs and a real golden check.

The runs are the gate drill's (``docs/gate-drill/session-1/runs``): whole ``pytest benchmarks`` runs on
the CPU machine, eager fp32 batch 1. Situations the drill did not produce (an upgraded torch, other
hardware, a regression) are made by editing a copy of a real run the way the situation would change
it; each such test says what it edited. The golden check is real (eager fp32 on the CPU against the
committed golden); a failing golden row is made by editing a copy of a real check's JSON report.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from test_gate import BASE, edited_copy  # the drill's runs; a copy of a real run, edited

from perfsuite.cli import main
from perfsuite.errors import InputError
from perfsuite.gate.hardware import machine_section
from perfsuite.gate.runs import load_side
from perfsuite.gate.settings import GateSettings
from perfsuite.gate.verdict import compare_runs
from perfsuite.upgrade import (
    GoldenParity,
    build_report,
    golden_check_options,
    read_golden_check,
    render_upgrade_report,
)

pytestmark = pytest.mark.skipif(len(BASE) < 6, reason="the gate drill's runs are not recorded")


def edited_copies(sources, folder: Path, edit=lambda data: None) -> str:
    """Copies of ``sources`` in ``folder`` (created), each passed through ``edit``; the folder as a side."""
    folder.mkdir(parents=True, exist_ok=True)
    for source in map(Path, sources):
        edited_copy(source, folder / source.name, edit)
    return str(folder)


def set_software(**versions):
    def edit(data):
        data["machine_info"]["perfsuite"].update(versions)
    return edit


def this_machine(data):
    """The run's machine_info as this machine reports it now (hardware and software), so a golden check
    run here is in NEW's environment on any machine the tests run on."""
    data["machine_info"]["perfsuite"] = machine_section("cpu")


def page_of(capsys, *arguments) -> tuple[int, str, str]:
    code = main(["upgrade-report", *map(str, arguments)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def section(page: str, heading: str) -> str:
    """The text of one ``## heading`` section."""
    start = page.index(f"## {heading}")
    end = page.find("\n## ", start + 1)
    return page[start:end if end > 0 else None]


def table_row(text: str, first_cells: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {first_cells} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


@pytest.fixture(scope="module")
def golden_check_json(tmp_path_factory) -> Path:
    """A real ``perfsuite golden check --json`` report: eager fp32 on the CPU against the committed golden."""
    path = tmp_path_factory.mktemp("golden") / "check.json"
    assert main(["golden", "check", "--weights", "random", "--device", "cpu", "--backends", "eager",
                 "--precisions", "fp32", "--json", str(path)]) == 0
    return path


# -- the page on real runs ---------------------------------------------------------------------------


def test_same_versions_say_no_version_changed(capsys):
    code, page, _ = page_of(capsys, ",".join(map(str, BASE[:3])), ",".join(map(str, BASE[3:6])), "--no-golden")
    # session 1's machine was shared: unchanged runs moved beyond the 5% threshold, which 3 runs a side
    # cannot call; the gate says it cannot tell (rule 3) and the page's exit code follows it
    assert code == 3
    assert "**UNDECIDED**: nothing failed" in page
    headings = [line for line in page.splitlines() if line.startswith("## ")]
    assert headings == ["## Summary", "## 1. Versions", "## 2. Speed and memory",
                        "## 3. Parity per backend × precision"]
    assert table_row(page, "versions") == ["versions", "no version changed"]
    versions = section(page, "1. Versions")
    assert "**No version changed.**" in versions
    for package in ("torch", "torchvision", "tensorrt", "cuda", "cudnn", "driver", "onnxruntime"):
        assert table_row(versions, package)[3] == "same"
    assert table_row(versions, "torch")[1:3] == ["2.14.1+cu130", "2.14.1+cu130"]  # as the drill's runs recorded
    assert table_row(page, "parity against the goldens") == ["parity against the goldens",
                                                             "not checked (--no-golden)"]
    # the gate's own rendering, verbatim, with its verdict in the summary
    assert "### perfsuite compare: UNDECIDED" in section(page, "2. Speed and memory")
    assert table_row(page, "speed and memory (`perfsuite compare`)")[1].startswith("UNDECIDED (")
    # in-run parity per backend x precision, read from the runs' extra_info.parity
    parity = section(page, "3. Parity per backend × precision")
    row = table_row(parity, "eager | fp32")
    assert row[2] == "not checked" and row[3].startswith("pass, rel ") and row[4].startswith("pass, rel ")
    rel = json.loads(BASE[5].read_text())["benchmarks"][0]["extra_info"]["parity"]["outputs"]["logits"]
    assert row[4] == f"pass, rel {rel['max_rel_error']:.2g}, top-1 100.0%"


def test_version_diff(tmp_path, capsys):
    """NEW: copies of real runs whose machine_info says torch 2.15.0 and onnxruntime 1.33.0 (an upgrade the
    drill did not make)."""
    new = edited_copies(BASE[3:6], tmp_path / "new", set_software(torch="2.15.0+cu130", onnxruntime="1.33.0"))
    code, page, _ = page_of(capsys, ",".join(map(str, BASE[:3])), new, "--no-golden")
    assert code == 3  # session 1's shared machine: the gate cannot tell (rule 3), see the test above
    assert table_row(page, "versions")[1] == ("2 changed: torch 2.14.1+cu130 → 2.15.0+cu130, "
                                              "onnxruntime 1.32.0 → 1.33.0")
    versions = section(page, "1. Versions")
    assert "**2 changed.**" in versions and "No version changed" not in page
    assert table_row(versions, "torch") == ["torch", "2.14.1+cu130", "2.15.0+cu130", "**changed**"]
    assert table_row(versions, "onnxruntime") == ["onnxruntime", "1.32.0", "1.33.0", "**changed**"]
    assert table_row(versions, "torchvision")[3] == "same"
    assert "change under test" in section(page, "2. Speed and memory")  # the gate lists it too


def test_other_hardware_is_refused_or_reported(tmp_path, capsys):
    """NEW: copies of real runs whose machine_info names another CPU."""
    new = edited_copies(BASE[3:6], tmp_path / "new", set_software(cpu_model="AMD EPYC 9654"))
    code, _, err = page_of(capsys, BASE[0], new, "--no-golden")
    assert code == 2
    assert "different hardware" in err and str(BASE[0]) in err and "--allow-hardware-mismatch" in err
    code, page, _ = page_of(capsys, BASE[0], new, "--no-golden", "--allow-hardware-mismatch")
    assert code == 3  # one baseline run: no spread, and the medians moved beyond 5%: the gate cannot tell
    assert table_row(page, "hardware")[1] == "**DIFFERS** (cpu_model Intel(R) Xeon(R) Processor → AMD EPYC 9654)"
    versions = section(page, "1. Versions")
    assert "**OLD and NEW ran on different hardware**" in versions
    assert table_row(versions, "cpu_model") == ["cpu_model", "Intel(R) Xeon(R) Processor", "AMD EPYC 9654"]


def test_regression_fails_the_page(tmp_path, capsys):
    """NEW: copies of real runs whose runner grew the host RSS by 512 MiB more at load (a memory regression;
    the drill's run-to-run timing noise, 30 to 96 ms, is too large for a made-up time regression to be sure)."""
    def more_memory(data):
        data["benchmarks"][0]["extra_info"]["host_rss_delta_bytes"] += 512 * 2**20

    new = edited_copies(BASE[3:6], tmp_path / "new", more_memory)
    output = tmp_path / "page.md"
    code, out, _ = page_of(capsys, ",".join(map(str, BASE[:3])), new, "--no-golden", "--output", output)
    assert code == 1 and f"FAIL; wrote {output}" in out
    page = output.read_text()
    assert table_row(page, "speed and memory (`perfsuite compare`)")[1].startswith("FAIL (")
    assert "**FAIL**: a check above failed" in page
    row = table_row(section(page, "2. Speed and memory"), "test_latency[eager-fp32-b1]")
    assert row[-2].endswith("MEMORY REGRESSED") and "regressed" in row[-1]


# -- parity against the goldens ------------------------------------------------------------------------


def test_golden_check_runs_here_for_new(tmp_path, capsys, golden_check_json):
    """OLD and NEW: copies of real runs with this machine's machine_info, so the check runs in NEW's
    environment wherever the tests run."""
    old = edited_copies(BASE[:3], tmp_path / "old", this_machine)
    new = edited_copies(BASE[3:6], tmp_path / "new", this_machine)
    code, page, err = page_of(capsys, old, new)
    assert code == 3  # the golden check passes; the gate on session 1's shared machine cannot tell (rule 3)
    assert "checking eager x fp32 on cpu against the golden" in err
    summary = table_row(page, "parity against the goldens")[1]
    assert summary == ("PASS: 2 passed, 0 failed, 0 skipped (the reference counts as one); checked now, in this "
                       "environment")
    parity = section(page, "3. Parity per backend × precision")
    assert "The golden check ran on NEW's hardware with NEW's software versions." in parity
    assert "fixtures/golden/alexnet/415ac74c99842a6e/report.json" in parity
    # the same numbers as 'perfsuite golden check --json' gives for eager fp32
    row = next(r for r in json.loads(golden_check_json.read_text())["results"] if r["backend"] == "eager")
    error = row["parity"]["outputs"]["logits"]["max_scaled_error"]
    assert table_row(parity, "eager | fp32")[2] == f"pass, rel {error:.2g}, top-1 100.0%"


OTHER_TORCH = "0.0.0+edited-for-test"


def test_golden_json_from_another_environment(tmp_path, capsys, golden_check_json):
    """A real check's JSON report read with --golden-json; copies edited to say it ran with another torch
    (a version no machine has, so the difference shows wherever the test runs) and that eager fp32 failed
    (a copy of its parity, marked failed)."""
    data = json.loads(golden_check_json.read_text())
    data["machine_info"]["perfsuite"]["torch"] = OTHER_TORCH
    eager = next(r for r in data["results"] if r["backend"] == "eager")
    eager["outcome"] = "failed"
    eager["parity"]["passed"] = False
    eager["parity"]["outputs"]["logits"]["failures"] = ["relative error 0.02 exceeds the tolerance 0.0001"]
    edited = tmp_path / "check.json"
    edited.write_text(json.dumps(data))
    new = edited_copies(BASE[3:6], tmp_path / "new", this_machine)
    old = edited_copies(BASE[:3], tmp_path / "old", this_machine)
    code, page, _ = page_of(capsys, old, new, "--golden-json", edited)
    assert code == 1
    assert table_row(page, "parity against the goldens")[1].startswith(
        f"FAIL: 1 passed, 1 failed, 0 skipped (the reference counts as one); read from `{edited}`")
    parity = section(page, "3. Parity per backend × precision")
    assert "**The golden check did not run in NEW's environment**" in parity
    assert table_row(parity, "torch")[1:] == [machine_section("cpu")["torch"], OTHER_TORCH]
    assert table_row(parity, "eager | fp32")[2].startswith("FAIL, rel ")
    assert "- eager fp32, logits: relative error 0.02 exceeds the tolerance 0.0001" in parity


def test_golden_check_options_follow_new_runs(tmp_path):
    runs = load_side(str(BASE[0]))
    assert golden_check_options(runs) == {"model_name": "alexnet", "weights": "random", "transform": "report",
                                          "device": "cpu", "backends": ["eager"], "precisions": ["fp32"]}

    def other_weights(data):
        data["benchmarks"][0]["extra_info"]["weights"] = "pretrained"

    mixed = load_side(f"{BASE[0]},{edited_copies(BASE[1:2], tmp_path / 'other', other_weights)}")
    with pytest.raises(InputError, match="NEW runs mix models, weights"):
        golden_check_options(mixed)


def test_report_without_machine_info_says_so(golden_check_json):
    """A golden check report written before it recorded its environment."""
    data = copy.deepcopy(json.loads(golden_check_json.read_text()))
    del data["machine_info"]
    runs = load_side(",".join(map(str, BASE[:3])))
    report = build_report("old", "new", compare_runs(runs, runs, GateSettings()), GoldenParity("read from x", data))
    assert report.golden_differences == [("environment", "recorded", "not recorded in the golden check report")]
    assert "did not run in NEW's environment" in render_upgrade_report(report)


# -- bad input ---------------------------------------------------------------------------------------


def test_bad_inputs_name_the_file(tmp_path, capsys):
    missing = tmp_path / "missing.json"
    code, _, err = page_of(capsys, missing, BASE[0], "--no-golden")
    assert code == 2 and "OLD" in err and str(missing) in err
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text(BASE[0].read_text()[:500])
    code, _, err = page_of(capsys, BASE[0], corrupt, "--no-golden")
    assert code == 2 and f"results file {corrupt}: not valid JSON" in err

    code, _, err = page_of(capsys, BASE[0], BASE[1], "--golden-json", missing)
    assert code == 2 and f"golden check report {missing}: does not exist" in err
    code, _, err = page_of(capsys, BASE[0], BASE[1], "--golden-json", corrupt)
    assert code == 2 and f"golden check report {corrupt}: not valid JSON" in err
    code, _, err = page_of(capsys, BASE[0], BASE[1], "--golden-json", BASE[2])  # a run, not a check report
    assert code == 2 and f"golden check report {BASE[2]}: not a 'perfsuite golden check --json' report" in err
    bad_row = tmp_path / "bad-row.json"
    bad_row.write_text(json.dumps({"golden": "g.json", "results": [{"backend": "eager", "precision": "fp32",
                                                                     "outcome": "passed"}]}))
    with pytest.raises(InputError, match=r"bad-row.json: result #0 \(eager fp32\) is passed but has no parity"):
        read_golden_check(bad_row)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a GPU")
def test_new_runs_on_a_gpu_need_their_own_golden_check(tmp_path, capsys):
    """NEW: copies of real runs whose rows say they ran on cuda; this machine has no GPU."""
    def on_gpu(data):
        data["benchmarks"][0]["extra_info"]["device"] = "cuda"

    new = edited_copies(BASE[3:6], tmp_path / "new", on_gpu)
    code, _, err = page_of(capsys, ",".join(map(str, BASE[:3])), new)
    assert code == 2
    assert "golden check for NEW (alexnet, weights random, cuda)" in err and "--golden-json FILE" in err
