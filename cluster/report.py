"""``orrery report``: plots and one static HTML page that compare runs and their seeds after the fact.

    page, notes = write_report([Path("runs/seed0"), Path("runs/seed1")], out=Path("reports/cartpole"))

Reads what ``orrery train`` leaves in each RUN_DIR (``config.yaml``, ``metrics.jsonl``, ``summary.json``,
``eval/open_loop.png`` and ``.gif``) and writes ``OUT/report.html`` with its pictures in ``OUT/report/``,
``OUT/results.md`` (the evaluations against PlaNet's) and ``OUT/time.md`` (where each process's time went).
Image paths are relative, so the folder can be copied or served as it is. What a stopped run lacks (an
evaluation, learner losses, a summary) is left out with a note on the page rather than failing the report.
The figures are drawn on matplotlib's Agg canvas (no display, no pyplot state).
"""

from __future__ import annotations

import html
import json
import math
import re
import shutil
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence
from urllib.parse import quote

import numpy as np
import yaml

from cluster.profile import duration, time_profile, time_table, wall_seconds
from common.envs.tasks import PLANET_BUDGET_ENV_STEPS, planet_reference

ASSETS = "report"  # OUT/report/: the pictures the page shows
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]  # matplotlib's tab10: one per run, everywhere
THROUGHPUT = [("env_steps", "env steps / s"), ("learner/updates", "learner updates / s"),
              ("replay/samples", "replay samples / s (B x L batches)"),
              ("replay/inserts", "replay inserts / s (episodes)")]  # (counter in metrics.jsonl, panel title)


class ReportError(ValueError):
    """A report that cannot be made (a path that is no run, several runs and no --out); the message says which."""


class Part(NamedTuple):
    """One block of the page: pictures under one caption, and notes on what had to be left out."""

    images: list[Path]
    caption: str
    notes: list[str]


@dataclass
class Run:
    """One run directory as read back: who it is and every metrics.jsonl record, in file order."""

    name: str  # unique within one report; names the run's files there
    path: Path
    task: str
    seed: int | None
    records: list[dict]
    summary: dict | None  # summary.json; None for a run that stopped early (or still runs)
    bad_lines: int  # metrics.jsonl lines that are not records, e.g. the last one cut off by a crash

    def columns(self, *keys: str) -> list[np.ndarray]:
        """One float array per key, over the records that carry every one of ``keys``."""
        rows = [[record[key] for key in keys] for record in self.records if all(key in record for key in keys)]
        return list(np.asarray(rows, float).reshape(-1, len(keys)).T)

    def last(self, key: str) -> dict | None:
        """The last record that carries ``key``."""
        return next((record for record in reversed(self.records) if key in record), None)


def load_run(path: Path, name: str | None = None) -> Run:
    """Read one RUN_DIR; a path without a metrics.jsonl with records in it is a ReportError naming it."""
    path = Path(path)
    if not path.is_dir():
        raise ReportError(f"{path}: no such directory")
    metrics = path / "metrics.jsonl"
    if not metrics.is_file():
        raise ReportError(f"{path}: no metrics.jsonl there; is it a run directory (made by orrery train)?")
    records, bad_lines = [], 0
    for line in filter(str.strip, metrics.read_text().splitlines()):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict) and "time" in record and "env_steps" in record:
            records.append(record)
        else:
            bad_lines += 1
    if not records:
        raise ReportError(f"{metrics}: no metrics records in it")
    config = (yaml.safe_load((path / "config.yaml").read_text()) if (path / "config.yaml").is_file() else None) or {}
    summary = json.loads((path / "summary.json").read_text()) if (path / "summary.json").is_file() else None
    return Run(name=name or path.resolve().name, path=path, task=config.get("env", {}).get("task", "unknown task"),
               seed=config.get("train", {}).get("seed"), records=records, summary=summary, bad_lines=bad_lines)


def write_report(run_dirs: Sequence[Path], out: Path | None = None) -> tuple[Path, list[str]]:
    """Figures and ``report.html`` for ``run_dirs`` in ``out`` (default: the run's own folder, if one).

    Returns the page and the notes on what was left out.
    """
    if not run_dirs:
        raise ReportError("name at least one RUN_DIR")
    if out is None and len(run_dirs) > 1:
        raise ReportError(f"{len(run_dirs)} run directories: say where the report goes with --out DIR")
    bases = [Path(path).resolve().name for path in run_dirs]  # folders of one name (a/run, b/run): run, run-2
    names = [base if base not in bases[:i] else f"{base}-{bases[:i].count(base) + 1}" for i, base in enumerate(bases)]
    runs = [load_run(path, name) for path, name in zip(run_dirs, names)]
    out = Path(out if out is not None else run_dirs[0])
    (out / ASSETS).mkdir(parents=True, exist_ok=True)
    colours = {run.name: COLOURS[i % len(COLOURS)] for i, run in enumerate(runs)}
    notes = [f"{run.name}: skipped {run.bad_lines} metrics.jsonl line(s) that are not records"
             for run in runs if run.bad_lines]
    body = [f'<p class="note">{html.escape(note)}</p>' for note in notes]
    curves = []
    for task in dict.fromkeys(run.task for run in runs):
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", task)
        curves.append(plot_learning_curves(task, [r for r in runs if r.task == task], colours,
                                           out / ASSETS / f"curves-{slug}.png"))
    sections = [("Learning curves", curves),
                ("Losses", [plot_losses(runs, colours, out / ASSETS / "losses.png")]),
                ("Throughput", [plot_throughput(runs, colours, out / ASSETS / "throughput.png")]),
                ("Open-loop predictions", [copy_open_loop(run, out / ASSETS) for run in runs])]
    for title, parts in sections:
        body.append(f"<h2>{html.escape(title)}</h2>")
        for part in parts:
            if part.images:
                tags = "".join(_img(path, out) for path in part.images)
                body.append(f"<figure>{tags}<figcaption>{part.caption}</figcaption></figure>")
            body += [f'<p class="note">{html.escape(note)}</p>' for note in part.notes]
            notes += part.notes
    body += ["<h2>Where the time went</h2>", _time_html(runs)]
    (out / "results.md").write_text(results_table(runs))
    (out / "time.md").write_text(time_table({run.name: run.records for run in runs}))
    page = out / "report.html"
    page.write_text(_PAGE.substitute(
        title=html.escape(f"Orrery report: {', '.join(dict.fromkeys(run.task for run in runs))}"),
        made=time.strftime("%Y-%m-%d %H:%M"), count=len(runs), table=_table(runs, colours), body="\n".join(body)))
    return page, notes


# ---------------------------------------------------------------- curves as numbers

def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` values (fewer at the start): (N,) -> (N,)."""
    sums = np.cumsum(np.concatenate([[0.0], values]))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def rate(times: np.ndarray, counter: np.ndarray, window_s: float) -> tuple[np.ndarray, np.ndarray]:
    """A counter's growth per second over at least the trailing ``window_s`` seconds: (time, per second).

    Starts one full window into the run. Drops (a learner restored from an older checkpoint) count as
    zero, not as negative rates.
    """
    starts = np.maximum(np.searchsorted(times, times - window_s, side="right") - 1, 0)  # last record a window back
    valid = times - times[0] >= window_s
    elapsed = times[valid] - times[starts[valid]]
    return times[valid], np.maximum(counter[valid] - counter[starts[valid]], 0) / elapsed


def last_per_x(x: np.ndarray, *ys: np.ndarray) -> list[np.ndarray]:
    """Sorted by x, the last value logged at each x (metrics repeat between learner reports)."""
    if not len(x):
        return [x, *ys]
    order = np.argsort(x, kind="stable")
    keep = np.append(x[order][1:] != x[order][:-1], True)
    return [x[order][keep]] + [y[order][keep] for y in ys]


def seed_band(curves: list[tuple[np.ndarray, np.ndarray]], points: int = 100):
    """(grid, mean, std) across curves interpolated onto the x range all of them cover; None below 2 curves."""
    usable = [(x, y) for x, y in curves if len(x) >= 2]
    if len(usable) < 2:
        return None
    low, high = max(x[0] for x, _ in usable), min(x[-1] for x, _ in usable)
    if high <= low:
        return None
    grid = np.linspace(low, high, points)
    values = np.stack([np.interp(grid, x, y) for x, y in usable])  # (runs, points)
    return grid, values.mean(axis=0), values.std(axis=0)


# ---------------------------------------------------------------- figures

def plot_learning_curves(task: str, runs: list[Run], colours: dict[str, str], path: Path) -> Part:
    """Evaluation and training return vs env steps for the runs of one task."""
    notes = [f"{run.name}: no evaluation in metrics.jsonl yet (it stopped before its first one)"
             for run in runs if run.last("eval/return_mean") is None]
    figure = _figure(12, 4.2)
    evaluation, training = figure.subplots(1, 2)
    curves = []
    for run in runs:
        columns = run.columns("env_steps", "eval/return_mean", "eval/return_std", "eval/random_return_mean")
        steps, mean, std, random_mean = last_per_x(*columns)
        if len(steps):
            _line(evaluation, steps, mean, colours[run.name], run.name)
            if len(runs) == 1:  # one run: the band is the spread over its evaluation episodes
                evaluation.fill_between(steps, mean - std, mean + std, color=colours[run.name], alpha=0.2, lw=0)
            curves.append((steps, mean, random_mean))
    _mean_band(evaluation, [(steps, mean) for steps, mean, _ in curves])
    reference = planet_reference(task)
    if curves:
        random_mean = np.mean([r.mean() for _, _, r in curves])
        evaluation.axhline(random_mean, color="grey", ls="--", lw=1.2, label=f"random policy ({random_mean:.1f})")
        if reference is not None:
            evaluation.plot([PLANET_BUDGET_ENV_STEPS], [reference], marker="*", ms=13, color="black", ls="none",
                            label=f"PlaNet at 100 episodes ({reference:g})")
        evaluation.legend(fontsize="small")
    _finish(evaluation, "evaluation return (no exploration noise)", "env steps", "return", bool(curves))
    smoothed = []
    for run in runs:
        steps, returns = run.columns("env_steps", "actor/return")
        if len(steps):
            training.plot(steps, returns, color=colours[run.name], alpha=0.25, lw=0.8)
            smoothed.append((steps, smooth(returns, max(1, len(returns) // 20))))
            _line(training, *smoothed[-1], colours[run.name], run.name)
    _mean_band(training, smoothed)
    _finish(training, "training episode return (smoothed; raw faint)", "env steps", "return", bool(smoothed))
    if not curves and not smoothed:
        return Part([], "", notes + [f"{task}: no episodes finished yet; no learning curves"])
    figure.suptitle(task)
    figure.savefig(path, dpi=100)
    star = ", star: PlaNet's return after 100 episodes (100k env steps)" if reference is not None and curves else ""
    spread = ("mean ± std across seeds (black, grey band) over the env steps all seeds reached; thin lines: "
              "each seed" if len(runs) > 1 else "band: ± std over the evaluation episodes")
    return Part([path], f"<b>{html.escape(task)}</b>: return vs env steps. Left: evaluation episodes planned "
                f"without exploration noise, dashed: a random policy{star}. Right: the actors' training episodes. {spread}.",
                notes)


def plot_losses(runs: list[Run], colours: dict[str, str], path: Path) -> Part:
    """One panel per learner loss term vs learner updates, one line per run."""
    keys = sorted({key for run in runs for record in run.records for key in record
                   if key.startswith("learner/") and (key.endswith("_loss") or key == "learner/kl")},
                  key=lambda key: (key == "learner/total_loss", key))  # total last
    overshooting = any(run.last("learner/overshooting_kl_d1") for run in runs)
    notes = [f"{run.name}: no learner losses in metrics.jsonl yet" for run in runs
             if run.last("learner/total_loss") is None]
    if not keys:
        return Part([], "", ["no learner losses in any run yet (the learner reports them after its first updates)"])
    panels = len(keys) + overshooting
    width = min(3, panels)
    figure = _figure(4.2 * width, 3.2 * math.ceil(panels / width))
    axes = np.atleast_1d(figure.subplots(math.ceil(panels / width), width)).ravel()
    for ax, key in zip(axes, keys):
        values = []
        for run in runs:
            updates, value = last_per_x(*run.columns("learner/updates", key))
            _line(ax, updates, value, colours[run.name], run.name)
            values.append(value)
        values = np.concatenate(values)
        if len(values) and values.min() > 0 and values.max() / values.min() > 30:  # spans decades
            ax.set_yscale("log")
        title = "kl (before free nats)" if key == "learner/kl" else key.removeprefix("learner/")
        _finish(ax, title, "learner updates", "", len(values) > 0)
    if overshooting:
        ax = axes[len(keys)]
        for run in runs:
            record = run.last("learner/overshooting_kl_d1") or {}
            distances = sorted(int(k.rsplit("_d", 1)[1]) for k in record if k.startswith("learner/overshooting_kl_d"))
            _line(ax, distances, [record[f"learner/overshooting_kl_d{d}"] for d in distances], colours[run.name],
                  run.name)
        _finish(ax, "overshooting KL at the last report", "distance d", "nats", True)
    for ax in axes[panels:]:
        ax.set_visible(False)
    axes[0].legend(fontsize="small")
    figure.savefig(path, dpi=100)
    return Part([path], "Learner losses vs updates (the last value logged per update count); log scale where a term "
                "spans decades. kl_loss is the KL term as optimised (free nats applied); kl is the raw one-step KL.",
                notes)


def plot_throughput(runs: list[Run], colours: dict[str, str], path: Path) -> Part:
    """Env steps, learner updates, replay samples and inserts per second vs wall-clock minutes."""
    notes = [f"{run.name}: fewer than 2 metrics records; no throughput" for run in runs if len(run.records) < 2]
    timed = [run for run in runs if len(run.records) >= 2]
    if not timed:
        return Part([], "", notes)
    figure = _figure(12, 6.4)
    axes = figure.subplots(2, 2).ravel()
    for ax, (counter, label) in zip(axes, THROUGHPUT):
        for run in timed:
            times, values = run.columns("time", counter)
            if len(times) >= 2:
                window = max(3.0, (times[-1] - times[0]) / 100)  # metrics come about once a second
                times, per_s = rate(times, values, window)
                ax.plot((times - run.records[0]["time"]) / 60, per_s, color=colours[run.name], lw=1, label=run.name)
        _finish(ax, label, "minutes since the run started", "per second", True)
    axes[0].legend(fontsize="small")
    figure.savefig(path, dpi=100)
    return Part([path], "Throughput vs wall-clock minutes since each run started: counters in metrics.jsonl "
                "differentiated over a trailing window (3 s or 1% of the run). Dips to zero are evaluations.", notes)


def copy_open_loop(run: Run, assets: Path) -> Part:
    """The run's latest open-loop prediction (still strip and GIF), copied beside the page."""
    images = []
    for suffix in (".png", ".gif"):
        source = run.path / "eval" / f"open_loop{suffix}"
        if source.is_file():
            images.append(Path(shutil.copyfile(source, assets / f"open-loop-{run.name}{suffix}")))
    if not images:
        return Part([], "", [f"{run.name}: no eval/open_loop.png (no evaluation yet); no open-loop prediction"])
    return Part(images, f"<b>{html.escape(run.name)}</b>: open-loop prediction of the latest evaluation's first "
                "episode after a few context frames. Strip: truth (top) above model (bottom); GIF: truth | model.", [])


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _line(ax, x, y, colour: str, label: str) -> None:
    """A run's curve; markers when there are few points, so one evaluation still shows."""
    ax.plot(x, y, color=colour, lw=1.2, label=label, marker="o" if len(x) <= 20 else None, ms=3)


def _mean_band(ax, curves) -> None:
    band = seed_band(curves)
    if band is not None:
        grid, mean, std = band
        ax.fill_between(grid, mean - std, mean + std, color="black", alpha=0.12, lw=0)
        ax.plot(grid, mean, color="black", lw=2, label="mean ± std over seeds")


def _finish(ax, title: str, xlabel: str, ylabel: str, has_data: bool) -> None:
    ax.set_title(title, fontsize="medium")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if not has_data:
        ax.text(0.5, 0.5, "no data yet", transform=ax.transAxes, ha="center", va="center", color="grey")


# ---------------------------------------------------------------- results against PlaNet

def evaluation_at(run: Run, env_steps: int) -> dict | None:
    """The run's evaluation record nearest ``env_steps`` (the final one of a 100k-step run sits at or just past it)."""
    evaluations = [record for record in run.records if "eval/return_mean" in record]
    return min(evaluations, key=lambda record: abs(record["env_steps"] - env_steps), default=None)


def results_table(runs: list[Run], env_steps: int = PLANET_BUDGET_ENV_STEPS) -> str:
    """A Markdown table, one row per task: PlaNet's return at 100 episodes next to the runs' evaluation nearest
    ``env_steps``, the random policy's and the wall time (start to that evaluation's end). One run: mean ± std
    over its evaluation episodes; several seeds: mean ± std of their evaluation means."""
    lines = ["| task | PlaNet @100 episodes | Orrery @100 episodes | random policy | wall time | env steps | seeds |",
             "|---|---|---|---|---|---|---|"]
    for task in dict.fromkeys(run.task for run in runs):
        found = [(run, evaluation_at(run, env_steps)) for run in runs if run.task == task]
        found = [(run, record) for run, record in found if record is not None]
        if not found:
            continue
        means = np.array([record["eval/return_mean"] for _, record in found])
        randoms = np.array([record["eval/random_return_mean"] for _, record in found])
        if len(found) == 1:
            record = found[0][1]
            ours = f"{record['eval/return_mean']:.1f} ± {record['eval/return_std']:.1f}"
            random = f"{record['eval/random_return_mean']:.1f} ± {record['eval/random_return_std']:.1f}"
        else:
            ours, random = f"{means.mean():.1f} ± {means.std():.1f}", f"{randoms.mean():.1f} ± {randoms.std():.1f}"
        reference = planet_reference(task)
        if reference is not None:
            ours += " (above)" if means.mean() >= reference else " (below)"
        walls = [duration(record["time"] - run.records[0]["time"]) for run, record in found]
        steps = sorted({f"{int(record['env_steps']):,}" for _, record in found})
        lines.append(f"| {task} | {'—' if reference is None else f'{reference:g}'} | {ours} | {random} | "
                     f"{', '.join(walls)} | {', '.join(steps)} | {len(found)} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the page

def _img(path: Path, out: Path) -> str:
    """An <img> linked relative to the page in ``out``; open-loop frames are drawn as sharp pixels."""
    pixels = ' class="pixels"' if path.name.startswith("open-loop") else ""
    return f'<img src="{html.escape(quote(path.relative_to(out).as_posix()))}" alt="{html.escape(path.name)}"{pixels}>'


def _table(runs: list[Run], colours: dict[str, str]) -> str:
    head = ("run", "task", "seed", "env steps", "updates", "final eval return (random policy)", "wall time", "state")
    rows = []
    for run in runs:
        summary = run.summary or {}
        env_steps = summary.get("env_steps", max(record["env_steps"] for record in run.records))
        updates = summary.get("updates", max(run.columns("learner/updates")[0], default=None))
        final = run.last("eval/return_mean")
        result = "—" if final is None else (
            f"{final['eval/return_mean']:.1f} ± {final['eval/return_std']:.1f} "
            f"({final['eval/random_return_mean']:.1f} ± {final['eval/random_return_std']:.1f})")
        cells = (f'<span class="swatch" style="background:{colours[run.name]}"></span>{html.escape(run.name)}',
                 html.escape(run.task), "—" if run.seed is None else str(run.seed), f"{int(env_steps):,}",
                 "—" if updates is None else f"{int(updates):,}", result,
                 duration(run.records[-1]["time"] - run.records[0]["time"]),
                 "finished" if run.summary else "no summary.json (stopped or running)")
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    return ("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>\n" + "\n".join(rows) + "</table>")


def _time_html(runs: list[Run]) -> str:
    """Each run's processes, their sections as shares of the run's wall time (cluster/profile.py)."""
    rows = []
    for run in runs:
        wall = wall_seconds(run.records)
        for row in time_profile(run.records):
            rows.append(f'<tr class="time"><td>{html.escape(run.name)}</td><td>{duration(wall)}</td>'
                        f"<td>{html.escape(row.process)}</td><td>{html.escape(row.text())}</td></tr>")
    if not rows:
        return '<p class="note">No time sections in these runs\' metrics (runs made before Orrery reported them).</p>'
    return ("<table><tr><th>run</th><th>wall time</th><th>process</th><th>share of the wall time</th></tr>\n"
            + "\n".join(rows) + "</table>")


# The script marks <body data-images="loaded"> once every picture has decoded ("broken" otherwise), so a
# headless browser (the tests) can tell that the page is whole.
_PAGE = string.Template("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>$title</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1280px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
th { background: #f3f3f3; }
.swatch { display: inline-block; width: 0.8em; height: 0.8em; margin-right: 0.4em; border-radius: 2px; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; display: block; margin-bottom: 0.4em; }
img.pixels { image-rendering: pixelated; min-width: 640px; }
figcaption, .meta { color: #555; font-size: 0.9em; }
.note { color: #8a5a00; font-size: 0.9em; margin: 0.2em 0; }
</style></head>
<body data-images="loading">
<h1>$title</h1>
<p class="meta">$count run(s), made $made by <code>orrery report</code>.
Final eval return: mean ± std over the evaluation episodes, random policy in brackets.</p>
$table
$body
<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var whole = images.every(function (img) { return img.complete && img.naturalWidth > 0; });
  document.body.setAttribute("data-images", whole ? "loaded" : "broken");
});
</script>
</body></html>
""")
