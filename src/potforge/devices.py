"""Which PyTorch device a stage computes on: ``cpu`` (default), ``cuda``, ``cuda:N`` or ``auto``.

Settings carry the device as a string (a campaign config may be written on a login node
without a GPU); it is resolved here, when the stage runs, so that a missing GPU is one clear
:class:`ConfigError` on the machine that lacks it.
"""

from __future__ import annotations

import re

import torch

from potforge.errors import ConfigError

#: What a ``device`` setting may say.
DEVICE_PATTERN = r"^(cpu|auto|cuda(:\d+)?)$"


def resolve_device(name: str) -> torch.device:
    """``"auto"`` is the first GPU when PyTorch sees one, else the CPU."""
    if not re.match(DEVICE_PATTERN, name):
        raise ConfigError(f"device {name!r}: use cpu, cuda, cuda:N or auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} asked for, but PyTorch sees no GPU here (torch {torch.__version__})")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (for honest wall-clock timings); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    """``cpu``, or ``cuda:0 (NVIDIA H200)``: for logs and benchmark headers."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)
