"""What one run of a sweep reserves on a Ray cluster, and whether the cluster can ever hold it.

A run is one placement group of bundles, in this order (``bundle_index`` maps roles to them)::

    0      the run's driver (cluster/supervisor.py) and its weight store
    1      the learner: 1 CPU + cluster.learner_gpus GPU
    2..N+1 one per actor: 1 CPU + cluster.actor_gpus GPU

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

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import yaml

from common.config import Config

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


def bundle_index(role: str, index: int) -> int:
    """The bundle of a run's placement group that ``role`` (store, learner, actor) number ``index`` uses."""
    return {"store": 0, "learner": 1}.get(role, 2 + index)


def run_bundles(cfg: Config, shapes: Iterable[NodeShape]) -> list[dict[str, float]]:
    """The bundles of one run: driver, learner, one per actor (see the module docstring)."""
    shapes = list(shapes)
    gpus = any(shape.resources.get("GPU", 0) > 0 for shape in shapes)
    slots = any(shape.resources.get(DRIVER_SLOT, 0) > 0 for shape in shapes)
    driver = {DRIVER_SLOT: 1.0} if slots else {"CPU": PROCESS_CPUS}

    def process(gpu_share: float) -> dict[str, float]:
        return {"CPU": PROCESS_CPUS, **({"GPU": gpu_share} if gpus and gpu_share > 0 else {})}

    return [driver, process(cfg.cluster.learner_gpus)] + [process(cfg.cluster.actor_gpus)] * cfg.cluster.actors


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
