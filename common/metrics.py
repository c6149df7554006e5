"""The metric catalogue: every metric a run exports, its kind, labels and meaning. No Prometheus here.

Inside the system a metric is ``component/name`` (the keys of ``RUN_DIR/metrics.jsonl``); in
Prometheus it is ``orrery_<component>_<name>``, a counter with ``_total`` appended::

    learner/image_loss      ->  orrery_learner_image_loss            gauge
    actor/env_steps         ->  orrery_actor_env_steps_total         counter, one series per actor
    learner/overshooting_kl_d3  ->  orrery_learner_overshooting_kl{distance="3"}

Every series carries the labels ``run``, ``task`` and ``seed`` (the run's seed); per-actor
metrics add ``actor`` (the actor's index). The README's metric table and the Grafana
dashboard are checked against this catalogue by the tests.
"""

from __future__ import annotations

import dataclasses
import re

RUN_LABELS = ("run", "task", "seed")
"""Labels of every series: run name, task id, run seed."""


@dataclasses.dataclass(frozen=True)
class Metric:
    key: str
    """Internal name ``component/name``, as in metrics.jsonl."""
    kind: str
    """"counter" (monotonic while a process lives; Prometheus' rate() handles restarts) or "gauge"."""
    help: str
    """One line: what it measures, with its unit."""
    extra_labels: tuple[str, ...] = ()
    """Labels beyond run, task, seed."""

    @property
    def name(self) -> str:
        """The Prometheus family name (without the ``_total`` a counter's sample carries)."""
        return "orrery_" + self.key.replace("/", "_")

    @property
    def exposed_name(self) -> str:
        """The name a scrape shows: counters end in ``_total``."""
        return self.name + ("_total" if self.kind == "counter" else "")

    @property
    def labels(self) -> tuple[str, ...]:
        return RUN_LABELS + self.extra_labels


def _metrics(kind: str, labels: tuple[str, ...], rows: dict[str, str]) -> list[Metric]:
    return [Metric(key, kind, text, labels) for key, text in rows.items()]


ACTOR = ("actor",)

CATALOGUE: tuple[Metric, ...] = tuple(
    [Metric("run/info", "gauge", "1 for every run; its labels name run, task, seed, model family and preset",
            ("family", "preset"))]
    # ------------------------------------------------------------ actors (reported per collect call)
    + _metrics("counter", ACTOR, {
        "actor/env_steps": "Env steps (action repeat counted) of the episodes this actor finished",
        "actor/episodes": "Episodes this actor finished and reported",
        "actor/insert_wait_s": "Seconds this actor waited for the learner (samples-per-insert limiter)",
        "actor/plan_s": "Seconds this actor's process spent in CEM plans",
        "actor/env_s": "Seconds this actor's process spent stepping its environments (physics and rendering)",
        "actor/observe_s": "Seconds this actor's process spent updating beliefs from new frames",
        "actor/write_s": "Seconds this actor's process spent writing episodes to replay",
        "actor/weights_s": "Seconds this actor's process spent fetching and loading newer weights",
        "actor/restarts": "Times Ray restarted this actor's process",
        "actor/lost_episodes": "Episodes in flight when this actor died (never written to replay)",
    })
    + _metrics("gauge", ACTOR, {
        "actor/return": "Return of this actor's last finished episode",
        "actor/length": "Agent steps of this actor's last finished episode",
        "actor/env_steps_per_s": "Env steps per second of this actor over its last collect call",
        "actor/plan_ms": "Milliseconds per batched CEM plan (one agent step for all of its envs), recent mean",
        "actor/policy_version": "Learner update count of the weights this actor plans with",
        "actor/policy_lag": "Learner updates between the latest published weights and this actor's",
    })
    # ------------------------------------------------------------ learner
    + _metrics("counter", (), {
        "learner/updates": "Gradient updates applied (continues across learner restarts from its checkpoint)",
        "learner/skipped_updates": "Updates skipped because the loss or gradient was not finite",
        "limiter/sample_wait_s": "Seconds the learner's sampling waited for actors (samples-per-insert limiter)",
        "learner/update_s": "Seconds this learner process spent in gradient updates",
        "learner/batch_wait_s": "Seconds this learner process waited for a batch (limiter or sampling)",
        "learner/publish_s": "Seconds this learner process spent publishing weights to the object store",
        "learner/checkpoint_s": "Seconds this learner process spent writing checkpoints",
        "limiter/sample_waits": "Times the learner's sampling waited for actors",
    })
    + _metrics("gauge", (), {
        "learner/updates_per_s": "Learner updates per second since its train() call began",
        "learner/total_loss": "Negative ELBO per chunk step: the weighted sum of the loss terms",
        "learner/image_loss": "Image negative log-likelihood per frame (unit-variance Gaussian, nats)",
        "learner/reward_loss": "Reward negative log-likelihood per step (unit-variance Gaussian, nats)",
        "learner/kl_loss": "KL term as optimised: max(free nats, KL), or the overshooting average",
        "learner/global_kl_loss": "KL of the posterior from N(0, I) per step (nats)",
        "learner/kl": "One-step KL(posterior || prior) per step before free nats (nats)",
        "learner/grad_norm": "Global gradient norm before clipping",
        "learner/prior_std": "Mean standard deviation of the prior p(s_t | h_t)",
        "learner/posterior_std": "Mean standard deviation of the posterior q(s_t | h_t, o_t)",
        "learner/policy_version": "Update count of the weights last published to actors",
        "learner/threads": "CPU threads the learner computes with now (more while the limiter holds the actors)",
        "limiter/samples_per_insert": "Sampled steps per inserted step beyond the minimum replay size",
        "prefetch/sample_ms": "Milliseconds to sample one batch from replay (recent mean)",
        "prefetch/ready": "Batches sampled ahead and waiting for the learner",
    })
    + [Metric("learner/overshooting_kl", "gauge",
              "d-step latent overshooting KL per step before free nats (nats); only with overshooting on",
              ("distance",))]
    # ------------------------------------------------------------ replay (read from Redis by the driver)
    + _metrics("gauge", (), {
        "replay/steps": "Agent steps stored",
        "replay/episodes": "Episodes stored",
        "replay/bytes": "Bytes of episode arrays stored",
        "replay/capacity_steps": "Agent steps kept before the oldest episodes are evicted",
        "replay/inserts_per_s": "Episodes inserted per second (between the driver's reads)",
        "replay/samples_per_s": "Batches sampled per second (between the driver's reads)",
        "replay/sampled_steps_per_s": "Agent steps sampled per second (between the driver's reads)",
    })
    + _metrics("counter", (), {
        "replay/inserts": "Episodes inserted",
        "replay/inserted_steps": "Agent steps inserted",
        "replay/samples": "Batches sampled",
        "replay/sampled_steps": "Agent steps sampled (batch x chunk length per batch)",
        "replay/evictions": "Episodes evicted to keep within capacity (oldest first)",
        "replay/rejected": "Episodes rejected as invalid (wrong shapes, non-finite rewards, another task)",
        "replay/duplicates": "Episode writes ignored because the id was already stored (retries)",
        "replay/corrupt_episodes": "Episodes found corrupt (checksum, truncated or missing data, bad metadata) "
                                   "and taken out of service",
    })
    # ------------------------------------------------------------ driver and evaluation
    + _metrics("counter", (), {
        "driver/env_steps": "Env steps of all finished episodes of the run (action repeat counted)",
        "driver/episodes": "Episodes finished by all actors",
        "driver/learner_restarts": "Times Ray restarted the learner (it resumes from its checkpoint)",
        "driver/redis_restarts": "Times the driver restarted the embedded Redis (on its append-only file)",
    })
    + _metrics("gauge", (), {
        "driver/budget_env_steps": "Env steps after which the run stops",
        "driver/recent_return": "Mean return of the last 10 finished episodes",
        "driver/start_time_s": "Unix time the run (this driver session) started",
        "eval/return_mean": "Mean return of the last evaluation (planner, no exploration noise)",
        "eval/return_std": "Standard deviation of the last evaluation's returns",
        "eval/random_return_mean": "Mean return of random-action episodes in the same evaluation",
        "eval/random_return_std": "Standard deviation of those random returns",
        "eval/env_steps": "Env steps of the run when the last evaluation took place",
        "eval/seconds": "Wall seconds the last evaluation took (its planned and random episodes)",
    })
)

BY_KEY: dict[str, Metric] = {metric.key: metric for metric in CATALOGUE}
assert len(BY_KEY) == len(CATALOGUE), "a metric key appears twice in the catalogue"

_LABELLED = {re.compile(r"learner/overshooting_kl_d(\d+)"): ("learner/overshooting_kl", "distance")}


def lookup(key: str) -> tuple[Metric, dict[str, str]] | None:
    """The catalogue entry of an internal key and the extra labels the key encodes; None if not exported."""
    if key in BY_KEY:
        return BY_KEY[key], {}
    for pattern, (name, label) in _LABELLED.items():
        match = pattern.fullmatch(key)
        if match:
            return BY_KEY[name], {label: match.group(1)}
    return None
