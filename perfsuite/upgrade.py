"""The upgrade report: one markdown page a reviewer reads before approving an upgrade.

OLD and NEW are two sides of saved runs, given as ``perfsuite compare`` takes them. The page has:

1. **versions**: the software that differs between the sides (the gate's own software diff),
   always listing torch, torchvision, TensorRT, CUDA, cuDNN, the driver and ONNX Runtime, and
   saying plainly when no version changed;
2. **speed and memory**: the verdicts of ``perfsuite compare``, as it renders them;
3. **parity per backend x precision**: each backend x precision against the goldens (the
   committed reference logits, see ``perfsuite.golden``), next to the in-run parity the saved
   runs carry (each backend against eager fp32 in the same run).

Parity against the goldens is a ``perfsuite golden check`` result: run by ``upgrade-report`` in the
environment it runs in, which is meant to be NEW's, or read from a ``golden check --json`` report
made where NEW ran. Either way the page compares the hardware and software the check ran on with
NEW's runs and lists every difference, so a check from another environment cannot pass for NEW's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from perfsuite.errors import InputError
from perfsuite.gate.hardware import fingerprint, mismatches, software
from perfsuite.gate.runs import SavedRun
from perfsuite.gate.tables import headline, render_result, render_table
from perfsuite.gate.verdict import GateResult
from perfsuite.report import collect_rows, parity_cell
from perfsuite.results import read_json_file

KEY_PACKAGES = ("torch", "torchvision", "tensorrt", "tensorrt_rtx", "cuda", "cudnn", "driver", "onnxruntime")
OUTCOMES = ("passed", "failed", "skipped")


# -- parity against the goldens --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GoldenParity:
    """A ``golden check`` result (the document its ``--json`` writes) and where it came from; no
    document when the check was skipped on purpose."""

    source: str  # "checked now, in this environment", "read from PATH" or "not checked (--no-golden)"
    document: Mapping[str, Any] | None = None

    @property
    def checked(self) -> bool:
        return self.document is not None

    @property
    def reference(self) -> Mapping[str, Any] | None:
        rows = self.document["results"] if self.document else []
        return next((row for row in rows if row["backend"] == "reference"), None)

    @property
    def backend_rows(self) -> list[Mapping[str, Any]]:
        rows = self.document["results"] if self.document else []
        return [row for row in rows if row["backend"] != "reference"]

    def count(self, outcome: str) -> int:
        return sum(row["outcome"] == outcome for row in (self.document["results"] if self.document else []))

    @property
    def failed(self) -> bool:
        return self.count("failed") > 0

    @property
    def machine_info(self) -> Mapping[str, Any] | None:
        machine = self.document.get("machine_info") if self.document else None
        return machine if isinstance(machine, Mapping) and machine else None


def read_golden_check(path: str | Path) -> GoldenParity:
    """A report written by ``perfsuite golden check --json PATH``; errors name the file."""
    where = f"golden check report {path}"
    data = read_json_file(path, where)
    if not (isinstance(data, dict) and isinstance(data.get("results"), list) and isinstance(data.get("golden"), str)):
        raise InputError(f"{where}: not a 'perfsuite golden check --json' report (needs 'golden' and a "
                         "'results' list)")
    for index, row in enumerate(data["results"]):
        if not isinstance(row, dict) or not isinstance(row.get("backend"), str) \
                or not isinstance(row.get("precision"), str) or row.get("outcome") not in OUTCOMES:
            raise InputError(f"{where}: result #{index} lacks a backend, a precision or an outcome "
                             f"({', '.join(OUTCOMES)})")
        if row["outcome"] != "skipped" and not isinstance(row.get("parity"), dict):
            raise InputError(f"{where}: result #{index} ({row['backend']} {row['precision']}) is "
                             f"{row['outcome']} but has no parity report")
    if not any(row["backend"] == "reference" for row in data["results"]):
        raise InputError(f"{where}: has no 'reference' row (the reference checked against the golden)")
    if not isinstance(data.get("machine_info", {}), dict) or not isinstance(data.get("model", {}), dict):
        raise InputError(f"{where}: 'machine_info' and 'model' must be objects")
    return GoldenParity(f"read from `{path}`", data)


def _latency_info(runs: Sequence[SavedRun]) -> list[Mapping[str, Any]]:
    return [record.extra_info for run in runs for record in run.benchmarks.values() if record.kind == "latency"]


def golden_check_options(new_runs: Sequence[SavedRun]) -> dict[str, Any]:
    """What ``golden check`` must check for NEW: its model, weights, transform, device, and the
    backends and precisions of its latency rows (keyword arguments of ``check_against_golden``)."""
    rows = _latency_info(new_runs)
    if not rows:
        raise InputError("NEW runs " + ", ".join(str(run.path) for run in new_runs) + ": no latency rows, so no "
                         "backend x precision to check against the goldens (pass --no-golden to skip the check)")
    models = {(row.get("model"), row.get("weights"), row.get("weights_source"), row.get("transform", "report"),
               row.get("device", "cpu")) for row in rows}
    if len(models) > 1:
        listing = "; ".join(f"{m} weights {w} transform {t} on {d}" for m, w, _, t, d in sorted(models, key=str))
        raise InputError(f"NEW runs mix models, weights, transforms or devices ({listing}); one golden check "
                         "cannot cover them: check each with 'perfsuite golden check --json FILE' and pass "
                         "--golden-json, or --no-golden")
    model, weights, source, transform, device = models.pop()
    return {"model_name": model, "weights": source if weights == "file" else weights, "transform": transform,
            "device": device, "backends": list(dict.fromkeys(row.get("backend") for row in rows)),
            "precisions": list(dict.fromkeys(row.get("precision") for row in rows))}


def golden_environment_differences(gate: GateResult, golden: GoldenParity) -> list[tuple[str, Any, Any]]:
    """(what, NEW runs, golden check) for every difference between the environment NEW was measured in
    and the one the golden check ran in: hardware fingerprint fields, software versions, weights."""
    if not golden.checked:
        return []
    machine = golden.machine_info
    if machine is None:
        return [("environment", "recorded", "not recorded in the golden check report")]
    rows = [(field, new, checked) for field, new, checked in mismatches(gate.new_runs[0].fingerprint,
                                                                         fingerprint(machine))]
    new_software = {**gate.software_same, **{name: new for name, _, new in gate.software_changes}}
    for name, version in software(machine).items():
        checked = str(version) if version is not None else "-"
        if name in new_software and new_software[name] != checked:
            rows.append((name, new_software[name], checked))
    model = golden.document.get("model") or {}
    runs_weights = {info.get("weights_fingerprint") for info in _latency_info(gate.new_runs)} - {None}
    if model.get("weights_fingerprint") and runs_weights and runs_weights != {model["weights_fingerprint"]}:
        rows.append(("weights fingerprint", " / ".join(sorted(w[:16] for w in runs_weights)),
                     model["weights_fingerprint"][:16]))
    return rows


# -- the page --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class UpgradeReport:
    old_spec: str
    new_spec: str
    gate: GateResult
    golden: GoldenParity
    golden_differences: list[tuple[str, Any, Any]]

    @property
    def failed(self) -> bool:
        return self.gate.failed or self.golden.failed

    @property
    def undecided(self) -> bool:
        """The gate could not tell a change from noise in some row (and nothing failed)."""
        return not self.failed and self.gate.outcome == "undecided"

    @property
    def verdict(self) -> str:
        return "FAIL" if self.failed else "UNDECIDED" if self.undecided else "PASS"

    @property
    def exit_code(self) -> int:
        """As ``perfsuite compare``'s: 1 a check failed, 3 the gate undecided, 0 pass."""
        return 1 if self.failed else 3 if self.undecided else 0


def build_report(old_spec: str, new_spec: str, gate: GateResult, golden: GoldenParity) -> UpgradeReport:
    return UpgradeReport(old_spec, new_spec, gate, golden, golden_environment_differences(gate, golden))


def _side_line(label: str, spec: str, runs: Sequence[SavedRun]) -> str:
    dates = sorted(run.datetime[:16].replace("T", " ") for run in runs if run.datetime)
    when = (f"{dates[0]} to {dates[-1]} UTC" if dates[0] != dates[-1] else f"{dates[0]} UTC") if dates else "no date"
    commits = list(dict.fromkeys(f"{str(run.commit_info.get('id', ''))[:10] or 'unknown'}"
                                 + (" (dirty)" if run.commit_info.get("dirty") else "") for run in runs))
    names = ", ".join(f"`{run.path.name}`" for run in runs)
    return f"- **{label}** `{spec}`: {len(runs)} run(s) ({names}), {when}, commit {', '.join(commits)}"


def _version(values: Mapping[str, str], name: str) -> str:
    value = values.get(name)
    return "not recorded" if value is None else "none" if value == "-" else value


def _versions(gate: GateResult) -> tuple[str, list[str]]:
    """The summary cell and the section's lines."""
    before = {**gate.software_same, **{name: old for name, old, _ in gate.software_changes}}
    after = {**gate.software_same, **{name: new for name, _, new in gate.software_changes}}
    changed = [name for name, _, _ in gate.software_changes]
    names = [*KEY_PACKAGES, *(name for name in changed if name not in KEY_PACKAGES)]
    rows = [[name, _version(before, name), _version(after, name), "**changed**" if name in changed else "same"]
            for name in names]
    if changed:
        summary = f"{len(changed)} changed: " + ", ".join(
            f"{name} {_version(before, name)} → {_version(after, name)}" for name in changed)
    else:
        summary = "no version changed"
    lines = [f"**{len(changed)} changed.**" if changed else "**No version changed.**", "",
             render_table(["package", "OLD", "NEW", ""], rows, True)]
    others = [f"{name} {version}" for name, version in gate.software_same.items()
              if name not in KEY_PACKAGES and version != "-"]
    if others:
        lines += ["", "Also the same on both sides: " + ", ".join(others) + "."]
    return summary, lines


def _hardware(gate: GateResult) -> tuple[str, list[str]]:
    cards = [f"Physical GPUs: {note}." for note in gate.physical_gpus]  # one model, several cards
    if not gate.hardware_mismatch:
        return f"same: {gate.hardware.label}", [f"Both sides ran on {gate.hardware.label} (`{gate.hardware.id}`).",
                                                *cards]
    summary = "**DIFFERS** (" + "; ".join(f"{field} {a} → {b}" for field, a, b in gate.hardware_mismatch) + ")"
    lines = ["**OLD and NEW ran on different hardware** (compared with `--allow-hardware-mismatch`): the speed "
             "and memory verdicts below compare two machines, not only the upgrade.", "",
             render_table(["field", "OLD", "NEW"], gate.hardware_mismatch, True), *cards]
    return summary, lines


def _in_run_cells(runs: Sequence[SavedRun]) -> dict[tuple[str, str], str]:
    """(backend, precision) -> parity of the latency rows, one per batch size when there are several."""
    by_case: dict[tuple[str, str], list[tuple[int | None, str]]] = {}
    for row in collect_rows(runs):
        if row.kind == "latency":
            by_case.setdefault((row.backend, row.precision), []).append((row.batch_size, parity_cell(row.parity)))
    return {case: cells[0][1] if len(cells) == 1 else "; ".join(f"b{batch}: {cell}" for batch, cell in cells)
            for case, cells in by_case.items()}


def _in_run_counts(runs: Sequence[SavedRun]) -> str:
    reports = [row.parity for row in collect_rows(runs) if row.kind == "latency"]
    checked = [report for report in reports if report]
    passed = sum(bool(report.get("passed")) for report in checked)
    return f"{passed} of {len(checked)} latency rows pass" + (
        f", {len(reports) - len(checked)} without parity" if len(reports) > len(checked) else "")


def _golden_cell(row: Mapping[str, Any]) -> str:
    if row["outcome"] == "skipped":
        return f"SKIP: {row.get('reason') or 'no reason recorded'}"
    return parity_cell(row.get("parity"))


def _golden_summary(golden: GoldenParity) -> str:
    if not golden.checked:
        return golden.source
    verdict = "FAIL" if golden.failed else "PASS"
    counts = ", ".join(f"{golden.count(outcome)} {outcome}" for outcome in OUTCOMES)
    return f"{verdict}: {counts} (the reference counts as one); {golden.source}"


def _failure_lines(row: Mapping[str, Any]) -> list[str]:
    outputs = (row.get("parity") or {}).get("outputs") or {}
    return [f"- {row['backend']} {row['precision']}, {name}: {failure}" for name, output in outputs.items()
            if isinstance(output, Mapping) for failure in output.get("failures") or []]


def _shown(path: str) -> str:
    """``path`` relative to the working folder when it lies inside it (pages are read from the repository)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path


def _parity(report: UpgradeReport) -> list[str]:
    gate, golden = report.gate, report.golden
    lines: list[str] = []
    if golden.checked:
        document = golden.document
        model = document.get("model") or {}
        weights = f"{model.get('weights', '?')} `{str(model.get('weights_fingerprint', ''))[:12]}`"
        lines += [f"Golden `{_shown(document['golden'])}`: {model.get('model', '?')}, weights {weights}, transform "
                  f"{document.get('transform', '?')}; backends on {document.get('device', '?')}; {golden.source}.", ""]
        if report.golden_differences:
            lines += ["**The golden check did not run in NEW's environment**: its verdicts are about the "
                      "environment it ran in. Differences:", "",
                      render_table(["", "NEW runs", "golden check"], report.golden_differences, True), ""]
        else:
            lines += ["The golden check ran on NEW's hardware with NEW's software versions.", ""]
        reference = golden.reference
        if reference is not None:
            lines.append("Reference (eager fp32 on the CPU) against the golden: "
                         f"{parity_cell(reference.get('parity'))}.")
            changes = reference.get("changes") or []
            if changes:
                lines += ["Since the golden was recorded:", "", *(f"- {change.splitlines()[0]}" for change in changes)]
            else:
                lines.append("Nothing in its provenance changed since the golden was recorded.")
            lines.append("")
    else:
        lines += [f"Parity against the goldens: {golden.source}.", ""]
    old_cells, new_cells = _in_run_cells(gate.baseline_runs), _in_run_cells(gate.new_runs)
    golden_cells = {(row["backend"], row["precision"]): _golden_cell(row) for row in golden.backend_rows}
    cases = list(dict.fromkeys([*new_cells, *old_cells, *golden_cells]))
    golden_header = f"golden ({golden.document.get('device', '?')})" if golden.checked else "golden"
    rows = [[backend, precision, golden_cells.get((backend, precision), "-" if golden.checked else "not checked"),
             old_cells.get((backend, precision), "-"), new_cells.get((backend, precision), "-")]
            for backend, precision in cases]
    lines += [render_table(["backend", "precision", golden_header, "in-run OLD", "in-run NEW"], rows, True), "",
              "*golden*: the backend on the fixture images against the committed golden logits, with its "
              "precision's tolerance. *in-run*: each saved latency row's parity against eager fp32 in the same "
              "run (the last run's report where there are several)."]
    failures = [line for row in golden.document["results"] for line in _failure_lines(row)] if golden.checked else []
    if failures:
        lines += ["", "**Failures against the golden:**", "", *failures]
    return lines


def render_upgrade_report(report: UpgradeReport, title: str = "Upgrade report") -> str:
    """The page: sides, summary, then versions, speed and memory, parity."""
    gate = report.gate
    versions_summary, version_lines = _versions(gate)
    hardware_summary, hardware_lines = _hardware(gate)
    summary = [
        ["versions", versions_summary],
        ["hardware", hardware_summary],
        ["speed and memory (`perfsuite compare`)", headline(gate).split(": ", 1)[1]],
        ["parity against the goldens", _golden_summary(report.golden)],
        ["in-run parity (saved runs)", f"OLD {_in_run_counts(gate.baseline_runs)}; NEW "
                                       f"{_in_run_counts(gate.new_runs)}"],
    ]
    verdict = {"FAIL": "**FAIL**: a check above failed; read the sections below before approving.",
               "UNDECIDED": "**UNDECIDED**: nothing failed, but the gate could not tell a change from noise in "
                            "some row (a change beyond its threshold that the runs cannot call): record more runs "
                            "before approving (exit 3).",
               "PASS": "**PASS**: no check failed."}[report.verdict]
    lines = [f"# {title}", "", _side_line("OLD", report.old_spec, gate.baseline_runs),
             _side_line("NEW", report.new_spec, gate.new_runs), "", "## Summary", "",
             render_table(["check", "result"], summary, True), "", verdict, "",
             "## 1. Versions", "", *version_lines, "", *hardware_lines, "",
             "## 2. Speed and memory", "", render_result(gate, markdown=True).rstrip(), "",
             "## 3. Parity per backend × precision", "", *_parity(report)]
    return "\n".join(lines) + "\n"
