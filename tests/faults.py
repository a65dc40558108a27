"""Fault injection for resume tests: crash a long job at a chosen point from outside the library.

In-process (pytest's `monkeypatch`):
  - `crash_before_shard(monkeypatch, i)`: an index build raises `SimulatedCrash` when it is about
    to write shard i;
  - `crash_before_replace(monkeypatch, "*_score.json", n)`: raise when the n-th file matching the
    pattern is about to be renamed into place (its content is complete in a temp file beside it);
  - `disk_full(monkeypatch, folder)`: every fsync of a file under `folder` fails with ENOSPC, as
    on a full disk (every embedrl write syncs before its rename).

From outside, `kill_when(command, path)` starts a command and SIGKILLs it once `path` exists (a
checkpoint written, say): it dies wherever it then is, as under a real kill.

For a kill at an exact point, run a command through this file:

    python tests/faults.py --kill-after-vectors 2 -- index build --model ... --out ...
    python tests/faults.py --kill-before-replace 'manifest.json' -- index add ...
    python tests/faults.py --kill-before-replace '*_score.json@2' -- eval mmeb ...

runs `embedrl ...` in this process and SIGKILLs it at that point: once shard 2's vectors are on
disk but before the metadata that marks the shard complete, or just before the (n-th) rename of
a matching file into place -- the worst moments to die.

On Ray, `ray_worker_faults` is a `worker_process_setup_hook`: started with
`$EMBEDRL_TEST_FAULTS` naming a folder, a worker that is about to write the shard named in that
folder's `kill_shard` file writes its vectors, leaves `fired` there and is SIGKILLed, once.
"""

from __future__ import annotations

import argparse
import errno
import fnmatch
import os
import signal
import subprocess
import sys
import time
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


def _before_replace(pattern: str, nth: int, fault) -> object:
    """An `os.replace` that calls `fault(dst)` instead of the `nth` rename onto a name matching `pattern`."""
    replace = os.replace
    seen = 0

    def patched(src, dst, *args, **kwargs):
        nonlocal seen
        if fnmatch.fnmatch(Path(dst).name, pattern):
            seen += 1
            if seen == nth:
                fault(dst)
        return replace(src, dst, *args, **kwargs)

    return patched


def crash_before_replace(monkeypatch, pattern: str, nth: int = 1) -> None:
    def crash(dst):
        raise SimulatedCrash(f"simulated crash before writing {dst}")

    monkeypatch.setattr(os, "replace", _before_replace(pattern, nth, crash))


def kill_before_replace(spec: str) -> None:
    """`PATTERN[@N]`: SIGKILL this process instead of the N-th (default first) rename onto a matching name."""
    pattern, _, nth = spec.partition("@")
    os.replace = _before_replace(pattern, int(nth or 1), lambda dst: os.kill(os.getpid(), signal.SIGKILL))


def disk_full(monkeypatch, folder: str | os.PathLike) -> None:
    """Writes under `folder` fail as on a full disk: their fsync raises ENOSPC."""
    fsync, folder = os.fsync, os.path.realpath(folder)

    def full(fd):
        if os.path.realpath(f"/proc/self/fd/{fd}").startswith(folder + os.sep):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return fsync(fd)

    monkeypatch.setattr(os, "fsync", full)


def kill_when(command: list[str], path: str | os.PathLike, timeout: float = 300, **popen) -> int:
    """Run `command`, SIGKILL it as soon as `path` exists; returns its exit status (-9 when killed)."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **popen)
    deadline = time.time() + timeout
    while not Path(path).exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise AssertionError(f"{' '.join(map(str, command))} ended (or timed out) before {path} appeared")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    return proc.wait()


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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kill-after-vectors", type=int, metavar="SHARD")
    parser.add_argument("--kill-before-replace", metavar="PATTERN[@N]")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the embedrl command line")
    args = parser.parse_args(argv)
    if args.kill_after_vectors is not None:
        kill_after_vectors(args.kill_after_vectors)
    if args.kill_before_replace:
        kill_before_replace(args.kill_before_replace)
    from embedrl.cli import main as embedrl_main

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return embedrl_main(command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
