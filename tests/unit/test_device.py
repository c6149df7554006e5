"""common/device.py: one decision per process of device, threads, precision and render device."""

import os

import pytest
import torch

from common import device as device_lib
from common.device import DeviceError, ProcessDevice, resolve_precision, setup_process


def test_a_process_without_a_gpu_computes_on_the_cpu_with_its_threads():
    before = torch.get_num_threads()
    try:
        placed = setup_process("actor 0", gpu_ids=[], precision="float32", threads=1)
        assert placed.device == torch.device("cpu") and not placed.on_gpu
        assert placed.threads == 1 and torch.get_num_threads() == 1
        assert placed.describe() == "actor 0: cpu, float32, 1 CPU thread"
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(device_lib.cuda_unusable_reason() is None, reason="CUDA works here: see tests/gpu")
@pytest.mark.parametrize("kwargs, words", [
    ({"gpu_ids": [0]}, ["learner: Ray reserved GPU 0 for it", "cluster.learner_gpus=0 cluster.actor_gpus=0"]),
    ({"device": "cuda"}, ["--device cuda was asked for", "--device cpu"]),
])
def test_a_gpu_that_cannot_be_used_is_an_error_naming_the_fix(kwargs, words):
    with pytest.raises(DeviceError) as error:
        setup_process("learner", **kwargs)
    message = str(error.value)
    assert "\n" not in message and device_lib.cuda_unusable_reason() in message
    assert all(word in message for word in words), message


def test_precision_auto_follows_the_device_and_names_are_checked():
    assert resolve_precision("float32", "cpu") == "float32"
    assert resolve_precision("auto", "cpu") in ("float32", "bfloat16")
    with pytest.raises(ValueError, match="choose auto or one of float32, bfloat16"):
        resolve_precision("fp8", "cpu")


@pytest.mark.parametrize("ordinals, cuda, expected", [
    ([1, 0, 2], 0, 1),          # the driver maps EGL devices to CUDA ordinals: EGL's order is not CUDA's
    ([None, 2, 0, 1], 1, 3),    # a software (non-CUDA) EGL device first
    ([None, None], 1, 1),       # no mapping offered: assume the same order
    ([None], 3, None),          # fewer EGL devices than the GPU index: leave it to MuJoCo
    ([0, 1], 5, None),          # a GPU EGL does not list
    (None, 0, None),            # no EGL library at all
])
def test_each_gpu_process_renders_on_its_own_gpu(monkeypatch, ordinals, cuda, expected):
    # Set, then removed, through monkeypatch: the value _pin_egl_device writes is undone after the test (a leaked
    # MUJOCO_EGL_DEVICE_ID would send later tests' renderers to a device this machine lacks).
    monkeypatch.setenv("MUJOCO_EGL_DEVICE_ID", "0")
    monkeypatch.delenv("MUJOCO_EGL_DEVICE_ID")
    monkeypatch.setenv("MUJOCO_GL", "egl")
    monkeypatch.setattr(device_lib, "egl_cuda_devices", lambda: ordinals)
    assert device_lib._pin_egl_device(cuda) == expected
    assert os.environ.get("MUJOCO_EGL_DEVICE_ID") == (None if expected is None else str(expected))


def test_a_users_egl_choice_and_other_renderers_are_left_alone(monkeypatch):
    monkeypatch.setattr(device_lib, "egl_cuda_devices", lambda: [3, 2, 1, 0])
    monkeypatch.setenv("MUJOCO_GL", "egl")
    monkeypatch.setenv("MUJOCO_EGL_DEVICE_ID", "2")
    assert device_lib._pin_egl_device(0) == 2
    monkeypatch.delenv("MUJOCO_EGL_DEVICE_ID")
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    assert device_lib._pin_egl_device(0) is None


def test_egl_devices_are_read_without_rendering():
    ordinals = device_lib.egl_cuda_devices()
    assert ordinals is None or all(o is None or isinstance(o, int) for o in ordinals)


def test_the_device_line_says_where_and_how():
    line = ProcessDevice("learner", torch.device("cuda", 0), 2, "float32", (3,), "NVIDIA H200", 1).describe()
    assert line == ("learner: cuda:0 (NVIDIA H200, GPU 3), float32 (TF32 matmuls), 2 CPU threads, "
                    "renders on EGL device 1")


def test_thread_pacer_borrows_the_actors_cores_while_they_wait_and_says_when_they_are_released():
    from common.device import ThreadPacer

    before = torch.get_num_threads()
    try:
        pacer = ThreadPacer(threads=1, held_threads=2)
        torch.set_num_threads(1)
        assert pacer.pace(held=False) is False and torch.get_num_threads() == 1
        assert pacer.pace(held=True) is False and torch.get_num_threads() == 2  # actors wait: their cores too
        assert pacer.pace(held=True) is False and torch.get_num_threads() == 2
        assert pacer.pace(held=False) is True and torch.get_num_threads() == 1  # released: publish now
        assert pacer.pace(held=False) is False
        fixed = ThreadPacer(threads=2, held_threads=1)  # never fewer than its own share (a GPU learner: equal)
        assert fixed.held_threads == 2 and fixed.pace(held=True) is False and torch.get_num_threads() == 1
        assert fixed.pace(held=False) is True
    finally:
        torch.set_num_threads(before)
