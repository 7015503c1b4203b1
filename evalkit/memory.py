"""Peak memory of a measurement (GPU allocator or process RSS) and out-of-memory errors."""

from __future__ import annotations

import resource


def is_oom(error: BaseException) -> bool:
    import torch

    if isinstance(error, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _gpus(device: str) -> list[int]:
    """The GPUs a run's model lives on: the one named, or all of them (``device_map="auto"``)."""
    import torch

    if not device.startswith("cuda"):
        return []
    return [int(device.split(":")[1])] if ":" in device else list(range(torch.cuda.device_count()))


def peak_mb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return sum(torch.cuda.max_memory_allocated(i) for i in _gpus(device)) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (Linux: KiB)


def reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        for i in _gpus(device):
            torch.cuda.reset_peak_memory_stats(i)
