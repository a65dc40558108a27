"""The evaluation runner shared by MMEB-V2, UVRB and the synthetic benchmark.

    results = evaluate(embedder, "mmeb_v2", data_root, out)

For each dataset of the registry: read it (readers.py), encode every distinct candidate
once and every query (batched, with progress bars), score by dot product (embeddings are
L2-normalised, so this is cosine similarity), rank (ties in candidate order, metrics.py)
and compute every metric at 1, 5 and 10. A row that could not be used (malformed, or naming an absent file) counts as a missed query:
it scores 0 and the score file lists it. Per dataset it writes, atomically,

    OUT/{modality}/{name}_pred.jsonl   one line a query: top-10 candidate ids and scores, labels
    OUT/{modality}/{name}_score.json   all metrics (+ num_pred, num_data, tied_at_1, ...)

-- the layout of the MMEB-V2 harness's per-dataset files (TIGER-AI-Lab/VLM2Vec `eval.py`),
written score-last so a score file only exists for a finished dataset. Each score file also
records its `fingerprint` (`embedrl.eval.fingerprint`: model, reasoner, T-CoT mode, data). A rerun
skips every dataset whose score file has this run's fingerprint, so an interrupted run resumes where
it stopped; one whose data changed is recomputed (and said so); a folder holding scores of another
model, reasoner or mode is refused (`overwrite=True` recomputes them), so `results.json` never mixes
runs. At the end
`OUT/results.json` holds the run in the MMEB-V2 leaderboard submission format
(TIGER-AI-Lab/VLM2Vec `experiments/report_score_v2.py`): `metadata`, then
`metrics` -> modality -> dataset -> metric dict. Absent datasets are listed in
`metadata.missing` and skipped, not fatal.

T-CoT modes: "none" encodes items as they are; "query" asks the reasoner for the queries'
T-CoTs; "both" also for the candidates (a reasoner is expected to serve targets from its
cache). The reasoner is any object with `generate(items, role="query"|"target") -> list[TCoT]`.

Reranking (`reranker=`, `rerank_k=`; `embedrl.rerank`): each query's top k are reordered before the
metrics; the score file then also holds the first stage's metrics (`first_stage`) and the cost
(`rerank`: seconds per query, and its ratio to the first stage's: query encoding, T-CoT included,
and ranking), the prediction rows the first stage's top ids and the reranker's scores.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from embedrl.core.errors import EmbedrlError
from embedrl.core.io import ensure_dir, read_json, write_json, write_jsonl
from embedrl.core.tcot import TCOT_MODES, mode_covers, tcot_usage, warn_broken
from embedrl.data.evalset import MAX_LISTED, EvalTask, MissingData
from embedrl.data.readers import read_task
from embedrl.data.registry import DatasetSpec, load_registry
from embedrl.eval.fingerprint import (
    check_earlier_scores,
    data_fingerprint,
    earlier_fingerprint,
    run_fingerprint,
)
from embedrl.eval.metrics import (
    DEFAULT_KS,
    main_metric_value,
    mean_metrics,
    query_metrics,
    rank_scores,
)

if TYPE_CHECKING:
    from embedrl.core.items import Item
    from embedrl.core.tcot import TCoT
    from embedrl.models.base import Embedder
    from embedrl.rerank.base import Reranker

logger = logging.getLogger(__name__)

RESULTS_NAME = "results.json"
PRED_TOP = 10  # candidates kept per query in the prediction files
SCORE_CHUNK = 1024  # at most this many query rows scored at a time against a global pool
SCORE_CELLS = 1 << 24  # ... and at most this many query x candidate scores (memory bound)


class Reasoner(Protocol):
    def generate(self, items: Sequence[Item], role: str = "query") -> list[TCoT]: ...


def registry_path(name_or_path: str | os.PathLike) -> Path:
    """A bundled registry by name (`mmeb_v2`, `uvrb`) or a YAML path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    bundled = resources.files("embedrl.eval") / "registries" / f"{name_or_path}.yaml"
    if not bundled.is_file():
        known = sorted(p.name[:-5] for p in (resources.files("embedrl.eval") / "registries").iterdir()
                       if p.name.endswith(".yaml"))
        raise EmbedrlError(f"no registry {name_or_path!r}: give a YAML path or one of {', '.join(known)}")
    return Path(str(bundled))


def _registry_label(registry: str | os.PathLike | Sequence[DatasetSpec]) -> str:
    """How results.json names its registry: a bundled name, an absolute path, or "custom"."""
    if isinstance(registry, (list, tuple)):
        return "custom"
    path = registry_path(registry)
    return str(registry) if path.parent.name == "registries" and str(registry) == path.stem else str(path.resolve())


def load_specs(registry: str | os.PathLike | Sequence[DatasetSpec],
               datasets: Sequence[str] | None = None) -> list[DatasetSpec]:
    specs = list(registry) if isinstance(registry, (list, tuple)) else load_registry(registry_path(registry))
    if datasets:
        by_name = {s.name: s for s in specs}
        unknown = [d for d in datasets if d not in by_name]
        if unknown:
            raise EmbedrlError(f"unknown dataset(s): {', '.join(unknown)} (see the registry for names)")
        specs = [by_name[d] for d in datasets]
    return specs


@dataclass
class RunResult:
    """What `evaluate` did: the leaderboard-format results plus bookkeeping."""

    results: dict[str, Any]
    computed: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    recomputed: dict[str, str] = field(default_factory=dict)  # dataset -> why its earlier scores were stale
    missing: dict[str, str] = field(default_factory=dict)
    timings: dict[str, dict[str, float]] = field(default_factory=dict)
    path: Path | None = None


def score_path(out: Path, spec: DatasetSpec) -> Path:
    return out / spec.modality / f"{spec.name}_score.json"


def pred_path(out: Path, spec: DatasetSpec) -> Path:
    return out / spec.modality / f"{spec.name}_pred.jsonl"


def _tcots(reasoner: Reasoner | None, items: list[Item], role: str) -> list[TCoT] | None:
    if reasoner is None:
        return None
    tcots = list(reasoner.generate(items, role=role))
    if len(tcots) != len(items):
        raise EmbedrlError(f"the reasoner returned {len(tcots)} T-CoTs for {len(items)} {role} items")
    return tcots


def _describe(item: Item) -> str:
    if item.frames:
        return str(Path(str(item.frames[0])).parent)
    if item.image is not None:
        return str(item.image)
    return item.text[:200]


def rank_task(task: EvalTask, q: np.ndarray, c: np.ndarray, top: int) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """Per query: the top candidate indices and their scores, and how many queries tie at rank 1."""
    ranked, scores, tied = [], [], 0
    if task.local_candidates is None:
        chunk = max(1, min(SCORE_CHUNK, SCORE_CELLS // max(1, len(c))))
        for start in range(0, len(q), chunk):
            s = q[start:start + chunk] @ c.T
            order = rank_scores(s, top=top)
            for row, idx in zip(s, order, strict=True):
                ranked.append(idx)
                scores.append(row[idx])
                tied += int(len(idx) > 1 and row[idx[0]] == row[idx[1]])
    else:
        for qi, cands in enumerate(task.local_candidates):
            cands = np.asarray(cands)
            s = c[cands] @ q[qi]
            order = rank_scores(s, top=top)
            ranked.append(cands[order])
            scores.append(s[order])
            tied += int(len(order) > 1 and s[order[0]] == s[order[1]])
    return ranked, scores, tied


def check_tcot_modes(tcot_mode: str, by_set: Mapping[str, str] | None, reasoner: Reasoner | None,
                     set_names: Sequence[str] | None = None) -> None:
    """Refuse an unknown mode, a mode that needs a reasoner without one, and a per-set mode for a
    set the registry does not hold (a typo would otherwise leave the set on the default mode)."""
    for mode in (tcot_mode, *(by_set or {}).values()):
        if mode not in TCOT_MODES:
            raise EmbedrlError(f"T-CoT mode {mode!r} not in {TCOT_MODES}")
        if mode != "none" and reasoner is None:
            raise EmbedrlError(f"T-CoT mode {mode!r} needs a reasoner")
    unknown = sorted(set(by_set or {}) - set(set_names)) if set_names is not None else []
    if unknown:
        raise EmbedrlError(f"per-set T-CoT modes name {unknown}, which this registry does not hold "
                           f"(its sets: {', '.join(set_names)})")


def rerank_task(reranker: Reranker, task: EvalTask, ranked: list[np.ndarray], scores: list[np.ndarray],
                k: int) -> tuple[list[np.ndarray], list[np.ndarray], list]:
    """Each query's top k candidates in the reranker's order (indices, first-stage scores), and what the
    reranker said about each query."""
    from embedrl.rerank.base import rerank_lists

    lists = [list(zip(r.tolist(), s.tolist())) for r, s in zip(ranked, scores)]
    reordered, said = rerank_lists(reranker, task.queries, lists, k, item_of=lambda e: task.candidates[e[0]],
                                   score_of=lambda e: e[1], show_progress=True)
    return ([np.array([i for i, _ in entries], dtype=np.int64) for entries in reordered],
            [np.array([s for _, s in entries]) for entries in reordered], said)


def evaluate_task(embedder: Embedder, task: EvalTask, reasoner: Reasoner | None = None,
                  tcot_mode: str = "none", batch_size: int = 32, ks: Sequence[int] = DEFAULT_KS,
                  modality: str = "", reranker: Reranker | None = None, rerank_k: int = 10
                  ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, float]]:
    """Encode, score and rank one task (its top `rerank_k` reordered by `reranker`): (score dict,
    prediction rows, timings).

    `modality` (the registry's) lets the embedder embed each side as its family's harness does
    (`Embedder.eval_view`: e.g. candidates with the default instruction)."""
    check_tcot_modes(tcot_mode, None, reasoner)
    t0 = time.perf_counter()
    c_tcots = _tcots(reasoner, task.candidates, "target") if mode_covers(tcot_mode, "target") else None
    c = embedder.eval_view(modality, "target").encode(task.candidates, c_tcots, batch_size=batch_size, show_progress=True).numpy()
    t1 = time.perf_counter()
    q_tcots = _tcots(reasoner, task.queries, "query") if mode_covers(tcot_mode, "query") else None
    q = embedder.eval_view(modality, "query").encode(task.queries, q_tcots, batch_size=batch_size, show_progress=True).numpy()
    t2 = time.perf_counter()
    top = max(max(ks), PRED_TOP, rerank_k if reranker is not None else 0)
    ranked, scores, tied = rank_task(task, q.astype(np.float32), c.astype(np.float32), top)
    t3 = time.perf_counter()
    first_stage, said = ranked, None
    if reranker is not None:
        ranked, scores, said = rerank_task(reranker, task, ranked, scores, rerank_k)
    t4 = time.perf_counter()
    missed = [query_metrics([], {}, ks)] * len(task.missed)  # rows that could not be used score 0
    per_query = [query_metrics(list(r), rel, ks) for r, rel in zip(ranked, task.relevance, strict=True)] + missed
    cids = task.candidate_ids
    preds = []
    for n, (qid, r, s, rel) in enumerate(zip(task.query_ids, ranked, scores, task.relevance, strict=True)):
        label = sorted(rel, key=lambda i: (-rel[i], i))
        preds.append({
            "qid": qid,
            "prediction": [cids[i] for i in r[:PRED_TOP]],
            "scores": [round(float(x), 6) for x in s[:PRED_TOP]],
            "label": [cids[i] for i in label],
            "rel_scores": [rel[i] for i in label],
        })
        if said is not None:  # the first stage's top, and the reranker's scores for its top k in that order
            preds[-1].update(first_stage=[cids[i] for i in first_stage[n][:PRED_TOP]],
                             rerank_scores=said[n].scores, rerank_detail=said[n].detail)
    score = mean_metrics(per_query, ks)
    score.update({
        "num_pred": len(preds), "num_data": len(task.queries) + len(task.missed),
        "num_candidates": len(task.candidates), "tied_at_1": tied,
    })
    timings = {"encode_candidates_s": t1 - t0, "encode_queries_s": t2 - t1, "rank_s": t3 - t2,
               "queries_per_s": len(task.queries) / max(t2 - t1, 1e-9),
               "candidates_per_s": len(task.candidates) / max(t1 - t0, 1e-9)}
    if said is not None:
        timings["rerank_s"] = t4 - t3
        first_s = (t3 - t1) / max(1, len(task.queries))  # per query: its T-CoT, encoding and ranking
        score["first_stage"] = mean_metrics([query_metrics(list(r), rel, ks)
                                             for r, rel in zip(first_stage, task.relevance, strict=True)] + missed, ks)
        score["rerank"] = {"name": getattr(reranker, "name", type(reranker).__name__), "k": rerank_k,
                           "seconds_per_query": (t4 - t3) / max(1, len(task.queries)),
                           "first_stage_seconds_per_query": first_s,
                           "cost_ratio": (t4 - t3) / max(1, len(task.queries)) / max(first_s, 1e-9),
                           "reordered": sum(r.order != sorted(r.order) for r in said),
                           "kept": sum(bool(r.detail.get("kept")) for r in said)}
    if task.missed:
        score["missed"] = {"count": len(task.missed), "first": task.missed[:MAX_LISTED]}
    for role, items, tcots in (("query", task.queries, q_tcots), ("target", task.candidates, c_tcots)):
        if tcots is not None:
            score[f"{role}_tcots"] = usage = tcot_usage(items, tcots)
            warn_broken(usage, f"{task.name}: {role} T-CoTs")
    if task.notes:
        score["notes"] = list(task.notes)
    return score, preds, timings


def check_inputs(registry: str | os.PathLike | Sequence[DatasetSpec], data_root: str | os.PathLike,
                 datasets: Sequence[str] | None = None) -> tuple[list[DatasetSpec], list[DatasetSpec]]:
    """(every dataset of the registry, those to run): what a run needs, checked before anything loads or is written."""
    all_specs = load_specs(registry)
    specs = load_specs(all_specs, datasets)
    if not Path(data_root).is_dir():
        raise EmbedrlError(f"data root {data_root} is not a directory")
    return all_specs, specs


def leaderboard_json(specs: Sequence[DatasetSpec], out: Path, metadata: dict[str, Any]) -> dict[str, Any]:
    """Collect the finished score files under `out` into the leaderboard submission format (their
    fingerprints stay in the score files)."""
    metrics: dict[str, dict[str, Any]] = {}
    for spec in specs:
        path = score_path(out, spec)
        if path.is_file():
            score = {k: v for k, v in read_json(path).items() if k != "fingerprint"}
            metrics.setdefault(spec.modality, {})[spec.name] = score
    return {"metadata": metadata, "metrics": metrics}


def evaluate(embedder: Embedder, registry: str | os.PathLike | Sequence[DatasetSpec],
             data_root: str | os.PathLike, out: str | os.PathLike, datasets: Sequence[str] | None = None,
             reasoner: Reasoner | None = None, tcot_mode: str = "none", batch_size: int = 32,
             ks: Sequence[int] = DEFAULT_KS, metadata: dict[str, Any] | None = None,
             tcot_mode_by_set: Mapping[str, str] | None = None, overwrite: bool = False,
             reranker: Reranker | None = None, rerank_k: int = 10) -> RunResult:
    """Evaluate `embedder` on every dataset of `registry` found under `data_root`; resumable.

    `tcot_mode_by_set` gives some datasets a T-CoT mode of their own (e.g. queries raw where the
    reasoner's query T-CoTs mislead: {"RefCOCO": "target"}). `overwrite`: recompute scores in `out`
    that another model, reasoner or T-CoT mode made (refused otherwise; see the module docstring).
    """
    all_specs, specs = check_inputs(registry, data_root, datasets)
    root = Path(data_root)
    by_set = dict(tcot_mode_by_set or {})
    check_tcot_modes(tcot_mode, by_set, reasoner, [s.name for s in all_specs])
    wanted = {s.name: run_fingerprint(embedder, reasoner, by_set.get(s.name, tcot_mode)) for s in all_specs}
    if reranker is not None:  # a reranked run is another run than its first stage alone
        scope = reranker.scope() if hasattr(reranker, "scope") else (type(reranker).__name__,)
        for fingerprint in wanted.values():
            fingerprint["rerank"] = {"scope": list(scope), "k": rerank_k}
    out = ensure_dir(out)
    check_earlier_scores(out, {s.name: (score_path(out, s), pred_path(out, s)) for s in all_specs}, wanted, overwrite)
    run = RunResult(results={})
    for spec in specs:
        try:
            data = data_fingerprint(spec, root)
        except OSError:
            data = None  # absent files: read_task reports the dataset as missing
        if score_path(out, spec).is_file():
            if (earlier_fingerprint(score_path(out, spec)) or {}).get("data") == data:
                logger.info("%s: finished in an earlier run, skipped", spec.name)
                run.resumed.append(spec.name)
                continue
            run.recomputed[spec.name] = "its data changed since it was scored"
            logger.warning("%s: %s; recomputing", spec.name, run.recomputed[spec.name])
        try:
            task = read_task(spec, root)
        except MissingData as e:
            logger.warning("%s (dataset skipped)", e)
            run.missing[spec.name] = str(e)
            continue
        logger.info("%s: %d queries, %d candidates (%s)", spec.name, len(task.queries),
                    len(task.candidates), task.scope)
        score, preds, timings = evaluate_task(embedder, task, reasoner, by_set.get(spec.name, tcot_mode),
                                              batch_size, ks, modality=spec.modality, reranker=reranker,
                                              rerank_k=rerank_k)
        score["fingerprint"] = {**wanted[spec.name], "data": data}
        write_jsonl(pred_path(out, spec), preds)
        write_json(score_path(out, spec), score)  # last: its presence marks the dataset done
        run.computed.append(spec.name)
        run.timings[spec.name] = timings
        logger.info("%s: %s = %.4f", spec.name, spec.metric, main_metric_value(score, spec.metric) or 0.0)
    meta = {
        "model_name": getattr(embedder, "name_or_path", "") or type(embedder).__name__,
        "model_backbone": getattr(embedder, "backend", ""),
        "embedding_dimension": embedder.dim,
        "data_source": "Self-Reported",
        "report_generated_date": _dt.datetime.now().isoformat(timespec="seconds"),
        "registry": _registry_label(registry),
        "tcot_mode": tcot_mode,
        **({"tcot_mode_by_set": by_set} if by_set else {}),
        **({"rerank": {"name": reranker.name, "k": rerank_k}} if reranker is not None else {}),
        "main_metrics": {s.name: s.metric for s in all_specs},
        "categories": {s.name: s.category for s in all_specs},
        "missing": run.missing,
        "timings": {name: {k: round(v, 3) for k, v in t.items()} for name, t in run.timings.items()},
        **(metadata or {}),
    }
    run.results = leaderboard_json(all_specs, out, meta)
    run.path = out / RESULTS_NAME
    write_json(run.path, run.results)
    return run


def quick_eval(embedder: Embedder, data: str | os.PathLike, datasets: Sequence[str] | None = None,
               reasoner: Reasoner | None = None, tcot_mode: str = "none", batch_size: int = 64,
               max_queries: int | None = None, tcot_mode_by_set: Mapping[str, str] | None = None) -> dict[str, float]:
    """Hit@1 (in percent) per set of `data/registry.yaml`, plus their mean as "overall"; writes nothing.

    `max_queries` scores only each set's first queries (local sets keep just their candidates);
    `tcot_mode_by_set` as in `evaluate`.
    """
    return quick_eval_hits(embedder, data, datasets, reasoner, tcot_mode, batch_size, max_queries,
                           tcot_mode_by_set)[0]


def quick_eval_hits(embedder: Embedder, data: str | os.PathLike, datasets: Sequence[str] | None = None,
                    reasoner: Reasoner | None = None, tcot_mode: str = "none", batch_size: int = 64,
                    max_queries: int | None = None, tcot_mode_by_set: Mapping[str, str] | None = None
                    ) -> tuple[dict[str, float], dict[str, list[int]], dict[str, dict[str, dict[str, Any]]]]:
    """`quick_eval`'s scores; per set, each query's Hit@1 (0/1, in query order): what paired
    comparisons of two runs on the same queries need; and per set and role, how many T-CoTs were
    written and usable (`tcot_usage`; empty without a reasoner)."""
    data = Path(data)
    registry = data / "registry.yaml"
    if not registry.is_file():
        raise EmbedrlError(f"{data} has no registry.yaml (make one with `embedrl data synth --out {data}`)")
    scores: dict[str, float] = {}
    hits: dict[str, list[int]] = {}
    usage: dict[str, dict[str, dict[str, Any]]] = {}
    all_specs = load_specs(registry)
    by_set = dict(tcot_mode_by_set or {})
    check_tcot_modes(tcot_mode, by_set, reasoner, [s.name for s in all_specs])
    for spec in load_specs(all_specs, datasets):
        task = read_task(spec, data)
        task = task.head(max_queries) if max_queries else task
        score, preds, _ = evaluate_task(embedder, task, reasoner, by_set.get(spec.name, tcot_mode), batch_size,
                                        ks=(1,), modality=spec.modality)
        scores[spec.name] = 100 * score["hit@1"]
        hits[spec.name] = [int(query_metrics(p["prediction"], dict(zip(p["label"], p["rel_scores"])), (1,))["hit@1"])
                           for p in preds]
        usage[spec.name] = {role: score[f"{role}_tcots"] for role in ("query", "target") if f"{role}_tcots" in score}
    scores["overall"] = sum(scores.values()) / len(scores)
    return scores, hits, usage
