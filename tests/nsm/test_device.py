"""CUDA set-up on stand-ins of old and new torch (no GPU here), memory caps, and out-of-memory verdicts."""

from types import SimpleNamespace

import pytest
import torch

from nsm.device import (
    CONTEXT_MARGIN_BYTES,
    INFEASIBLE,
    RETRY,
    classify_out_of_memory,
    enable_tf32,
    is_out_of_memory,
    memory_cap,
    out_of_memory_verdict,
    prepare_trial_memory,
    release_memory,
    resolve_device,
)
from nsm.errors import ConfigError

from tests.fake_cuda import GiB, FakeCuda as _FakeCuda


class _StrictModule:
    """Like torch's backend modules: setting an attribute they do not know raises AttributeError."""

    def __init__(self, **known):
        object.__setattr__(self, "_known", dict(known))

    def __getattr__(self, name):
        try:
            return self._known[name]
        except KeyError:
            raise AttributeError(f"Unknown attribute {name}") from None

    def __setattr__(self, name, value):
        if name not in self._known:
            raise AttributeError(f"Unknown attribute {name}")
        self._known[name] = value


def _old_torch_backends():
    """torch 2.3-2.8: ``allow_tf32`` flags only, no ``fp32_precision``."""
    return SimpleNamespace(
        cuda=SimpleNamespace(matmul=_StrictModule(allow_tf32=False, allow_fp16_reduced_precision_reduction=True)),
        cudnn=_StrictModule(allow_tf32=True, enabled=True),
    )


@pytest.fixture
def restore_precision():
    matmul, conv = torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    yield
    torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = matmul, conv


def test_tf32_on_old_torch_uses_allow_tf32():
    backends = _old_torch_backends()
    with pytest.raises(AttributeError):  # what the trainer used to do: every GPU trial crashed
        backends.cuda.matmul.fp32_precision = "tf32"
    assert enable_tf32(backends) == "allow_tf32"
    assert backends.cuda.matmul.allow_tf32 is True and backends.cudnn.allow_tf32 is True


def test_tf32_on_the_current_torch_uses_fp32_precision(restore_precision):
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    assert enable_tf32() == "fp32_precision"
    assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    assert torch.backends.cudnn.conv.fp32_precision == "tf32"


def test_resolve_device_on_a_gpu_stand_in_turns_tf32_on():
    backends = _old_torch_backends()
    assert resolve_device("auto", cuda=_FakeCuda(), backends=backends) == torch.device("cuda")
    assert backends.cuda.matmul.allow_tf32 is True
    assert resolve_device("cuda:0", cuda=_FakeCuda(), backends=_old_torch_backends()) == torch.device("cuda", 0)


def test_resolve_device_without_cuda():
    no_gpu = _FakeCuda(available=False)
    assert resolve_device("auto", cuda=no_gpu) == torch.device("cpu")
    assert resolve_device("cpu", cuda=no_gpu) == torch.device("cpu")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda", cuda=no_gpu)
    with pytest.raises(ConfigError, match="only 1 CUDA device"):
        resolve_device("cuda:3", cuda=_FakeCuda(), backends=_old_torch_backends())
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu", cuda=no_gpu)


def test_quarter_gpu_caps_below_its_slice_by_the_context_margin():
    assert memory_cap(0.25, 40 * GiB) == 10 * GiB - CONTEXT_MARGIN_BYTES
    # Four quarter trials and their contexts fit on the card.
    assert 4 * (memory_cap(0.25, 40 * GiB) + CONTEXT_MARGIN_BYTES) <= 40 * GiB
    with pytest.raises(ConfigError, match="cannot hold a CUDA context"):
        memory_cap(0.05, 8 * GiB)


def test_prepare_trial_memory_empties_the_cache_and_caps_the_share():
    cuda = _FakeCuda(total=40 * GiB)
    cap = prepare_trial_memory(torch.device("cuda"), 0.25, cuda=cuda)
    assert cap == 10 * GiB - CONTEXT_MARGIN_BYTES
    assert cuda.calls[:2] == ["empty_cache", "reset_peak_memory_stats"]
    assert cuda.calls[2] == ("fraction", cap / (40 * GiB))

    whole = _FakeCuda(total=40 * GiB)
    assert prepare_trial_memory(torch.device("cuda"), 1.0, cuda=whole) == 40 * GiB - CONTEXT_MARGIN_BYTES
    assert whole.calls[-1] == ("fraction", 1.0)  # lifts a cap a reused actor may still carry

    on_cpu = _FakeCuda()
    assert prepare_trial_memory(torch.device("cpu"), 0.25, cuda=on_cpu) is None
    assert on_cpu.calls == []


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB."), True),
        (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"), True),
        (RuntimeError("cuDNN error: CUDNN_STATUS_NOT_ENOUGH_MEMORY"), True),
        (RuntimeError("CUDA error: out of memory"), True),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x6)"), False),
        (ValueError("out of memory"), False),
    ],
)
def test_out_of_memory_errors_are_recognised(error, expected):
    assert is_out_of_memory(error) is expected


def test_out_of_memory_below_the_cap_is_retried_and_at_the_cap_is_infeasible():
    cap = 10 * GiB - CONTEXT_MARGIN_BYTES
    cuda = torch.device("cuda")
    small_request = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 ...")
    # A neighbour took the memory: this trial had reserved 3 GiB of its 9.5.
    assert out_of_memory_verdict(small_request, cuda, cap, cuda=_FakeCuda(peak_reserved=3 * GiB)) == RETRY
    # The trial itself filled its share.
    assert out_of_memory_verdict(small_request, cuda, cap, cuda=_FakeCuda(peak_reserved=cap)) == INFEASIBLE
    # A request that cannot fit on top of what the trial holds.
    big_request = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB. GPU 0 ...")
    assert out_of_memory_verdict(big_request, cuda, cap, cuda=_FakeCuda(peak_reserved=6 * GiB)) == INFEASIBLE
    # cuBLAS says nothing about the request: judged by the trial's own peak.
    cublas = RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")
    assert out_of_memory_verdict(cublas, cuda, cap, cuda=_FakeCuda(peak_reserved=GiB)) == RETRY
    assert out_of_memory_verdict(cublas, cuda, cap, cuda=_FakeCuda(peak_reserved=int(0.97 * cap))) == INFEASIBLE


def test_no_verdict_for_other_errors_or_devices():
    cap = 9 * GiB
    assert out_of_memory_verdict(ValueError("bad config"), torch.device("cuda"), cap, cuda=_FakeCuda()) is None
    oom = torch.cuda.OutOfMemoryError("CUDA out of memory.")
    assert out_of_memory_verdict(oom, torch.device("cpu"), None, cuda=_FakeCuda()) is None
    assert classify_out_of_memory(oom, peak_reserved_bytes=0, cap_bytes=cap) == RETRY


def test_release_memory_empties_the_cache_on_cuda_only():
    cuda = _FakeCuda()
    release_memory(torch.device("cpu"), cuda=cuda)
    assert cuda.calls == []
    release_memory(torch.device("cuda"), cuda=cuda)
    assert cuda.calls == ["empty_cache"]
