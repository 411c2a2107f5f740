import cv2
import numpy as np
import pytest
import torch

from fastpapers import ops
from fastpapers.reference import pyramid as ref
from tests.utils import DEVICES, assert_close, assert_raises_naming, needs_cuda

DTYPES = [torch.float32, torch.float64]
# Odd, even, single-row, single-column and tiny images.
SIZES = [(1, 1), (1, 7), (7, 1), (2, 2), (3, 5), (4, 9), (16, 16), (33, 20), (31, 64)]


def _per_channel(fn, x, **kw):
    a = x.detach().cpu().numpy()
    out = np.stack([np.stack([fn(a[b, c], **kw) for c in range(a.shape[1])]) for b in range(a.shape[0])])
    return torch.from_numpy(out)


def _up_sizes(h, w):
    """Every size cv2.pyrUp accepts: 2n, and 2n +- 1 where odd."""
    hs = [2 * h, 2 * h - 1, 2 * h + 1]
    ws = [2 * w, 2 * w - 1, 2 * w + 1]
    return [(a, b) for a in hs for b in ws if a >= 1 and b >= 1]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
def test_pyr_down_matches_cv2(device, dtype, size):
    x = torch.rand(2, 3, *size, dtype=dtype, device=device)
    got = ops.pyr_down(x)
    assert got.shape == (2, 3, (size[0] + 1) // 2, (size[1] + 1) // 2)
    assert_close(got.cpu(), _per_channel(cv2.pyrDown, x))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
def test_pyr_up_matches_cv2(device, dtype, size):
    h, w = size
    x = torch.rand(2, 2, h, w, dtype=dtype, device=device)
    assert_close(ops.pyr_up(x).cpu(), _per_channel(cv2.pyrUp, x))
    for oh, ow in _up_sizes(h, w):
        got = ops.pyr_up(x, (oh, ow))
        assert got.shape == (2, 2, oh, ow)
        if w == 1 and ow == 3:
            # cv2.pyrUp leaves column 2 uninitialised here; see the next test.
            continue
        assert_close(got.cpu(), _per_channel(cv2.pyrUp, x, dstsize=(ow, oh)))


@pytest.mark.parametrize("device", DEVICES)
def test_pyr_up_single_column_to_three_copies_column_one(device):
    x = torch.rand(1, 2, 4, 1, dtype=torch.float64, device=device)
    got = ops.pyr_up(x, (9, 3))
    assert_close(got.cpu(), ref.pyr_up(x.cpu(), (9, 3)))
    assert torch.equal(got[..., 2], got[..., 1])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [(1, 9), (9, 1), (3, 5), (33, 20), (64, 31)])
def test_pyramids_match_reference_and_cv2(device, dtype, size):
    x = torch.rand(2, 3, *size, dtype=dtype, device=device)
    levels = ops.max_pyramid_levels(*size)
    gauss = ops.gaussian_pyramid(x, levels)
    lap = ops.laplacian_pyramid(x, levels)
    assert gauss[0] is x
    want_g = ref.gaussian_pyramid(x.cpu().double(), levels)
    want_l = ref.laplacian_pyramid(x.cpu().double(), levels)
    assert [tuple(g.shape) for g in gauss] == [tuple(g.shape) for g in want_g]
    for got, want in zip(gauss + lap, want_g + want_l):
        assert_close(got.cpu().double(), want, dtype=dtype)
    # The same pyramid from a cv2 loop, per channel.
    g_cv = [x.cpu()]
    for _ in range(levels - 1):
        g_cv.append(_per_channel(cv2.pyrDown, g_cv[-1]))
    for i in range(levels - 1):
        fine = g_cv[i]
        up = _per_channel(cv2.pyrUp, g_cv[i + 1], dstsize=(fine.shape[3], fine.shape[2]))
        assert_close(lap[i].cpu(), fine - up)
    assert_close(lap[-1].cpu(), g_cv[-1])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [(1, 1), (1, 6), (5, 1), (2, 2), (3, 5), (37, 64), (64, 64)])
def test_reconstruct_inverts_laplacian_pyramid(device, dtype, size):
    x = torch.rand(3, 2, *size, dtype=dtype, device=device)
    for levels in range(1, ops.max_pyramid_levels(*size) + 1):
        pyr = ops.laplacian_pyramid(x, levels)
        assert len(pyr) == levels
        back = ops.laplacian_reconstruct(pyr)
        assert_close(back, x)
        if levels == 1:
            assert back.data_ptr() != x.data_ptr()


@pytest.mark.parametrize("planes", [(1, 2), (4, 5)])
def test_plane_and_row_scheduling_agree(planes):
    # Few planes run level by level, parallel over rows; many run plane by plane.
    torch.set_num_threads(2)
    x = torch.rand(*planes, 45, 38, dtype=torch.float64)
    lap = ops.laplacian_pyramid(x, 5)
    for got, want in zip(lap, ref.laplacian_pyramid(x, 5)):
        assert_close(got, want)
    for got, want in zip(ops.gaussian_pyramid(x, 5), ref.gaussian_pyramid(x, 5)):
        assert_close(got, want)
    assert_close(ops.laplacian_reconstruct(lap), x)


@pytest.mark.parametrize("device", DEVICES)
def test_laplacian_level_is_fused_difference(device):
    fine = torch.rand(2, 3, 19, 12, dtype=torch.float64, device=device)
    coarse = torch.rand(2, 3, 10, 6, dtype=torch.float64, device=device)
    assert_close(ops.laplacian_level(fine, coarse), fine - ops.pyr_up(coarse, (19, 12)))


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_and_empty(device):
    base = torch.rand(2, 9, 13, 3, dtype=torch.float64, device=device)
    x = base.permute(0, 3, 1, 2)
    assert not x.is_contiguous()
    assert_close(ops.pyr_down(x), ref.pyr_down(x.contiguous()))
    assert_close(ops.pyr_up(x[..., ::2]), ref.pyr_up(x[..., ::2].contiguous()))
    empty = torch.rand(0, 3, 8, 5, device=device)
    assert ops.pyr_down(empty).shape == (0, 3, 4, 3)
    assert ops.pyr_up(empty, (15, 10)).shape == (0, 3, 15, 10)
    pyr = ops.laplacian_pyramid(empty, 3)
    assert [tuple(p.shape) for p in pyr] == [(0, 3, 8, 5), (0, 3, 4, 3), (0, 3, 2, 2)]
    assert ops.laplacian_reconstruct(pyr).shape == (0, 3, 8, 5)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_on_cuda(dtype):
    x = torch.rand(2, 3, 37, 50, device="cuda")
    want = ref.laplacian_pyramid(x.double(), 4)
    got = ops.laplacian_pyramid(x.to(dtype), 4)
    # Our error in half must stay within twice the error of the reference computed in half.
    ref_half = ref.laplacian_pyramid(x.to(dtype), 4)
    for g, r, w in zip(got, ref_half, want):
        assert g.dtype == dtype
        assert (g.double() - w).abs().max() <= 2 * (r.double() - w).abs().max()


# --- gradients ----------------------------------------------------------------------------

GRAD_SIZES = [(1, 4), (4, 1), (2, 2), (3, 5), (6, 7)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", GRAD_SIZES)
def test_gradcheck_pyr_down_and_up(device, size):
    x = torch.rand(1, 2, *size, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(ops.pyr_down, (x,))
    assert torch.autograd.gradgradcheck(ops.pyr_down, (x,))
    for oh, ow in _up_sizes(*size):
        assert torch.autograd.gradcheck(lambda t: ops.pyr_up(t, (oh, ow)), (x,))
    assert torch.autograd.gradgradcheck(lambda t: ops.pyr_up(t, (2 * size[0] + 1, 2 * size[1])), (x,))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", GRAD_SIZES + [(9, 12)])
def test_gradcheck_pyramids(device, size):
    x = torch.rand(2, 1, *size, dtype=torch.float64, device=device, requires_grad=True)
    levels = ops.max_pyramid_levels(*size)
    assert torch.autograd.gradcheck(lambda t: tuple(ops.gaussian_pyramid(t, levels)), (x,))
    assert torch.autograd.gradcheck(lambda t: tuple(ops.laplacian_pyramid(t, levels)), (x,))
    pyr = [p.detach().requires_grad_() for p in ops.laplacian_pyramid(x, levels)]
    assert torch.autograd.gradcheck(lambda *p: ops.laplacian_reconstruct(list(p)), tuple(pyr))
    fine = torch.rand(2, 1, *size, dtype=torch.float64, device=device, requires_grad=True)
    coarse = torch.rand(2, 1, (size[0] + 1) // 2, (size[1] + 1) // 2, dtype=torch.float64, device=device,
                        requires_grad=True)
    assert torch.autograd.gradcheck(ops.laplacian_level, (fine, coarse))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", [(1, 5), (6, 7)])
def test_gradgradcheck_pyramids(device, size):
    # Double backward runs the whole-pyramid backward ops' own backward (the forward ops).
    x = torch.rand(1, 2, *size, dtype=torch.float64, device=device, requires_grad=True)
    levels = ops.max_pyramid_levels(*size)
    assert torch.autograd.gradgradcheck(lambda t: tuple(ops.gaussian_pyramid(t, levels)), (x,))
    assert torch.autograd.gradgradcheck(lambda t: tuple(ops.laplacian_pyramid(t, levels)), (x,))
    pyr = [p.detach().requires_grad_() for p in ops.laplacian_pyramid(x, levels)]
    assert torch.autograd.gradgradcheck(lambda *p: ops.laplacian_reconstruct(list(p)), tuple(pyr))


def _adjoint_case(size, levels, dtype=torch.float64, planes=(1, 2)):
    """Random grads for every level of an image's pyramid, and the reference adjoints (autograd
    through the pure-PyTorch pyramids)."""
    x = torch.rand(*planes, *size, dtype=dtype, requires_grad=True)
    gauss = ref.gaussian_pyramid(x, levels)
    grads = [torch.rand_like(g) for g in gauss]
    want_down = torch.autograd.grad(gauss[1:], x, grads[1:])[0]
    want_lap = torch.autograd.grad(ref.laplacian_pyramid(x, levels), x, grads)[0]
    pyr = [g.detach().requires_grad_() for g in gauss]
    want_rec = torch.autograd.grad(ref.laplacian_reconstruct(pyr), pyr, grads[0])
    return x.detach(), grads, want_down, want_lap, want_rec


@pytest.mark.parametrize("size", [(1, 5), (6, 7), (12, 9)])
def test_pyramid_backward_ops_match_reference(size):
    P = torch.ops.fastpapers
    levels = ops.max_pyramid_levels(*size)
    x, grads, want_down, want_lap, want_rec = _adjoint_case(size, levels)
    assert_close(P.pyr_down_levels_backward(grads[1:], list(size)), want_down)
    assert_close(P.laplacian_pyramid_backward(grads), want_lap)
    got = P.laplacian_reconstruct_backward(grads[0], [g.shape[2] for g in grads[1:]], [g.shape[3] for g in grads[1:]])
    assert len(got) == levels - 1
    for g, w in zip(got, want_rec[1:]):
        assert_close(g, w)


@pytest.mark.parametrize("tail", [None, 12])
def test_triton_pyramid_adjoints(tail, monkeypatch):
    # The CUDA backward of the whole-pyramid ops: with the default threshold every level is
    # small (one chain launch); with 12 pixels levels 13x10 and 7x5 are large.
    from fastpapers.kernels import pyramid as K

    if tail is not None:
        monkeypatch.setattr(K, "TAIL_PIXELS", tail)
        monkeypatch.setattr(K, "CHAIN_TILE", 16)
    x, grads, want_down, want_lap, want_rec = _adjoint_case((13, 10), 5)
    heights, widths = [g.shape[2] for g in grads[1:]], [g.shape[3] for g in grads[1:]]
    logs = []
    with K.counting() as log:
        assert_close(K.pyr_down_levels_backward(grads[1:], (13, 10)), want_down)
    logs.append(log)
    with K.counting() as log:
        assert_close(K.laplacian_pyramid_backward(grads), want_lap)
    logs.append(log)
    with K.counting() as log:
        got = K.laplacian_reconstruct_backward(grads[0], heights, widths)
    logs.append(log)
    for g, w in zip(got, want_rec[1:]):
        assert_close(g, w)
    if tail is None:
        assert logs == [["chain"]] * 3
    else:
        assert logs == [["chain", "separable", "separable"], ["steps", "chain", "separable", "separable"],
                        ["separable", "chain"]]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", [(1, 3), (5, 2), (8, 11)])
def test_backward_ops_are_transposed_matrices(device, size):
    h, w = size
    g = torch.rand(2, 3, (h + 1) // 2, (w + 1) // 2, dtype=torch.float64, device=device)
    want = ref.down_matrix(h).t() @ g.cpu() @ ref.down_matrix(w)
    assert_close(torch.ops.fastpapers.pyr_down_backward(g, [h, w]).cpu(), want)
    for oh, ow in _up_sizes(h, w):
        g = torch.rand(2, 3, oh, ow, dtype=torch.float64, device=device)
        want = ref.up_matrix(h, oh, vertical=True).t() @ g.cpu() @ ref.up_matrix(w, ow, vertical=False)
        assert_close(torch.ops.fastpapers.pyr_up_backward(g, [h, w]).cpu(), want)


# --- registration -------------------------------------------------------------------------


def test_opcheck():
    x = torch.rand(2, 3, 9, 6, dtype=torch.float64, requires_grad=True)
    small = torch.rand(2, 3, 5, 3, dtype=torch.float64, requires_grad=True)
    P = torch.ops.fastpapers
    torch.library.opcheck(P.pyr_down.default, (x,))
    torch.library.opcheck(P.pyr_up.default, (small, [9, 6]))
    torch.library.opcheck(P.pyr_down_backward.default, (small, [9, 6]))
    torch.library.opcheck(P.pyr_up_backward.default, (x, [5, 3]))
    torch.library.opcheck(P.laplacian_level.default, (x, small))
    torch.library.opcheck(P.pyr_up_add.default, (small, x))
    torch.library.opcheck(P.pyr_down_levels.default, (x, 3))
    torch.library.opcheck(P.laplacian_pyramid.default, (x, 3))
    pyr = [p.detach().requires_grad_() for p in P.laplacian_pyramid(x, 3)]
    torch.library.opcheck(P.laplacian_reconstruct.default, (pyr,))
    grads = [torch.rand_like(p) for p in pyr]
    torch.library.opcheck(P.pyr_down_levels_backward.default, (grads[1:], [9, 6]))
    torch.library.opcheck(P.laplacian_pyramid_backward.default, (grads,))
    torch.library.opcheck(P.laplacian_reconstruct_backward.default, (grads[0], [5, 3], [3, 2]))


def test_torch_compile_parity():
    x = torch.rand(2, 3, 21, 30, dtype=torch.float64, requires_grad=True)

    def f(t):
        pyr = ops.laplacian_pyramid(t * 2.0, 4)
        pyr = [pyr[0] * 0.5] + pyr[1:]
        up = ops.pyr_up(ops.pyr_down(t), (21, 30))
        return (ops.laplacian_reconstruct(pyr) + up).square().sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    got = compiled(x)
    (g_got,) = torch.autograd.grad(got, x)
    want = f(x)
    (g_want,) = torch.autograd.grad(want, x)
    assert_close(got, want)
    assert_close(g_got, g_want)


# --- bad input ----------------------------------------------------------------------------


_X = torch.rand(1, 2, 8, 6)
_PYR = ops.laplacian_pyramid(_X, 3)  # levels 8x6, 4x3, 2x2
OpValueError, OpTypeError = ops.OpValueError, ops.OpTypeError

# (call, arguments, error class, what the message must name, what else it must say).
BAD_INPUTS = [
    # pyr_down
    ("pyr_down", (torch.rand(8, 6),), OpValueError, "x", "4 dimensions"),
    ("pyr_down", (torch.rand(1, 1, 2, 8, 6),), OpValueError, "x", "4 dimensions"),
    ("pyr_down", (torch.rand(1, 1, 0, 6),), OpValueError, "x", "H >= 1"),
    ("pyr_down", (torch.ones(1, 1, 4, 4, dtype=torch.int64),), OpTypeError, "x", "int64"),
    ("pyr_down", (np.zeros((1, 1, 4, 4), np.float32),), OpTypeError, "x", "ndarray"),
    ("pyr_down", ([[1.0]],), OpTypeError, "x", "list"),
    # pyr_up: the size is 2H x 2W, or 2n +- 1 on a side where it is odd; ints only.
    ("pyr_up", (torch.rand(1, 1, 4, 4, dtype=torch.float16),), OpTypeError, "x", "float16"),
    ("pyr_up", (torch.rand(2, 3),), OpValueError, "x", "4 dimensions"),
    ("pyr_up", (_X, (18, 12)), OpValueError, "size", "(16, 12)"),
    ("pyr_up", (_X, (14, 12)), OpValueError, "size", "(16, 12)"),
    ("pyr_up", (_X, (19, 12)), OpValueError, "size", "(16, 12)"),
    ("pyr_up", (_X, (16, 15)), OpValueError, "size", "(16, 12)"),
    ("pyr_up", (_X, (0, 12)), OpValueError, "size", "(16, 12)"),
    ("pyr_up", (_X, (-16, 12)), OpValueError, "size", "(16, 12)"),
    ("pyr_up", (_X, 16), OpValueError, "size", "(16, 12)"),
    ("pyr_up", (_X, (7.9, 12)), OpTypeError, "size", "float"),
    ("pyr_up", (_X, (16.0, 12.0)), OpTypeError, "size", "float"),
    ("pyr_up", (_X, "77"), OpTypeError, "size", "'77'"),
    ("pyr_up", (_X, "16x12"), OpTypeError, "size", "pair of ints"),
    ("pyr_up", (_X, (True, 12)), OpTypeError, "size", "bool"),
    ("pyr_up", (_X, (16,)), OpTypeError, "size", "pair of ints"),
    ("pyr_up", (_X, (16, 12, 1)), OpTypeError, "size", "pair of ints"),
    ("pyr_up", (_X, torch.tensor([16, 12])), OpTypeError, "size", "pair of ints"),
    ("pyr_up", (torch.rand(1, 1, 40000, 1), None), OpValueError, "size", "65536"),
    ("pyr_up", (torch.rand(1, 1, 1, 40000), (2, 80001)), OpValueError, "size", "65536"),
    # laplacian_level
    ("laplacian_level", (_X, torch.rand(1, 2, 3, 3)), OpValueError, "coarse", "(4, 3)"),
    ("laplacian_level", (_X, torch.rand(1, 1, 4, 3)), OpValueError, "coarse", "B, C"),
    ("laplacian_level", (_X, torch.rand(1, 2, 4, 3, dtype=torch.float64)), OpTypeError, "coarse", "float64"),
    ("laplacian_level", (_X, None), OpTypeError, "coarse", "NoneType"),
    ("laplacian_level", (torch.rand(2, 8, 6), _PYR[1]), OpValueError, "fine", "4 dimensions"),
    # gaussian_pyramid / laplacian_pyramid: levels in [1, max_pyramid_levels(H, W)]
    ("gaussian_pyramid", (_X, 0), OpValueError, "levels", "[1, 4]"),
    ("gaussian_pyramid", (_X, -2), OpValueError, "levels", "[1, 4]"),
    ("gaussian_pyramid", (_X, 5), OpValueError, "levels", "[1, 4]"),
    ("gaussian_pyramid", (_X, 2.0), OpTypeError, "levels", "float"),
    ("gaussian_pyramid", (_X, "3"), OpTypeError, "levels", "str"),
    ("gaussian_pyramid", (_X, None), OpTypeError, "levels", "NoneType"),
    ("gaussian_pyramid", (torch.rand(8, 6), 2), OpValueError, "x", "4 dimensions"),
    ("laplacian_pyramid", (_X, 5), OpValueError, "levels", "[1, 4]"),
    ("laplacian_pyramid", (_X, 0), OpValueError, "levels", "[1, 4]"),
    ("laplacian_pyramid", (_X, 2.5), OpTypeError, "levels", "float"),
    ("laplacian_pyramid", (_X, True), OpTypeError, "levels", "bool"),
    ("laplacian_pyramid", (_X.int(), 2), OpTypeError, "x", "int32"),
    # laplacian_reconstruct
    ("laplacian_reconstruct", ([],), OpValueError, "pyramid", "at least one level"),
    ("laplacian_reconstruct", (_PYR[0],), OpTypeError, "pyramid", "Tensor"),
    ("laplacian_reconstruct", ([_PYR[0], _PYR[1], _PYR[1]],), OpValueError, "pyramid[2]", "(2, 2)"),
    ("laplacian_reconstruct", ([_PYR[0], _PYR[1].double(), _PYR[2]],), OpTypeError, "pyramid[1]", "float64"),
    ("laplacian_reconstruct", ([_PYR[0], _PYR[1][:, :1], _PYR[2]],), OpValueError, "pyramid[1]", "B, C"),
    ("laplacian_reconstruct", ([_PYR[0], "level"],), OpTypeError, "pyramid[1]", "str"),
    # max_pyramid_levels: positive ints
    ("max_pyramid_levels", (0, 0), OpValueError, "height", ">= 1"),
    ("max_pyramid_levels", (-4, 8), OpValueError, "height", ">= 1"),
    ("max_pyramid_levels", (8, -1), OpValueError, "width", ">= 1"),
    ("max_pyramid_levels", (8, 0), OpValueError, "width", ">= 1"),
    ("max_pyramid_levels", (8.0, 8), OpTypeError, "height", "float"),
    ("max_pyramid_levels", (8, 7.5), OpTypeError, "width", "float"),
    ("max_pyramid_levels", ("8", 8), OpTypeError, "height", "str"),
    ("max_pyramid_levels", (True, 8), OpTypeError, "height", "bool"),
]


@pytest.mark.parametrize("name,args,error,arg_name,says", BAD_INPUTS,
                         ids=[f"{i}-{row[0]}" for i, row in enumerate(BAD_INPUTS)])
def test_bad_input_table(name, args, error, arg_name, says):
    err = assert_raises_naming(error, arg_name, getattr(ops, name), *args)
    # Both the Python class and RuntimeError (what torchvision-style callers catch).
    assert isinstance(err, RuntimeError) and isinstance(err, (ValueError, TypeError))
    assert says in str(err), f"message {str(err)!r} does not say {says!r}"


@pytest.mark.parametrize("name,args,error,arg_name,says",
                         [row for row in BAD_INPUTS if row[0] != "max_pyramid_levels"
                          and isinstance(row[1][0], torch.Tensor) and row[1][0].dim() == 4][:12])
def test_bad_input_same_error_under_compile(name, args, error, arg_name, says):
    # The compiled path runs the same Python checks while tracing.
    torch._dynamo.reset()
    fn = getattr(ops, name)
    compiled = torch.compile(lambda *a: fn(*a), backend="aot_eager")
    assert_raises_naming(error, arg_name, compiled, *args)


def test_valid_edge_inputs_are_accepted():
    assert ops.pyr_up(_X, (17, 11)).shape == (1, 2, 17, 11)
    assert ops.pyr_up(_X, torch.Size([15, 13])).shape == (1, 2, 15, 13)
    assert ops.pyr_up(_X, [16, 12]).shape == (1, 2, 16, 12)
    assert ops.pyr_up(torch.rand(1, 1, 3, 3), 7).shape == (1, 1, 7, 7)
    assert ops.max_pyramid_levels(8, 6) == 4
    assert ops.max_pyramid_levels(1, 10 ** 12) == 41


def test_direct_op_calls_check_sizes_on_every_device():
    # The fake kernel (meta tensors, torch.compile) rejects what the CPU kernel rejects.
    P = torch.ops.fastpapers
    meta = torch.empty(1, 2, 8, 6, device="meta")
    for x in (_X, meta):
        with pytest.raises(RuntimeError, match="size"):
            P.pyr_up(x, [18, 12])
        with pytest.raises(RuntimeError):
            P.pyr_up_backward(torch.empty(1, 2, 18, 12, device=x.device), [8, 6])
        with pytest.raises(RuntimeError):
            P.pyr_down_backward(torch.empty(1, 2, 5, 3, device=x.device), [8, 6])
        with pytest.raises(RuntimeError):
            P.laplacian_level(x, torch.empty(1, 2, 3, 3, device=x.device))
        with pytest.raises(RuntimeError):
            P.laplacian_pyramid(x, 0)


def test_meta_tensors():
    # Shapes only, through the fake kernels: no value is read (a meta tensor has none, and any
    # .item() would fail).
    x = torch.empty(2, 3, 33, 20, device="meta")
    pyr = ops.laplacian_pyramid(x, 4)
    assert [tuple(p.shape) for p in pyr] == [(2, 3, 33, 20), (2, 3, 17, 10), (2, 3, 9, 5), (2, 3, 5, 3)]
    assert all(p.device.type == "meta" for p in pyr)
    assert ops.laplacian_reconstruct(pyr).shape == x.shape
    assert [tuple(g.shape[2:]) for g in ops.gaussian_pyramid(x, 3)] == [(33, 20), (17, 10), (9, 5)]
    assert ops.pyr_down(x).shape == (2, 3, 17, 10)
    assert ops.pyr_up(x, (65, 40)).shape == (2, 3, 65, 40)
    assert ops.laplacian_level(x, pyr[1]).shape == x.shape
    h = torch.empty(1, 1, 9, 7, device="meta", dtype=torch.float16)
    assert ops.pyr_up(h).dtype == torch.float16
    assert_raises_naming(OpValueError, "size", ops.pyr_up, x, (64, 40))
    # Backward through the fake kernels as well.
    xg = torch.empty(1, 2, 9, 7, device="meta", requires_grad=True)
    out = ops.laplacian_reconstruct(ops.laplacian_pyramid(xg, 3))
    (g,) = torch.autograd.grad(out.sum(), xg)
    assert g.shape == xg.shape and g.device.type == "meta"


def test_max_levels():
    assert [ops.max_pyramid_levels(*s) for s in [(1, 1), (1, 2), (3, 1), (16, 16), (17, 16), (256, 256)]] == \
        [1, 2, 3, 5, 6, 9]


# --- Triton launchers under the interpreter (CPU tensors) ----------------------------------


def test_triton_launchers_interpreted():
    from fastpapers.kernels import pyramid as K

    x = torch.rand(2, 3, 5, 9)
    rows, cols = K.tap_table(ref.down_taps(5), "cpu"), K.tap_table(ref.down_taps(9), "cpu")
    assert_close(K.separable(x, rows, cols), _per_channel(cv2.pyrDown, x))
    # Fused Laplacian level: fine - pyr_up(coarse) in the epilogue, odd output sizes.
    c = torch.rand(2, 3, 3, 5)
    fine = torch.rand(2, 3, 7, 9)
    rows, cols = K.tap_table(ref.up_taps(3, 7, True), "cpu"), K.tap_table(ref.up_taps(5, 9, False), "cpu")
    assert_close(K.separable(c, rows, cols, other=fine, alpha=-1.0),
                 fine - _per_channel(cv2.pyrUp, c, dstsize=(9, 7)))
    # An adjoint (pyr_up's backward) in float64, 1-wide input.
    g = torch.rand(1, 2, 7, 3, dtype=torch.float64)
    rows = K.tap_table(ref.transpose_taps(ref.up_taps(3, 7, True), 3), "cpu")
    cols = K.tap_table(ref.transpose_taps(ref.up_taps(1, 3, False), 1), "cpu")
    assert_close(K.separable(g, rows, cols), ref.pyr_up_backward(g, (3, 1)))


def _check_triton_pyramids(x, levels):
    from fastpapers.kernels import pyramid as K

    for got, want in zip(K.gaussian_levels(x, levels - 1), ops.gaussian_pyramid(x, levels)[1:]):
        assert_close(got, want)
    lap = K.laplacian_pyramid(x, levels)
    want = ops.laplacian_pyramid(x, levels)
    assert [p.shape for p in lap] == [p.shape for p in want]
    for got, w in zip(lap, want):
        assert_close(got, w)
    assert_close(K.laplacian_reconstruct(want), ops.laplacian_reconstruct(want))


@pytest.mark.parametrize("size,dtype", [((1, 9), torch.float32), ((9, 1), torch.float64), ((2, 2), torch.float32),
                                        ((3, 5), torch.float64)])
def test_triton_small_pyramids_one_launch(size, dtype):
    # Images under TAIL_PIXELS: every level, down to 1 x 1, comes from one chain launch.
    from fastpapers.kernels import pyramid as K

    x = torch.rand(1, 1, *size, dtype=dtype)
    levels = ops.max_pyramid_levels(*size)
    with K.counting() as log:
        _check_triton_pyramids(x, levels)
    assert log == ["chain"] * 3


def test_triton_large_and_small_levels(monkeypatch):
    # Small thresholds so that a small image has large levels (one fused down + residual launch
    # each), a chain whose first level spans several tiles (a 4 x 4
    # tile over 7 x 5), and levels down to 1 x 1.
    from fastpapers.kernels import pyramid as K

    monkeypatch.setattr(K, "TAIL_PIXELS", 35)
    monkeypatch.setattr(K, "CHAIN_TILE", 16)
    x = torch.rand(1, 2, 13, 10, dtype=torch.float64)  # levels 13x10, 7x5, 4x3, 2x2, 1x1
    with K.counting() as log:
        _check_triton_pyramids(x, 5)
    assert log == ["down", "chain"] + ["lap", "chain"] + ["chain", "separable"]
    # A pyramid that stops before the small levels: no chain.
    with K.counting() as log:
        _check_triton_pyramids(x, 2)
    assert log == ["down"] + ["lap"] + ["separable"]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_half_precision_interpreted(dtype, monkeypatch):
    # Levels 9x6, 5x3 large, 3x2 and 2x1 small: every kernel stores half, accumulates float32.
    from fastpapers.kernels import pyramid as K

    monkeypatch.setattr(K, "TAIL_PIXELS", 12)
    x = torch.rand(1, 2, 9, 6)
    with K.counting() as log:
        got = K.laplacian_pyramid(x.to(dtype), 4)
    assert log == ["lap", "lap", "chain"]
    # The same computation in float32 with every level stored in half (what the kernels do; a
    # few levels of 1-2 pixels are too few samples for the "twice the reference's half error"
    # rule of the CUDA test).
    gauss = [x.to(dtype)]
    for _ in range(3):
        gauss.append(ref.pyr_down(gauss[-1].float()).to(dtype))
    want = [(gauss[i].float() - ref.pyr_up(gauss[i + 1].float(), gauss[i].shape[2:])).to(dtype) for i in range(3)]
    for g, w in zip(got, want + [gauss[-1]]):
        assert g.dtype == dtype
        assert_close(g, w)


@pytest.mark.parametrize("size", [(256, 256), (1, 16384), (300, 70)])
def test_triton_launch_count(size, monkeypatch):
    # Launches recorded, not run (a full-size pyramid is too slow for the interpreter): the
    # levels above 64 x 64 pixels take one launch each, all the rest one chain, forward and
    # backward. A chain addresses at most K.SLOTS tensors per launch: the deepest pyramids'
    # chains are split into consecutive launches (recorded here as one "chain", and counted).
    from fastpapers.kernels import pyramid as K

    launched, chains = [], []

    def record(name, *args, **kwargs):
        chains.append(name == "chain" and launched[-1:] == ["chain"])
        if not chains[-1]:
            launched.append(name)

    monkeypatch.setattr(K, "_launch", record)
    x = torch.empty(2, 3, *size)
    levels = ops.max_pyramid_levels(*size)
    large = sum(h * w > K.TAIL_PIXELS for h, w in ref.halving_sizes(*size, levels))
    K.gaussian_levels(x, levels - 1)
    assert launched == ["down"] * large + ["chain"]
    launched.clear()
    pyr = K.laplacian_pyramid(x, levels)
    assert launched == ["lap"] * large + ["chain"]
    launched.clear()
    K.laplacian_reconstruct(pyr)
    assert launched == ["chain"] + ["separable"] * large
    assert 0 < large < levels - 2
    # The backward ops: the same split, the chain running the other way where it goes
    # from fine to coarse.
    launched.clear()
    K.pyr_down_levels_backward(pyr[1:], size)
    assert launched == ["chain"] + ["separable"] * large
    launched.clear()
    K.laplacian_pyramid_backward(pyr)
    assert launched == ["steps"] * (large > 1) + ["chain"] + ["separable"] * large
    launched.clear()
    K.laplacian_reconstruct_backward(pyr[0], [p.shape[2] for p in pyr[1:]], [p.shape[3] for p in pyr[1:]])
    assert launched == ["separable"] * (large - 1) + ["chain"]
    # The extra launches of split chains over the six ops: the backward of a 7- or 8-level
    # chain (more than 16 tensors), and 5 for the 13 small levels of 1 x 16384.
    assert sum(chains) == {(256, 256): 1, (1, 16384): 5, (300, 70): 1}[size]


def test_triton_pyramid_empty_and_non_contiguous():
    from fastpapers.kernels import pyramid as K

    with K.counting() as log:
        pyr = K.laplacian_pyramid(torch.rand(0, 3, 8, 5), 3)
        assert [tuple(p.shape) for p in pyr] == [(0, 3, 8, 5), (0, 3, 4, 3), (0, 3, 2, 2)]
        assert K.laplacian_reconstruct(pyr).shape == (0, 3, 8, 5)
    assert log == []
    x = torch.rand(1, 5, 3, 2, dtype=torch.float64).permute(0, 3, 1, 2)
    for got, want in zip(K.laplacian_pyramid(x, 3), ops.laplacian_pyramid(x, 3)):
        assert_close(got, want)


def test_triton_reconstruct_any_up_sizes(monkeypatch):
    # A user pyramid need not halve: 9 = 2*4 + 1 (OpenCV's repeated row), 7 = 2*4 - 1.
    from fastpapers.kernels import pyramid as K

    monkeypatch.setattr(K, "TAIL_PIXELS", 16)
    pyr = [torch.rand(1, 2, h, w, dtype=torch.float64) for h, w in [(9, 7), (4, 4), (2, 2), (1, 1)]]
    with K.counting() as log:
        assert_close(K.laplacian_reconstruct(pyr), ops.laplacian_reconstruct(pyr))
        got = K.laplacian_reconstruct_backward(pyr[0], [4, 2, 1], [4, 2, 1])
    assert log == ["chain", "separable", "chain"]
    for g, w in zip(got, torch.ops.fastpapers.laplacian_reconstruct_backward(pyr[0], [4, 2, 1], [4, 2, 1])):
        assert_close(g, w)


@pytest.mark.parametrize("size", [(1, 3), (5, 2), (6, 7)])
def test_triton_adjoint_launchers(size):
    # The CUDA backward ops are these launchers.
    from fastpapers.kernels import pyramid as K

    h, w = size
    g = torch.rand(1, 2, (h + 1) // 2, (w + 1) // 2, dtype=torch.float64)
    assert_close(K.pyr_down_backward(g, [h, w]), torch.ops.fastpapers.pyr_down_backward(g, [h, w]))
    g = torch.rand(1, 2, 2 * h + 1, 2 * w - 1, dtype=torch.float64)
    assert_close(K.pyr_up_backward(g, [h, w]), torch.ops.fastpapers.pyr_up_backward(g, [h, w]))


_COMPILE_FOR_SM90 = r"""
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from fastpapers.kernels import pyramid as K

desc = {"desc_ptr": "*i64", "n_steps": "i32", "idx_ptr": "*i32", "wt_ptr": "*fp32"}
desc.update({name: "i64" for name in K._SLOT_ARGS})
sep = {"x_ptr": "*fp32", "out_ptr": "*fp32", "other_ptr": "*fp32", "ri_ptr": "*i32", "rw_ptr": "*fp32", "ci_ptr": "*i32",
       "cw_ptr": "*fp32", "h_in": "i32", "w_in": "i32", "h_out": "i32", "w_out": "i32", "tiles_w": "i32",
       "tiles_per_plane": "i32", "alpha": "fp32"}
down = {"x_ptr": "*fp32", "out_ptr": "*fp32", "h_in": "i32", "w_in": "i32", "h_out": "i32", "w_out": "i32",
        "tiles_w": "i32", "row_blocks": "i32"}
lap = {"g_ptr": "*fp32", "g1_ptr": "*fp32", "lap_ptr": "*fp32", "h": "i32", "w": "i32", "nh": "i32", "nw": "i32",
       "tiles_w": "i32", "row_blocks": "i32"}
cases = [(K._chain_kernel, desc, dict(KH=5, KW=5, ACC=tl.float32, DT=tl.float16, BLOCK_H=32, BLOCK_W=32)),
         (K._steps_kernel, desc, dict(KH=3, KW=3, ACC=tl.float64, DT=tl.float64, BLOCK_H=16, BLOCK_W=64)),
         (K._separable_kernel, sep, dict(KH=5, KW=5, HAS_OTHER=True, ACC=tl.float32, BLOCK_H=16, BLOCK_W=64)),
         (K._down_rows_kernel, down, dict(ACC=tl.float32, BLOCK_W=256, ROWS=16)),
         (K._down_lap_kernel, lap, dict(ACC=tl.float32, BLOCK_W=128, ROWS=16))]
for fn, sig, consts in cases:
    sig = dict(sig, **{name: "constexpr" for name in consts})
    # Pointers and sizes divisible by 16, as Triton specialises them at launch for 1024 x 1024.
    attrs = {(i,): [["tt.divisibility", 16]] for i in range(7)} if fn in (K._down_rows_kernel, K._down_lap_kernel) \
        else {}
    kernel = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs),
                            target=GPUTarget("cuda", 90, 32),
                            options={"num_warps": K._warps(consts["KH"], consts["KW"]) if "KH" in consts else 4})
    assert kernel.asm["cubin"], fn
    if fn is K._chain_kernel:
        assert "bar.sync" in kernel.asm["ptx"] and "ld.global.cg" in kernel.asm["ptx"]
    if fn is K._down_lap_kernel:
        # L_i's rows: the even / odd columns interleaved into vector stores, G_i read in vectors.
        assert "st.global.v2.b32" in kernel.asm["ptx"] and "ld.global.v2.b32" in kernel.asm["ptx"]
    if fn is K._down_rows_kernel:
        # Whole output rows: each thread stores its 2 contiguous outputs with one vector store.
        assert "st.global.v2.b32" in kernel.asm["ptx"]
print("compiled")
"""


def test_triton_kernels_compile_for_sm90():
    # The interpreter checks what the kernels compute, not that they compile: build the three
    # kernels for an H100 (sm_90) with Triton's own ptxas, no GPU needed. The chain kernel must
    # keep its block barrier and L1-bypassing loads between steps.
    import os
    import subprocess
    import sys

    import triton

    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    if not os.path.exists(ptxas):
        pytest.skip("Triton's NVIDIA backend (ptxas) is not installed")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TRITON_INTERPRET="0", PYTHONPATH=root)
    out = subprocess.run([sys.executable, "-c", _COMPILE_FOR_SM90], env=env, capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 0 and "compiled" in out.stdout, out.stderr[-3000:]


@needs_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_matches_cpu_large(dtype):
    # Levels 257x190 and 129x95 are large (one launch each), 65x48 and below small: every
    # kernel (lap, down, separable, steps, chain) runs, forward and backward.
    from fastpapers.kernels import pyramid as K

    x = torch.rand(4, 3, 257, 190, dtype=dtype)
    xc = x.cuda().requires_grad_()
    with K.counting() as log:
        got = ops.laplacian_pyramid(xc, 6)
    assert log == ["lap", "lap", "chain"]
    want = ops.laplacian_pyramid(x.requires_grad_(), 6)
    for g, w in zip(got, want):
        assert_close(g.detach().cpu(), w.detach())
    assert_close(ops.laplacian_reconstruct(got).detach().cpu(), x.detach())
    for g, w in zip(ops.gaussian_pyramid(xc, 6), ops.gaussian_pyramid(x, 6)):
        assert_close(g.detach().cpu(), w.detach())
    # Gradients through every whole-pyramid op (the fused backward ops).
    grads = [torch.rand_like(w) for w in want]

    def grad_of(inp, grads):
        lap = ops.laplacian_pyramid(inp, 6)
        gauss = ops.gaussian_pyramid(inp, 6)
        out = ops.laplacian_reconstruct(lap)
        return torch.autograd.grad(lap + gauss[1:] + [out], inp, grads + grads[1:] + [grads[0]])[0]

    assert_close(grad_of(xc, [g.cuda() for g in grads]).cpu(), grad_of(x, grads))


def test_triton_launcher_rejects_levels_of_mixed_dtype_or_planes():
    # The step kernels read every level through one element type and one plane count; a direct
    # call of the CUDA implementation with mismatched levels must not reach them.
    from fastpapers.kernels import pyramid as K
    x = torch.rand(1, 2, 8, 8)
    pyr = ref.laplacian_pyramid(x, 3)
    with pytest.raises(ValueError, match="one dtype"):
        K.laplacian_reconstruct([pyr[0], pyr[1].double(), pyr[2]])
    with pytest.raises(ValueError, match="planes"):
        K.laplacian_reconstruct([pyr[0], pyr[1], pyr[2][:, :1]])


# --- launch plans, bytes, and the CUDA hot path ---------------------------------------------


def _half_stored_reference(x, levels):
    """Laplacian pyramid computed in float32 with every Gaussian level stored in x's dtype,
    which is what the kernels do for float16."""
    gauss = [x]
    for _ in range(levels - 1):
        gauss.append(ref.pyr_down(gauss[-1].float()).to(x.dtype))
    laps = [(gauss[i].float() - ref.pyr_up(gauss[i + 1].float(), gauss[i].shape[2:])).to(x.dtype)
            for i in range(levels - 1)]
    return laps + [gauss[-1]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("size,levels", [((13, 10), 4), ((16, 16), 5), ((9, 14), 3), ((21, 8), 2), ((6, 33), 6)])
def test_triton_launchers_odd_even_sizes(size, levels, dtype, monkeypatch):
    # A small threshold: the first levels go through the large-level kernels (down, steps,
    # separable), the rest through the chain kernel.
    from fastpapers.kernels import pyramid as K

    monkeypatch.setattr(K, "TAIL_PIXELS", 24)
    x = torch.rand(2, 2, *size).to(dtype)
    want = ref.laplacian_pyramid(x.double(), levels) if dtype == torch.float32 else _half_stored_reference(x, levels)
    got = K.laplacian_pyramid(x, levels)
    for g, w in zip(got, want):
        assert g.dtype == dtype and g.shape == w.shape
        assert_close(g.double(), w.double(), dtype=dtype)
    gauss = K.gaussian_levels(x, levels - 1)
    for g, w in zip(gauss, ref.gaussian_pyramid(x.double(), levels)[1:]):
        assert_close(g.double(), w, dtype=dtype)
    # Reconstruct the float64 reference pyramid (exact inverse up to rounding).
    pyr = [p.to(dtype) for p in ref.laplacian_pyramid(x.double(), levels)]
    assert_close(K.laplacian_reconstruct(pyr).double(), ref.laplacian_reconstruct([p.double() for p in pyr]),
                 dtype=dtype)


def test_launch_plans_cached_per_shape(monkeypatch):
    from fastpapers.kernels import pyramid as K

    monkeypatch.setattr(K, "TAIL_PIXELS", 24)
    for name in ("_SEPARABLE_PLANS", "_STEP_PLANS", "_DOWN_PLANS", "_LAP_PLANS"):
        monkeypatch.setattr(K, name, {})
    a, b = torch.rand(1, 3, 13, 10), torch.rand(2, 1, 9, 14)
    first = [p.clone() for p in K.laplacian_pyramid(a, 4)]
    sizes = (len(K._SEPARABLE_PLANS), len(K._STEP_PLANS), len(K._LAP_PLANS))
    for _ in range(2):
        again = K.laplacian_pyramid(a, 4)
        for g, w in zip(again, first):
            assert torch.equal(g, w)
    assert (len(K._SEPARABLE_PLANS), len(K._STEP_PLANS), len(K._LAP_PLANS)) == sizes
    # Another shape gets its own plans and its own (correct) result; the first is unchanged.
    for g, w in zip(K.laplacian_pyramid(b, 3), ref.laplacian_pyramid(b, 3)):
        assert_close(g, w)
    assert len(K._LAP_PLANS) > sizes[2]
    for g, w in zip(K.laplacian_pyramid(a, 4), first):
        assert torch.equal(g, w)


def test_descriptor_table_depends_on_shapes_only(monkeypatch):
    # The table names tensors by slot; their addresses are the launch's arguments. New tensors
    # of the same shapes reuse the table (nothing is copied to the device per call).
    from fastpapers.kernels import pyramid as K

    def levels():
        return [torch.rand(1, 1, 5, 4)] + [torch.empty(1, 1, h, w) for h, w in ref.halving_sizes(5, 4, 3)[1:]]

    launches = []
    monkeypatch.setattr(K, "_launch", lambda name, kernel, grid, desc, n, idx, wt, *addresses, **kw:
                        launches.append((desc, addresses)))
    a, b = levels(), levels()
    for t in (a, b):
        K._run("chain", [K._down_step(t[0], t[1]), K._down_step(t[1], t[2])])
    (desc_a, addr_a), (desc_b, addr_b) = launches
    assert desc_a is desc_b
    assert desc_a[:, :3].tolist() == [[0, 1, -1], [1, 2, -1]]
    assert addr_a[:3] == tuple(t.data_ptr() for t in a) and addr_b[:3] == tuple(t.data_ptr() for t in b)
    assert len(addr_a) == len(K._SLOT_ARGS) == 16
    K._run("chain", [K._up_step(a[1], a[0], b[0], -1)])
    assert launches[-1][0][0, :4].tolist() == [0, 1, 2, -1]


def test_chains_split_beyond_slots_give_the_same_pyramids(monkeypatch):
    from fastpapers.kernels import pyramid as K

    x = torch.rand(1, 2, 13, 10, dtype=torch.float64)
    grads = [torch.rand_like(g) for g in ref.gaussian_pyramid(x, 5)]
    want = (K.laplacian_pyramid(x, 5), K.laplacian_pyramid_backward(grads))
    monkeypatch.setattr(K, "SLOTS", 4)
    monkeypatch.setattr(K, "_STEP_PLANS", {})
    with K.counting() as log:
        got = (K.laplacian_pyramid(x, 5), K.laplacian_pyramid_backward(grads))
    assert log.count("chain") > 2
    for g, w in zip(got[0] + [got[1]], want[0] + [want[1]]):
        assert_close(g, w)


def test_plan_dicts_are_bounded(monkeypatch):
    from fastpapers.kernels import pyramid as K

    monkeypatch.setattr(K, "MAX_PLANS", 3)
    monkeypatch.setattr(K, "_DOWN_PLANS", {})
    for w in range(4, 12):
        x = torch.rand(1, 1, 3, w)
        assert_close(K.pyr_down(x), ref.pyr_down(x))
        assert len(K._DOWN_PLANS) <= 3


def test_roundtrip_bytes():
    b = ref.roundtrip_bytes((16, 3, 256, 256), 4, 4)
    areas = [256 ** 2, 128 ** 2, 64 ** 2, 32 ** 2]
    assert b["compulsory"] == 48 * 4 * (2 * areas[0] + 2 * sum(areas))
    # Pairs 256 -> 128 and 128 -> 64 fused (2 a_i + a_{i+1}), 64 -> 32 in the chain (3 a_i +
    # 2 a_{i+1}); the reconstruction 2 a_i + a_{i+1} per pair.
    assert b["build_passes"] == 48 * 4 * (2 * areas[0] + areas[1] + 2 * areas[1] + areas[2] + 3 * areas[2] + 2 * areas[3])
    assert b["reconstruct_passes"] == 48 * 4 * sum(2 * areas[i] + areas[i + 1] for i in range(3))
    assert b["compulsory"] == b["build_compulsory"] + b["reconstruct_compulsory"]
    assert b["passes"] == b["build_passes"] + b["reconstruct_passes"]
    assert ref.roundtrip_bytes((1, 1, 8, 8), 1, 2)["passes"] == 4 * 64 * 2


@needs_cuda
@pytest.mark.parametrize("shape", [(4, 3, 256, 256), (2, 3, 1, 300), (3, 2, 37, 50)])
def test_cuda_no_host_sync(shape):
    # Build + reconstruct and forward + backward never wait for the GPU (after a first call,
    # which compiles the kernels and uploads the descriptor tables).
    x = torch.rand(*shape, device="cuda")
    levels = min(4, ops.max_pyramid_levels(*shape[2:]))

    def step():
        pyr = ops.laplacian_pyramid(x, levels)
        out = ops.laplacian_reconstruct(pyr)
        xg = x.detach().requires_grad_()
        loss = sum(p.square().sum() for p in ops.laplacian_pyramid(xg, levels)) + \
            ops.gaussian_pyramid(xg, levels)[-1].sum() + ops.pyr_up(ops.pyr_down(xg), shape[2:]).sum()
        loss.backward()
        return out, xg.grad

    step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out, grad = step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert_close(out, x)
    assert grad.shape == x.shape


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("size", [(1, 1), (1, 2), (2, 1), (1, 9), (9, 1), (2, 3), (3, 5), (5, 5), (4, 9), (33, 20),
                                  (34, 300), (70, 33)])
def test_fused_down_and_residual(size, dtype):
    # One launch: G_{i+1} = pyr_down(G_i), L_i = G_i - pyr_up(G_{i+1} as stored), row blocks of
    # 16 coarse rows and strips of up to 128 coarse columns (several of each at 70 x 33, 34 x 300).
    from fastpapers.kernels import pyramid as K

    x = torch.rand(2, 3, *size, dtype=dtype)
    with K.counting() as log:
        coarse, lap = K.down_and_residual(x)
    assert log == ["lap"]
    assert coarse.dtype == lap.dtype == dtype
    assert_close(coarse.double(), ref.pyr_down(x.double()), dtype=dtype)
    want = (x.double() - ref.pyr_up(coarse.double(), size))
    assert_close(lap.double(), want, dtype=dtype)
