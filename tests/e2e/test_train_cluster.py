"""`orrery train` beside and on a running Ray cluster (a real `ray start --head`): its own local Ray when no address
is given; a run the cluster can never hold refused before launch; an actor the cluster cannot place not waited for."""

import re
import subprocess
import sys
import time

import pytest

from tests.e2e.ray_support import RayHead
from tests.e2e.train_support import PRESET, acknowledged, orrery, stored_ids

pytestmark = pytest.mark.slow
CPUS = 3


@pytest.fixture(scope="module")
def head():
    """A head registered as this machine's current cluster for its env's RAY_TMPDIR (``ray.init()`` would join it)."""
    with RayHead(num_cpus=CPUS, registered=True) as head:
        deadline = time.monotonic() + 60  # `ray start` registers the head once its dashboard already answers
        while not (head.temp_dir / "ray_current_cluster").exists():
            assert time.monotonic() < deadline, "the head is what ray.init() would find"
            time.sleep(0.5)
        yield head


def run(head, *args, timeout=400):
    return orrery(*args, timeout=timeout, env={k: v for k, v in head.env.items() if k.startswith(("RAY_", "ORRERY_"))})


def test_a_local_run_starts_its_own_ray_beside_a_running_cluster(head, tmp_path):
    run_dir = tmp_path / "beside"
    result = run(head, "train", "--preset", PRESET, "--actors", "1", "--budget-steps", "400", "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Started a local Ray instance" in result.stderr + result.stdout
    assert head.list("jobs") == [], "nothing joined the running cluster"
    assert stored_ids(run_dir) == acknowledged(run_dir)


def test_a_run_the_cluster_can_never_hold_is_refused_before_anything_launches(head, tmp_path):
    run_dir = tmp_path / "too-big"
    result = run(head, "train", "--preset", PRESET, "--actors", str(CPUS), "--address", head.address,
                 "--run-dir", str(run_dir), timeout=240)
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("orrery")]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert f"needs {CPUS + 1} CPU on this node" in lines[0] and "--actors" in lines[0]
    assert not run_dir.exists()
    assert head.list("actors", state="ALIVE") == []


def test_an_actor_the_cluster_cannot_place_is_not_waited_for(head, tmp_path):
    # Another user of the cluster holds one of its CPUs for the whole run: the learner and one actor fit, one does not.
    holder = subprocess.Popen([sys.executable, "-c", (
        "import ray, sys, time\n"
        f"ray.init(address={head.address!r}, log_to_driver=False)\n"
        "Hold = ray.remote(num_cpus=1)(type('Hold', (), {'ping': lambda self: 1}))\n"
        "hold = Hold.remote(); ray.get(hold.ping.remote()); print('holding', flush=True); time.sleep(900)\n")],
        stdout=subprocess.PIPE, text=True, env=head.env)
    try:
        assert holder.stdout.readline().strip() == "holding"
        run_dir = tmp_path / "crowded"
        result = run(head, "train", "--preset", PRESET, "--actors", "2", "--budget-steps", "600", "--address",
                     head.address, "--run-dir", str(run_dir))
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        assert "wait until Ray can place them" in result.stdout
        assert re.search(r"actor [01] was never placed", result.stdout), result.stdout[-3000:]
        assert stored_ids(run_dir) == acknowledged(run_dir)
    finally:
        holder.kill()
        holder.wait()
