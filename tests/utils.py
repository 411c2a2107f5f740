"""Shared test helpers: devices, the dtype -> tolerance table, and small assertions."""
import pytest
import torch

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# CPU cases always run; CUDA cases skip on machines without a GPU.
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]

# One table for every test: dtype -> (rtol, atol).
TOL = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-6),
    torch.float16: (1e-2, 1e-3),
    torch.bfloat16: (2e-2, 1e-2),
}


def tol(dtype):
    rtol, atol = TOL[dtype]
    return {"rtol": rtol, "atol": atol}


def assert_close(actual, expected, dtype=None, **kw):
    dtype = dtype or expected.dtype
    opts = tol(dtype)
    opts.update(kw)
    torch.testing.assert_close(actual, expected, **opts)


def assert_raises_naming(exc_type, arg_name, fn, *args, **kwargs):
    """The call raises exc_type and the message names the offending argument."""
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    assert arg_name in str(info.value), f"message {str(info.value)!r} does not name {arg_name!r}"
    return info.value


def random_boxes(n, *, dtype=torch.float32, device="cpu", size=1000.0, max_wh=100.0, generator=None):
    xy = torch.rand(n, 2, dtype=torch.float64, generator=generator) * size
    wh = torch.rand(n, 2, dtype=torch.float64, generator=generator) * max_wh
    return torch.cat([xy, xy + wh], 1).to(dtype=dtype, device=device)


def unique_scores(n, *, dtype=torch.float32, device="cpu", generator=None):
    return (torch.randperm(n, generator=generator).to(torch.float64) / max(n, 1)).to(dtype=dtype, device=device)
