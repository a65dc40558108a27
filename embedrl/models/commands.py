"""`embedrl presets ...`: make and list the tiny offline presets (see embedrl/models/presets.py)."""

from __future__ import annotations

import time

from embedrl.cli import add_group


def register(sub) -> None:
    presets = add_group(sub, "presets", "tiny offline models of the real architecture classes")

    make = presets.add_parser("make", help="build a preset with random weights and save it to a directory")
    make.add_argument("name", help="preset name (see `embedrl presets list`)")
    make.add_argument("--out", required=True, help="output directory (new, empty, or an earlier preset)")
    make.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives identical files")
    make.set_defaults(func=cmd_make)

    listing = presets.add_parser("list", help="list the presets")
    listing.set_defaults(func=cmd_list)


def cmd_make(args) -> int:
    from embedrl.models.presets import describe, make_preset

    start = time.perf_counter()
    out = make_preset(args.name, args.out, seed=args.seed)
    info = describe(out)
    print(f"{args.name} -> {out}  ({info['parameters'] / 1e6:.2f}M parameters, "
          f"{info['size_mb']:.1f} MB, {time.perf_counter() - start:.1f} s)")
    return 0


def cmd_list(args) -> int:
    from embedrl.models.presets import PRESETS

    width = max(map(len, PRESETS))
    for name, description in PRESETS.items():
        print(f"{name:<{width}}  {description}")
    return 0
