"""``orrery status``: the runs on this node's Ray cluster and their progress, read from their metrics endpoints.

Every running driver registers its Prometheus endpoint (cluster/exporter.py); status scrapes
each one, so it shows exactly what Prometheus and the dashboard see. Drivers run on the head
node (``ray submit``), so on a cluster run it there: ``ray exec deploy/cluster.yaml 'orrery status'``.
"""

from __future__ import annotations

import time

from cluster.exporter import registered_targets, scrape, targets_dir, unregister


def _value(samples: dict, name: str, default: float | None = None) -> float | None:
    series = samples.get(name)
    return series[0][1] if series else default


def run_status(run: str, address: str) -> dict:
    """One run's progress from its endpoint; ``state`` is "running" or "not answering"."""
    try:
        samples = scrape(address)
    except OSError:
        return {"run": run, "address": address, "state": "not answering"}
    info = samples.get("orrery_run_info", [({}, 0.0)])[0][0]
    actors = {labels.get("actor") for labels, _ in samples.get("orrery_actor_episodes_total", [])}
    start = _value(samples, "orrery_driver_start_time_s")
    return {
        "run": run, "address": address, "state": "running", "task": info.get("task", "?"),
        "seed": info.get("seed", "?"), "actors": len(actors),
        "env_steps": int(_value(samples, "orrery_driver_env_steps_total", 0)),
        "budget": int(_value(samples, "orrery_driver_budget_env_steps", 0)),
        "episodes": int(_value(samples, "orrery_driver_episodes_total", 0)),
        "recent_return": _value(samples, "orrery_driver_recent_return"),
        "updates": int(_value(samples, "orrery_learner_updates_total", 0)),
        "updates_per_s": _value(samples, "orrery_learner_updates_per_s", 0.0),
        "replay_steps": int(_value(samples, "orrery_replay_steps", 0)),
        "eval_return": _value(samples, "orrery_eval_return_mean"),
        "eval_random": _value(samples, "orrery_eval_random_return_mean"),
        "elapsed_s": time.time() - start if start else None,
    }


def statuses() -> list[dict]:
    return [run_status(run, address) for run, address in registered_targets().items()]


def prune(rows: list[dict]) -> list[str]:
    """Remove the registrations of runs that do not answer (their drivers were killed); returns their names.

    Like reading (``registered_targets``), removal checks the directory first and never follows a link.
    """
    gone = [row["run"] for row in rows if row["state"] != "running"]
    for run in gone:
        unregister(run)
    return gone


def format_table(rows: list[dict]) -> str:
    if not rows:
        return (f"no running orrery runs registered in {targets_dir()} "
                f"(start one with `orrery train`; on a cluster run this on the head node)")
    header = ("run", "task", "seed", "actors", "env steps", "episodes", "return", "updates", "replay", "eval", "time",
              "metrics")
    lines = []
    for row in rows:
        if row["state"] != "running":
            lines.append((row["run"], "-", "-", "-", "not answering (driver gone? `orrery status --prune`)", "", "", "",
                          "", "", "", row["address"]))
            continue
        done = row["env_steps"] / row["budget"] if row["budget"] else 0.0
        ret = "-" if row["recent_return"] is None else f"{row['recent_return']:.1f}"
        evaluation = "-" if row["eval_return"] is None else f"{row['eval_return']:.1f} (rnd {row['eval_random']:.1f})"
        elapsed = "-" if row["elapsed_s"] is None else f"{int(row['elapsed_s']) // 60}m{int(row['elapsed_s']) % 60:02d}s"
        lines.append((row["run"], row["task"], row["seed"], str(row["actors"]),
                      f"{row['env_steps']}/{row['budget']} ({100 * done:.0f}%)", str(row["episodes"]), ret,
                      f"{row['updates']} ({row['updates_per_s']:.1f}/s)", str(row["replay_steps"]), evaluation, elapsed,
                      f"http://{row['address']}/metrics"))
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip()
                     for line in [header, *lines])
