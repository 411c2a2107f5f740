"""Beam search: the fused step against log_softmax + stable sort, the Triton launchers under the
interpreter, and the decoders against transformers' own beam search / greedy / sampling on the
same logits (a tiny random GPT-2 built from a config, and table step functions)."""
import pytest
import torch

from fastpapers import ops
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
    assert_raises_naming(ValueError, "logits", ops.beam_search_step, x[0], s, 3, 6)
    assert_raises_naming(TypeError, "logits", ops.beam_search_step, x.long(), s, 3, 6)
    assert_raises_naming(TypeError, "beam_scores", ops.beam_search_step, x, s.double(), 3, 6)
    assert_raises_naming(ValueError, "beam_scores", ops.beam_search_step, x, s[:5], 3, 6)
    assert_raises_naming(ValueError, "logits", ops.beam_search_step, x, s, 4, 6)
    assert_raises_naming(ValueError, "num_candidates", ops.beam_search_step, x, s, 3, 31)
    assert_raises_naming(ValueError, "num_beams", ops.beam_search_step, x, s, 0, 6)
    assert_raises_naming(TypeError, "num_beams", ops.beam_search_step, x, s, 3.0, 6)
    assert_raises_naming(TypeError, "banned", ops.beam_search_step, x, s, 3, 6, torch.zeros(6, 2))
    assert_raises_naming(ValueError, "banned", ops.beam_search_step, x, s, 3, 6, torch.zeros(5, 2, dtype=torch.long))


# ---------------------------------------------------------------------------------------------
# decoders vs transformers
# ---------------------------------------------------------------------------------------------

PAD, EOS = 1, 2


def _table_fn(V, seed, eos_boost=0.0, first_eos=0.0, late_eos=None):
    """A stateless step function: logits from the last token and the position."""
    gen = torch.Generator().manual_seed(seed)
    table = torch.randn(V, V, generator=gen) * 2
    pos = torch.randn(64, V, generator=gen)
    table[:, EOS] += eos_boost

    def fn(ids):
        out = table[ids[:, -1]] + pos[ids.shape[1]]
        if first_eos and ids.shape[1] == fn.prompt_len:
            out = out.clone()
            out[:, EOS] += first_eos
        if late_eos is not None and ids.shape[1] >= fn.prompt_len + late_eos:
            out = out.clone()
            out[:, EOS] += 50.0
        return out

    fn.prompt_len = None
    return fn


def _compare(fn, ids, V, **opts):
    fn.prompt_len = ids.shape[1]
    ours = ops.beam_search(lambda x, s: (fn(x), s), ids, **opts)
    hf = ref.transformers_generate(fn, ids, V, **opts)
    assert torch.equal(ours.sequences, hf.sequences)
    assert_close(ours.sequences_scores, hf.sequences_scores)
    assert torch.equal(ours.beam_indices, hf.beam_indices.long())
    return ours


_GPT2 = {}


def _gpt2(V):
    if V not in _GPT2:
        from transformers import GPT2Config, GPT2LMHeadModel
        torch.manual_seed(V)
        cfg = GPT2Config(vocab_size=V, n_positions=32, n_embd=16, n_layer=1, n_head=2, initializer_range=0.3,
                         bos_token_id=0, eos_token_id=EOS, pad_token_id=PAD)
        _GPT2[V] = GPT2LMHeadModel(cfg).eval()
    return _GPT2[V]


def _gpt2_fn(model):
    # generate() passes an all-ones attention mask; passing the same keeps the logits bitwise equal.
    def fn(ids):
        with torch.no_grad():
            return model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits[:, -1, :]
    return fn


GRID = [
    # num_beams, length_penalty, early_stopping, min_length, no_repeat_ngram_size, num_return_sequences
    (2, 1.0, False, 0, 0, 1),
    (3, 0.0, True, 0, 0, 2),
    (4, 2.0, "never", 0, 0, 4),
    (3, 1.0, "never", 8, 0, 1),
    (5, -1.0, False, 0, 2, 3),
    (4, 0.5, True, 6, 3, 2),
    (3, 2.0, False, 0, 1, 1),
]


@pytest.mark.parametrize("K,lp,es,min_len,ngram,R", GRID)
def test_gpt2_parity_grid(K, lp, es, min_len, ngram, R, one_thread):
    V = 23
    model = _gpt2(V)
    gen = torch.Generator().manual_seed(K * 7 + min_len + ngram)
    ids = torch.randint(3, V, (3, 1 + K % 3), generator=gen)
    # EOS made likely enough that hypotheses finish at varied lengths.
    with torch.no_grad():
        model.lm_head.weight[EOS] = model.transformer.wte.weight[EOS]
    _compare(_gpt2_fn(model), ids, V, num_beams=K, max_length=14, eos_token_id=EOS, pad_token_id=PAD,
             length_penalty=lp, early_stopping=es, min_length=min_len, no_repeat_ngram_size=ngram,
             num_return_sequences=R)


@pytest.mark.parametrize("es", [True, False, "never"])
@pytest.mark.parametrize("lp", [0.0, 1.0, 2.0])
def test_table_parity_finishing_hypotheses(es, lp, one_thread):
    V = 30
    fn = _table_fn(V, seed=int(lp * 10) + len(str(es)), eos_boost=3.0)
    ids = torch.randint(3, V, (6, 2), generator=torch.Generator().manual_seed(9))
    out = _compare(fn, ids, V, num_beams=4, max_length=16, eos_token_id=EOS, pad_token_id=PAD, length_penalty=lp,
                   early_stopping=es, num_return_sequences=2)
    ends = (out.sequences == EOS).any(1)
    assert ends.any()  # some hypotheses finished on EOS before max_length


def test_k1_parity(one_thread):
    V = 17
    fn = _table_fn(V, seed=5, eos_boost=2.0)
    ids = torch.randint(3, V, (4, 2), generator=torch.Generator().manual_seed(1))
    _compare(fn, ids, V, num_beams=1, max_length=12, eos_token_id=EOS, pad_token_id=PAD)


def test_beams_more_than_half_vocab(one_thread):
    V = 9
    fn = _table_fn(V, seed=6, eos_boost=1.0)
    ids = torch.randint(3, V, (3, 2), generator=torch.Generator().manual_seed(2))
    _compare(fn, ids, V, num_beams=6, max_length=10, eos_token_id=EOS, pad_token_id=PAD, num_return_sequences=6)


def test_eos_best_first_token(one_thread):
    V = 20
    fn = _table_fn(V, seed=7, first_eos=30.0)
    ids = torch.randint(3, V, (3, 3), generator=torch.Generator().manual_seed(3))
    out = _compare(fn, ids, V, num_beams=3, max_length=12, eos_token_id=EOS, pad_token_id=PAD, num_return_sequences=3)
    # The one-token hypothesis [EOS] is finished at step 0 and, with its high score, ranks first.
    assert out.sequences[0, 3].item() == EOS and (out.sequences[0, 4:] == PAD).all()


def test_all_beams_finish_early(one_thread):
    V = 20
    fn = _table_fn(V, seed=8, late_eos=3)
    ids = torch.randint(3, V, (4, 2), generator=torch.Generator().manual_seed(4))
    out = _compare(fn, ids, V, num_beams=3, max_length=30, eos_token_id=EOS, pad_token_id=PAD,
                   early_stopping=True, num_return_sequences=3)
    assert out.sequences.shape[1] < 30


def test_max_length_reached_and_multiple_eos(one_thread):
    V = 25
    fn = _table_fn(V, seed=9)
    ids = torch.randint(3, V, (2, 2), generator=torch.Generator().manual_seed(5))
    out = _compare(fn, ids, V, num_beams=3, max_length=9, eos_token_id=[EOS, 5], pad_token_id=PAD)
    assert out.sequences.shape == (2, 9)


@pytest.mark.parametrize("B", [1, 64])
def test_batch_sizes(B, one_thread):
    V = 40
    fn = _table_fn(V, seed=B, eos_boost=2.5)
    ids = torch.randint(3, V, (B, 3), generator=torch.Generator().manual_seed(B))
    _compare(fn, ids, V, num_beams=4, max_length=11, eos_token_id=EOS, pad_token_id=PAD, num_return_sequences=2)


def test_greedy_parity(one_thread):
    V = 30
    fn = _table_fn(V, seed=11, eos_boost=2.0)
    ids = torch.randint(3, V, (5, 2), generator=torch.Generator().manual_seed(6))
    fn.prompt_len = 2
    for opts in (dict(), dict(min_length=6), dict(no_repeat_ngram_size=2)):
        ours = ops.greedy_search(lambda x, s: (fn(x), s), ids, max_length=15, eos_token_id=EOS, pad_token_id=PAD,
                                 **opts)
        hf = ref.transformers_generate(fn, ids, V, max_length=15, eos_token_id=EOS, pad_token_id=PAD, **opts)
        assert torch.equal(ours.sequences, hf.sequences)
    # The score is the sum of the chosen tokens' log-probabilities.
    lp = torch.log_softmax(torch.stack([fn(ours.sequences[:, :n]) for n in range(2, ours.sequences.shape[1])], 1), -1)
    gen = ours.sequences[:, 2:]
    live = torch.cumsum((gen == EOS).long(), 1) - (gen == EOS).long() == 0
    want = (lp.gather(2, gen[..., None])[..., 0] * live).sum(1)
    assert_close(ours.sequences_scores, want, rtol=1e-5, atol=1e-5)


def test_sampling_parity_same_seed(one_thread):
    V = 30
    fn = _table_fn(V, seed=12, eos_boost=1.0)
    ids = torch.randint(3, V, (4, 2), generator=torch.Generator().manual_seed(7))
    fn.prompt_len = 2
    opts = dict(max_length=14, eos_token_id=EOS, pad_token_id=PAD, top_k=6, temperature=0.8, num_return_sequences=3,
                no_repeat_ngram_size=2)
    torch.manual_seed(123)
    ours = ops.sample(lambda x, s: (fn(x), s), ids, **opts)
    torch.manual_seed(123)
    hf = ref.transformers_generate(fn, ids, V, do_sample=True, **opts)
    assert torch.equal(ours.sequences, hf.sequences)
    # top_k = 1 is greedy.
    g = ops.greedy_search(lambda x, s: (fn(x), s), ids, max_length=14, eos_token_id=EOS, pad_token_id=PAD)
    s1 = ops.sample(lambda x, s: (fn(x), s), ids, max_length=14, eos_token_id=EOS, pad_token_id=PAD, top_k=1,
                    generator=torch.Generator().manual_seed(0))
    assert torch.equal(g.sequences, s1.sequences)


class _Recurrent:
    """A recurrent step function that keeps its hidden state in ``state`` (one row per
    hypothesis) and its stateless twin that recomputes it from the whole prefix."""

    def __init__(self, V, H=8, seed=0):
        gen = torch.Generator().manual_seed(seed)
        self.emb = torch.randn(V, H, generator=gen)
        self.w = torch.randn(H, H, generator=gen) / H ** 0.5
        self.out = torch.randn(H, V, generator=gen) * 1.5
        self.ctx_w = torch.randn(3, H, generator=gen)

    def cell(self, h, tok):
        return torch.tanh(h @ self.w + self.emb[tok])

    def stateful(self, ids, state):
        h, ctx = state["h"], state["enc"][0]
        if h is None:
            h = ctx @ self.ctx_w
            for j in range(ids.shape[1]):
                h = self.cell(h, ids[:, j])
        else:
            h = self.cell(h, ids[:, -1])
        return h @ self.out, {"h": h, "enc": (ctx,)}

    def stateless(self, ctx_rows):
        def fn(ids):
            h = ctx_rows(ids.shape[0]) @ self.ctx_w
            for j in range(ids.shape[1]):
                h = self.cell(h, ids[:, j])
            return h @ self.out
        return fn


def test_state_reordering_matches_stateless(one_thread):
    V, B, K = 15, 3, 4
    rnn = _Recurrent(V)
    ctx = torch.randn(B, 3, generator=torch.Generator().manual_seed(1))
    ids = torch.randint(3, V, (B, 2), generator=torch.Generator().manual_seed(2))
    opts = dict(num_beams=K, max_length=10, eos_token_id=EOS, pad_token_id=PAD, num_return_sequences=2)
    # The first call has no hidden state: it is computed from the prompt, per beam.
    first = {"h": None, "enc": (ctx,)}

    def reorder(state, idx):
        h = state["h"]
        return {"h": None if h is None else h.index_select(0, idx), "enc": (state["enc"][0].index_select(0, idx),)}

    ours = ops.beam_search(rnn.stateful, ids, first, reorder_state=reorder, **opts)
    stateless = rnn.stateless(lambda n: ctx.repeat_interleave(n // B, 0))
    hf = ref.transformers_generate(stateless, ids, V, **opts)
    assert torch.equal(ours.sequences, hf.sequences)
    assert_close(ours.sequences_scores, hf.sequences_scores)
    # The default reorder index-selects every tensor of nested containers; other leaves stay.
    def stateful_default(ids_, st):
        if st["started"]:
            h = rnn.cell(st["h"], ids_[:, -1])
        else:
            h = st["h"]
            for j in range(ids_.shape[1]):
                h = rnn.cell(h, ids_[:, j])
        return h @ rnn.out, {"h": h, "enc": st["enc"], "started": True}

    default = ops.beam_search(stateful_default, ids, {"h": ctx @ rnn.ctx_w, "enc": (ctx,), "started": False}, **opts)
    assert torch.equal(default.sequences, hf.sequences)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_ngram_ban_matches_transformers(device, n):
    # The n-gram ban is built with tensor ops on the device (no host loop); transformers'
    # NoRepeatNGramLogitsProcessor on the same sequences is the oracle.
    from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor

    from fastpapers.ops.beam_search import _banned_tokens
    V = 6
    gen = torch.Generator().manual_seed(n)
    seq = torch.randint(0, V, (9, 14), generator=gen).to(device)
    eos_t = torch.tensor([2, 4], device=device)
    for cur_len in (1, n - 1, n, 7, 11):
        if cur_len < 1:
            continue
        for min_length in (0, 9):
            banned = _banned_tokens(seq, cur_len, eos_t, min_length, n)
            got = torch.zeros(seq.shape[0], V + 1, dtype=torch.bool, device=device)
            if banned is not None:
                got.scatter_(1, torch.where(banned < 0, V, banned), True)
            want = NoRepeatNGramLogitsProcessor(n)(seq[:, :cur_len], torch.zeros(seq.shape[0], V, device=device))
            want = torch.isinf(want)
            if cur_len < min_length:
                want[:, [2, 4]] = True
            assert torch.equal(got[:, :V], want), (cur_len, min_length)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n_eos", [1, 2, 30])
def test_eos_match_equals_isin(device, n_eos):
    from fastpapers.ops.beam_search import _is_eos
    gen = torch.Generator().manual_seed(n_eos)
    eos = torch.randperm(50, generator=gen)[:n_eos].tolist()
    tokens = torch.randint(0, 50, (7, 13), generator=gen).to(device)
    eos_t = torch.tensor(eos, device=device)
    assert torch.equal(_is_eos(tokens, eos, eos_t), torch.isin(tokens, eos_t))


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=needs_cuda)])
def test_decoders_no_host_sync_per_step(device, one_thread):
    # Synchronisations are allowed in the set-up and in the final backtrack (the output's
    # length), never per step: a run of 4 steps and one of 16 must make the same number.
    import warnings
    V = 200
    # 14 EOS ids: enough that torch.isin would take its sorting path (a sync) in greedy; they
    # are made unlikely so that every run goes to max_length.
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
    counts = []
    for steps in (4, 16):
        opts = dict(max_length=2 + steps, eos_token_id=eos, pad_token_id=PAD, no_repeat_ngram_size=2, min_length=4)
        for length in range(2, 2 + steps):
            fn_dev(torch.empty(6 * 3, length))
            fn_dev(torch.empty(6, length))
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                beam = ops.beam_search(table_fn, ids, num_beams=3, **opts)
                greedy = ops.greedy_search(table_fn, ids, **opts)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        assert beam.sequences.shape[1] == greedy.sequences.shape[1] == 2 + steps
        counts.append(sum("synchroniz" in str(w.message) for w in caught))
    assert counts[0] == counts[1], counts


def test_decoder_bad_inputs(one_thread):
    fn = lambda x, s: (torch.zeros(x.shape[0], 10), s)  # noqa: E731
    ids = torch.ones(2, 3, dtype=torch.long)
    base = dict(num_beams=2, max_length=6, eos_token_id=2, pad_token_id=0)
    assert_raises_naming(TypeError, "step_fn", ops.beam_search, None, ids, **base)
    assert_raises_naming(TypeError, "input_ids", ops.beam_search, fn, ids.float(), **base)
    assert_raises_naming(ValueError, "input_ids", ops.beam_search, fn, ids[0], **base)
    assert_raises_naming(ValueError, "max_length", ops.beam_search, fn, ids, **{**base, "max_length": 3})
    assert_raises_naming(ValueError, "num_beams", ops.beam_search, fn, ids, **{**base, "num_beams": 0})
    assert_raises_naming(ValueError, "early_stopping", ops.beam_search, fn, ids, **{**base, "early_stopping": "yes"})
    assert_raises_naming(ValueError, "num_return_sequences", ops.beam_search, fn, ids,
                         **{**base, "num_return_sequences": 3})
    assert_raises_naming(ValueError, "eos_token_id", ops.beam_search, fn, ids, **{**base, "eos_token_id": -1})
    assert_raises_naming(ValueError, "eos_token_id", ops.beam_search, fn, ids, **{**base, "eos_token_id": 10})
    assert_raises_naming(TypeError, "length_penalty", ops.beam_search, fn, ids, **{**base, "length_penalty": "1"})
    assert_raises_naming(TypeError, "reorder_state", ops.beam_search, fn, ids, reorder_state=3, **base)
    bad_shape = lambda x, s: (torch.zeros(x.shape[0] + 1, 10), s)  # noqa: E731
    assert_raises_naming(ValueError, "step_fn", ops.beam_search, bad_shape, ids, **base)
    assert_raises_naming(ValueError, "num_beams", ops.beam_search, lambda x, s: (torch.zeros(x.shape[0], 1), s), ids,
                         **{**base, "num_beams": 5, "eos_token_id": 0})
    grows = lambda x, s: (torch.zeros(x.shape[0], 8 + x.shape[1]), s)  # noqa: E731
    assert_raises_naming(ValueError, "step_fn", ops.beam_search, grows, ids, **base)
    assert_raises_naming(ValueError, "temperature", ops.sample, fn, ids, max_length=6, eos_token_id=2,
                         pad_token_id=0, temperature=0.0)
    assert_raises_naming(ValueError, "top_k", ops.sample, fn, ids, max_length=6, eos_token_id=2, pad_token_id=0,
                         top_k=-1)


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=needs_cuda)])
def test_decoders_on_device_match_cpu(device, one_thread):
    # The CUDA loop reads its stop flag late (no host sync); the results must not change.
    V = 300
    fn = _table_fn(V, seed=21, eos_boost=4.0)
    fn.prompt_len = 3
    ids = torch.randint(3, V, (16, 3), generator=torch.Generator().manual_seed(8))
    opts = dict(max_length=20, eos_token_id=EOS, pad_token_id=PAD, no_repeat_ngram_size=2, min_length=5)
    cpu = ops.beam_search(lambda x, s: (fn(x), s), ids, num_beams=4, num_return_sequences=2, **opts)
    dev = ops.beam_search(lambda x, s: (fn(x.cpu()).to(device), s), ids.to(device), num_beams=4,
                          num_return_sequences=2, **opts)
    assert torch.equal(cpu.sequences, dev.sequences.cpu())
    assert_close(dev.sequences_scores.cpu(), cpu.sequences_scores)
    assert torch.equal(cpu.beam_indices, dev.beam_indices.cpu())
    g_cpu = ops.greedy_search(lambda x, s: (fn(x), s), ids, **opts)
    g_dev = ops.greedy_search(lambda x, s: (fn(x.cpu()).to(device), s), ids.to(device), **opts)
    assert torch.equal(g_cpu.sequences, g_dev.sequences.cpu())
