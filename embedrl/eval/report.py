"""Reports: aggregate leaderboard-format result JSONs the way the MMEB-V2 leaderboard does.

    md, summaries = report(["runs/tiny", "other_model.json"], plot_path="report.png")

Input: any JSON in the MMEB-V2 leaderboard submission format (`metadata`, then `metrics` ->
modality -> dataset -> metric dict), whoever wrote it -- `embedrl eval mmeb`, the
official harness's `experiments/report_score_v2.py`, or a file from the leaderboard -- or an
output folder of ours (its `results.json`, else its per-dataset score files).

Aggregation (TIGER-AI-Lab/VLM2Vec `experiments/report_score_v2.py`; the leaderboard's
published overall scores equal the mean over all datasets, e.g. VLM2Vec-V2.0 2B: image 64.85
over 36, video 34.85 over 18, visdoc 66.34 over 24 -> overall 58.39, not the 55.35 a mean of
the three modality scores would give):
  - each dataset contributes its main metric (the registry's `metric`: hit@1 for image and
    video, ndcg_linear@5 for visdoc);
  - category and modality scores are means over their datasets;
  - the overall score is the mean over *all* datasets, not over modalities;
  - a score that misses datasets is marked with `*` and its count is shown.
Scores are printed x100, so results must hold fractions (0-1). A value outside 0-1 (a 0-100
scale), NaN, a dataset without its main metric, and a dataset name the registry does not know
(misspelled, or of another benchmark) are left out of every mean and named, each once, in a
warning and in the report's "Problems" section. Dataset names also match their registry `aliases` (the leaderboard's
`ViDoSeek-page-fixed`, `MMLongBench-page-fixed`). UVRB entries carry `abilities` tags, which
add ability-level means.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from embedrl.core.errors import EmbedrlError
from embedrl.core.io import read_json
from embedrl.data.registry import MODALITIES, DatasetSpec
from embedrl.eval.metrics import main_metric_value
from embedrl.eval.mmeb import RESULTS_NAME, load_specs

logger = logging.getLogger(__name__)

MODALITY_LABELS = {"image": "Image", "video": "Video", "visdoc": "VisDoc"}


@dataclass
class Score:
    """A mean over `n` of the `total` datasets of a group (None when none is present)."""

    value: float | None
    n: int
    total: int

    @property
    def complete(self) -> bool:
        return self.n == self.total

    def cell(self) -> str:
        if self.value is None:
            return "–"
        return f"{100 * self.value:.2f}" + ("" if self.complete else f"* ({self.n}/{self.total})")


@dataclass
class Summary:
    name: str
    datasets: dict[str, float | None]
    overall: Score
    modalities: dict[str, Score] = field(default_factory=dict)
    categories: dict[str, Score] = field(default_factory=dict)
    abilities: dict[str, Score] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def load_result(path: str | os.PathLike) -> dict[str, Any]:
    """A leaderboard-format dict from a JSON file or an output folder of `embedrl eval`."""
    path = Path(path)
    if path.is_dir():
        if (path / RESULTS_NAME).is_file():
            return read_json(path / RESULTS_NAME)
        metrics: dict[str, dict[str, Any]] = {}
        for modality in MODALITIES:
            for f in sorted((path / modality).glob("*_score.json")):
                metrics.setdefault(modality, {})[f.name[:-len("_score.json")]] = read_json(f)
        if not metrics:
            raise EmbedrlError(f"{path}: no {RESULTS_NAME} and no */*_score.json files")
        return {"metadata": {"model_name": path.name}, "metrics": metrics}
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise EmbedrlError(f"{path}: not a leaderboard-format result (expected a 'metrics' mapping)")
    if not isinstance(data.get("metadata", {}), dict):
        raise EmbedrlError(f"{path}: 'metadata' must be a mapping (model_name, ...), not "
                           f"{type(data['metadata']).__name__}")
    return data


def _mean(values: list[float | None], total: int) -> Score:
    present = [v for v in values if v is not None]
    return Score(sum(present) / len(present) if present else None, len(present), total)


def _names(spec: DatasetSpec) -> list[str]:
    return [spec.name] + [str(a) for a in spec.extra.get("aliases") or []]


def _lookup(metrics: dict[str, Any], spec: DatasetSpec, problems: list[str]) -> float | None:
    """The dataset's main metric, or None (absent; or unusable, said in `problems`)."""
    modalities = [spec.modality] + [m for m in metrics if m != spec.modality]
    for modality in modalities:
        block = metrics.get(modality)
        if not isinstance(block, dict):
            continue
        for name in _names(spec):
            if name not in block:
                continue
            scores = block[name]
            if isinstance(scores, str):  # the leaderboard's "FILE_N/A": absent
                return None
            if not isinstance(scores, dict):
                problems.append(f"{name}: expected a mapping of metrics, got {type(scores).__name__}; left out")
                return None
            value = main_metric_value(scores, spec.metric)
            if value is None:
                has = ", ".join(sorted(scores)[:6]) or "nothing"
                problems.append(f"{name}: no number for its main metric {spec.metric!r} (it has: {has}); left out")
            elif math.isnan(value):
                problems.append(f"{name}: {spec.metric} is NaN; left out")
                return None
            elif not 0.0 <= value <= 1.0:
                problems.append(f"{name}: {spec.metric} = {value:g} is outside 0-1 (a 0-100 scale? results hold "
                                "fractions; divide by 100); left out")
                return None
            return value
    return None


def _unknown_datasets(metrics: dict[str, Any], specs: Sequence[DatasetSpec]) -> list[str]:
    """Datasets in a result that the registry does not name (misspelled, or of another benchmark)."""
    known = {n for s in specs for n in _names(s)}
    problems = []
    for modality, block in metrics.items():
        if not isinstance(block, dict):
            problems.append(f"metrics.{modality}: expected a mapping of datasets, got {type(block).__name__}")
            continue
        for name in block:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                problems.append(f"{name}: not a dataset of this registry{hint}; left out")
    return problems


def summarize(result: dict[str, Any], specs: Sequence[DatasetSpec], name: str | None = None) -> Summary:
    metrics = result.get("metrics") or {}
    problems = _unknown_datasets(metrics, specs)
    values = {s.name: _lookup(metrics, s, problems) for s in specs}
    summary = Summary(name=name or str((result.get("metadata") or {}).get("model_name") or "result"),
                      datasets=values, overall=_mean(list(values.values()), len(specs)), problems=problems)
    groups: dict[str, dict[str, list[str]]] = {"modalities": {}, "categories": {}, "abilities": {}}
    for s in specs:
        groups["modalities"].setdefault(s.modality, []).append(s.name)
        groups["categories"].setdefault(s.category, []).append(s.name)
        for ability in s.extra.get("abilities") or []:
            groups["abilities"].setdefault(str(ability), []).append(s.name)
    for kind, by_group in groups.items():
        setattr(summary, kind, {g: _mean([values[n] for n in names], len(names)) for g, names in by_group.items()})
    return summary


def load_baselines(benchmark: str) -> list[dict[str, Any]]:
    """Published numbers kept as data (embedrl/eval/baselines.yaml), with their sources."""
    text = (resources.files("embedrl.eval") / "baselines.yaml").read_text(encoding="utf-8")
    return list((yaml.safe_load(text) or {}).get(benchmark) or [])


def _benchmark_of(registry: str | os.PathLike) -> str:
    return Path(str(registry)).stem


def _cols(specs: Sequence[DatasetSpec]) -> list[str]:
    return list(dict.fromkeys(s.modality for s in specs))


def markdown(summaries: Sequence[Summary], specs: Sequence[DatasetSpec],
             baselines: Sequence[dict[str, Any]] = (), per_dataset: bool = False) -> str:
    modalities = _cols(specs)
    head = ["Model", "Overall"] + ([MODALITY_LABELS.get(m, m) for m in modalities] if len(modalities) > 1 else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summaries:
        row = [s.name, s.overall.cell()] + ([s.modalities[m].cell() for m in modalities] if len(modalities) > 1 else [])
        lines.append("| " + " | ".join(row) + " |")
    for b in baselines:
        scores = b.get("scores") or {}
        cells = [scores.get("overall")] + ([scores.get(m) for m in modalities] if len(modalities) > 1 else [])
        lines.append("| " + " | ".join([f"{b['name']} †"] + ["–" if v is None else f"{float(v):.2f}" for v in cells]) + " |")
    out = ["## Overall and per modality", "", *lines, ""]
    if baselines:
        out.append("† published numbers (embedrl/eval/baselines.yaml):")
        out += [f"  - {b['name']}: {b.get('source', 'no source')}" for b in baselines]
        out.append("")
    cats = list(dict.fromkeys(s.category for s in specs))
    out += ["## Per category", "", "| Model | " + " | ".join(cats) + " |", "|" + "---|" * (len(cats) + 1)]
    out += ["| " + " | ".join([s.name] + [s.categories[c].cell() for c in cats]) + " |" for s in summaries]
    out.append("")
    abilities = list(dict.fromkeys(a for s in summaries for a in s.abilities))
    if abilities:
        out += ["## Per ability", "", "| Model | " + " | ".join(abilities) + " |", "|" + "---|" * (len(abilities) + 1)]
        out += ["| " + " | ".join([s.name] + [s.abilities[a].cell() for a in abilities]) + " |" for s in summaries]
        out.append("")
    if per_dataset:
        out += ["## Per dataset (main metric)", "", "| Dataset | Metric | " + " | ".join(s.name for s in summaries) + " |",
                "|" + "---|" * (len(summaries) + 2)]
        for spec in specs:
            vals = ["–" if s.datasets[spec.name] is None else f"{100 * s.datasets[spec.name]:.2f}" for s in summaries]
            out.append("| " + " | ".join([spec.name, spec.metric] + vals) + " |")
        out.append("")
    if any(not s.overall.complete for s in summaries):
        out.append("`*` partial: mean over the datasets present (n/N).")
        for s in summaries:
            absent = [name for name, value in s.datasets.items() if value is None]
            if absent and len(absent) < len(s.datasets):
                more = f" (+{len(absent) - 8} more)" if len(absent) > 8 else ""
                out.append(f"  - {s.name} lacks: {', '.join(absent[:8])}{more}")
    if any(s.problems for s in summaries):
        out += ["", "## Problems", ""] + [f"- {s.name}: {p}" for s in summaries for p in s.problems]
    return "\n".join(out).rstrip() + "\n"


def plot(summaries: Sequence[Summary], specs: Sequence[DatasetSpec], baselines: Sequence[dict[str, Any]],
         path: str | os.PathLike) -> Path:
    """Grouped bar chart: overall and per-modality (or per-category for one modality) scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modalities = _cols(specs)
    if len(modalities) > 1:
        groups = ["overall"] + modalities
        labels = ["Overall"] + [MODALITY_LABELS.get(m, m) for m in modalities]
    else:
        groups = ["overall"] + list(dict.fromkeys(s.category for s in specs))
        labels = ["Overall"] + groups[1:]
    series: list[tuple[str, list[float]]] = []
    for s in summaries:
        table = {"overall": s.overall, **s.modalities, **s.categories}
        series.append((s.name, [100 * (table[g].value or 0.0) for g in groups]))
    for b in baselines:
        scores = b.get("scores") or {}
        if any(scores.get(g) is not None for g in groups):
            series.append((f"{b['name']} (published)", [float(scores.get(g) or 0.0) for g in groups]))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(groups) * len(series) + 2), 4.5))
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series):
        ax.bar([g + i * width for g in range(len(groups))], values, width, label=name)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))])
    ax.set_xticklabels(labels)
    ax.set_ylabel("score (x100)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=min(3, len(series)), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def report(paths: Sequence[str | os.PathLike], registry: str | os.PathLike | None = None,
           with_baselines: bool = True, plot_path: str | os.PathLike | None = None,
           per_dataset: bool = False) -> tuple[str, list[Summary]]:
    """Markdown report (and optionally a bar chart) for one or more results."""
    if not paths:
        raise EmbedrlError("give at least one result (an output folder or a leaderboard JSON)")
    results = [load_result(p) for p in paths]
    if registry is None:
        registry = (results[0].get("metadata") or {}).get("registry") or "mmeb_v2"
        if registry == "custom":
            registry = "mmeb_v2"
    try:
        specs = load_specs(registry)
    except EmbedrlError as e:
        raise EmbedrlError(f"{e}; pass --registry for these results") from None
    names = []
    for p, r in zip(paths, results, strict=True):
        name = str((r.get("metadata") or {}).get("model_name") or Path(p).stem)
        names.append(name if name not in names else f"{name} ({Path(p).name})")
    summaries = [summarize(r, specs, n) for r, n in zip(results, names, strict=True)]
    for s in summaries:
        for problem in s.problems:
            logger.warning("%s: %s", s.name, problem)
        if s.overall.n == 0:
            logger.warning("%s: no dataset of registry %s found in the result", s.name, registry)
    baselines = load_baselines(_benchmark_of(registry)) if with_baselines else []
    md = markdown(summaries, specs, baselines, per_dataset)
    if plot_path is not None:
        plot(summaries, specs, baselines, plot_path)
    return md, summaries
