"""The decoders (beam search, greedy search, sampling) against transformers' own generate on the
same logits (a tiny random GPT-2 built from a config, and table step functions), option by
option; their handling of bad step functions, states and sizes."""
import math

import pytest
import torch

from fastpapers import ops
from fastpapers.ops import OpTypeError, OpValueError
from fastpapers.reference import beam_search as ref
from tests.utils import DEVICES, assert_close, assert_raises_naming, needs_cuda

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


def _greedy_score(fn, seqs, L0, eos, length_penalty=0.0):
    """Sum of the generated tokens' log-probabilities (up to and including EOS), divided by
    (generated length) ** length_penalty: the K = 1 beam score."""
    lp = torch.log_softmax(torch.stack([fn(seqs[:, :n]) for n in range(L0, seqs.shape[1])], 1), -1)
    gen = seqs[:, L0:]
    hit = torch.isin(gen, torch.tensor(eos))
    live = (torch.cumsum(hit.long(), 1) - hit.long()) == 0
    total = (lp.gather(2, gen[..., None])[..., 0] * live).sum(1)
    return total / live.sum(1).double().pow(length_penalty).float()


def _compare(fn, ids, V, output_scores=False, **opts):
    """ops.beam_search against generate on the same options: sequences equal, scores close,
    beam indices equal; for num_beams = 1 (greedy in generate) the score is checked against
    the tokens' log-probabilities. With output_scores, the per-step scores match too."""
    fn.prompt_len = ids.shape[1]
    ours = ops.beam_search(lambda x, s: (fn(x), s), ids, output_scores=output_scores, **opts)
    hf = ref.transformers_generate(fn, ids, V, output_scores=True, **opts)
    assert torch.equal(ours.sequences, hf.sequences)
    if opts.get("num_beams", 1) > 1:
        assert_close(ours.sequences_scores, hf.sequences_scores)
        assert torch.equal(ours.beam_indices, hf.beam_indices.long())
    else:
        eos = opts["eos_token_id"]
        eos = [eos] if isinstance(eos, int) else eos
        want = _greedy_score(fn, ours.sequences, ids.shape[1], eos, opts.get("length_penalty", 1.0))
        assert_close(ours.sequences_scores, want, rtol=1e-5, atol=1e-5 * ours.sequences.shape[1])
        gen = ours.sequences.shape[1] - ids.shape[1]
        assert ours.beam_indices.shape == (ids.shape[0], gen)
    if output_scores:
        assert len(ours.scores) == len(hf.scores)
        for a, b in zip(ours.scores, hf.scores):
            assert_close(a, b)
    else:
        assert ours.scores is None
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


@pytest.mark.parametrize("es", [True, False, "never"])
def test_k1_is_greedy_like_generate(es, one_thread):
    # generate(num_beams=1) runs greedy search whatever early_stopping says; so does ours.
    V = 17
    fn = _table_fn(V, seed=5, eos_boost=2.0)
    ids = torch.randint(3, V, (4, 2), generator=torch.Generator().manual_seed(1))
    out = _compare(fn, ids, V, num_beams=1, max_length=12, eos_token_id=EOS, pad_token_id=PAD, early_stopping=es,
                   length_penalty=2.0)
    g = ops.greedy_search(lambda x, s: (fn(x), s), ids, max_length=12, eos_token_id=EOS, pad_token_id=PAD)
    assert torch.equal(out.sequences, g.sequences)


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

    from fastpapers.ops.decoding import _banned_tokens
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
    from fastpapers.ops.decoding import _is_eos
    gen = torch.Generator().manual_seed(n_eos)
    eos = torch.randperm(50, generator=gen)[:n_eos].tolist()
    tokens = torch.randint(0, 50, (7, 13), generator=gen).to(device)
    eos_t = torch.tensor(eos, device=device)
    assert torch.equal(_is_eos(tokens, eos, eos_t), torch.isin(tokens, eos_t))


def test_decoder_bad_inputs(one_thread):
    fn = lambda x, s: (torch.zeros(x.shape[0], 10), s)  # noqa: E731
    ids = torch.ones(2, 3, dtype=torch.long)
    base = dict(num_beams=2, max_length=6, eos_token_id=2, pad_token_id=0)
    assert_raises_naming(OpTypeError, "step_fn", ops.beam_search, None, ids, **base)
    assert_raises_naming(OpTypeError, "input_ids", ops.beam_search, fn, ids.float(), **base)
    assert_raises_naming(OpValueError, "input_ids", ops.beam_search, fn, ids[0], **base)
    assert_raises_naming(OpValueError, "max_length", ops.beam_search, fn, ids, **{**base, "max_length": 3})
    assert_raises_naming(OpValueError, "num_beams", ops.beam_search, fn, ids, **{**base, "num_beams": 0})
    assert_raises_naming(OpValueError, "early_stopping", ops.beam_search, fn, ids, **{**base, "early_stopping": "yes"})
    assert_raises_naming(OpValueError, "num_return_sequences", ops.beam_search, fn, ids,
                         **{**base, "num_return_sequences": 3})
    assert_raises_naming(OpValueError, "eos_token_id", ops.beam_search, fn, ids, **{**base, "eos_token_id": -1})
    assert_raises_naming(OpValueError, "eos_token_id", ops.beam_search, fn, ids, **{**base, "eos_token_id": 10})
    assert_raises_naming(OpTypeError, "length_penalty", ops.beam_search, fn, ids, **{**base, "length_penalty": "1"})
    assert_raises_naming(OpTypeError, "reorder_state", ops.beam_search, fn, ids, reorder_state=3, **base)
    bad_shape = lambda x, s: (torch.zeros(x.shape[0] + 1, 10), s)  # noqa: E731
    assert_raises_naming(OpValueError, "step_fn", ops.beam_search, bad_shape, ids, **base)
    assert_raises_naming(OpValueError, "num_beams", ops.beam_search, lambda x, s: (torch.zeros(x.shape[0], 1), s), ids,
                         **{**base, "num_beams": 5, "eos_token_id": 0})
    grows = lambda x, s: (torch.zeros(x.shape[0], 8 + x.shape[1]), s)  # noqa: E731
    assert_raises_naming(OpValueError, "step_fn", ops.beam_search, grows, ids, **base)
    assert_raises_naming(OpValueError, "temperature", ops.sample, fn, ids, max_length=6, eos_token_id=2,
                         pad_token_id=0, temperature=0.0)
    assert_raises_naming(OpValueError, "top_k", ops.sample, fn, ids, max_length=6, eos_token_id=2, pad_token_id=0,
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


# ---------------------------------------------------------------------------------------------
# every shared option against generate
# ---------------------------------------------------------------------------------------------

# num_beams, length_penalty, early_stopping, min_length, no_repeat_ngram_size, eos, R, output_scores
COMBOS = [
    (1, 1.0, False, 0, 0, EOS, 1, True),
    (1, 0.0, True, 6, 2, [EOS, 5], 1, False),
    (1, 2.0, "never", 5, 0, EOS, 1, True),
    (2, 0.0, True, 0, 2, [EOS, 5], 2, True),
    (2, 1.0, "never", 7, 0, EOS, 1, False),
    (3, -1.0, False, 5, 3, EOS, 3, True),
    (3, 2.0, True, 0, 0, [EOS, 5, 7], 2, False),
    (3, 0.5, "never", 0, 1, [EOS, 5], 1, True),
    (4, 1.0, True, 6, 0, EOS, 4, False),
    (4, -0.5, "never", 0, 2, EOS, 2, True),
    (5, 1.5, False, 8, 2, [EOS, 5, 7], 5, True),
    (5, 0.0, "never", 0, 0, [EOS], 1, False),
]


@pytest.mark.parametrize("K,lp,es,min_len,ngram,eos,R,scores", COMBOS)
def test_beam_options_match_generate(K, lp, es, min_len, ngram, eos, R, scores, one_thread):
    V = 24
    fn = _table_fn(V, seed=K * 31 + min_len + ngram, eos_boost=2.0)
    ids = torch.randint(8, V, (5, 2), generator=torch.Generator().manual_seed(K + R))
    _compare(fn, ids, V, output_scores=scores, num_beams=K, max_length=13, eos_token_id=eos, pad_token_id=PAD,
             length_penalty=lp, early_stopping=es, min_length=min_len, no_repeat_ngram_size=ngram,
             num_return_sequences=R)


@pytest.mark.parametrize("min_len,ngram,eos,scores", [(0, 0, EOS, True), (7, 2, [EOS, 5], True), (0, 3, [EOS], False),
                                                      (5, 1, EOS, False)])
def test_greedy_options_match_generate(min_len, ngram, eos, scores, one_thread):
    V = 24
    fn = _table_fn(V, seed=min_len * 5 + ngram, eos_boost=1.5)
    ids = torch.randint(8, V, (6, 3), generator=torch.Generator().manual_seed(ngram))
    opts = dict(max_length=14, eos_token_id=eos, pad_token_id=PAD, min_length=min_len, no_repeat_ngram_size=ngram)
    ours = ops.greedy_search(lambda x, s: (fn(x), s), ids, output_scores=scores, **opts)
    hf = ref.transformers_generate(fn, ids, V, **opts)
    assert torch.equal(ours.sequences, hf.sequences)
    if scores:
        assert len(ours.scores) == len(hf.scores)
        for a, b in zip(ours.scores, hf.scores):
            assert_close(a, b)


@pytest.mark.parametrize("R,top_k,temp,min_len,ngram,eos,scores", [
    (1, 0, 1.0, 0, 0, EOS, True), (3, 5, 0.7, 6, 2, [EOS, 5], True), (2, 1, 1.3, 0, 1, EOS, False),
    (2, 0, 2.0, 5, 0, [EOS], True)])
def test_sample_options_match_generate(R, top_k, temp, min_len, ngram, eos, scores, one_thread):
    V = 24
    fn = _table_fn(V, seed=R * 7 + top_k, eos_boost=1.0)
    ids = torch.randint(8, V, (4, 2), generator=torch.Generator().manual_seed(R))
    opts = dict(max_length=12, eos_token_id=eos, pad_token_id=PAD, top_k=top_k, temperature=temp,
                num_return_sequences=R, min_length=min_len, no_repeat_ngram_size=ngram)
    torch.manual_seed(7)
    ours = ops.sample(lambda x, s: (fn(x), s), ids, output_scores=scores, **opts)
    torch.manual_seed(7)
    hf = ref.transformers_generate(fn, ids, V, do_sample=True, **opts)
    assert torch.equal(ours.sequences, hf.sequences)
    if scores:
        assert len(ours.scores) == len(hf.scores)
        for a, b in zip(ours.scores, hf.scores):
            assert_close(a, b)


def test_output_scores_false_peer_returns_sequences(one_thread):
    # reference.transformers_generate(output_scores=False): the peer's sequences-only mode.
    V = 20
    fn = _table_fn(V, seed=3, eos_boost=2.0)
    ids = torch.randint(3, V, (3, 2), generator=torch.Generator().manual_seed(3))
    fn.prompt_len = 2
    opts = dict(num_beams=3, max_length=10, eos_token_id=EOS, pad_token_id=PAD)
    hf = ref.transformers_generate(fn, ids, V, output_scores=False, **opts)
    assert hf.scores is None and hf.sequences_scores is None
    assert torch.equal(ops.beam_search(lambda x, s: (fn(x), s), ids, **opts).sequences, hf.sequences)


# ---------------------------------------------------------------------------------------------
# sizes, bad step functions and states, bad values
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("K", [1, 3])
@pytest.mark.parametrize("scores", [False, True])
def test_batch_zero_is_empty(K, scores, one_thread):
    def never(ids, state):
        raise AssertionError("step_fn called for an empty batch")

    ids = torch.empty(0, 3, dtype=torch.long)
    opts = dict(max_length=8, eos_token_id=EOS, pad_token_id=PAD, output_scores=scores)
    b = ops.beam_search(never, ids, num_beams=K, **opts)
    assert b.sequences.shape == (0, 3) and b.sequences_scores.shape == (0,) and b.beam_indices.shape == (0, 0)
    g = ops.greedy_search(never, ids, **opts)
    s = ops.sample(never, ids, num_return_sequences=2, **opts)
    for out in (g, s):
        assert out.sequences.shape == (0, 3) and out.sequences_scores.shape == (0,)
    assert (b.scores == ()) if scores else (b.scores is None)


@pytest.mark.parametrize("decoder", ["beam", "greedy", "sample"])
def test_step_fn_bad_returns_are_named(decoder, one_thread):
    ids = torch.ones(2, 2, dtype=torch.long)
    run = {"beam": lambda f: ops.beam_search(f, ids, num_beams=2, max_length=5, eos_token_id=EOS, pad_token_id=PAD),
           "greedy": lambda f: ops.greedy_search(f, ids, max_length=5, eos_token_id=EOS, pad_token_id=PAD),
           "sample": lambda f: ops.sample(f, ids, max_length=5, eos_token_id=EOS, pad_token_id=PAD)}[decoder]
    for bad, exc in ((lambda x, s: torch.zeros(x.shape[0], 10), OpTypeError),  # logits only
                     (lambda x, s: None, OpTypeError),
                     (lambda x, s: (torch.zeros(x.shape[0], 10), s, 0), OpTypeError),
                     (lambda x, s: (None, s), OpTypeError),
                     (lambda x, s: (torch.zeros(x.shape[0], 10, 1), s), OpValueError),
                     (lambda x, s: (torch.zeros(x.shape[0] + 1, 10), s), OpValueError),
                     (lambda x, s: (torch.zeros(x.shape[0], 10, dtype=torch.long), s), OpTypeError)):
        err = assert_raises_naming(exc, "step_fn", run, bad)
        assert "too many values" not in str(err)


def test_state_rows_are_checked(one_thread):
    ids = torch.ones(3, 2, dtype=torch.long)
    opts = dict(num_beams=2, max_length=6, eos_token_id=EOS, pad_token_id=PAD)
    fn = lambda x, s: (torch.zeros(x.shape[0], 10), s)  # noqa: E731
    # Initial state: one row per sentence (3), not 4 or B*K = 6.
    for rows in (4, 6):
        assert_raises_naming(OpValueError, "state", ops.beam_search, fn, ids, {"h": torch.zeros(rows, 5)}, **opts)
    # A returned state that lost its beam rows.
    shrink = lambda x, s: (torch.zeros(x.shape[0], 10), {"h": s["h"][:3]})  # noqa: E731
    assert_raises_naming(OpValueError, "state", ops.beam_search, shrink, ids, {"h": torch.zeros(3, 5)}, **opts)
    assert_raises_naming(OpValueError, "state", ops.sample, fn, ids, {"h": torch.zeros(2, 5)}, max_length=6,
                         eos_token_id=EOS, pad_token_id=PAD, num_return_sequences=2)


@pytest.mark.parametrize("decoder", ["beam", "greedy", "sample"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_inf_logits_rejected(decoder, bad, one_thread):
    def fn(x, s):
        out = torch.zeros(x.shape[0], 10)
        if x.shape[1] == 3:
            out[1, 4] = bad
        return out, s

    ids = torch.ones(2, 2, dtype=torch.long)
    opts = dict(max_length=6, eos_token_id=EOS, pad_token_id=PAD)
    call = {"beam": lambda: ops.beam_search(fn, ids, num_beams=2, **opts),
            "greedy": lambda: ops.greedy_search(fn, ids, **opts),
            "sample": lambda: ops.sample(fn, ids, **opts)}[decoder]
    assert_raises_naming(OpValueError, "step_fn", call)


def test_masked_logits_still_decode(one_thread):
    # -inf logits are a caller's mask: the masked tokens are never chosen.
    def fn(x, s):
        out = torch.randn(x.shape[0], 10, generator=torch.Generator().manual_seed(x.shape[1]))
        out[:, 5:] = -math.inf
        return out, s

    ids = torch.ones(2, 2, dtype=torch.long)
    for out in (ops.beam_search(fn, ids, num_beams=3, max_length=8, eos_token_id=EOS, pad_token_id=PAD),
                ops.greedy_search(fn, ids, max_length=8, eos_token_id=EOS, pad_token_id=PAD),
                ops.sample(fn, ids, max_length=8, eos_token_id=EOS, pad_token_id=PAD)):
        assert (out.sequences[:, 2:] < 5).all()
        assert torch.isfinite(out.sequences_scores).all()


def test_sample_everything_banned_is_named(one_thread):
    # Two tokens: 0 is masked by the model, EOS = 1 is banned by min_length.
    fn = lambda x, s: (torch.tensor([[-math.inf, 0.0]]).expand(x.shape[0], 2), s)  # noqa: E731
    ids = torch.zeros(2, 1, dtype=torch.long)
    err = assert_raises_naming(OpValueError, "banned", ops.sample, fn, ids, max_length=5, eos_token_id=1,
                               pad_token_id=0, min_length=3)
    assert "multinomial" not in str(err)


def test_huge_max_length_is_named():
    fn = lambda x, s: (torch.zeros(x.shape[0], 10), s)  # noqa: E731
    ids = torch.ones(4, 2, dtype=torch.long)
    opts = dict(max_length=10 ** 10, eos_token_id=EOS, pad_token_id=PAD)
    assert_raises_naming(OpValueError, "max_length", ops.beam_search, fn, ids, num_beams=5, **opts)
    assert_raises_naming(OpValueError, "max_length", ops.greedy_search, fn, ids, **opts)
    assert_raises_naming(OpValueError, "max_length", ops.sample, fn, ids, **opts)


def test_meta_tensors_run_to_max_length():
    V = 12
    fn = lambda x, s: (torch.empty(x.shape[0], V, device="meta"), s)  # noqa: E731
    ids = torch.empty(3, 2, dtype=torch.long, device="meta")
    opts = dict(max_length=7, eos_token_id=EOS, pad_token_id=PAD)
    b = ops.beam_search(fn, ids, num_beams=4, num_return_sequences=2, **opts)
    assert b.sequences.shape == (6, 7) and b.sequences_scores.shape == (6,) and b.beam_indices.shape == (6, 5)
    assert ops.greedy_search(fn, ids, **opts).sequences.shape == (3, 7)
    assert ops.beam_search(fn, ids, num_beams=1, **opts).sequences.shape == (3, 7)
    assert ops.sample(fn, ids, num_return_sequences=2, **opts).sequences.shape == (6, 7)
