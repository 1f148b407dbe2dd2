"""Where the work runs: the device, the autocast precision, and this process's place in a torchrun job."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch


def resolve_device(name: str | torch.device) -> torch.device:
    """"auto" -> cuda when available, else cpu; a clear ValueError for devices that are not there."""
    if isinstance(name, torch.device):
        name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} was asked for but no CUDA GPU is available here; use device='cpu' "
                             "(--device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    return device


# Signs that this machine has an NVIDIA GPU and its driver, whether or not CUDA works: without them a CPU
# is simply what there is, and nothing needs saying.
NVIDIA_DRIVER_FILES = (Path("/proc/driver/nvidia/version"), Path("/dev/nvidiactl"), Path("/dev/nvidia0"))


def cuda_failure() -> str | None:
    """Why CUDA is unusable on a machine that looks as if it has an NVIDIA GPU, in one line; None when CUDA
    works, or when there is no sign of a GPU here (no driver files and CUDA_VISIBLE_DEVICES not set)."""
    if torch.cuda.is_available():
        return None
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    has_driver = any(p.exists() for p in NVIDIA_DRIVER_FILES)
    if not has_driver and hidden is None:
        return None
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is a CPU-only build; install a CUDA build (book/setup.md)"
    if hidden is not None and hidden.strip() in ("", "-1"):
        return f"CUDA_VISIBLE_DEVICES={hidden!r} hides every GPU"
    try:
        torch.cuda.init()
    except Exception as err:                                               # the reason torch found
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"torch {torch.__version__} (CUDA {torch.version.cuda}) cannot use the GPU: {first}"
    return f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable GPU"


def native_bf16(device: torch.device) -> bool:
    """True when ``device`` is a CUDA GPU with bf16 tensor cores (Ampere or newer), not just emulation."""
    if device.type != "cuda":
        return False
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:                                                      # torch < 2.5 has no such argument
        return torch.cuda.get_device_capability(device)[0] >= 8


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype a run uses (None: float32 throughout).

    ``"auto"``: bf16 on GPUs that have it (A100, H100, RTX 30xx and newer), float16 on those that do not
    (T4, V100), float32 on a CPU, where most processors lack fast half-precision units. ``"bf16"`` and
    ``"fp16"`` force that dtype (the CPU too, for tests); ``"fp32"`` switches autocast off.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if precision != "auto":
        raise ValueError(f"precision must be auto, bf16, fp16 or fp32, got {precision!r}")
    if device.type != "cuda":
        return None
    return torch.bfloat16 if native_bf16(device) else torch.float16


def available_memory(device: torch.device) -> int | None:
    """Bytes that new tensors on ``device`` can use now (None when this cannot be told).

    CUDA: the GPU's free memory. CPU: MemAvailable of /proc/meminfo (Linux), else the physical memory.
    """
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


@dataclass
class DistInfo:
    """Where this process sits in a torchrun job (world_size 1 when run alone)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def from_env(cls) -> "DistInfo":
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
                   int(os.environ.get("WORLD_SIZE", 1)))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def init(self, device: torch.device) -> torch.device:
        """Join the process group (NCCL on GPUs, gloo on CPUs); returns this process's device."""
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        return device
