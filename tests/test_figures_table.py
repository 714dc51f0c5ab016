"""scripts/figures_table.py: the three figures of every row, read from a real saved run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_SPEC = importlib.util.spec_from_file_location("figures_table", ROOT / "scripts" / "figures_table.py")
figures_table = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(figures_table)
H100_RUN = ROOT / "docs" / "results" / "2026-12-06-h100-default-tier" / "default-tier.json"


def test_every_row_shows_its_own_device_and_host_time(capsys):
    run = json.loads(H100_RUN.read_text())
    assert figures_table.main([str(H100_RUN)]) == 0
    lines = capsys.readouterr().out.splitlines()[2:]
    assert len(lines) == len(run["benchmarks"])
    first = run["benchmarks"][0]
    cells = [cell.strip() for cell in lines[0].split("|")[1:-1]]
    assert cells[0] == f"`{first['name']}`"
    assert cells[3] == figures_table._time(first["extra_info"]["device_time"]["median_s"])
    assert cells[5] == figures_table._time(first["extra_info"]["host_time"]["median_s"])
    assert cells[3] != cells[5]  # the two figures are read from their own entries


def test_an_unavailable_figure_shows_its_reason(tmp_path, capsys):
    run = json.loads(H100_RUN.read_text())
    run["benchmarks"] = run["benchmarks"][:1]
    run["benchmarks"][0]["extra_info"]["device_time"] = {"available": False, "reason": "the backend synchronizes"}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(run))
    assert figures_table.main([str(path)]) == 0
    assert "unavailable: the backend synchronizes" in capsys.readouterr().out


def test_a_file_that_is_not_a_run_is_refused_by_name(tmp_path, capsys):
    empty = tmp_path / "empty.json"
    empty.write_text("")
    other = tmp_path / "other.json"
    other.write_text("[1, 2]")
    for path in (empty, other, tmp_path / "missing.json"):
        assert figures_table.main([str(path)]) == 2
        assert str(path) in capsys.readouterr().err
