#!/usr/bin/env python3
"""Say in one line which torch is installed: its version, CUDA or CPU build, and whether a GPU is usable.

    .venv/bin/python scripts/torch-check.py

The Makefile runs it at the end of `make install`. It only reports: it exits 0 whatever it finds
(a CPU-only machine with a CUDA build is a working install, it just trains on the CPU).

    torch 2.13.0+cpu: CPU build (no CUDA)
    torch 2.13.0: CUDA 13.0 build, GPU: NVIDIA H200 (driver 580.95.05)
    torch 2.13.0: CUDA 13.0 build but no usable GPU: Found no NVIDIA driver on your system. ...
"""

from __future__ import annotations

import shutil
import subprocess


def one_line(error: BaseException, limit: int = 200) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def nvidia_driver() -> str | None:
    """The NVIDIA kernel driver's version (580.95.05), from /proc or nvidia-smi; None where neither tells."""
    try:
        with open("/proc/driver/nvidia/version") as f:
            for word in f.readline().split():
                if word[:1].isdigit() and "." in word:
                    return word
    except OSError:
        pass
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.split()[0]
        except (OSError, subprocess.SubprocessError):
            pass
    return None


def describe() -> str:
    try:
        import torch
    except Exception as error:  # noqa: BLE001 - report, never fail the install
        return f"torch is not importable: {one_line(error)}"
    version = torch.__version__
    hip = getattr(torch.version, "hip", None)
    cuda = torch.version.cuda
    if not cuda and not hip:
        return f"torch {version}: CPU build (no CUDA)"
    build = f"ROCm {hip} build" if hip else f"CUDA {cuda} build"
    try:
        torch.cuda.init()  # raises with the reason (no driver, driver too old, no device) where is_available() is False
        count = torch.cuda.device_count()
        if count == 0:
            raise RuntimeError("no CUDA device visible (CUDA_VISIBLE_DEVICES?)")
        names = [torch.cuda.get_device_name(i) for i in range(count)]
        torch.zeros(1, device="cuda").add_(1)  # a kernel actually runs (arch supported by this build)
        torch.cuda.synchronize()
    except Exception as error:  # noqa: BLE001
        driver = nvidia_driver()
        found = f" (driver {driver})" if driver else ""
        return f"torch {version}: {build} but no usable GPU{found}: {one_line(error)}"
    gpus = names[0] if count == 1 else f"{count} x {names[0]}" if len(set(names)) == 1 else ", ".join(names)
    driver = nvidia_driver()
    return f"torch {version}: {build}, GPU: {gpus}" + (f" (driver {driver})" if driver else "")


def main() -> int:
    try:
        print(describe(), flush=True)
    except Exception as error:  # noqa: BLE001
        print(f"torch check failed: {one_line(error)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
