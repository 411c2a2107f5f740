"""Chip limits the benchmark tables compare against: DRAM bandwidth and dense matrix rates.

Datasheet figures (NVIDIA, dense, no structured sparsity), matched by substring of
``torch.cuda.get_device_name()``, the first match winning (so "H100 NVL" before "H100").
Measured on one lent H200 of this workplace (device KINDS.md): a device-to-device copy moved
about 4.3 TB/s and an 8192^3 bf16 product ran at about 790 TFLOP/s, i.e. 90 % and 80 % of the
datasheet figures below: a fraction of peak near 0.9 of DRAM is at the copy ceiling.

>>> chip_peaks("NVIDIA H200")["dram"]
4800000000000.0
>>> matmul_peak("NVIDIA H100 80GB HBM3", "float32", tf32=False)
67000000000000.0
>>> chip_peaks("cpu") is None
True
"""
from typing import Optional

# bytes/s for dram; FLOP/s for the rest. fp32 is the CUDA-core rate (what a float32 product
# gets with TF32 off); tf32/bf16/fp16 the tensor-core rates; fp64 the tensor-core FP64 rate.
PEAKS = [
    ("H200 NVL", dict(dram=4.8e12, fp64=60e12, fp32=60e12, tf32=417e12, bf16=835e12, fp16=835e12)),
    ("H200", dict(dram=4.8e12, fp64=67e12, fp32=67e12, tf32=495e12, bf16=989e12, fp16=989e12)),
    ("H100 NVL", dict(dram=3.9e12, fp64=60e12, fp32=60e12, tf32=417e12, bf16=835e12, fp16=835e12)),
    ("H100 PCIe", dict(dram=2.0e12, fp64=51e12, fp32=51e12, tf32=378e12, bf16=756e12, fp16=756e12)),
    ("H100", dict(dram=3.35e12, fp64=67e12, fp32=67e12, tf32=495e12, bf16=989e12, fp16=989e12)),
]
_DTYPE_KEY = {"float64": "fp64", "float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def chip_peaks(device_name: str) -> Optional[dict]:
    """The peak table of the first entry whose key is in ``device_name``, or None."""
    return next((dict(p) for key, p in PEAKS if key in device_name), None)


def matmul_peak(device_name: str, dtype: str, *, tf32: bool) -> Optional[float]:
    """Dense matrix-product peak (FLOP/s) for ``dtype`` ('float32', 'bfloat16', ...); float32
    counts the TF32 tensor-core rate only when TF32 products are allowed."""
    peaks = chip_peaks(device_name)
    key = _DTYPE_KEY.get(str(dtype).replace("torch.", ""))
    if peaks is None or key is None:
        return None
    if key == "fp32" and tf32:
        key = "tf32"
    return peaks[key]


def _num(x: float) -> str:
    """Whole numbers from 100 up, three significant digits below."""
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


def rate_text(seconds: float, *, nbytes: Optional[float] = None, flops: Optional[float] = None,
              device_name: str = "", dtype: str = "float32", tf32: bool = False) -> str:
    """'123 GB/s (3 % of 4.8 TB/s DRAM)' or '45.1 TFLOP/s (67 % of 67 fp32)'; no fraction where
    the chip is not in the table (the CPU).

    >>> rate_text(1e-3, nbytes=2.4e9, device_name="NVIDIA H200")
    '2400 GB/s (50 % of 4.8 TB/s DRAM)'
    >>> rate_text(1e-3, flops=1e9, device_name="cpu")
    '1 TFLOP/s'
    >>> rate_text(1.0, flops=4.3e9, device_name="cpu")
    '0.0043 TFLOP/s'
    """
    peaks = chip_peaks(device_name)
    if nbytes is not None:
        text = f"{_num(nbytes / seconds / 1e9)} GB/s"
        if peaks:
            frac = f"{nbytes / seconds / peaks['dram']:.0%}".replace("%", " %")
            text += f" ({frac} of {peaks['dram'] / 1e12:.3g} TB/s DRAM)"
        return text
    text = f"{_num(flops / seconds / 1e12)} TFLOP/s"
    peak = matmul_peak(device_name, dtype, tf32=tf32)
    if peak:
        label = _DTYPE_KEY[str(dtype).replace("torch.", "")]
        label = "tf32" if label == "fp32" and tf32 else label
        frac = f"{flops / seconds / peak:.0%}".replace("%", " %")
        text += f" ({frac} of {peak / 1e12:.0f} {label})"
    return text
