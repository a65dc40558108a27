"""Seeds in parallel: each seed's stages in a process of its own, stopped with their parent."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

from embedrl.core.errors import EmbedrlError
from embedrl.core.io import write_json
from embedrl.lab.ablation.config import AblationConfig

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def sigterm_requests_stop():
    """Within the block, SIGTERM (`kill`, a job scheduler's stop) sets the yielded event instead of
    ending the process, so the loop that polls it stops the seed workers with their parent rather than
    leaving orphans that a rerun would start a second time over the same files. A flag, not an exception
    raised from the handler: one raised while `Popen` forks would lose the new worker's handle."""
    import signal
    import threading

    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_seeds_in_workers(config: AblationConfig, seeds: list[int]) -> None:
    """Each seed's stages in a process of its own, `config.workers` at a time, logging to
    OUT/seedN/ablation.log; the stages they share must be done already. The parent then finds
    every stage done and only reads the results."""
    import dataclasses
    import os
    import subprocess
    import sys

    from tqdm.auto import tqdm

    out = Path(config.out)
    config_file = out / "ablation_config.json"
    write_json(config_file, {**dataclasses.asdict(config), "workers": 1})
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = str(max(1, cores // config.workers))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    logger.info("seeds %s in %d processes at %s thread(s) each; logs: %s", seeds, config.workers, threads,
                out / "seed*/ablation.log")
    waiting, running, failed = list(seeds), {}, []
    try:
        with sigterm_requests_stop() as stop, tqdm(total=len(seeds), desc="seeds", unit="seed") as bar:
            while waiting or running:
                if stop.is_set():
                    raise KeyboardInterrupt("SIGTERM")
                while waiting and len(running) < config.workers:
                    seed = waiting.pop(0)
                    log = out / f"seed{seed}" / "ablation.log"
                    log.parent.mkdir(parents=True, exist_ok=True)
                    with open(log, "a", encoding="utf-8") as handle:
                        running[seed] = (subprocess.Popen(
                            [sys.executable, "-m", "embedrl.lab.ablation.run", str(config_file), str(seed)],
                            stdout=handle, stderr=subprocess.STDOUT, env=env), log)
                for seed, (process, log) in list(running.items()):
                    if process.poll() is not None:
                        del running[seed]
                        bar.update()
                        if process.returncode:
                            failed.append(f"seed {seed} (exit {process.returncode}; see {log})")
                time.sleep(1)
    finally:  # interrupted: stop the workers too; their finished stages are kept and resume
        for process, _ in running.values():
            process.terminate()
            process.wait()
    if failed:
        raise EmbedrlError(f"ablation failed for {', '.join(failed)}; fix the cause and rerun: finished stages "
                           f"are kept and skipped")
