"""What an EG-RL run's logs say about its rewards: which one steers the advantage, which one the
run gave up, and the reward curves. `RewardDiagnostics` runs them as a `TrainerCallback` at the
end of training; the lab's ablation draws its variants with the same `plot_reward_curves`."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from embedrl.core.io import write_json

logger = logging.getLogger(__name__)


def reward_spread(log_history: Sequence[dict[str, Any]], weights: dict[str, float]) -> dict[str, float]:
    """Each weighted reward's spread over rollouts: its weight x its logged std, averaged over the logs.

    GRPO standardises the total within each prompt's group, so a weight means nothing on its
    own: what steers training is how far each component moves the total compared with the
    others. A cosine margin that varies by 0.01 at weight 0.8 is drowned by a 0/1 format reward
    at weight 0.3, however the weights read.
    """
    return {name: sum(v for _, v in points) / len(points)
            for name, points in weighted_spread_by_step(log_history, weights).items()}


def weighted_spread_by_step(log_history: Sequence[dict[str, Any]],
                            weights: dict[str, float]) -> dict[str, list[tuple[int, float]]]:
    """(step, weight x logged std) for each reward that was logged; rows without it are skipped."""
    out = {}
    for name, weight in weights.items():
        key = f"rewards/{name}/std"
        points = [(row.get("step", 0), abs(weight) * row[key]) for row in log_history if key in row]
        if points:
            out[name] = points
    return out


def check_reward_balance(spread: dict[str, float], ratio: float = 0.2) -> list[str]:
    """Warnings for components that barely (or never) moved the total against the strongest one."""
    if not spread:
        return []
    top, top_spread = max(spread.items(), key=lambda kv: kv[1])
    warnings = []
    for name, value in spread.items():
        if value == 0:
            warnings.append(f"the {name} reward never varied over rollouts: it gave no training signal")
        elif value < ratio * top_spread:
            warnings.append(f"the {name} reward's weighted spread is {value:.3g} against {top}'s {top_spread:.3g}: "
                            f"it barely steers training; raise {name}_weight (x{top_spread / value:.2g} would "
                            f"match {top}) or lower {top}_weight")
    return warnings


def check_reward_drift(log_history: Sequence[dict[str, Any]], weights: dict[str, float],
                       fall: float = 0.5, entropy_rise: float = 1.3) -> list[str]:
    """Warnings for a run that traded one reward for another, or drifted off its start.

    Compares the mean of each logged value over the first and the last quarter of the logged
    steps. A reward that ends below `fall` times its start was given up, most often for the
    others (seen here: the format reward climbing to 0.9 while the outcome reward fell to 0);
    an entropy that ends `entropy_rise` times its start is a policy leaving what SFT taught it.
    Either way the run's end is worse for retrieval than its reward curve reads."""
    rows = [row for row in log_history if "reward" in row]
    if len(rows) < 4:
        return []
    quarter = len(rows) // 4

    def means(key: str) -> tuple[float, float] | None:
        first = [row[key] for row in rows[:quarter] if key in row]
        last = [row[key] for row in rows[-quarter:] if key in row]
        return (sum(first) / len(first), sum(last) / len(last)) if first and last else None

    trends = {name: got for name in weights if (got := means(f"rewards/{name}/mean"))}
    warnings = []
    for name, (start, end) in trends.items():
        if start > 0 and end < fall * start:
            others = ", ".join(f"{n} {a:.3g} to {b:.3g}" for n, (a, b) in trends.items() if n != name and (a or b))
            warnings.append(f"the {name} reward fell from {start:.3g} to {end:.3g} over the run"
                            f"{f' ({others})' if others else ''}: the policy gave it up; raise {name}_weight "
                            f"or lower learning_rate, and compare the checkpoints")
    entropy = means("entropy")
    if entropy and entropy[0] > 0 and entropy[1] > entropy_rise * entropy[0]:
        warnings.append(f"the policy's entropy rose from {entropy[0]:.3g} to {entropy[1]:.3g}: it is drifting "
                        f"away from its start; lower learning_rate or set beta > 0 (a KL anchor)")
    return warnings


def plot_reward_curves(runs: Sequence[dict[str, Any]] | Mapping[str, Sequence[dict[str, Any]]], path: str | Path,
                       weights: dict[str, float] | None = None) -> Path | None:
    """Each reward component (and the total) over training steps, one column per run, as a PNG.

    `runs`: one run's log history, or {title: log history} (e.g. an ablation's variants). With
    `weights`, a second row shows each component's weighted spread, the share of the advantage
    it steers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = dict(runs) if isinstance(runs, Mapping) else {"EG-RL rewards": runs}
    runs = {title: [r for r in history if "step" in r and "reward" in r] for title, history in runs.items()}
    runs = {title: rows for title, rows in runs.items() if rows}
    if not runs:
        return None
    n_rows = 2 if weights else 1
    fig, axes = plt.subplots(n_rows, len(runs), figsize=(5.5 * len(runs), 3.8 * n_rows), squeeze=False)
    for col, (title, rows) in enumerate(runs.items()):
        names = sorted({k for row in rows for k in row if k.startswith("rewards/") and k.endswith("/mean")})
        colours = {key.split("/")[1]: f"C{i + 1}" for i, key in enumerate(names)}  # same colour in both rows
        ax = axes[0][col]
        for key in ["reward", *names]:
            points = [(r["step"], r[key]) for r in rows if key in r]
            label = "total" if key == "reward" else key.split("/")[1]
            ax.plot(*zip(*points), label=label, linewidth=2 if key == "reward" else 1, color=colours.get(label, "C0"))
        ax.set_xlabel("step")
        ax.set_ylabel("mean reward")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        if weights:
            ax = axes[1][col]
            for name, points in weighted_spread_by_step(rows, weights).items():
                ax.plot(*zip(*points), label=f"{name} (x{weights[name]:g})", color=colours.get(name))
            ax.set_xlabel("step")
            ax.set_ylabel("weight x std over rollouts")
            ax.set_title("What steers the advantage", fontsize=10)
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


class RewardDiagnostics(TrainerCallback):
    """At the end of training (main process): the log history as `log_history.json`, each reward's
    weighted spread, warnings for a reward the others drown or the run gave up, and
    `reward_curves.png`, all in the run's output folder."""

    def __init__(self, weights: dict[str, float]):
        self.weights = weights

    def on_train_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        out = Path(args.output_dir)
        history = state.log_history
        write_json(out / "log_history.json", history)
        spread = reward_spread(history, self.weights)
        logger.info("weighted reward spread (weight x std over rollouts): %s",
                    ", ".join(f"{name} {value:.3g}" for name, value in spread.items()))
        for warning in check_reward_balance(spread) + check_reward_drift(history, self.weights):
            logger.warning(warning)
        plot_reward_curves(history, out / "reward_curves.png", self.weights)
