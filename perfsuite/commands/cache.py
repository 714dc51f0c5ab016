"""``perfsuite cache list`` and ``perfsuite cache clear``: the engine cache (see ``perfsuite.engine_cache``).

``list`` verifies every artifact (its metadata against the schema, its size and sha256) and shows
ONNX exports, engines, temporary files left by an interrupted write, and metadata without its
artifact; it exits 1 when any of them is unusable or orphaned.
"""

from __future__ import annotations

import argparse
import json

#: shown at the end of ``--help``
EXAMPLES = """\
examples:
  perfsuite cache list            # every ONNX export and engine, verified
  perfsuite cache list --json
  perfsuite cache clear
"""

def register(subparsers) -> None:
    parser = subparsers.add_parser("cache", help="list (and verify) or clear the engine cache")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="ONNX exports and engines: what, size, whether each verifies; "
                                              "orphaned temporary files")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=run_list)
    clearing = actions.add_parser("clear", help="delete every artifact, temporary file, lock, timing cache and the "
                                                "build log")
    clearing.set_defaults(func=run_clear)
    for sub in (listing, clearing):
        sub.add_argument("--cache-dir", default=None,
                         help="engine cache folder (default: $PERFSUITE_CACHE_DIR or [tool.perfsuite] cache_dir, "
                              "then /engines)")


def _cache(args: argparse.Namespace):
    from perfsuite.engine_cache import EngineCache

    return EngineCache(args.cache_dir)


def _shapes_text(shapes: dict) -> str:
    parts = []
    for name, shape in shapes.items():
        if isinstance(shape, dict):
            parts.append(f"{name}[{shape['min'][0]}..{shape['max'][0]}]")
        else:
            parts.append(f"{name}{'x'.join(map(str, shape))}")
    return ",".join(parts)


def _describe(metadata: dict) -> str:
    """What a verified entry is: backend, model, precision, shapes, how long making it took, versions, target."""
    key = metadata["key"]
    target = key["target"]
    target_text = (f"  {target['gpu']} sm{target['compute_capability']}" if "gpu" in target else
                   f"  cc {target['compute_capabilities']}" if "compute_capabilities" in target else "")
    made = "exported" if key["kind"] == "onnx" else "built"
    return (f"{key['backend']:<14} {key['model']:<12} {key['precision']:<5} {_shapes_text(key['shapes']):<22} "
            f"{made} in {metadata['build_s']:.2f} s  {metadata['created']}  {key['library_version']}{target_text}")


def run_list(args: argparse.Namespace) -> int:
    from perfsuite.errors import InputError

    cache = _cache(args)
    problem = cache.root_problem()
    if problem:  # a file where the folder should be: every build would fail
        raise InputError(f"engine cache {cache.root}: {problem}")
    entries = list(cache.entries())
    unusable = [e for e in entries if e.problem is not None and not e.problem.startswith("being written")]
    if args.json:
        print(json.dumps({"root": str(cache.root), "entries": [
            {"path": str(e.path), "kind": e.kind, "size": e.size, "verified": e.problem is None,
             "problem": e.problem, "metadata": e.metadata} for e in entries]}, indent=2))
        return 1 if unusable else 0
    artifacts = [e for e in entries if e.kind in ("engine", "onnx")]
    print(f"engine cache {cache.root}: {sum(e.kind == 'onnx' for e in artifacts)} ONNX export(s), "
          f"{sum(e.kind == 'engine' for e in artifacts)} engine(s), {sum(e.size for e in entries) / 1e6:.1f} MB"
          + (f"; {len(unusable)} unusable or orphaned file(s)" if unusable else ""))
    for entry in entries:
        state = "ok" if entry.problem is None else "BAD" if entry in unusable else "busy"
        size = f"{entry.size / 1e6:9.1f} MB"
        what = _describe(entry.metadata) if entry.problem is None else entry.problem
        print(f"  {state:<4} {entry.kind:<9} {size}  {entry.path.relative_to(cache.root)}: {what}")
    return 1 if unusable else 0


def run_clear(args: argparse.Namespace) -> int:
    cache = _cache(args)
    count, freed = cache.clear()
    print(f"engine cache {cache.root}: removed {count} artifact{'' if count == 1 else 's'}, {freed / 1e6:.1f} MB freed")
    return 0
