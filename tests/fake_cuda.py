"""A stand-in for ``torch.cuda`` on one GPU, for the CUDA branches of device set-up on machines without one."""

from __future__ import annotations

from types import SimpleNamespace

GiB = 2**30


class FakeCuda:
    """Stands in for ``torch.cuda`` on one GPU; records what the set-up code does to it."""

    def __init__(self, total=40 * GiB, peak_reserved=0, available=True):
        self.total, self.peak_reserved, self.available = total, peak_reserved, available
        self.calls = []

    def is_available(self):
        return self.available

    def device_count(self):
        return 1 if self.available else 0

    def empty_cache(self):
        self.calls.append("empty_cache")

    def reset_peak_memory_stats(self, device):
        self.calls.append("reset_peak_memory_stats")

    def get_device_properties(self, device):
        return SimpleNamespace(total_memory=self.total)

    def set_per_process_memory_fraction(self, fraction, device):
        self.calls.append(("fraction", fraction))

    def max_memory_reserved(self, device):
        return self.peak_reserved
