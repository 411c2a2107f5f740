"""The fused beam-search step against log_softmax + stable sort, the Triton launchers under the
interpreter, its bad-value rule, and the decoders' host synchronisations on CUDA (the decoders'
parity with transformers is in test_decoding.py)."""
import pytest
import torch

from fastpapers import ops
from fastpapers.ops import OpTypeError, OpValueError
from fastpapers.kernels import beam_search as tk
from fastpapers.reference import beam_search as ref
from tests.utils import DEVICES, assert_close, assert_raises_naming, needs_cuda

# ---------------------------------------------------------------------------------------------
# fused step
# ---------------------------------------------------------------------------------------------


def _step_inputs(B, K, V, dtype, device, gen, nban=0):
    logits = (torch.randn(B * K, V, generator=gen, dtype=torch.float64) * 3).to(dtype=dtype, device=device)
    sdt = torch.float64 if dtype == torch.float64 else torch.float32
    scores = (torch.randn(B * K, generator=gen, dtype=torch.float64) * 2).to(dtype=sdt, device=device)
    banned = None
    if nban:
        banned = torch.randint(-1, V, (B * K, nban), generator=gen).to(device)
    return logits, scores, banned


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B,K,V,C,nban", [(1, 1, 1, 1, 0), (3, 4, 37, 8, 0), (2, 5, 1000, 10, 3), (4, 3, 5003, 9, 0),
                                          (1, 6, 4, 12, 2), (5, 2, 2049, 7, 1), (0, 3, 10, 6, 0)])
def test_step_matches_reference(device, dtype, B, K, V, C, nban):
    gen = torch.Generator().manual_seed(B * 1000 + V)
    logits, scores, banned = _step_inputs(B, K, V, dtype, device, gen, nban)
    got_s, got_i = ops.beam_search_step(logits, scores, K, C, banned)
    want_s, want_i = ref.beam_search_step(logits, scores, K, C, banned)
    assert got_s.shape == (B, C) and got_i.dtype == torch.long
    assert torch.equal(got_i.cpu(), want_i.cpu())
    assert_close(got_s, want_s)


@pytest.mark.parametrize("device", DEVICES)
def test_step_ties_lower_index_first(device):
    # Integer logits repeat within a row, and identical rows with equal beam scores tie
    # across beams: both orders must be by lower flat index beam * V + token.
    gen = torch.Generator().manual_seed(1)
    row = torch.tensor([[1.0, 3, 0, 3, 2, 3, 1, 0, 2, 2, 3, 1]])
    logits = torch.cat([row.repeat(3, 1), torch.randint(0, 4, (3, 12), generator=gen).float()]).to(device)
    scores = torch.tensor([0.0, 0.0, 0.0, -1.0, -1.0, 0.5], device=device)
    got_s, got_i = ops.beam_search_step(logits, scores, 3, 20)
    want_s, want_i = ref.beam_search_step(logits, scores, 3, 20)
    assert torch.equal(got_i.cpu(), want_i.cpu())
    assert_close(got_s, want_s)
    # Sentence 0: the four tokens of value 3 in beam 0, then in beam 1, then in beam 2.
    assert got_i[0, :12].tolist() == [b * 12 + t for b in range(3) for t in (1, 3, 5, 10)]


@pytest.mark.parametrize("device", DEVICES)
def test_step_banned_and_masked_logits(device):
    # -inf logits (a caller's mask) and banned tokens rank last but only banned tokens keep
    # their mass in the normaliser.
    logits = torch.tensor([[0.0, 5.0, float("-inf"), 1.0], [2.0, 2.0, 2.0, 2.0]], device=device)
    scores = torch.zeros(2, device=device)
    banned = torch.tensor([[1, -1], [-1, -1]], device=device)
    s, i = ops.beam_search_step(logits, scores, 2, 8, banned)
    want_s, want_i = ref.beam_search_step(logits, scores, 2, 8, banned)
    assert torch.equal(i.cpu(), want_i.cpu())
    assert_close(s, want_s)
    assert i[0, :4].tolist() == [4, 5, 6, 7] and i[0, 4:].tolist() == [3, 0, 1, 2]
    assert s[0, 6].item() == float("-inf")


@pytest.mark.parametrize("device", DEVICES)
def test_step_row_patterns(device):
    # The CPU kernel reads rows in blocks of 512 and scans a block for the top list only when
    # its max beats the row's current C-th best: increasing rows open that gate in every
    # block, decreasing rows never after the first, the max may sit in a block's scalar tail
    # (V = 3 * 512 + 13), and constant rows tie everywhere.
    V = 3 * 512 + 13
    gen = torch.Generator().manual_seed(11)
    ramp = torch.linspace(-4.0, 4.0, V)
    tail_max = torch.randn(V, generator=gen)
    tail_max[-2] = 9.0
    masked = torch.randn(V, generator=gen)
    masked[torch.randperm(V, generator=gen)[:V // 2]] = float("-inf")
    rows = torch.stack([ramp, ramp.flip(0), tail_max, torch.full((V,), 0.5), masked,
                        torch.randn(V, generator=gen) * 3]).to(device)
    scores = torch.tensor([0.0, -0.5, 0.25, 0.0, -1.0, 0.5], device=device)
    banned = torch.tensor([[V - 1, -1], [0, 3], [V - 2, -1], [-1, -1], [-1, 5], [V - 13, V - 14]], device=device)
    for ban in (None, banned):
        got_s, got_i = ops.beam_search_step(rows, scores, 3, 6, ban)
        want_s, want_i = ref.beam_search_step(rows, scores, 3, 6, ban)
        assert torch.equal(got_i.cpu(), want_i.cpu())
        assert_close(got_s, want_s)


@pytest.mark.parametrize("B,K,V,C,tile,nban", [(2, 3, 37, 6, 16, 0), (1, 5, 8, 10, 4, 2), (3, 2, 70, 5, 64, 1)])
def test_triton_launcher_interpreted(B, K, V, C, tile, nban):
    gen = torch.Generator().manual_seed(V)
    logits, scores, banned = _step_inputs(B, K, V, torch.float32, "cpu", gen, nban)
    got_s, got_i = tk.beam_search_step(logits, scores, K, C, banned, tile=tile)
    want_s, want_i = ref.beam_search_step(logits, scores, K, C, banned)
    assert torch.equal(got_i, want_i)
    assert_close(got_s, want_s)


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=needs_cuda)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_step_half_precision(device, dtype):
    # Half logits are scored in float32: the reference is the float32 step on the same values.
    gen = torch.Generator().manual_seed(5)
    logits, scores, banned = _step_inputs(4, 5, 32000, torch.float32, device, gen, 2)
    logits = logits.to(dtype)
    got_s, got_i = ops.beam_search_step(logits, scores, 5, 10, banned)
    want_s, want_i = ref.beam_search_step(logits.float(), scores, 5, 10, banned)
    assert got_s.dtype == torch.float32
    assert_close(got_s, want_s)
    # Rounded logits tie often and near-ties may swap, so each returned index is checked to
    # carry the score returned with it.
    full = (torch.log_softmax(logits.float(), -1) + scores[:, None]).reshape(4, -1)
    assert_close(full.gather(1, got_i), got_s)


def test_triton_launcher_ties_interpreted():
    row = torch.randint(0, 3, (1, 20), generator=torch.Generator().manual_seed(2)).float()
    logits = row.repeat(4, 1)
    scores = torch.zeros(4)
    got_s, got_i = tk.beam_search_step(logits, scores, 2, 7, None, tile=8)
    want_s, want_i = ref.beam_search_step(logits, scores, 2, 7)
    assert torch.equal(got_i, want_i)
    assert_close(got_s, want_s)


def test_tile_choice():
    assert tk.pick_tile(5, 32000) == 1024  # batch 1: 5 rows x 32 tiles
    assert tk.pick_tile(640, 32000) == 4096
    assert tk.pick_tile(5, 256000) == 4096  # at most 64 tiles per row
    assert tk.pick_tile(5, 10) == 16


def test_step_opcheck():
    gen = torch.Generator().manual_seed(3)
    logits, scores, banned = _step_inputs(2, 3, 50, torch.float32, "cpu", gen, 2)
    torch.library.opcheck(torch.ops.fastpapers.beam_search_step.default, (logits, scores, 3, 6, banned))
    torch.library.opcheck(torch.ops.fastpapers.beam_search_step.default, (logits, scores, 3, 6, None))


def test_step_torch_compile_parity():
    gen = torch.Generator().manual_seed(4)
    logits, scores, _ = _step_inputs(3, 2, 100, torch.float32, "cpu", gen)

    def f(x, s):
        v, i = ops.beam_search_step(x * 2.0, s, 2, 4)
        return v.exp(), i % 100

    compiled = torch.compile(f, fullgraph=True, backend="eager")
    got, want = compiled(logits, scores), f(logits, scores)
    torch.testing.assert_close(got[0], want[0])
    assert torch.equal(got[1], want[1])


def test_step_bad_inputs():
    x = torch.randn(6, 10)
    s = torch.zeros(6)
    assert_raises_naming(OpValueError, "logits", ops.beam_search_step, x[0], s, 3, 6)
    assert_raises_naming(OpTypeError, "logits", ops.beam_search_step, x.long(), s, 3, 6)
    assert_raises_naming(OpTypeError, "beam_scores", ops.beam_search_step, x, s.double(), 3, 6)
    assert_raises_naming(OpValueError, "beam_scores", ops.beam_search_step, x, s[:5], 3, 6)
    assert_raises_naming(OpValueError, "logits", ops.beam_search_step, x, s, 4, 6)
    assert_raises_naming(OpValueError, "num_candidates", ops.beam_search_step, x, s, 3, 31)
    assert_raises_naming(OpValueError, "num_beams", ops.beam_search_step, x, s, 0, 6)
    assert_raises_naming(OpTypeError, "num_beams", ops.beam_search_step, x, s, 3.0, 6)
    assert_raises_naming(OpTypeError, "banned", ops.beam_search_step, x, s, 3, 6, torch.zeros(6, 2))
    assert_raises_naming(OpValueError, "banned", ops.beam_search_step, x, s, 3, 6, torch.zeros(5, 2, dtype=torch.long))


def _bad_value_cases(V):
    """(logits, beam_scores) pairs of 2 sentences x 2 beams where sentence 1 is bad."""
    gen = torch.Generator().manual_seed(V)
    base = torch.randn(4, V, generator=gen)
    scores = torch.zeros(4)
    cases = []
    for row, val in ((2, float("nan")), (3, float("inf")), (2, None)):
        x = base.clone()
        if val is None:
            x[row] = float("-inf")  # no finite logit in the row
        else:
            x[row, V // 2] = val
        cases.append((x, scores))
    for val in (float("nan"), float("inf")):
        s = scores.clone()
        s[3] = val
        cases.append((base, s))
    return base, cases


@pytest.mark.parametrize("V", [7, 1000, 3 * 512 + 13])
def test_step_bad_values_mark_the_sentence(V):
    # NaN/+inf logits, a row without a finite logit and a NaN/+inf beam score give NaN scores
    # for their sentence only (the kernels, the Triton launcher and the reference agree) and
    # the public CPU op names the problem.
    base, cases = _bad_value_cases(V)
    for x, s in cases:
        for got_s, got_i in (torch.ops.fastpapers.beam_search_step(x, s, 2, 3),
                             tk.beam_search_step(x, s, 2, 3, tile=256),
                             ref.beam_search_step(x, s, 2, 3)):
            assert torch.isnan(got_s[1]).all() and not torch.isnan(got_s[0]).any()
            assert ((got_i >= 0) & (got_i < 2 * V)).all()
        want_s, want_i = ref.beam_search_step(base, torch.zeros(4), 2, 3)
        assert torch.equal(got_i[0], want_i[0])
        assert_raises_naming(OpValueError, "logits", ops.beam_search_step, x, s, 2, 3)


def test_step_minus_inf_is_legitimate():
    # -inf logits (masks) and -inf beam scores (dead beams) are not errors.
    x = torch.randn(4, 9, generator=torch.Generator().manual_seed(0))
    x[:, :4] = float("-inf")
    s = torch.tensor([0.0, float("-inf"), -1.0, 0.0])
    got_s, got_i = ops.beam_search_step(x, s, 2, 4)
    want_s, want_i = ref.beam_search_step(x, s, 2, 4)
    assert torch.equal(got_i, want_i)
    assert_close(got_s, want_s)
    assert not torch.isnan(got_s).any()


def test_step_banned_out_of_range_is_named():
    x = torch.randn(2, 10)
    s = torch.zeros(2)
    for bad in (10, -2):
        banned = torch.tensor([[1, bad], [-1, 3]])
        assert_raises_naming(OpValueError, "banned", ops.beam_search_step, x, s, 2, 3, banned)


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=needs_cuda)])
def test_decoders_no_host_sync_per_step(device, one_thread):
    # Synchronisations are allowed in the set-up and in the final read (the output's length),
    # never per step: after a warm-up (kernel compilation, allocator and pinned-memory pools),
    # a run of 4 steps and one of 16 must make the same number.
    import warnings
    PAD, EOS = 1, 2
    V = 200
    # 14 EOS ids: enough that torch.isin would take its sorting path (a sync); they are made
    # unlikely so that every run goes to max_length.
    eos = [EOS] + list(range(186, 199))
    bank = {}

    def fn_dev(ids):
        # Logits are drawn on the host and copied to the device before the counted runs.
        key = tuple(ids.shape)
        if key not in bank:
            logits = torch.randn(key[0], V, generator=torch.Generator().manual_seed(key[1]))
            logits[:, eos] -= 8.0
            bank[key] = logits.to(device)
        return bank[key]

    table_fn = lambda x, s: (fn_dev(x), s)  # noqa: E731
    ids = torch.randint(3, V, (6, 2), generator=torch.Generator().manual_seed(4)).to(device)

    def run(steps):
        opts = dict(max_length=2 + steps, eos_token_id=eos, pad_token_id=PAD, no_repeat_ngram_size=2, min_length=4)
        beam = ops.beam_search(table_fn, ids, num_beams=3, **opts)
        greedy = ops.greedy_search(table_fn, ids, **opts)
        sampled = ops.sample(table_fn, ids, top_k=20, generator=torch.Generator(device).manual_seed(0), **opts)
        return beam, greedy, sampled

    for steps in (4, 16):
        for length in range(2, 2 + steps):
            fn_dev(torch.empty(6 * 3, length))
            fn_dev(torch.empty(6, length))
    run(4)
    run(16)
    torch.cuda.synchronize()
    counts = []
    for steps in (4, 16):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                outs = run(steps)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        assert all(o.sequences.shape[1] == 2 + steps for o in outs)
        counts.append(sum("synchroniz" in str(w.message) for w in caught))
    assert counts[0] == counts[1], counts


def test_step_on_meta_tensors():
    logits = torch.empty(6, 50, device="meta")
    s, i = ops.beam_search_step(logits, torch.empty(6, device="meta"), 3, 6,
                                torch.empty(6, 2, dtype=torch.long, device="meta"))
    assert s.shape == i.shape == (2, 6) and s.device.type == "meta" and i.dtype == torch.long


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=needs_cuda)])
def test_step_cuda_no_sync_and_checked_mode(device):
    # Unchecked, the CUDA op never synchronises and returns the NaN mark; checked mode raises.
    x = torch.randn(4, 3000, device=device)
    s = torch.zeros(4, device=device)
    banned = torch.tensor([[1, -1], [3, 4], [-1, -1], [7, 8]], device=device)
    ops.beam_search_step(x, s, 2, 4, banned)  # compile outside the counted region
    bad = x.clone()
    bad[3, 5] = float("nan")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        got_s, got_i = ops.beam_search_step(bad, s, 2, 4, banned)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isnan(got_s[1]).all().item() and not torch.isnan(got_s[0]).any().item()
    assert ((got_i >= 0) & (got_i < 2 * 3000)).all().item()
    old = ops.set_checks(True)
    try:
        assert_raises_naming(OpValueError, "logits", ops.beam_search_step, bad, s, 2, 4, banned)
    finally:
        ops.set_checks(old)
