"""Every device choice pathweak makes, in one place (ground floor: no pathweak stage package is imported,
and torch only inside the functions, so importing this module stays light).

- :func:`parse_device`: a ``--device`` string (auto, cpu, cuda, cuda:N, or another torch device type)
  checked against the GPUs this process sees, as one clear error instead of "invalid device ordinal";
- :func:`count_devices` and :func:`device_list`: ``--devices N|all`` as a process count and one device
  name per process;
- :func:`precision` (the Lightning precision "auto" stands for), :func:`autocast` (an encoder's mixed
  precision region) and :func:`full_precision` (a region that must stay float32 under autocast);
- :func:`set_device`: a worker process takes its device (``PATHWEAK_DEVICE``, read back by
  :func:`worker_device`, and the current CUDA device, so pinned memory, NCCL and a bare "cuda" land on it
  and no process opens a context on GPU 0 by accident);
- :func:`out_of_memory` and :func:`empty_cache`: recognising an out-of-memory error and giving the
  cached memory back (after the error's traceback is gone; inside ``except`` it still holds the tensors).

The tests forbid ``torch.cuda.device_count``, ``torch.cuda.set_device``, ``torch.autocast`` with a dtype
and Lightning precision names anywhere else in the package (tests/test_devices_module.py).
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    import torch

ENV = "PATHWEAK_DEVICE"  # set in a worker process: the device it owns


def visible_gpus() -> int:
    """CUDA devices this process sees (0 without CUDA); counting creates no CUDA context."""
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def parse_device(device: Any = "auto", *, visible: int | None = None, option: str = "--device") -> torch.device:
    """``device`` as a ``torch.device``, checked: "auto" is CUDA when a GPU is visible, else the CPU; "cuda"
    and "cuda:N" must name a GPU this process sees (``visible``: that count, default the real one)."""
    import torch

    if isinstance(device, torch.device):
        device = str(device)
    text = str(device).strip().lower()
    n = visible_gpus() if visible is None else visible
    if text == "auto":
        return torch.device("cuda" if n else "cpu")
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device {device!r}", fix="pass auto, cpu or cuda[:N]") from None
    if dev.type == "cuda":
        if n == 0:
            raise ConfigError("no CUDA device is available", fix=f"pass {option} cpu")
        if dev.index is not None and dev.index >= n:
            raise ConfigError(
                f"{option} {text} names GPU {dev.index}, and this process sees {n} GPU{'s' if n > 1 else ''}",
                fix=f"pass {option} cuda:0{f' to cuda:{n - 1}' if n > 1 else ''} (CUDA_VISIBLE_DEVICES renumbers "
                "the GPUs a process sees from 0)",
            )
    return dev


def count_devices(devices: str | int | None, *, visible: int | None = None) -> int:
    """Processes for ``--devices``: an integer >= 1, or "all" (every visible GPU; 1 without CUDA)."""
    if devices is None:
        return 1
    if str(devices).strip().lower() == "all":
        return max(1, visible_gpus() if visible is None else visible)
    try:
        n = int(devices)
    except ValueError:
        raise ConfigError(
            f"--devices {devices!r} is not a number or 'all'", fix="pass e.g. --devices 2 or --devices all"
        ) from None
    if n < 1:
        raise ConfigError(f"--devices must be at least 1, got {n}", fix="pass e.g. --devices 2")
    return n


def device_list(devices: str | int | None, device: Any = "auto", *, visible: int | None = None) -> list[str]:
    """One device name per process: ``cuda:0 .. cuda:N-1`` when the work runs on CUDA (``device`` auto with
    a GPU, or cuda), the one GPU ``cuda:K`` names for a single process, else N times ``cpu``. More GPUs
    than visible, or ``cuda:K`` with several processes, is an error."""
    have = visible_gpus() if visible is None else visible
    n = count_devices(devices, visible=have)
    dev = parse_device(device, visible=have)
    if dev.type != "cuda":
        return [str(dev)] * n
    if n > have:
        raise ConfigError(
            f"--devices {n} asks for more GPUs than the {have} present", fix=f"pass --devices {have} or all"
        )
    if dev.index is not None:
        if n > 1:
            raise ConfigError(
                f"--device cuda:{dev.index} names one GPU and --devices {n} asks for several",
                fix="pass --device cuda (or auto) with --devices",
            )
        return [f"cuda:{dev.index}"]
    return [f"cuda:{i}" for i in range(n)]


def precision(requested: str, device: Any) -> str:
    """The Lightning precision of a run on ``device``: ``requested`` as given, or for "auto" bf16 mixed
    precision on a CUDA device that supports it (else fp16 mixed), 32-bit on the CPU."""
    if requested != "auto":
        return requested
    import torch

    if torch.device(device).type == "cuda":
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def autocast_dtype(device: Any, mode: str = "bf16") -> torch.dtype | None:
    """The dtype an encoder's forward autocasts to: bfloat16 on CUDA for a "bf16" encoder (float16 for an
    "fp16" model, as the tissue models ran); None (float32) on the CPU and for "fp32" encoders."""
    import torch

    if torch.device(device).type == "cuda":
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)
    return None


def autocast(device: Any, mode: str = "bf16") -> contextlib.AbstractContextManager[Any]:
    """The mixed-precision region of an encoder's forward on ``device`` (see :func:`autocast_dtype`)."""
    import torch

    dtype = autocast_dtype(device, mode)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def autocast_active(device: Any) -> bool:
    """Whether an autocast region is active for ``device``'s type (never for types without autocast: meta)."""
    import torch

    try:
        return bool(torch.is_autocast_enabled(torch.device(device).type))
    except RuntimeError:
        return False


def full_precision(device: Any) -> contextlib.AbstractContextManager[Any]:
    """A region computed in float32 even inside an autocast region (numerically delicate iterations)."""
    import torch

    return torch.autocast(torch.device(device).type, enabled=False)


def world_rank() -> tuple[int, int]:
    """(processes, this one's rank) of the torch.distributed group this process is in; (1, 0) outside one."""
    import torch

    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def set_device(device: str) -> None:
    """Make ``device`` this process's own (a pool worker, a DDP rank): ``PATHWEAK_DEVICE`` names it and, for
    a GPU this process sees, it becomes the current CUDA device before anything touches CUDA ("auto" and
    the CPU change nothing on CUDA; a GPU that is not there is left to :func:`parse_device`'s error)."""
    if device == "auto":
        return
    os.environ[ENV] = device
    if device.startswith("cuda:"):
        import torch

        index = torch.device(device).index
        if index is not None and index < visible_gpus():
            torch.cuda.set_device(index)


def worker_device(default: str = "auto") -> str:
    """The device this process was given with :func:`set_device` (or ``PATHWEAK_DEVICE``), else ``default``."""
    return os.environ.get(ENV) or default


def take_worker_device(default: str = "auto") -> str:
    """In a task: the device this process was pinned to, made its current CUDA device (pinned memory and a
    bare "cuda" then land on it), else ``default`` (an unpinned process, e.g. the caller's own, is left as
    it is)."""
    pinned = os.environ.get(ENV)
    if not pinned:
        return default
    set_device(pinned)
    return pinned


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a device running out of memory: torch's OutOfMemoryError, or a library error that
    says so in its message (nvJPEG and others wrap CUDA's allocation errors in a RuntimeError)."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "status_allocator_failure" in text)


def empty_cache(device: Any) -> None:
    """Give the CUDA caching allocator's unused blocks back; call it after leaving the ``except`` block of
    an out-of-memory error (the traceback holds the failed step's tensors until then)."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
