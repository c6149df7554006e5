"""`orrery train` on a cluster that has a GPU, run where torch cannot use one: GPU shares are checked before launch,
and a GPU reserved for a process that cannot compute on it stops the run with one line, never a silent CPU run.

The head declares one GPU to Ray (``ray start --num-gpus=1``); on a machine without CUDA (CI) that is a GPU Ray
hands out and torch cannot use, which is exactly the case of a CPU build of torch on a GPU node.
"""

import pytest

from common.device import cuda_unusable_reason
from tests.e2e.ray_support import RayHead
from tests.e2e.train_support import PRESET, orrery

pytestmark = pytest.mark.slow
CPUS = 6


@pytest.fixture(scope="module")
def gpu_head():
    with RayHead(num_cpus=CPUS, num_gpus=1, registered=True) as head:
        yield head


def run(head, *args, timeout=300):
    return orrery(*args, timeout=timeout, env={k: v for k, v in head.env.items() if k.startswith(("RAY_", "ORRERY_"))})


def orrery_lines(result) -> list[str]:
    return [line for line in result.stderr.strip().splitlines() if line.startswith("orrery")]


def test_gpu_shares_that_do_not_fit_are_refused_before_anything_launches(gpu_head, tmp_path):
    run_dir = tmp_path / "too-much-gpu"
    result = run(gpu_head, "train", "--preset", PRESET, "--actors", "4", "--address", gpu_head.address,
                 "--set", "cluster.learner_gpus=1", "--set", "cluster.actor_gpus=0.1", "--run-dir", str(run_dir))
    lines = orrery_lines(result)
    assert result.returncode == 2 and len(lines) == 1, result.stdout[-2000:] + result.stderr[-3000:]
    assert "add up to 1.4 GPU" in lines[0] and "cluster.learner_gpus / cluster.actor_gpus" in lines[0]
    assert not run_dir.exists(), "nothing was written"
    assert gpu_head.list("actors", state="ALIVE") == []


@pytest.mark.skipif(cuda_unusable_reason() is None, reason="torch can use a GPU here: the run would train on it")
def test_a_reserved_gpu_torch_cannot_use_stops_the_run_with_the_fix(gpu_head, tmp_path):
    run_dir = tmp_path / "cpu-torch-on-gpu"
    result = run(gpu_head, "train", "--preset", PRESET, "--actors", "1", "--address", gpu_head.address,
                 "--set", "cluster.learner_gpus=auto", "--set", "cluster.actor_gpus=auto", "--run-dir", str(run_dir))
    out = result.stdout + result.stderr
    assert "processes: learner 0.5 GPU, 1 actor(s) x 0.25 GPU" in out, out[-3000:]
    lines = orrery_lines(result)
    assert result.returncode == 1 and len(lines) == 1, out[-3000:]
    assert "the learner cannot start" in lines[0] and "Ray reserved GPU" in lines[0], lines[0]
    assert cuda_unusable_reason() in lines[0] and "cluster.learner_gpus=0" in lines[0], lines[0]
    assert "Traceback" not in result.stderr
