"""``perfsuite cache list`` and ``perfsuite cache clear``: the engine cache (see ``perfsuite.engine_cache``)."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    parser = subparsers.add_parser("cache", help="list or clear the engine cache")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="cached engines: backend, model, precision, shapes, size, build time")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=run_list)
    clearing = actions.add_parser("clear", help="delete every cached engine, lock, timing cache and the build log")
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
            parts.append(f"{name}[{shape.get('min', ['?'])[0]}..{shape.get('max', ['?'])[0]}]")
        else:
            parts.append(f"{name}{'x'.join(map(str, shape))}")
    return ",".join(parts)


def run_list(args: argparse.Namespace) -> int:
    cache = _cache(args)
    entries = list(cache.entries())
    if args.json:
        print(json.dumps({"root": str(cache.root), "entries": [
            {"name": e.name, "path": str(e.path), "size": e.size, "problem": e.problem, "metadata": e.metadata}
            for e in entries]}, indent=2))
        return 0
    total = sum(e.size for e in entries)
    print(f"engine cache {cache.root}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, "
          f"{total / 1e6:.1f} MB")
    for entry in entries:
        if entry.metadata is None:
            print(f"  {entry.name}  {entry.size / 1e6:9.1f} MB  unusable: {entry.problem}")
            continue
        key = entry.metadata.get("key", {})
        target = key.get("target", {})
        target_text = (f"{target.get('gpu')} sm{target.get('compute_capability')}" if "gpu" in target
                       else f"cc {target.get('compute_capabilities')}")
        print(f"  {key.get('backend', '?'):<14} {key.get('model', '?'):<12} {key.get('precision', '?'):<5} "
              f"{_shapes_text(key.get('shapes', {})):<22} {entry.size / 1e6:9.1f} MB  "
              f"built in {entry.metadata.get('build_s', 0):.2f} s  {entry.metadata.get('created', '?')}  "
              f"{key.get('library_version', '?')}  {target_text}")
    return 0


def run_clear(args: argparse.Namespace) -> int:
    cache = _cache(args)
    count, freed = cache.clear()
    print(f"engine cache {cache.root}: removed {count} entr{'y' if count == 1 else 'ies'}, {freed / 1e6:.1f} MB freed")
    return 0
