"""What one run of a sweep reserves on a Ray cluster, and whether the cluster can ever hold it.

A run is one placement group of bundles, in this order (``bundle_index`` maps roles to them)::

    0      the run's driver (cluster/supervisor.py) and its weight store
    1      the learner: 1 CPU + its GPU share
    2..N+1 one per actor: 1 CPU + its GPU share
    N+2    where GPUs are shared and evaluations run during training: the evaluation's GPU share

GPU shares (:func:`gpu_shares`): by default (``auto``) a run on a cluster with GPUs takes one GPU:
half for the learner, the other half split evenly among its actors and one evaluation, so that
every actor plans on its own GPU share and an evaluation never waits for one. Set
``cluster.learner_gpus`` / ``cluster.actor_gpus`` to numbers to choose otherwise (0 is the CPU).
Whatever the shares, they are checked before anything launches (:func:`check_feasible`).

The driver's bundle asks for one ``orrery_driver`` slot where the cluster offers them (the head
node of deploy/cluster.yaml does: drivers live on the head, next to Prometheus, which scrapes
their endpoints on loopback), else for 1 CPU. GPUs are asked for only when some node can have
them; a CPU-only cluster trains on CPU, as ``orrery train`` does. A run without ``replay.url``
starts an embedded Redis on loopback, so all its bundles must share a node (STRICT_PACK); with a
cluster Redis they may spread (PACK).

Feasibility looks at the nodes that are up and at every node type the autoscaler may start
(its config: ``~/ray_bootstrap_config.yaml`` on the head of a ``ray up`` cluster, or
``$ORRERY_CLUSTER_CONFIG``), so a run that no node could ever hold is refused before anything starts.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import yaml

from common.config import AUTO, Config

DRIVER_SLOT = "orrery_driver"
"""Custom resource: slots for run drivers, declared on the head node by deploy/cluster*.yaml."""
PROCESS_CPUS = 1.0
"""CPUs reserved per driver, learner and actor process."""
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"
"""Where the Ray cluster launcher leaves the cluster config (with its node types) on the head node."""


@dataclass(frozen=True)
class NodeShape:
    """Resources one node offers, and how many such nodes the cluster may have."""

    name: str
    resources: Mapping[str, float]
    count: int = 1
    known: bool = True
    """False for an autoscaler node type that leaves its resources to auto-detection."""


AUTO_LEARNER_SHARE = 0.5
"""The learner's share of its GPU under ``auto`` when actors plan on the GPU too."""
SHARE_STEP = 1e-4
"""Ray's resolution for fractional GPUs: shares are rounded down to it."""


@dataclass(frozen=True)
class GpuShares:
    """The GPU share of each process of a run (0: the CPU)."""

    learner: float = 0.0
    actor: float = 0.0
    evaluation: float = 0.0
    """An evaluation's share; reserved beside the actors' (its own bundle) when evaluations run during training."""

    def describe(self, actors: int) -> str:
        """``learner 0.5 GPU, 4 actors x 0.1 GPU, evaluation 0.1 GPU`` (or ``CPU`` where a share is 0)."""
        def share(value: float) -> str:
            return f"{value:g} GPU" if value > 0 else "CPU"

        return f"learner {share(self.learner)}, {actors} actor(s) x {share(self.actor)}, " \
               f"evaluation {share(self.evaluation)}"


def _floor_share(value: float) -> float:
    return math.floor(value / SHARE_STEP + 1e-6) * SHARE_STEP


def gpu_shares(cfg: Config, gpus: float) -> GpuShares:
    """The GPU share of the learner, each actor and an evaluation, on a cluster whose nodes have up to ``gpus`` GPUs.

    No GPUs: everything on the CPU, whatever the config says. ``auto`` learner: half a GPU, or the
    whole one when actors plan on the CPU (``actor_gpus=0``). ``auto`` actors: what the learner
    leaves of its last GPU (a GPU of their own when it leaves nothing), split evenly among the
    actors and one evaluation. An evaluation takes an actor's share.
    """
    if gpus <= 0:
        return GpuShares()
    actors = cfg.cluster.actors
    learner = cfg.cluster.learner_gpus
    if learner == AUTO:
        learner = 1.0 if cfg.cluster.actor_gpus == 0 else AUTO_LEARNER_SHARE
    actor = cfg.cluster.actor_gpus
    if actor == AUTO:
        left = math.ceil(learner) - learner
        actor = _floor_share((left if left >= 0.05 else 1.0) / (actors + 1))
    return GpuShares(float(learner), float(actor), float(actor))


def most_gpus(shapes: Iterable[NodeShape]) -> float:
    """The most GPUs any node (present, or that the autoscaler may start) has."""
    return max((shape.resources.get("GPU", 0.0) for shape in shapes), default=0.0)


def bundle_index(role: str, index: int) -> int:
    """The bundle of a run's placement group that ``role`` (store, learner, actor, evaluation) ``index`` uses.

    An evaluation may take any bundle with room (-1): its own where one was reserved, else the
    bundle of an actor that has stopped (the final evaluation comes after the actors).
    """
    return {"store": 0, "learner": 1, "evaluation": -1}.get(role, 2 + index)


def run_bundles(cfg: Config, shapes: Iterable[NodeShape]) -> list[dict[str, float]]:
    """The bundles of one run: driver, learner, one per actor, the evaluation's GPU share (the module docstring)."""
    shapes = list(shapes)
    shares = gpu_shares(cfg, most_gpus(shapes))
    slots = any(shape.resources.get(DRIVER_SLOT, 0) > 0 for shape in shapes)
    driver = {DRIVER_SLOT: 1.0} if slots else {"CPU": PROCESS_CPUS}

    def process(gpu_share: float) -> dict[str, float]:
        return {"CPU": PROCESS_CPUS, **({"GPU": gpu_share} if gpu_share > 0 else {})}

    bundles = [driver, process(shares.learner)] + [process(shares.actor)] * cfg.cluster.actors
    if shares.evaluation > 0 and cfg.train.eval_every_env_steps > 0:  # periodic evaluations beside the actors
        bundles.append({"GPU": shares.evaluation})
    return bundles


def strategy(cfg: Config) -> str:
    """STRICT_PACK for an embedded (loopback) Redis, PACK for a cluster Redis."""
    return "PACK" if cfg.replay.url else "STRICT_PACK"


def total(bundles: Iterable[Mapping[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for bundle in bundles:
        for key, value in bundle.items():
            out[key] = out.get(key, 0.0) + value
    return out


def fits(need: Mapping[str, float], offer: Mapping[str, float]) -> bool:
    return all(offer.get(key, 0.0) + 1e-9 >= value for key, value in need.items())


class ResourceError(ValueError):
    """A run that no node (present, or that the autoscaler may start) could ever hold; the message names the fix."""


def check_feasible(bundles: list[dict[str, float]], how: str, shapes: list[NodeShape], *,
                   actors_flag: str = "--actors-per-run", where: str = "one node") -> None:
    """Raise ResourceError when no node (present or that the autoscaler may start) could ever hold a run.

    ``actors_flag`` names the option that sets the run's actors (train: --actors, sweep: --actors-per-run);
    ``where`` the node a STRICT_PACK run must fit on.
    """
    known = [shape for shape in shapes if shape.known]
    if len(known) < len(shapes):
        return  # a node type with auto-detected resources: Ray may know better than this check
    need = total(bundles)
    most = describe({key: max((shape.resources.get(key, 0.0) for shape in known), default=0.0) for key in need})
    for bundle in bundles:
        if not any(fits(bundle, shape.resources) for shape in known):
            raise ResourceError(f"a run needs a node with {describe(bundle)} for one process, but no node can have "
                                f"that (the most any node has: {most}); lower cluster.learner_gpus / "
                                f"cluster.actor_gpus or add such a node type")
    if how == "STRICT_PACK":
        if not any(fits(need, shape.resources) for shape in known):
            gpu_need, gpu_most = need.get("GPU", 0.0), most_gpus(known)
            if gpu_need > gpu_most + 1e-9:  # short of GPU: the fix is the shares, not the CPUs or the replay
                raise ResourceError(f"a run's GPU shares add up to {gpu_need:g} GPU ({_gpu_parts(bundles)}), more "
                                    f"than {'this node has' if where != 'one node' else 'any node has'} "
                                    f"({gpu_most:g}); lower cluster.learner_gpus / cluster.actor_gpus (or leave both "
                                    f"auto), or lower {actors_flag}")
            raise ResourceError(f"a run needs {describe(need)} on {where} (one CPU for the learner and for each "
                                f"actor; without --redis its embedded replay is on loopback, so the whole run shares "
                                f"a node), but {'it' if where != 'one node' else 'no node'} has that (the most any "
                                f"node has: {most}); lower {actors_flag} or pass the cluster's replay URL with --redis")
    else:
        capacity = total({key: value * shape.count for key, value in shape.resources.items()} for shape in known)
        if not fits(need, capacity):
            raise ResourceError(f"a run needs {describe(need)} in all, more than the whole cluster can ever have "
                                f"({describe({k: capacity.get(k, 0.0) for k in need})}); lower {actors_flag} or "
                                f"raise the autoscaler's max_workers")


def _gpu_parts(bundles: list[dict[str, float]]) -> str:
    """``0.5 + 0.1 + 0.1 + 0.1``: the GPU shares of a run's bundles, in bundle order (learner first)."""
    return " + ".join(f"{bundle['GPU']:g}" for bundle in bundles if bundle.get("GPU", 0.0) > 0)


def node_shapes(nodes: list[dict], autoscaler_config: dict | None) -> list[NodeShape]:
    """Shapes of the live nodes (``ray.nodes()``) and of the autoscaler's node types (up to max_workers each)."""
    shapes = [NodeShape(node.get("NodeManagerAddress", "node"), dict(node["Resources"]))
              for node in nodes if node.get("Alive")]
    config = autoscaler_config or {}
    for name, node_type in (config.get("available_node_types") or {}).items():
        if name == config.get("head_node_type"):
            continue  # the head is up, so it is among the live nodes
        resources = node_type.get("resources") or {}
        count = int(node_type.get("max_workers", 0))
        if count > 0:
            shapes.append(NodeShape(name, dict(resources), count, known=bool(resources)))
    return shapes


def load_autoscaler_config(path: str | None = None) -> dict | None:
    """The cluster launcher's config on this (head) node, or None where there is none (a local Ray)."""
    path = Path(os.path.expanduser(path or os.environ.get("ORRERY_CLUSTER_CONFIG") or BOOTSTRAP_CONFIG))
    if not path.is_file():
        return None
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ResourceError(f"{path}: not a readable cluster config ({error})") from None


def describe(resources: Mapping[str, float]) -> str:
    """``2 CPU, 1 GPU``: the resources that matter to a run, for messages."""
    parts = [f"{value:g} {key}" for key, value in sorted(resources.items())
             if key in ("CPU", "GPU", DRIVER_SLOT) or not key.startswith(("node:", "memory", "object_store"))]
    return ", ".join(parts) or "nothing"
