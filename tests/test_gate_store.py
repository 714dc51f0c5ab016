"""The baseline store: every read verified, every replacement kill-safe, every listing checked.

The runs are the gate drill's real CPU runs (``docs/gate-drill``); edits are made the way a user
or a broken disk would make them. Kills are real: a forked process SIGKILLs itself at every
executed line of the replacement (store, atomic writes and the folder deletion in ``shutil``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from perfsuite.cli import main
from perfsuite.errors import InputError
from perfsuite.gate import store
from perfsuite.gate.runs import MANIFEST_NAME, load_run, load_side

RUNS = Path(__file__).resolve().parent.parent / "docs" / "gate-drill" / "session-1" / "runs"
BASE = sorted(RUNS.glob("base-*.json"))

pytestmark = pytest.mark.skipif(len(BASE) < 10, reason="the gate drill's runs are not recorded")


def slowed(path: Path, factor: float) -> None:
    """Edit a stored run the way a tamperer would: every time ``factor`` x longer."""
    data = json.loads(path.read_text())
    for bench in data["benchmarks"]:
        for key in ("min", "max", "mean", "stddev", "median", "iqr", "q1", "q3"):
            bench["stats"][key] *= factor
        bench["stats"]["data"] = [v * factor for v in bench["stats"]["data"]]
    path.write_text(json.dumps(data))


def as_gpu(source: Path, target: Path) -> Path:
    data = json.loads(source.read_text())
    data["machine_info"]["perfsuite"].update(device="cuda", gpu_name="NVIDIA H200", compute_capability="9.0",
                                             gpu_memory_bytes=150_000_000_000, power_limit_w=700,
                                             mig_mode="disabled")
    target.write_text(json.dumps(data))
    return target


@pytest.fixture
def baseline(tmp_path) -> Path:
    return store.save_baseline(tmp_path / "baselines", [load_run(p) for p in BASE[:5]])


def new_side() -> str:
    return ",".join(map(str, BASE[5:10]))


# -- #2: no way of naming runs in a baseline skips the tamper check -----------------------------------


def test_deleted_manifest_does_not_turn_a_tampered_baseline_into_plain_runs(baseline, capsys):
    """The issue's case: baseline.json deleted, a run made 100x slower; new runs must not look improved."""
    (baseline / MANIFEST_NAME).unlink()
    slowed(baseline / "run-02.json", 100.0)
    for spec in (str(baseline), str(baseline / "run-02.json"), str(baseline / "run-*.json")):
        with pytest.raises(InputError, match=r"run-0\d\.json: stored as run-0\d\.json of baseline .*/baseline\.json "
                                             r"is missing"):
            load_side(spec)
        capsys.readouterr()
        assert main(["compare", spec, new_side()]) == 2
        err = capsys.readouterr().err
        assert "baseline.json is missing" in err and "Traceback" not in err


def test_a_file_or_glob_into_a_baseline_is_verified(baseline):
    slowed(baseline / "run-02.json", 100.0)
    for spec in (str(baseline / "run-02.json"), str(baseline / "run-0[1-3].json"), str(baseline / MANIFEST_NAME)):
        with pytest.raises(InputError, match=r"run-02\.json changed after it was recorded"):
            load_side(spec)
    # an untouched run of the same baseline, named alone, reads (verified with the rest of its folder)
    (baseline / "run-02.json").unlink()
    with pytest.raises(InputError, match=r"run-02\.json is listed in baseline\.json but missing"):
        load_side(str(baseline / "run-01.json"))


def test_a_folder_in_the_store_without_manifest_is_an_error(tmp_path, baseline):
    """Runs copied into the store by hand (no mark, no manifest) are not a baseline."""
    plain = baseline.parent / "copied-by-hand"
    plain.mkdir()
    for path in BASE[:3]:
        shutil.copy(path, plain)
    with pytest.raises(InputError, match=r"a folder in the baseline store .* without baseline\.json"):
        load_side(str(plain))
    # the same files outside a store are plain runs
    outside = tmp_path / "runs"
    shutil.copytree(plain, outside)
    assert len(load_side(str(outside))) == 3
    # naming the store itself says what to name instead
    with pytest.raises(InputError, match="it is a baseline store, name one of its baselines"):
        load_side(str(baseline.parent))


def test_runs_of_a_baseline_saved_elsewhere_again_are_verified_there(tmp_path, baseline):
    """``baseline save`` of a stored baseline re-marks its runs for the new store."""
    again = store.save_baseline(tmp_path / "other", load_side(str(baseline)))
    assert len(load_side(str(again))) == 5
    assert json.loads((again / "run-01.json").read_text())[store.BASELINE_MARK]["fingerprint_id"] == again.name


def test_baseline_list_verifies_each_baseline_and_says_why_one_is_not_listed(tmp_path, capsys):
    root = tmp_path / "baselines"
    good = store.save_baseline(root, [load_run(p) for p in BASE[:3]])
    gpu = [load_run(as_gpu(p, tmp_path / p.name)) for p in BASE[3:6]]
    tampered = store.save_baseline(root, gpu)
    slowed(tampered / "run-03.json", 100.0)
    orphan = store.save_baseline(tmp_path / "elsewhere", [load_run(p) for p in BASE[6:8]])
    shutil.move(orphan, root / "restored-without-manifest")
    (root / "restored-without-manifest" / MANIFEST_NAME).unlink()

    assert main(["baseline", "list", "--store", str(root)]) == 2
    out, err = capsys.readouterr()
    assert f"{good.name}  3 runs" in out and "(verified)" in out
    assert tampered.name not in out and "restored-without-manifest" not in out
    assert f"not a usable baseline: baseline {tampered}: run-03.json changed after it was recorded" in err
    assert "restored-without-manifest: baseline.json is missing" in err
    assert "Traceback" not in err

    shutil.rmtree(good)
    shutil.rmtree(tampered)
    assert main(["baseline", "list", "--store", str(root)]) == 2  # not "no baselines" with no reason
    out, err = capsys.readouterr()
    assert "no baselines" not in out and "baseline.json is missing" in err


def test_baseline_list_of_an_empty_or_missing_store(tmp_path, capsys):
    assert main(["baseline", "list", "--store", str(tmp_path / "none")]) == 0
    assert "no baselines under" in capsys.readouterr().out
    assert main(["baseline", "list", "--store", str(tmp_path / "none")]) == 0
    assert capsys.readouterr().out.strip().endswith("(the folder does not exist)")
    (tmp_path / "empty").mkdir()
    assert main(["baseline", "list", "--store", str(tmp_path / "empty")]) == 0
    assert capsys.readouterr().out.strip() == f"no baselines under {tmp_path / 'empty'}"


# -- #4: the manifest is checked against its schema --------------------------------------------------


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m.update(version="2"), r"field version: '2' is not of type 'integer'"),
    (lambda m: m.update(version=2), r"format version 2 is newer than this perfsuite reads \(1\); upgrade"),
    (lambda m: m.update(runs="run-01.json"), r"field runs: 'run-01.json' is not of type 'array'"),
    (lambda m: m["runs"][0].update(file=["run-01.json"]), r"field runs\[0\]\.file: \['run-01.json'\] is not of type"),
    (lambda m: m["runs"][0].update(file="../run-01.json"), r"field runs\[0\]\.file: '\.\./run-01\.json' does not"),
    (lambda m: m["runs"][1].update(sha256=5), r"field runs\[1\]\.sha256: 5 is not of type 'string'"),
    (lambda m: m.update(format="something-else"), r"is not a perfsuite baseline manifest"),
])
def test_a_badly_typed_manifest_is_refused_by_field(baseline, capsys, edit, message):
    manifest = json.loads((baseline / MANIFEST_NAME).read_text())
    edit(manifest)
    (baseline / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=message) as error:
        load_side(str(baseline))
    assert f"baseline {baseline}: manifest baseline.json" in str(error.value)
    for command in (["compare", str(baseline), new_side()], ["baseline", "list", "--store", str(baseline.parent)]):
        assert main(command) == 2
        assert "Traceback" not in capsys.readouterr().err


# -- #3: a replacement killed at any instant --------------------------------------------------------

KILLER = textwrap.dedent('''
    """Fork, and in the child run save_baseline under a tracer that SIGKILLs it before line N."""
    import os, shutil, signal, sys
    from pathlib import Path
    from perfsuite import results
    from perfsuite.gate import store
    from perfsuite.gate.runs import load_run

    root, runs = Path(sys.argv[1]), [load_run(p) for p in sys.argv[2:]]
    watched = {store.__file__, results.__file__, shutil.__file__}
    for line in sys.stdin:
        target = int(line)
        pid = os.fork()
        if pid == 0:
            executed = 0

            def local(frame, event, arg):
                global executed
                if event == "line":
                    executed += 1
                    if executed > target:
                        os.kill(os.getpid(), signal.SIGKILL)
                return local

            sys.settrace(lambda frame, event, arg: local if frame.f_code.co_filename in watched else None)
            try:
                store.save_baseline(root, runs)
            except BaseException:
                os._exit(3)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print("killed" if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}", flush=True)
''')


@pytest.mark.slow
def test_a_replacement_killed_at_every_line_leaves_a_readable_baseline(tmp_path):
    """Old baseline: 3 runs; new: 5. After a SIGKILL before any executed line, the next read, list or
    save finds the old or the new baseline whole, and leaves no hidden folder behind."""
    template = tmp_path / "template"
    folder_name = store.save_baseline(template, [load_run(p) for p in BASE[:3]]).name
    root = tmp_path / "store"
    killer = subprocess.Popen([sys.executable, "-c", KILLER, str(root), *map(str, BASE[3:8])],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
                                  str(Path(store.__file__).parents[2]), os.environ.get("PYTHONPATH")]))})
    seen, counts = {}, set()
    try:
        for point in range(10_000):
            shutil.rmtree(root, ignore_errors=True)
            shutil.copytree(template, root)
            killer.stdin.write(f"{point}\n")
            killer.stdin.flush()
            outcome = killer.stdout.readline().strip()
            assert outcome in ("killed", "exit 0"), f"kill point {point}: the save failed ({outcome})"
            how = ("read", "list", "save")[point % 3]
            if how == "read":
                count = len(load_side(str(root / folder_name)))
            elif how == "list":
                (entry,) = store.list_baselines(root)
                assert entry.problem is None, f"kill point {point}: {entry.problem}"
                count = len(entry.manifest["runs"])
            else:  # a new save over whatever the kill left, read back whole
                store.save_baseline(root, [load_run(p) for p in BASE[8:10]])
                assert len(load_side(str(root / folder_name))) == 2, f"kill point {point}"
            if how != "save":  # the old baseline or, once the save has passed its commit point, the new one
                assert count in ((5,) if outcome == "exit 0" else (3, 5)), f"kill point {point} ({how}): {count} runs"
                counts.add(count)
            assert not [p.name for p in root.iterdir() if p.is_dir() and p.name.startswith(".")], \
                f"kill point {point} ({how}): leftovers"
            seen.setdefault(outcome, []).append(point)
            if outcome == "exit 0":
                break
    finally:
        killer.stdin.close()
        killer.wait(timeout=30)
    assert len(seen["exit 0"]) == 1 and len(seen["killed"]) > 50  # every line of a real replacement was tried
    assert counts == {3, 5}  # kills before the commit point keep the old baseline, after it give the new one


def test_a_save_interrupted_after_the_commit_point_is_completed_by_a_reader(baseline):
    """The state the issue found: the old folder renamed aside, the new one complete but hidden."""
    root, name = baseline.parent, baseline.name
    new = store.save_baseline(root.parent / "staging", [load_run(p) for p in BASE[5:8]])
    os.replace(baseline, root / f".{name}.old-0123456789abcdef")
    os.replace(new, root / f".{name}.new-0123456789abcdef")
    assert len(load_side(str(root / name))) == 3  # the new baseline, moved into place
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == [name]
