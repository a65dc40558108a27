"""`embedrl bench faults`: kill -9 and a full disk against the long jobs, then the rerun; what survived.

Each case runs a real command three ways, each in a fresh process: uninterrupted (the reference);
faulted, in a fresh output folder; then rerun there without the fault. The table says what the
fault left (and whether that was usable or refused clearly), what the rerun did, and whether its
result equals the reference (bit for bit: index ids and vectors, evaluation scores, weights).

Faults come from outside, never from hooks in the library:
  - kill -9: the command is SIGKILLed as soon as a file that marks progress appears (a shard's
    metadata, a score file, a checkpoint, a stage's output), so it dies wherever it then is;
  - a full disk: the output folder is a small tmpfs (half the reference output's size) mounted in a
    private mount namespace (`unshare --map-root-user --mount`, no privileges needed); the rerun gets
    the tmpfs grown to 64 MiB. Where user namespaces are not allowed, a per-file size limit
    (RLIMIT_FSIZE: writes fail with EFBIG instead of ENOSPC) stands in, and the table says so.

Cases run on the tiny presets and the synthetic benchmark (made in `--work`); `train-eg-rl` and
`quickstart` take minutes and run only when named.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from embedrl.core.errors import EmbedrlError

logger = logging.getLogger(__name__)

FAST_CASES = ("index-build", "index-add", "eval-mmeb", "train-embedder", "disk-full-index-build",
              "disk-full-eval-mmeb")
SLOW_CASES = ("train-eg-rl", "quickstart")
CASES = FAST_CASES + SLOW_CASES


@dataclass
class Row:
    case: str
    fault: str
    after_fault: str
    rerun: str
    equals_uninterrupted: str
    seconds: float = 0.0


class World:
    """The presets and data cases share, and how to run `embedrl` in a fresh process."""

    def __init__(self, work: Path):
        from embedrl.lab.presets import make_preset
        from embedrl.lab.synth.benchmark import generate_benchmark

        self.work = work
        self.synth = work / "synth"
        if not (self.synth / "meta.json").is_file():
            generate_benchmark(self.synth, seed=0, size="tiny")
        self.clip = work / "tiny-clip"
        if not (self.clip / ".embedrl-preset.json").is_file():
            make_preset("tiny-clip", self.clip)
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
            str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")]))}

    def reasoner(self) -> Path:
        from embedrl.lab.presets import make_preset

        path = self.work / "tiny-reasoner"
        if not (path / ".embedrl-preset.json").is_file():
            make_preset("tiny-reasoner", path)
        return path

    def command(self, *args: Any) -> list[str]:
        return [sys.executable, "-m", "embedrl", "-q", *map(str, args)]

    def run(self, args: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
        return subprocess.run(args, capture_output=True, text=True, env=self.env, **kwargs)

    def kill_when(self, args: list[str], done: Callable[[], bool], timeout: float = 1800) -> bool:
        """Run `args` and SIGKILL it once `done()`; False when it finished before that."""
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env)
        deadline = time.time() + timeout
        while not done():
            if proc.poll() is not None:
                return False
            if time.time() > deadline:
                proc.kill()
                raise EmbedrlError(f"bench faults: {' '.join(args[3:6])} ran past {timeout:.0f} s")
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True


def _ok(proc: subprocess.CompletedProcess, what: str) -> None:
    if proc.returncode != 0:
        raise EmbedrlError(f"bench faults: {what} failed ({proc.returncode}): {proc.stderr.strip()[-400:]}")


def _same(a: bool) -> str:
    return "yes" if a else "NO"


# ---------------------------------------------------------------- what a result is, to compare

def _index_contents(folder: Path) -> tuple[list[str], Any]:
    from embedrl.index.search import Retriever

    r = Retriever.from_dir(folder, load_model=False)
    try:
        return r.store.ids(), r.index.reconstruct_n(0, r.index.ntotal)
    finally:
        r.close()


def _same_index(a: Path, b: Path) -> bool:
    ids_a, x_a = _index_contents(a)
    ids_b, x_b = _index_contents(b)
    return ids_a == ids_b and x_a.shape == x_b.shape and bool((x_a == x_b).all())


def _metrics(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())["metrics"]


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return {f.name: load_file(str(f)) for f in sorted(folder.glob("*.safetensors"))}


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return bool(wa) and wa.keys() == wb.keys() and all(
        wa[f].keys() == wb[f].keys() and all((wa[f][k] == wb[f][k]).all() for k in wa[f]) for f in wa)


def _index_state(folder: Path) -> str:
    """What a killed build left: complete shards, and whether the folder loads as an index."""
    from embedrl.index.build import load_manifest
    from embedrl.index.shards import shard_done

    shards = sum(shard_done(folder, int(p.stem[len("shard_"):])) for p in (folder / "shards").glob("shard_*.json"))
    try:
        manifest = load_manifest(folder)
        return f"{shards} shard(s) kept; loads: {manifest['count']} items"
    except EmbedrlError:
        return f"{shards} shard(s) kept; no manifest: refused as an unfinished build"


# ---------------------------------------------------------------- the cases

def _index_build(w: World, root: Path) -> Row:
    _ok(w.run(_build_args(w, root / "reference")), "the uninterrupted build")
    shards = len(list((root / "reference" / "shards").glob("shard_*.json")))
    out = root / "killed"
    killed = w.kill_when(_build_args(w, out), lambda: (out / "shards" / "shard_00003.json").exists())
    state = _index_state(out)
    _ok(w.run(_build_args(w, out)), "the rerun")
    fault = f"kill -9 once shard 4 of {shards} is written" if killed else "kill -9 (finished first)"
    return Row("index build", fault, state,
               "resumed: encoded the missing shards", _same(_same_index(out, root / "reference")))


def _halves(w: World, root: Path) -> tuple[Path, Path]:
    """The benchmark's corpus in two JSONL files, media paths made absolute."""
    rows = [json.loads(line) for line in (w.synth / "corpus.jsonl").read_text().splitlines()]
    for row in rows:
        if row.get("image"):
            row["image"] = str(w.synth / row["image"])
        if row.get("frames"):
            row["frames"] = [str(w.synth / f) for f in row["frames"]]
    half = len(rows) // 2
    paths = root / "first.jsonl", root / "second.jsonl"
    for path, part in zip(paths, (rows[:half], rows[half:])):
        path.write_text("".join(json.dumps(r) + "\n" for r in part))
    return paths


def _index_add(w: World, root: Path) -> Row:
    first, second = _halves(w, root)
    base, reference, out = root / "base", root / "reference", root / "killed"
    _ok(w.run(w.command("index", "build", "--model", w.clip, "--corpus", first, "--out", base)), "the base build")
    for folder in (reference, out):
        shutil.copytree(base, folder)
    _ok(w.run(w.command("index", "add", reference, "--corpus", second)), "the uninterrupted add")
    killed = w.kill_when(w.command("index", "add", out, "--corpus", second),
                         lambda: any((out / "shards").glob("added_*.npy")))
    state = _index_state(out)
    _ok(w.run(w.command("index", "add", out, "--corpus", second)), "the rerun")
    return Row("index add", "kill -9 once the added vectors are on disk" if killed else "kill -9 (finished first)",
               state.replace("shard(s) kept; ", "base shard(s); ").replace("loads:", "the previous index loads:"),
               "added again from the start", _same(_same_index(out, reference)))


def _eval_mmeb(w: World, root: Path) -> Row:
    _ok(w.run(_eval_args(w, root / "reference")), "the uninterrupted evaluation")
    out = root / "killed"
    killed = w.kill_when(_eval_args(w, out), lambda: len(list(out.glob("*/*_score.json"))) >= 2)
    kept = len(list(out.glob("*/*_score.json")))
    rerun = w.run(_eval_args(w, out))
    _ok(rerun, "the rerun")
    said = next((line for line in rerun.stdout.splitlines() if line.startswith("computed")), "").split(" -> ")[0]
    return Row("eval mmeb", "kill -9 after the 2nd of 7 datasets" if killed else "kill -9 (finished first)",
               f"{kept} finished dataset(s) kept", said, _same(_metrics(out) == _metrics(root / "reference")))


def _resumed_training(w: World, root: Path, name: str, args: Callable[[Path], list[str]], checkpoint: int,
                      steps: int) -> Row:
    """A training killed once checkpoint-`checkpoint` is complete, then resumed with --resume."""
    _ok(w.run(args(root / "reference")), f"the uninterrupted {name}")
    out = root / "killed"
    killed = w.kill_when(args(out), lambda: (out / f"checkpoint-{checkpoint}" / "trainer_state.json").exists())
    kept = sorted(p.name for p in out.glob("checkpoint-*") if (p / "trainer_state.json").exists())
    _ok(w.run([*args(out), "--resume"]), f"the resumed {name}")
    fault = f"kill -9 after checkpoint-{checkpoint} of {steps} steps" if killed else "kill -9 (finished first)"
    return Row(name, fault, f"complete checkpoints: {', '.join(kept) or 'none'}",
               "--resume: from the last complete checkpoint", _same(_same_weights(out, root / "reference")))


def _train_embedder(w: World, root: Path) -> Row:
    def args(out: Path) -> list[str]:
        return w.command("train", "embedder", "--config", _recipe("embedder_tiny_clip.yaml"), f"model={w.clip}",
                         f"train_data={w.synth / 'train' / 'pairs.jsonl'}", f"data_root={w.synth}",
                         f"output_dir={out}", "max_steps=12", "save_steps=4", "save_total_limit=5",
                         "per_device_train_batch_size=8", "logging_steps=100")

    return _resumed_training(w, root, "train embedder", args, checkpoint=4, steps=12)


def _train_eg_rl(w: World, root: Path) -> Row:
    reasoner = w.reasoner()

    def args(out: Path) -> list[str]:
        return w.command("train", "eg-rl", f"reasoner={reasoner}", f"embedder={w.clip}", f"data_root={w.synth}",
                         f"train_data={w.synth / 'train' / 'pairs.jsonl'}", f"output_dir={out}", "max_steps=4",
                         "save_steps=1", "save_total_limit=10", "per_device_train_batch_size=4", "num_generations=2",
                         "max_completion_length=16", "use_cpu=true", "logging_steps=1", "max_train_pairs=8")

    return _resumed_training(w, root, "train eg-rl", args, checkpoint=2, steps=4)


def _quickstart(w: World, root: Path) -> Row:
    def args(out: Path) -> list[str]:
        return w.command("quickstart", "--out", out, "--size", "tiny")

    _ok(w.run(args(root / "reference")), "the uninterrupted quickstart")
    out = root / "killed"
    killed = w.kill_when(args(out), lambda: (out / "embedder" / "embedrl.json").exists())
    stages = len(json.loads((out / "timings.json").read_text())) if (out / "timings.json").is_file() else 0
    _ok(w.run(args(out)), "the rerun")
    same = json.loads((out / "report.json").read_text())["ablation"] == \
        json.loads((root / "reference" / "report.json").read_text())["ablation"]
    return Row("quickstart (tiny)", "kill -9 once the embedder stage is done" if killed else "kill -9 (finished first)",
               f"{stages} finished stage(s) kept", "skipped the finished stages",
               _same(same and _same_index(out / "index", root / "reference" / "index")))


def _recipe(name: str) -> Path:
    from embedrl.lab.quickstart import RECIPES

    return RECIPES / name


# ---------------------------------------------------------------- a full disk

NAMESPACE_RUNNER = """
import json, subprocess, sys
folder, size, first, second = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", folder], check=True)
one = subprocess.run(first, capture_output=True, text=True)
subprocess.run(["mount", "-o", "remount,size=64m", folder], check=True)
two = subprocess.run(second, capture_output=True, text=True)
subprocess.run(["cp", "-r", folder + "/out", sys.argv[5]], check=True)
print(json.dumps({"first": [one.returncode, one.stderr], "second": [two.returncode, two.stderr]}))
"""


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _full_disk(w: World, root: Path, args: Callable[[Path], list[str]]) -> tuple[str, int, str, int, str, Path]:
    """Run `args(out)` with `out` on a full disk, then again with room; (how, first rc, first stderr, second rc,
    second stderr, where the result was copied)."""
    reference = root / "reference"
    _ok(w.run(args(reference)), "the uninterrupted run")
    size = max(64 * 1024, _size(reference) // 2 // 4096 * 4096)
    result = root / "faulted"
    if shutil.which("unshare"):
        mount = root / "mnt"
        mount.mkdir(exist_ok=True)
        proc = w.run(["unshare", "--map-root-user", "--mount", sys.executable, "-c", NAMESPACE_RUNNER, str(mount),
                      str(size), json.dumps(args(mount / "out")), json.dumps(args(mount / "out")), str(result)])
        if proc.returncode == 0:
            runs = json.loads(proc.stdout.strip().splitlines()[-1])
            return (f"full disk ({size // 1024} KiB tmpfs)", *runs["first"], *runs["second"], result)
        logger.warning("no private mount namespace here (%s); a per-file size limit stands in",
                       proc.stderr.strip()[-200:])

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size // 8, size // 8))

    first = subprocess.run(args(result), capture_output=True, text=True, env=w.env, preexec_fn=limit)
    second = w.run(args(result))
    return (f"file size limit ({size // 8 // 1024} KiB, EFBIG)", first.returncode, first.stderr, second.returncode,
            second.stderr, result)


def _first_line_error(rc: int, stderr: str) -> str:
    """How a run on a full disk ended: a one-line error naming the file (warnings may precede it), or not."""
    errors = [line for line in stderr.splitlines() if line.startswith("embedrl: error: ")]
    if rc == 1 and len(errors) == 1 and "Traceback" not in stderr:
        if errors[0].startswith("embedrl: error: cannot write "):
            path, _, why = errors[0][len("embedrl: error: cannot write "):].partition(": ")
            return f"one-line error: cannot write {Path(path).name}: {why.split(' (')[0]}"
        return f"one-line error: {errors[0][len('embedrl: error: '):][:70]}"
    if rc == 0:
        return "finished (the disk was big enough)"
    return f"exit {rc}: {'traceback' if 'Traceback' in stderr else stderr.strip()[-70:]}"


def _disk_full(name: str, args: Callable[[World, Path], list[str]], same: Callable[[Path, Path], bool]):
    """A full-disk case: `args(world, out)` the command, `same(result, reference)` the comparison."""
    def run(w: World, root: Path) -> Row:
        how, rc, err, rc2, err2, result = _full_disk(w, root, lambda out: args(w, out))
        if rc2 != 0:
            raise EmbedrlError(f"bench faults: the rerun with room failed: {err2.strip()[-400:]}")
        return Row(name, how, _first_line_error(rc, err), "completed with room", _same(same(result, root / "reference")))
    return run


def _build_args(w: World, out: Path) -> list[str]:
    return w.command("index", "build", "--model", w.clip, "--corpus", w.synth / "corpus.jsonl", "--shard-size", 64,
                     "--out", out)


def _eval_args(w: World, out: Path) -> list[str]:
    return w.command("eval", "mmeb", "--model", w.clip, "--data-root", w.synth, "--registry",
                     w.synth / "registry.yaml", "--no-report", "--out", out)


RUNNERS: dict[str, Callable[[World, Path], Row]] = {
    "index-build": _index_build, "index-add": _index_add, "eval-mmeb": _eval_mmeb, "train-embedder": _train_embedder,
    "train-eg-rl": _train_eg_rl, "quickstart": _quickstart,
    "disk-full-index-build": _disk_full("index build", _build_args, _same_index),
    "disk-full-eval-mmeb": _disk_full("eval mmeb", _eval_args, lambda a, b: _metrics(a) == _metrics(b)),
}


def run_fault_bench(work: str | os.PathLike, cases: list[str]) -> list[Row]:
    unknown = sorted(set(cases) - set(RUNNERS))
    if unknown:
        raise EmbedrlError(f"unknown case(s) {unknown}; choose from {', '.join(CASES)}")
    work = Path(work)
    world = World(work)
    rows = []
    for name in cases:
        root = work / "cases" / name
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        logger.info("bench faults: %s ...", name)
        start = time.perf_counter()
        row = RUNNERS[name](world, root)
        row.seconds = round(time.perf_counter() - start, 1)
        rows.append(row)
    return rows


def format_rows(rows: list[Row]) -> str:
    head = ["case", "fault", "after the fault", "rerun", "equals uninterrupted", "s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append(f"| {r.case} | {r.fault} | {r.after_fault} | {r.rerun} | {r.equals_uninterrupted} | {r.seconds} |")
    return "\n".join(lines)


def rows_json(rows: list[Row]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]
