"""Where a process computes: its torch device, CPU threads and precision, decided once and said once.

Every Orrery process that runs a model (the learner, each actor, an evaluation, ``orrery eval``)
starts with::

    placed = setup_process("learner", gpu_ids=ray.get_gpu_ids(), precision=cfg.train.precision, threads=3)
    print(placed.describe())      # learner: cuda:0 (NVIDIA H200), float32 (TF32 matmuls), 2 CPU threads

The rules, in one place:

- **Device.** A process that Ray gave a GPU (``gpu_ids`` not empty) computes on it, and one that
  got none on the CPU. A GPU that was reserved but cannot be used (a CPU build of torch, a driver
  too old for torch's CUDA) is an error (:class:`DeviceError`, one line naming the fix), never a
  silent CPU fallback that holds the GPU and trains 50x slower. Ray sets CUDA_VISIBLE_DEVICES to
  the GPUs it assigned, so the device is always ``cuda:0`` inside the process.
- **Threads.** A CPU process gets ``threads`` intra-op threads (the node's cores shared among the
  run's processes, decided by the driver). A GPU process needs few: its host work is launching
  kernels and copying batches, so it keeps at most :data:`GPU_PROCESS_THREADS` and leaves the
  cores to the CPU-bound actors and environments. A CPU learner borrows the actors' cores while
  they wait for it (:class:`ThreadPacer`).
- **Precision.** ``auto`` is bfloat16 where the device computes it natively (CUDA GPUs with
  bf16; CPUs with AVX512-BF16 or AMX), float32 elsewhere. On CUDA, float32 matmuls and
  convolutions use TF32 tensor cores and cuDNN picks its fastest kernels (``cudnn.benchmark``;
  Orrery's shapes are fixed per run, so the search happens once).
- **Rendering.** MuJoCo's EGL renders on EGL device 0 unless told otherwise, which on a
  multi-GPU node is some other process's GPU. A process with a GPU renders on the same one:
  ``MUJOCO_EGL_DEVICE_ID`` is set to the EGL device of its CUDA device (EGL's order need not be
  CUDA's: matched through the EGL_NV_device_cuda extension where the driver offers it), unless
  the user set it. It must be set before the first dm_control environment is made, which is why
  this runs first in every process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass
from typing import Sequence

import torch

PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16}
"""train.precision values (besides "auto") and the autocast dtype each runs the forward pass in."""
GPU_PROCESS_THREADS = 2
"""CPU threads a process that computes on a GPU keeps (kernel launches, batch copies)."""


class DeviceError(RuntimeError):
    """A process was given a GPU it cannot use; the message names the fix."""


@dataclass(frozen=True)
class ProcessDevice:
    """What :func:`setup_process` decided for one process."""

    role: str
    device: torch.device
    threads: int
    precision: str
    """Resolved: float32 or bfloat16 (never auto)."""
    gpu_ids: tuple[int, ...] = ()
    """The GPUs Ray assigned (physical indices on the node), empty on CPU."""
    gpu_name: str = ""
    egl_device: int | None = None
    """MUJOCO_EGL_DEVICE_ID this process renders on, where it set or found one."""

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    def describe(self) -> str:
        """``actor 0: cuda:0 (NVIDIA H200, GPU 3), bfloat16, 2 CPU threads``: the line every process logs."""
        where = str(self.device)
        if self.on_gpu:
            where += f" ({self.gpu_name}, GPU {','.join(map(str, self.gpu_ids))})"
        precision = self.precision + (" (TF32 matmuls)" if self.on_gpu and self.precision == "float32" else "")
        egl = f", renders on EGL device {self.egl_device}" if self.egl_device is not None else ""
        return f"{self.role}: {where}, {precision}, {self.threads} CPU thread{'s' * (self.threads != 1)}{egl}"


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """"auto" -> bfloat16 where the device computes it natively (CUDA with bf16, CPUs with AVX512-BF16/AMX)."""
    device = torch.device(device)
    if precision != "auto":
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: choose auto or one of {', '.join(PRECISIONS)}")
        return precision
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    else:
        native = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return "bfloat16" if native else "float32"


def cuda_unusable_reason() -> str | None:
    """Why this process cannot compute on CUDA (None when it can): a CPU build, or no usable device/driver."""
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU build"
    if not torch.cuda.is_available():
        return (f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable GPU "
                f"(no device visible, or an NVIDIA driver too old for CUDA {torch.version.cuda})")
    return None


def setup_process(role: str, *, gpu_ids: Sequence[int | str] = (), precision: str = "auto", threads: int = 1,
                  device: str | None = None) -> ProcessDevice:
    """Decide and apply this process's device, threads, precision and render device (module docstring).

    ``gpu_ids``: what Ray assigned (``ray.get_gpu_ids()``); ``device``: an explicit choice instead
    ("cpu", "cuda", "cuda:1"; ``orrery eval --device``). Raises DeviceError when a GPU was
    reserved or asked for but CUDA cannot be used here.
    """
    ids = tuple(int(i) for i in gpu_ids)
    wants_gpu = bool(ids) if device is None else torch.device(device).type == "cuda"
    if wants_gpu:
        reason = cuda_unusable_reason()
        if reason is not None:
            got = f"Ray reserved GPU {','.join(map(str, ids))} for it" if ids else f"--device {device} was asked for"
            raise DeviceError(f"{role}: {got}, but {reason}. Install a CUDA build of torch on this node (README: "
                              f"'GPU machines'), or run it on the CPU (cluster.learner_gpus=0 cluster.actor_gpus=0"
                              f"{'' if ids else ', --device cpu'})")
        chosen = torch.device(device or "cuda:0")
        if chosen.index is None:
            chosen = torch.device("cuda", 0)
        if chosen.index >= torch.cuda.device_count():
            raise DeviceError(f"{role}: {chosen} does not exist here ({torch.cuda.device_count()} GPU(s) visible); "
                              f"choose --device cuda:0..{torch.cuda.device_count() - 1}")
        torch.cuda.set_device(chosen)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        threads = min(max(1, threads), GPU_PROCESS_THREADS)
        name = torch.cuda.get_device_name(chosen)
        physical = ids or (chosen.index,)
    else:
        chosen, name, physical = torch.device("cpu"), "", ()
        threads = max(1, threads)
    torch.set_num_threads(threads)
    egl = _pin_egl_device(physical[0]) if physical else _egl_from_environment()
    return ProcessDevice(role, chosen, threads, resolve_precision(precision, chosen), physical, name, egl)


class ThreadPacer:
    """The learner's CPU threads, paced by whether the actors wait for it.

    On a CPU node the learner and the actors share the cores (``threads`` each). Samples-per-insert makes
    the actors wait for the learner before they collect (replay/limiter.py); while they wait, their cores
    are idle, so the learner computes with ``held_threads`` (its share and theirs) and drops back to
    ``threads`` once they may collect again: two processes computing on the same cores with too many
    threads are slower than with one each (on 2 cores, an update with 2 threads beside a planning actor
    took 1.5x as long as with 1; alone, 0.65x). :meth:`pace` also says when the actors were just let
    go, the moment to publish weights (they start on the freshest)."""

    def __init__(self, threads: int, held_threads: int):
        self.threads, self.held_threads = threads, max(threads, held_threads)
        self.actors_held = False

    def pace(self, held: bool) -> bool:
        """Set the threads for the actors being ``held`` (or not); True if they were held until now."""
        released = self.actors_held and not held
        if held != self.actors_held and self.held_threads != self.threads:
            torch.set_num_threads(self.held_threads if held else self.threads)
        self.actors_held = held
        return released


# ---------------------------------------------------------------- EGL

_EGL_CUDA_DEVICE_NV = 0x323A  # EGL_NV_device_cuda: the CUDA ordinal of an EGL device


def _egl_from_environment() -> int | None:
    value = os.environ.get("MUJOCO_EGL_DEVICE_ID", "")
    return int(value) if value.isdigit() else None


def _pin_egl_device(cuda_index: int) -> int | None:
    """Set MUJOCO_EGL_DEVICE_ID to the EGL device of physical GPU ``cuda_index`` (unless the user set one)."""
    if os.environ.get("MUJOCO_GL", "egl") != "egl":
        return None
    if "MUJOCO_EGL_DEVICE_ID" in os.environ:
        return _egl_from_environment()
    ordinals = egl_cuda_devices()
    if not ordinals:
        return None  # no EGL here (or no way to ask it): leave the choice to MuJoCo
    if cuda_index in ordinals:
        egl = ordinals.index(cuda_index)
    elif all(ordinal is None for ordinal in ordinals) and cuda_index < len(ordinals):
        egl = cuda_index  # the driver does not say which is which: assume EGL's order is CUDA's
    else:
        return None
    os.environ["MUJOCO_EGL_DEVICE_ID"] = str(egl)
    return egl


def egl_cuda_devices() -> list[int | None] | None:
    """The CUDA ordinal of each EGL device, in EGL's order (None for one that is no CUDA device, or where the
    driver does not say); None without EGL.

    Asks libEGL directly (eglQueryDevicesEXT, eglQueryDeviceAttribEXT), so nothing is rendered and
    no dm_control import happens.
    """
    path = ctypes.util.find_library("EGL")
    if path is None:
        return None
    try:
        egl = ctypes.CDLL(path)
        egl.eglGetProcAddress.restype = ctypes.c_void_p
        egl.eglGetProcAddress.argtypes = [ctypes.c_char_p]
        query_address = egl.eglGetProcAddress(b"eglQueryDevicesEXT")
        attrib_address = egl.eglGetProcAddress(b"eglQueryDeviceAttribEXT")
        if not query_address:
            return None
        query = ctypes.CFUNCTYPE(ctypes.c_uint, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p),
                                 ctypes.POINTER(ctypes.c_int))(query_address)
        attrib = ctypes.CFUNCTYPE(ctypes.c_uint, ctypes.c_void_p, ctypes.c_int,
                                  ctypes.POINTER(ctypes.c_long))(attrib_address) if attrib_address else None
        devices, count = (ctypes.c_void_p * 32)(), ctypes.c_int(0)
        if not query(32, devices, ctypes.byref(count)):
            return None
        ordinals: list[int | None] = []
        for index in range(count.value):
            value = ctypes.c_long(-1)
            known = attrib is not None and attrib(devices[index], _EGL_CUDA_DEVICE_NV, ctypes.byref(value))
            ordinals.append(int(value.value) if known and value.value >= 0 else None)
        return ordinals
    except (OSError, AttributeError, ValueError):
        return None
