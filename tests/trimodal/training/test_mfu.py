import pytest
import torch

from trimodal.training import mfu as mfu_module
from trimodal.training.mfu import datasheet_peak, mfu, peak_flops


@pytest.mark.parametrize(("name", "peak"), [
    ("NVIDIA H100 80GB HBM3", 989e12),  # SXM
    ("NVIDIA H100 PCIe", 756e12),
    ("NVIDIA H100 NVL", 835e12),
    ("NVIDIA H200", 989e12),
    ("NVIDIA A100-SXM4-80GB", 312e12),
    ("NVIDIA A100 80GB PCIe", 312e12),
    ("NVIDIA A10", 125e12),
    ("NVIDIA L4", 121e12),
    ("NVIDIA L40S", 362e12),
    ("NVIDIA GeForce RTX 4090", 165.2e12),
])
def test_datasheet_peak_by_device_name(name, peak):
    assert datasheet_peak(name) == peak


@pytest.mark.parametrize("name", ["NVIDIA A10G", "Tesla T4", "Tesla V100-SXM2-16GB", "AMD Instinct MI300X"])
def test_unknown_gpus_are_not_guessed(name):
    assert datasheet_peak(name) is None  # neither a family member's figure (A10G is not an A10) nor a default


def test_a_known_gpu_takes_the_datasheet_figure_without_measuring(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(mfu_module, "measured_matmul_flops", pytest.fail)
    peak_flops.cache_clear()
    try:
        peak, source = peak_flops(torch.device("cuda", 7))
    finally:
        peak_flops.cache_clear()
    assert peak == 989e12 and "datasheet" in source


def test_cpu_peak_is_measured_once_per_process(monkeypatch):
    calls = []

    def measured(*args):
        calls.append(args)
        return real(*args)

    real = mfu_module.measured_matmul_flops
    monkeypatch.setattr(mfu_module, "measured_matmul_flops", measured)
    peak_flops.cache_clear()
    state = torch.get_rng_state()
    first, second = peak_flops(torch.device("cpu")), peak_flops(torch.device("cpu"))
    assert first is second and len(calls) == 1
    assert first[0] > 0 and "measured fp32" in first[1]
    assert torch.equal(torch.get_rng_state(), state)  # a private generator: resume replays the global RNG exactly


def test_mfu_is_flops_over_time_and_every_devices_peak():
    assert mfu(6e12, 2.0, 1e12, 3) == pytest.approx(1.0)
    assert mfu(1e12, 1.0, 1e12, 4) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="seconds > 0"):
        mfu(1e12, 0.0, 1e12, 1)
