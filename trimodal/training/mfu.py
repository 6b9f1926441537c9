"""The MFU denominator: a device's peak FLOP/s, measured or looked up once per process, and MFU itself.

On CUDA the peak is the datasheet's dense bf16 tensor-core figure (the precision the trainer's autocast runs
in; never the 2:4-sparsity figure, which dense training cannot reach), from the table below by device name;
an unknown GPU gets a measured bf16 matmul instead. On CPU, where training runs fp32, a measured fp32 matmul.
"""
from __future__ import annotations

import functools
import re
import time

import torch

# (pattern on torch.cuda.get_device_name, dense bf16 FLOP/s): first match wins, so variants come before the
# family. Datasheet figures halved where NVIDIA quotes them with sparsity.
DATASHEET_BF16 = [
    (r"\bH100\b.*\bNVL\b", 835e12),  # H100 NVL: 1,671 TFLOPS sparse
    (r"\bH100\b.*\bPCIE\b", 756e12),  # H100 PCIe: 1,513 sparse
    (r"\bH100\b", 989e12),  # H100 SXM ("NVIDIA H100 80GB HBM3"): 1,979 sparse
    (r"\bH200\b.*\bNVL\b", 835e12),  # H200 NVL: 1,671 sparse
    (r"\bG?H200\b", 989e12),  # H200 SXM and GH200: 1,979 sparse
    (r"\bB200\b", 2250e12),  # HGX B200: 4.5 PFLOPS sparse per GPU
    (r"\bA100\b", 312e12),  # A100 SXM and PCIe: 624 sparse
    (r"\bA30\b", 165e12),  # A30: 330 sparse
    (r"\bA40\b", 149.7e12),  # A40: 299.4 sparse
    (r"\bA10\b", 125e12),  # A10 (not AWS's A10G, which NVIDIA publishes no figure for): 250 sparse
    (r"\bL40S\b", 362e12),  # L40S: 733 sparse
    (r"\bL40\b", 181e12),  # L40: 362 sparse
    (r"\bL4\b", 121e12),  # L4: 242 sparse
    (r"\bRTX 4090\b", 165.2e12),  # Ada whitepaper, bf16 with fp32 accumulate: 330.4 sparse
    (r"\bRTX 3090\b", 71e12),  # GA102 whitepaper, bf16 with fp32 accumulate: 142 sparse
]


def datasheet_peak(name: str) -> float | None:
    """Dense bf16 FLOP/s of a GPU by its CUDA name, None when the table does not know it."""
    return next((peak for pattern, peak in DATASHEET_BF16 if re.search(pattern, name, re.IGNORECASE)), None)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measured_matmul_flops(device: torch.device, dtype: torch.dtype, size: int, repeats: int) -> float:
    """FLOP/s of a size x size matmul on this device (after one untimed warm-up)."""
    g = torch.Generator(device).manual_seed(0)  # never the global RNG: resume must replay it exactly
    a, b = (torch.randn(size, size, generator=g, device=device, dtype=dtype) for _ in range(2))
    a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


@functools.cache
def peak_flops(device: torch.device) -> tuple[float, str]:
    """(peak FLOP/s, how it was obtained) for `device`; measured at most once per device per process."""
    if device.type != "cuda":
        return measured_matmul_flops(device, torch.float32, 512, 5), f"measured fp32 matmul on {device.type}"
    name = torch.cuda.get_device_name(device)
    peak = datasheet_peak(name)
    if peak is not None:
        return peak, f"datasheet dense bf16 peak of {name}"
    return (measured_matmul_flops(device, torch.bfloat16, 8192, 10),
            f"measured bf16 matmul on {name} (not in trimodal/training/mfu.py's datasheet table)")


def mfu(flops: float, seconds: float, peak: float, world_size: int) -> float:
    """Model FLOPs utilisation: the FLOPs all ranks did over `seconds`, against world_size devices' peak."""
    if seconds <= 0 or peak <= 0 or world_size < 1:
        raise ValueError(f"mfu needs seconds > 0, peak > 0 and world_size >= 1, got {seconds}, {peak}, {world_size}")
    return flops / (seconds * peak * world_size)
