"""The optimization ladder, end to end and roofline on one GPU machine, in one run (~8 minutes).

    PYTHONPATH=. python3 scripts/gpu_ladder.py                  # GPU machine: writes to $OUT
    PYTHONPATH=. python3 scripts/gpu_ladder.py --quick --device cpu --out /tmp/ladder   # smoke test

Each leg is one pytest process over ``benchmarks/`` with its own backends, precisions, batch
sizes and ``torch.backends.cudnn.benchmark`` setting (set before pytest starts, recorded in every
row). Legs run in priority order; a leg whose planning estimate does not fit the remaining
``--budget-s`` is skipped and the summary says so, and a leg still running at ``--hard-limit-s``
is stopped. After every leg the merged results are rewritten, so an interrupted run keeps what
finished. Outputs (three files):

``ladder.json``        every leg's pytest-benchmark rows in one pytest-benchmark file, plus
                       ``perfsuite_ladder``: the legs (arguments, exit code, wall time, skips) and
                       the targets' outcomes. Rows of a leg with a ``tag`` carry it in their name
                       (``test_latency[eager-fp16-b1-cudnn-benchmark]``), so names stay unique.
                       Latency rows without a ``roofline`` field get one computed from this run's
                       ``test_roofline_rates`` row (marked ``"source": "ladder"``).
``ladder.log``         pytest's output of every leg.
``ladder-summary.md``  the targets (met, or missed by how much and what limits it), then every
                       latency, end-to-end and compile-time row.

A first run rarely fits every leg: ``--previous ladder.json`` (of a run on the same GPU model)
merges that run's rows first and runs only the legs it did not.

Inductor's cache goes to ``--cache-dir`` (default /tmp/perfsuite-ladder-cache): empty on a fresh
machine, so the first compilations are cold; the ``max-autotune-b1-warm`` leg then shows the warm
compile time of max-autotune (``compile``'s cold and warm times come from ``test_compile_time``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from perfsuite.e2e import STAGES  # noqa: E402
from perfsuite.errors import PerfsuiteError  # noqa: E402
from perfsuite.results import load_benchmark_json, write_json_atomic  # noqa: E402
from perfsuite.roofline import ModelCost, roofline  # noqa: E402

TARGETS = {
    "batch1_fp16_latency_s": 150e-6,  # best fp16 batch-1 latency (lower is better)
    "batch256_fp16_images_per_s": 180_000.0,  # best fp16 batch-256 throughput (higher is better)
    "e2e_dog_batch1_s": 2.5e-3,  # fixtures/dog.jpg -> label at batch 1, warm (lower is better)
}
_PYTEST_BOOTSTRAP = (
    "import sys, torch\n"
    "torch.backends.cudnn.benchmark = {flag}\n"
    "import pytest\n"
    "sys.exit(pytest.main(sys.argv[1:]))\n"
)


@dataclasses.dataclass(frozen=True)
class Leg:
    """One pytest process of the ladder."""

    name: str
    tests: tuple[str, ...]
    backends: str
    precisions: str
    batch_sizes: str
    cudnn_benchmark: bool
    estimate_s: float  # planning estimate on an H100/H200, pytest start-up included
    tag: str = ""  # appended to the row names of this leg
    after: str = ""  # run only if this leg ran (e.g. a warm-cache rerun needs the run that filled the cache)


LATENCY = "benchmarks/test_latency.py"
E2E = "benchmarks/test_e2e.py"
RATES = "benchmarks/test_ladder.py::test_roofline_rates"
COMPILE_TIME = "benchmarks/test_ladder.py::test_compile_time"


def gpu_legs() -> list[Leg]:
    """The full ladder, most valuable first; a max-autotune shape is a leg of its own (~75 s of
    compilation each), so that a stop at the hard limit loses one shape, not all of them."""
    return [
        Leg("core", (RATES, LATENCY), "eager,cudagraph,onnxruntime-cuda,onnxruntime-trt", "fp32,fp16,bf16",
            "1,8,64,256", False, 50),
        Leg("cudnn-benchmark", (LATENCY,), "eager,eager-channels-last,cudagraph,cudagraph-channels-last", "fp16",
            "1,8,64,256", True, 35, tag="cudnn-benchmark"),
        Leg("e2e", (E2E,), "cudagraph", "fp16", "1,8", True, 75),
        Leg("compile", (COMPILE_TIME, LATENCY), "compile", "fp16", "1,256", True, 100),
        Leg("max-autotune-channels-last-b256", (LATENCY,), "compile-max-autotune-channels-last", "fp16", "256",
            True, 85),
        Leg("max-autotune-b1", (LATENCY,), "compile-max-autotune", "fp16", "1", True, 85),
        Leg("max-autotune-cudagraph-b1", (LATENCY,), "compile-max-autotune-cudagraph", "fp16", "1", True, 85),
        Leg("max-autotune-b256", (LATENCY,), "compile-max-autotune", "fp16", "256", True, 85),
        Leg("max-autotune-b1-warm", (LATENCY,), "compile-max-autotune", "fp16", "1", True, 25, tag="warm-cache",
            after="max-autotune-b1"),
        Leg("compile-more-batches", (LATENCY,), "compile", "fp16", "8,64", True, 45),
    ]


def quick_legs(cuda: bool) -> list[Leg]:
    """One of each kind at batch 1: checks that every leg runs (or skips with its reason), not how fast."""
    precision = "fp16" if cuda else "fp32"
    return [
        Leg("core", (RATES, LATENCY), "eager,cudagraph,onnxruntime-cuda", precision, "1", False, 40),
        Leg("e2e", (E2E,), "cudagraph" if cuda else "eager", precision, "1", True, 60),
        Leg("compile", (COMPILE_TIME, LATENCY), "compile", precision, "1", True, 150),
    ]


def pytest_command(leg: Leg, args: argparse.Namespace, json_path: Path) -> list[str]:
    return [
        sys.executable, "-c", _PYTEST_BOOTSTRAP.format(flag=leg.cudnn_benchmark), *leg.tests,
        "--backends", leg.backends, "--precisions", leg.precisions, "--batch-sizes", leg.batch_sizes,
        "--device", args.device, "--weights", args.weights, "--benchmark-json", str(json_path),
        "--benchmark-max-time", str(args.max_time), "--benchmark-min-rounds", "5",
        "--benchmark-columns", "min,median,iqr,rounds", "-p", "no:cacheprovider", "-q", "-rsfE",
    ]


def run_leg(leg: Leg, args: argparse.Namespace, json_path: Path, log, timeout_s: float) -> dict[str, Any]:
    """Run one leg's pytest process, its output appended to ``log``; its record for the summary."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "PERFSUITE_CACHE_DIR": str(args.cache_dir)}
    command = pytest_command(leg, args, json_path)
    log.write(f"\n===== leg {leg.name}: {' '.join(command[3:])} (cudnn.benchmark={leg.cudnn_benchmark})\n")
    log.flush()
    started = time.perf_counter()
    # A session of its own, so that a stop also ends Inductor's compile workers.
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        returncode = process.wait(timeout=timeout_s)
        stopped = False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        returncode = process.wait()
        stopped = True
    wall = time.perf_counter() - started
    log.write(f"===== leg {leg.name}: exit {returncode}{' (stopped at the hard limit)' if stopped else ''}, "
              f"{wall:.0f} s\n")
    log.flush()
    return {**dataclasses.asdict(leg), "exit_code": returncode, "wall_s": wall, "stopped": stopped,
            "skipped": None}


# -- merging ---------------------------------------------------------------------------------


def _tagged(name: str, tag: str) -> str:
    return f"{name[:-1]}-{tag}]" if name.endswith("]") else f"{name}[{tag}]"


def merge(leg_outputs: list[tuple[dict[str, Any], Path]], previous: dict[str, Any] | None = None
          ) -> dict[str, Any] | None:
    """Every finished leg's rows in one pytest-benchmark document (after ``previous``'s rows)."""
    merged: dict[str, Any] | None = None
    if previous is not None:
        merged = copy.deepcopy({key: value for key, value in previous.items() if key != "perfsuite_ladder"})
    for record, path in leg_outputs:
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        if merged is None:
            merged = {key: value for key, value in data.items() if key != "benchmarks"}
            merged["benchmarks"] = []
            merged["perfsuite"] = {"schema_version": 1, "outcomes": []}
        for row in data.get("benchmarks", []):
            if record["tag"]:
                row["name"], row["fullname"] = _tagged(row["name"], record["tag"]), _tagged(row["fullname"],
                                                                                              record["tag"])
            if isinstance(row.get("extra_info"), dict):
                row["extra_info"]["ladder_leg"] = record["name"]
            merged["benchmarks"].append(row)
        for outcome in (data.get("perfsuite") or {}).get("outcomes", []):
            merged["perfsuite"]["outcomes"].append({**outcome, "ladder_leg": record["name"]})
    if merged is not None:
        add_roofline(merged["benchmarks"])
    return merged


def add_roofline(rows: list[dict[str, Any]]) -> None:
    """Roofline for latency rows that lack it, from this run's measured rates."""
    rates_rows = [r["extra_info"] for r in rows if r.get("extra_info", {}).get("kind") == "roofline_rates"]
    if not rates_rows:
        return
    rates_row = rates_rows[0]
    cost = ModelCost(flops_per_image=rates_row["flops_per_image"], parameters=rates_row["parameters"])
    for row in rows:
        info = row.get("extra_info", {})
        if info.get("kind") != "latency" or info.get("roofline") or info.get("precision") not in rates_row["rates"]:
            continue
        info["roofline"] = {**roofline(cost, info["precision"], info["batch_size"], row["stats"]["median"],
                                       rates_row["rates"][info["precision"]]), "source": "ladder"}


# -- targets and summary ------------------------------------------------------------------------


def _rows(merged: dict[str, Any], kind: str, **match: Any) -> list[dict[str, Any]]:
    return [r for r in merged["benchmarks"] if r.get("extra_info", {}).get("kind") == kind
            and all(r["extra_info"].get(k) == v for k, v in match.items())]


def _limit_of_latency(row: dict[str, Any]) -> str:
    roof = row["extra_info"].get("roofline") or {}
    if not roof:
        return "no roofline recorded"
    return (f"{roof['bound']}-bound floor {roof['floor_s'] * 1e6:.0f} us (weights {roof['memory_floor_s'] * 1e6:.0f} us"
            f", compute {roof['compute_floor_s'] * 1e6:.0f} us); reached {roof['percent_of_floor']:.0f}% of it")


def _limit_of_e2e(row: dict[str, Any]) -> str:
    stages = _stages(row)
    slowest = max(stages, key=stages.get)
    parts = ", ".join(f"{k} {v * 1e3:.2f}" for k, v in stages.items())
    return f"stages (ms, synchronized): {parts}; {slowest} dominates"


def _stages(row: dict[str, Any]) -> dict[str, float]:
    """An e2e row's stage medians in pipeline order, without the stages its pipeline lacks."""
    recorded = row["extra_info"]["stages_s"]
    return {stage: recorded[stage] for stage in STAGES if recorded.get(stage) is not None}


def evaluate_targets(merged: dict[str, Any], device: str) -> dict[str, Any]:
    """Each target's best result, whether it is met, by how much, and what limits it."""
    outcomes: dict[str, Any] = {}
    candidates = {
        "batch1_fp16_latency_s": (_rows(merged, "latency", precision="fp16", batch_size=1, device=device),
                                  lambda r: r["stats"]["median"], min, _limit_of_latency),
        "batch256_fp16_images_per_s": (_rows(merged, "latency", precision="fp16", batch_size=256, device=device),
                                       lambda r: 256 / r["stats"]["median"], max, _limit_of_latency),
        "e2e_dog_batch1_s": (_rows(merged, "e2e", batch_size=1, device=device),
                             lambda r: r["stats"]["median"], min, _limit_of_e2e),
    }
    for name, (rows, value_of, best_of, limit_of) in candidates.items():
        target = TARGETS[name]
        if not rows:
            outcomes[name] = {"target": target, "best": None, "met": None, "note": "no result in this run"}
            continue
        best = best_of(rows, key=value_of)
        value = value_of(best)
        met = value <= target if best_of is min else value >= target
        outcomes[name] = {
            "target": target, "best": value, "row": best["name"], "met": met,
            "ratio_to_target": value / target,
            "limit": limit_of(best),
        }
    return outcomes


def _format(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f} img/s" if name.endswith("images_per_s") else f"{value * 1e6:,.0f} us"


def summary_markdown(merged: dict[str, Any] | None, legs: list[dict[str, Any]], targets: dict[str, Any]) -> str:
    lines = ["# Optimization ladder: summary", ""]
    if merged:
        info = merged.get("machine_info", {}).get("perfsuite", {})
        lines += [f"Machine: {info.get('gpu_name') or info.get('cpu_model')}, torch {info.get('torch')}, "
                  f"CUDA {info.get('cuda')}, cuDNN {info.get('cudnn')}, driver {info.get('driver')}.", ""]
    lines += ["## Targets", "", "| target | goal | best | outcome | row | what limits it |",
              "|---|---|---|---|---|---|"]
    for name, outcome in targets.items():
        if outcome.get("best") is None:
            lines.append(f"| {name} | {_format(name, outcome['target'])} | - | not measured | - | {outcome['note']} |")
            continue
        ratio = outcome["ratio_to_target"]
        if outcome["met"]:
            verdict = "met"
        elif name.endswith("images_per_s"):
            verdict = f"missed by {(1 - ratio) * 100:.0f}% ({ratio:.2f}x the goal)"
        else:
            verdict = f"missed by {(ratio - 1) * 100:.0f}% ({ratio:.2f}x the goal)"
        lines.append(f"| {name} | {_format(name, outcome['target'])} | {_format(name, outcome['best'])} | {verdict} "
                     f"| `{outcome['row']}` | {outcome['limit']} |")
    if merged:
        lines += ["", "## Latency", "", "| row | median us | img/s | floor us (bound) | % of floor | parity | "
                  "build s | compile cache |", "|---|---|---|---|---|---|---|---|"]
        for row in sorted(_rows(merged, "latency"), key=lambda r: (r["extra_info"]["precision"],
                                                                    r["extra_info"]["batch_size"], r["name"])):
            info, median = row["extra_info"], row["stats"]["median"]
            roof = info.get("roofline") or {}
            floor = f"{roof['floor_s'] * 1e6:.0f} ({roof['bound']})" if roof else "-"
            percent = f"{roof['percent_of_floor']:.0f}" if roof.get("percent_of_floor") else "-"
            parity = "pass" if (info.get("parity") or {}).get("passed") else "FAIL"
            cache = (info.get("backend_info") or {}).get("compile_cache", "")
            build = info.get("build_s")
            lines.append(f"| `{row['name']}` | {median * 1e6:,.0f} | {info['batch_size'] / median:,.0f} | {floor} | "
                         f"{percent} | {parity} | {'-' if build is None else f'{build:.1f}'} | {cache} |")
        lines += ["", "## End to end (file -> label)", "", "| row | median ms | stages ms (synchronized) | labels |",
                  "|---|---|---|---|"]
        for row in _rows(merged, "e2e"):
            info = row["extra_info"]
            stages = ", ".join(f"{k} {v * 1e3:.2f}" for k, v in _stages(row).items())
            lines.append(f"| `{row['name']}` | {row['stats']['median'] * 1e3:.2f} | {stages} | "
                         f"{', '.join(info['labels'][:2])} |")
        for row in _rows(merged, "e2e_cold_start"):
            info = row["extra_info"]
            context = info.get("cuda_context_s")
            lines.append(f"| `{row['name']}` (cold) | first label at {info['time_to_first_label_s']:.2f} s | "
                         f"imports {info['import_s']:.2f} s, CUDA context "
                         f"{'-' if context is None else f'{context:.2f} s'}, model {info['model_load_s']:.2f} s, "
                         f"runner {info['runner_build_s'] + info['runner_load_s']:.2f} s, first run "
                         f"{info['first_run_s'] * 1e3:.1f} ms vs second {info['second_run_s'] * 1e3:.1f} ms | |")
        compile_rows = _rows(merged, "compile_time")
        if compile_rows:
            lines += ["", "## Compile time (fresh processes)", "", "| row | cold s | warm s |", "|---|---|---|"]
            for row in compile_rows:
                info = row["extra_info"]
                lines.append(f"| `{row['name']}` | {info['cold_compile_s']:.1f} | {info['warm_compile_s']:.1f} |")
        outcomes = merged.get("perfsuite", {}).get("outcomes", [])
        if outcomes:
            lines += ["", "## Skipped or failed", ""]
            lines += [f"- {o['outcome']} `{o['nodeid']}` ({o['ladder_leg']}): {o['reason']}" for o in outcomes]
    lines += ["", "## Legs", "", "| leg | exit | wall s | note |", "|---|---|---|---|"]
    for leg in legs:
        note = leg["skipped"] or ("stopped at the hard limit" if leg["stopped"] else "")
        note = f"{note} (previous run)".strip() if leg.get("previous_run") else note
        exit_code = "-" if leg["exit_code"] is None else leg["exit_code"]
        wall = "-" if leg["wall_s"] is None else f"{leg['wall_s']:.0f}"
        lines.append(f"| {leg['name']} | {exit_code} | {wall} | {note} |")
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, leg_outputs, legs: list[dict[str, Any]], device: str,
                  previous: dict[str, Any] | None = None) -> dict[str, Any]:
    merged = merge(leg_outputs, previous)
    targets = evaluate_targets(merged, device) if merged else {}
    if merged is not None:
        merged["perfsuite_ladder"] = {"legs": legs, "targets": targets, "target_goals": TARGETS}
        write_json_atomic(out / "ladder.json", merged)
    (out / "ladder-summary.md").write_text(summary_markdown(merged, legs, targets))
    return targets


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "ladder-results"),
                        help="output folder (default: $OUT, else ./ladder-results)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--weights", default="auto", help="auto | pretrained | random | PATH (default auto)")
    parser.add_argument("--quick", action="store_true", help="one combination per leg (a smoke test)")
    parser.add_argument("--budget-s", type=float, default=480.0,
                        help="skip a leg whose estimate would end past this many seconds (default 480)")
    parser.add_argument("--hard-limit-s", type=float, default=570.0,
                        help="stop a leg still running this many seconds after the start (default 570)")
    parser.add_argument("--max-time", type=float, default=0.3, help="--benchmark-max-time per benchmark (0.3)")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/perfsuite-ladder-cache"),
                        help="PERFSUITE_CACHE_DIR for the legs (Inductor and ONNX Runtime caches)")
    parser.add_argument("--legs", default=None, help="comma-separated leg names to run (default: all)")
    parser.add_argument("--previous", type=Path, default=None,
                        help="ladder.json of an earlier run on the same GPU model: its rows come first and its "
                             "legs are not run again (a second run for the legs the first one skipped)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    # Each leg's own JSON stays outside --out, so that only the three outputs come back from $OUT.
    work = Path(tempfile.mkdtemp(prefix="perfsuite-ladder-legs-"))
    cuda = args.device.startswith("cuda")
    legs = gpu_legs() if cuda and not args.quick else quick_legs(cuda)
    if args.legs:
        chosen = {name.strip() for name in args.legs.split(",")}
        unknown = chosen - {leg.name for leg in legs}
        if unknown:
            print(f"--legs: unknown {sorted(unknown)}; choose from {[leg.name for leg in legs]}", file=sys.stderr)
            return 2
        legs = [leg for leg in legs if leg.name in chosen]
    previous, records = None, []
    if args.previous:
        try:
            previous = load_benchmark_json(args.previous)
        except PerfsuiteError as exc:
            print(f"--previous: {exc}", file=sys.stderr)
            return 2
        if "perfsuite_ladder" not in previous:
            print(f"--previous {args.previous}: not written by scripts/gpu_ladder.py", file=sys.stderr)
            return 2
        before = previous.get("machine_info", {}).get("perfsuite", {}).get("gpu_name")
        import torch

        now = torch.cuda.get_device_name() if cuda else None
        if before != now:
            print(f"--previous {args.previous}: measured on {before}, this machine has {now}; results of "
                  "different GPUs are not merged", file=sys.stderr)
            return 2
        records = [{**leg, "previous_run": True} for leg in previous["perfsuite_ladder"]["legs"]]
    done_before = {r["name"] for r in records if r["exit_code"] is not None}
    outputs: list[tuple[dict[str, Any], Path]] = []
    with open(args.out / "ladder.log", "a") as log:
        log.write(f"\n##### gpu_ladder {time.strftime('%Y-%m-%d %H:%M:%S')} device={args.device} "
                  f"quick={args.quick} cache={args.cache_dir}\n")
        for leg in legs:
            elapsed = time.perf_counter() - started
            ran = {r["name"] for r in records if r["exit_code"] is not None}
            skipped = None
            if leg.name in done_before:
                log.write(f"===== leg {leg.name}: ran in --previous\n")
                continue
            if leg.after and leg.after not in ran:
                skipped = f"not started: it needs leg {leg.after}, which did not run"
            elif elapsed + leg.estimate_s > args.budget_s:
                skipped = (f"not started: {elapsed:.0f} s elapsed + {leg.estimate_s:.0f} s estimate > budget "
                           f"{args.budget_s:.0f} s")
            if skipped:
                records.append({**dataclasses.asdict(leg), "exit_code": None, "wall_s": None, "stopped": False,
                                "skipped": skipped})
                log.write(f"===== leg {leg.name}: {skipped}\n")
                continue
            json_path = work / f"{leg.name}.json"
            json_path.unlink(missing_ok=True)
            record = run_leg(leg, args, json_path, log, timeout_s=max(args.hard_limit_s - elapsed, 1.0))
            records.append(record)
            outputs.append((record, json_path))
            write_outputs(args.out, outputs, records, args.device, previous)
            print(f"[{time.perf_counter() - started:5.0f} s] leg {leg.name}: exit {record['exit_code']}, "
                  f"{record['wall_s']:.0f} s", flush=True)
    targets = write_outputs(args.out, outputs, records, args.device, previous)
    for name, outcome in targets.items():
        print(f"{name}: best {_format(name, outcome.get('best'))}, goal {_format(name, outcome['target'])}, "
              f"met={outcome.get('met')}")
    print(f"wrote {args.out / 'ladder.json'}, {args.out / 'ladder-summary.md'}, {args.out / 'ladder.log'} "
          f"in {time.perf_counter() - started:.0f} s")
    return 0 if all(r["exit_code"] in (0, None) for r in records if not r.get("previous_run")) else 1


if __name__ == "__main__":
    sys.exit(main())
