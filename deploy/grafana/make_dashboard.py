"""Writes deploy/grafana/orrery.json, the Grafana dashboard of Orrery runs: ``python deploy/grafana/make_dashboard.py``.

One row per component (run, actors, learner, replay); selectors for task, seed and run. The
panels are listed here as (title, unit, [(PromQL, legend)]) so the JSON stays consistent; edit
this file and regenerate rather than editing the JSON. Every metric is documented in README.md.
"""

from __future__ import annotations

import json
from pathlib import Path

SELECT = 'run=~"$run", task=~"$task", seed=~"$seed"'


def q(metric: str, extra: str = "") -> str:
    """``metric{selector}``; ``extra`` adds label matchers."""
    return f"{metric}{{{SELECT}{', ' + extra if extra else ''}}}"


ROWS: list[tuple[str, list[tuple[str, str, list[tuple[str, str]]]]]] = [
    ("Run", [
        ("Progress (env steps / budget)", "percentunit",
         [(f"{q('orrery_driver_env_steps_total')} / {q('orrery_driver_budget_env_steps')}", "{{run}}")]),
        ("Return, last 10 episodes", "none", [(q("orrery_driver_recent_return"), "{{run}}")]),
        ("Evaluation return (planner vs random)", "none",
         [(q("orrery_eval_return_mean"), "{{run}} planner"), (q("orrery_eval_random_return_mean"), "{{run}} random")]),
        ("Env steps per second (all actors)", "none",
         [(f"rate({q('orrery_driver_env_steps_total')}[1m])", "{{run}}")]),
        ("Restarts", "none",
         [(f"sum by (run) ({q('orrery_actor_restarts_total')})", "{{run}} actors"),
          (q("orrery_driver_learner_restarts_total"), "{{run}} learner"),
          (q("orrery_driver_redis_restarts_total"), "{{run}} redis")]),
    ]),
    ("Actors", [
        ("Env steps per second", "none", [(q("orrery_actor_env_steps_per_s"), "{{run}} a{{actor}}")]),
        ("Episode return", "none", [(q("orrery_actor_return"), "{{run}} a{{actor}}")]),
        ("Planning time per agent step", "ms", [(q("orrery_actor_plan_ms"), "{{run}} a{{actor}}")]),
        ("Policy version lag (updates)", "none", [(q("orrery_actor_policy_lag"), "{{run}} a{{actor}}")]),
        ("Waiting for the learner (fraction of time)", "percentunit",
         [(f"rate({q('orrery_actor_insert_wait_s_total')}[1m])", "{{run}} a{{actor}}")]),
        ("Episodes lost to actor restarts", "none", [(q("orrery_actor_lost_episodes_total"), "{{run}} a{{actor}}")]),
        ("Where the actor's time goes (fraction)", "percentunit",
         [(f"rate({q(f'orrery_actor_{section}_s_total')}[1m])", f"{{{{run}}}} a{{{{actor}}}} {section}")
          for section in ("plan", "env", "observe", "write", "weights", "insert_wait")]),
    ]),
    ("Learner", [
        ("Loss terms", "none", [(q(f"orrery_learner_{term}_loss"), f"{{{{run}}}} {term}")
                                for term in ("image", "reward", "kl", "global_kl")]),
        ("Total loss (negative ELBO)", "none", [(q("orrery_learner_total_loss"), "{{run}}")]),
        ("KL (nats, before free nats)", "none",
         [(q("orrery_learner_kl"), "{{run}} one-step"),
          (q("orrery_learner_overshooting_kl"), "{{run}} d={{distance}}")]),
        ("Gradient norm", "none", [(q("orrery_learner_grad_norm"), "{{run}}")]),
        ("Updates per second", "none", [(f"rate({q('orrery_learner_updates_total')}[1m])", "{{run}}")]),
        ("Skipped (non-finite) updates", "none", [(q("orrery_learner_skipped_updates_total"), "{{run}}")]),
        ("Waiting for actors (fraction of time)", "percentunit",
         [(f"rate({q('orrery_limiter_sample_wait_s_total')}[1m])", "{{run}}")]),
        ("Samples per insert", "none", [(q("orrery_limiter_samples_per_insert"), "{{run}}")]),
        ("Prior and posterior std", "none",
         [(q("orrery_learner_prior_std"), "{{run}} prior"), (q("orrery_learner_posterior_std"), "{{run}} posterior")]),
        ("Published weight version", "none", [(q("orrery_learner_policy_version"), "{{run}}")]),
        ("CPU threads (more while actors wait for it)", "none", [(q("orrery_learner_threads"), "{{run}}")]),
        ("Where the learner's time goes (fraction)", "percentunit",
         [(f"rate({q(f'orrery_learner_{section}_s_total')}[1m])", f"{{{{run}}}} {section}")
          for section in ("update", "batch_wait", "publish", "checkpoint")]),
    ]),
    ("Replay", [
        ("Stored agent steps", "none",
         [(q("orrery_replay_steps"), "{{run}} stored"), (q("orrery_replay_capacity_steps"), "{{run}} capacity")]),
        ("Stored bytes", "bytes", [(q("orrery_replay_bytes"), "{{run}}")]),
        ("Inserts and samples per second", "none",
         [(f"rate({q('orrery_replay_inserts_total')}[1m])", "{{run}} episodes in"),
          (f"rate({q('orrery_replay_samples_total')}[1m])", "{{run}} batches out")]),
        ("Evicted, rejected and duplicate episodes", "none",
         [(q("orrery_replay_evictions_total"), "{{run}} evicted"), (q("orrery_replay_rejected_total"), "{{run}} rejected"),
          (q("orrery_replay_duplicates_total"), "{{run}} duplicates")]),
        ("Batch sampling time", "ms", [(q("orrery_prefetch_sample_ms"), "{{run}}")]),
        ("Batches ready for the learner", "none", [(q("orrery_prefetch_ready"), "{{run}}")]),
    ]),
]


def variable(name: str, query: str) -> dict:
    return {"name": name, "label": name, "type": "query", "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "query": {"query": query, "refId": name}, "definition": query, "refresh": 2, "includeAll": True,
            "multi": True, "allValue": ".*", "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1}


def dashboard() -> dict:
    panels, panel_id, y = [], 1, 0
    for title, row in ROWS:
        panels.append({"type": "row", "title": title, "id": panel_id, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        panel_id, y = panel_id + 1, y + 1
        for index, (panel_title, unit, queries) in enumerate(row):
            panels.append({
                "type": "timeseries", "title": panel_title, "id": panel_id,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": 8, "x": 8 * (index % 3), "y": y + 8 * (index // 3)},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
                "targets": [{"expr": expr, "legendFormat": legend, "refId": chr(ord("A") + i),
                             "datasource": {"type": "prometheus", "uid": "${datasource}"}}
                            for i, (expr, legend) in enumerate(queries)],
            })
            panel_id += 1
        y += 8 * ((len(row) + 2) // 3)
    return {
        "title": "Orrery runs", "uid": "orrery-runs", "schemaVersion": 39, "version": 1, "editable": True,
        "tags": ["orrery", "planet", "ray"], "time": {"from": "now-1h", "to": "now"}, "refresh": "10s",
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0},
            variable("task", "label_values(orrery_run_info, task)"),
            variable("seed", 'label_values(orrery_run_info{task=~"$task"}, seed)'),
            variable("run", 'label_values(orrery_run_info{task=~"$task", seed=~"$seed"}, run)'),
        ]},
        "panels": panels,
    }


if __name__ == "__main__":
    path = Path(__file__).with_name("orrery.json")
    path.write_text(json.dumps(dashboard(), indent=2) + "\n")
    print(f"wrote {path}")
