"""Fault injection for resume tests: crash a long job at a chosen point from outside the library.

In-process, `crash_before_shard(monkeypatch, i)` makes an index build raise `SimulatedCrash`
when it is about to write shard i. For a real kill, run a command through this file:

    python tests/faults.py --kill-after-vectors 2 -- index build --model ... --out ...

runs `embedrl index build ...` in this process and SIGKILLs it once shard 2's vectors are on disk
but before the metadata that marks the shard complete: the worst moment to die.

On Ray, `ray_worker_faults` is a `worker_process_setup_hook`: started with
`$EMBEDRL_TEST_FAULTS` naming a folder, a worker that is about to write the shard named in that
folder's `kill_shard` file writes its vectors, leaves `fired` there and is SIGKILLed, once.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path


class SimulatedCrash(RuntimeError):
    """Raised by an injected fault."""


def crash_before_shard(monkeypatch, shard: int) -> None:
    import embedrl.index.shards as shards

    write = shards.write_shard

    def crashing(out, i, *args, **kwargs):
        if i == shard:
            raise SimulatedCrash(f"simulated crash at shard {i}")
        return write(out, i, *args, **kwargs)

    monkeypatch.setattr(shards, "write_shard", crashing)


def _vectors_then_sigkill(out, i: int, encoded) -> None:
    """Shard i's vectors on disk, its metadata not: the worst moment to die."""
    import numpy as np

    from embedrl.core.io import atomic_write
    from embedrl.index.shards import shard_path

    with atomic_write(shard_path(out, i, ".npy"), "wb") as f:
        np.save(f, np.ascontiguousarray(encoded.vectors, dtype=np.float32))
    os.kill(os.getpid(), signal.SIGKILL)


def kill_after_vectors(shard: int) -> None:
    """Patch the shard writer: shard `shard`'s vectors are written, then the process is SIGKILLed."""
    import embedrl.index.shards as shards

    write = shards.write_shard

    def killing(out, i, encoded, start, stop):
        if i == shard:
            _vectors_then_sigkill(out, i, encoded)
        return write(out, i, encoded, start, stop)

    shards.write_shard = killing


def ray_worker_faults() -> None:
    """Ray worker setup hook: the Ray engine's shard writer kills its worker as $EMBEDRL_TEST_FAULTS says."""
    folder = os.environ.get("EMBEDRL_TEST_FAULTS")
    if not folder:
        return
    import embedrl.index.ray_engine as engine

    write = engine.write_shard

    def killing_once(out, i, encoded, start, stop):
        kill, fired = Path(folder, "kill_shard"), Path(folder, "fired")
        if kill.is_file() and int(kill.read_text()) == i and not fired.exists():
            fired.write_text(str(os.getpid()))
            _vectors_then_sigkill(out, i, encoded)
        return write(out, i, encoded, start, stop)

    engine.write_shard = killing_once


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kill-after-vectors", type=int, metavar="SHARD")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the embedrl command line")
    args = parser.parse_args(argv)
    if args.kill_after_vectors is not None:
        kill_after_vectors(args.kill_after_vectors)
    from embedrl.cli import main as embedrl_main

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return embedrl_main(command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
