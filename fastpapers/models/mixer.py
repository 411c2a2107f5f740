"""MIXER: sequence-level training of an attentive encoder-decoder (Ranzato et al. 2015).

Model (:class:`MixerModel`): the paper's attentive encoder (word + position embeddings; the
attention keys are the embeddings averaged over a centred window of 5, the values are the
embeddings) or a bidirectional LSTM encoder (``encoder="birnn"``); one LSTM decoder whose input
is [embedding of the previous token, previous attention context]; the output layer reads
[h_t, context_t]. Per-step linear baselines r_hat_t = w_t . h_t + b_t (weight 0, bias 0.01 at
init, as Mixer.lua) read the *detached* decoder state, so no gradient from the baseline reaches
the RNN. Decoding goes through :func:`fastpapers.ops.greedy_search` / :func:`beam_search`.

Training criteria, one function each (:func:`sequence_loss` picks one by ``algo=``):

- ``xent``: teacher forcing, token cross-entropy.
- ``dad``: "data as demonstrator" / scheduled sampling: each step feeds the model's own sample
  instead of the reference token with probability ``dad_p`` (grown with :func:`dad_probability`).
- ``e2e``: end-to-end backprop: each step feeds the average of the top-k embeddings of the
  previous distribution weighted by their renormalised probabilities; the gradient flows
  through the weights.
- ``reinforce``: one sampled sequence per source, reward at the end (smoothed sentence BLEU-4
  against the best reference), loss ``-(R - r_hat_t) log p(w_t)`` over the sampled steps plus
  the baselines' squared error.
- ``mixer``: XENT on the first ``s`` target tokens (weight ``xent_weight``, 0.5 in the reference
  code), REINFORCE on the rest; :func:`mixer_schedule` anneals s from T down to 0 by delta.

Deviations from the paper (small CPU budget, offline data): hidden size, vocabulary and
lengths are those of the ambiguous-transduction task (DESIGN.md) unless set; the optimiser is
Adam rather than SGD lr 0.2 with plateau decay; the schedule is counted in steps rather than
epochs; the baseline loss is scaled by ``baseline_weight`` (the reference code scales its
gradient by 0.01).
"""

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import beam_search, greedy_search

__all__ = ["MixerConfig", "MixerModel", "sequence_loss", "xent_loss", "dad_loss", "e2e_loss", "reinforce_loss",
           "mixer_loss", "mixer_schedule", "dad_probability", "ALGOS",
           "bleu_reward", "rouge_reward"]

ALGOS = ("xent", "dad", "e2e", "reinforce", "mixer")


@dataclass
class MixerConfig:
    src_vocab: int
    tgt_vocab: int
    emb: int = 64
    hidden: int = 128
    encoder: str = "attentive"  # "attentive" (the paper's) or "birnn"
    window: int = 5
    max_src_len: int = 64
    max_tgt_len: int = 25  # T: the bptt length of the paper (25)
    init_std: float = 0.05  # N(0, 0.05) as in MIXER:model_factory.lua
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    def __post_init__(self):
        for name in ("src_vocab", "tgt_vocab", "emb", "hidden", "window", "max_src_len", "max_tgt_len"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.encoder not in ("attentive", "birnn"):
            raise ValueError(f"encoder must be 'attentive' or 'birnn', got {self.encoder!r}")
        if self.window % 2 == 0:
            raise ValueError(f"window must be odd (centred pooling), got {self.window}")


class MixerModel(nn.Module):
    def __init__(self, cfg: MixerConfig):
        super().__init__()
        self.cfg = cfg
        E, H = cfg.emb, cfg.hidden
        self.src_emb = nn.Embedding(cfg.src_vocab, E, padding_idx=cfg.pad_id)
        if cfg.encoder == "attentive":
            self.pos_emb = nn.Embedding(cfg.max_src_len, E)
            ctx = E
        else:
            self.enc_rnn = nn.LSTM(E, H // 2, batch_first=True, bidirectional=True)
            ctx = 2 * (H // 2)
        self.ctx_dim = ctx
        self.tgt_emb = nn.Embedding(cfg.tgt_vocab, E, padding_idx=cfg.pad_id)
        self.cell = nn.LSTMCell(E + ctx, H)
        self.att = nn.Linear(H, ctx, bias=False)
        self.out = nn.Linear(H + ctx, cfg.tgt_vocab)
        # Per-step linear baselines r_hat_t = w_t . h_t + b_t (Mixer.lua: weight 0, bias 0.01).
        self.base_w = nn.Parameter(torch.zeros(cfg.max_tgt_len + 1, H))
        self.base_b = nn.Parameter(torch.full((cfg.max_tgt_len + 1,), 0.01))
        for name, p in self.named_parameters():
            if not name.startswith("base_"):
                nn.init.normal_(p, 0.0, cfg.init_std)

    # ---- encoder -------------------------------------------------------------------------
    def encode(self, src):
        """src [B, S] -> dict(keys [B,S,C], values [B,S,C], mask [B,S], h, c)."""
        cfg = self.cfg
        mask = src != cfg.pad_id
        e = self.src_emb(src)
        if cfg.encoder == "attentive":
            S = src.shape[1]
            if S > cfg.max_src_len:
                raise ValueError(f"source length {S} exceeds max_src_len = {cfg.max_src_len}")
            e = e + self.pos_emb(torch.arange(S, device=src.device))[None]
            m = mask[..., None].to(e.dtype)
            w = cfg.window
            # Window average of the (masked) embeddings: the attention keys (Rush et al.'s
            # attentive encoder, which MIXER uses).
            summed = F.avg_pool1d((e * m).transpose(1, 2), w, 1, w // 2, count_include_pad=False)
            counts = F.avg_pool1d(m.transpose(1, 2), w, 1, w // 2, count_include_pad=False)
            keys = (summed / counts.clamp(min=1e-6)).transpose(1, 2)
            values = e
            pooled = (values * m).sum(1) / m.sum(1).clamp(min=1.0)
        else:
            lengths = mask.sum(1).clamp(min=1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(e, lengths, batch_first=True, enforce_sorted=False)
            out, _ = self.enc_rnn(packed)
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])
            keys = values = out
            m = mask[..., None].to(out.dtype)
            pooled = (out * m).sum(1) / m.sum(1).clamp(min=1.0)
        B = src.shape[0]
        H = cfg.hidden
        h = torch.zeros(B, H, device=src.device, dtype=values.dtype)
        return {"keys": keys, "values": values, "mask": mask, "h": h, "c": torch.zeros_like(h),
                "ctx": pooled}

    # ---- one decoder step ----------------------------------------------------------------
    def step_embedded(self, x_emb, state):
        """x_emb [B, E] (embedding of the previous token, or a mixture for E2E) -> (logits, state)."""
        h, c = self.cell(torch.cat([x_emb, state["ctx"]], 1), (state["h"], state["c"]))
        scores = torch.einsum("bsc,bc->bs", state["keys"], self.att(h))
        scores = scores.masked_fill(~state["mask"], float("-inf"))
        a = torch.softmax(scores, 1)
        ctx = torch.einsum("bs,bsc->bc", a, state["values"])
        logits = self.out(torch.cat([h, ctx], 1))
        new = dict(state)
        new.update(h=h, c=c, ctx=ctx)
        return logits, new

    def step(self, tokens, state):
        return self.step_embedded(self.tgt_emb(tokens), state)

    def baseline(self, h, t):
        """r_hat_t from the detached decoder state: no gradient reaches the RNN."""
        t = min(t, self.cfg.max_tgt_len)
        return h.detach() @ self.base_w[t] + self.base_b[t]

    # ---- decoding ------------------------------------------------------------------------
    def _step_fn(self):
        def fn(ids, state):
            return self.step(ids[:, -1], state)
        return fn

    @torch.no_grad()
    def translate(self, src, *, beam_size=1, max_len=None, length_penalty=1.0):
        """src [B, S] -> list of B token-id lists (without BOS/EOS)."""
        cfg = self.cfg
        max_len = max_len or cfg.max_tgt_len
        state = self.encode(src)
        bos = torch.full((src.shape[0], 1), cfg.bos_id, dtype=torch.long, device=src.device)
        if beam_size == 1:
            out = greedy_search(self._step_fn(), bos, state, max_length=max_len + 1, eos_token_id=cfg.eos_id,
                                pad_token_id=cfg.pad_id)
        else:
            out = beam_search(self._step_fn(), bos, state, num_beams=beam_size, max_length=max_len + 1,
                              eos_token_id=cfg.eos_id, pad_token_id=cfg.pad_id, length_penalty=length_penalty)
        return [_strip(row, cfg) for row in out.sequences[:, 1:].tolist()]


def _strip(ids, cfg):
    res = []
    for t in ids:
        if t == cfg.eos_id or t == cfg.pad_id:
            break
        res.append(t)
    return res


def mixer_schedule(epoch: int, *, xent_epochs: int, T: int, delta: int, epochs_per_stage: int) -> int:
    """Number of leading target tokens trained with XENT at ``epoch`` (0-based): T during the
    first ``xent_epochs`` epochs, then T - delta, T - 2*delta, ... each held for
    ``epochs_per_stage`` epochs, down to 0 (plain REINFORCE over the whole sequence)."""
    if epoch < xent_epochs:
        return T
    stage = 1 + (epoch - xent_epochs) // epochs_per_stage
    return max(0, T - delta * stage)


def dad_probability(step: int, total: int, max_p: float = 0.25) -> float:
    """DAD's probability of feeding the model's own sample, grown linearly from 0 to max_p."""
    return max_p * min(1.0, step / max(1, total))


# ---------------------------------------------------------------------------------------------
# The four training criteria (Section 3 of the paper) and MIXER, which composes two of them
# ---------------------------------------------------------------------------------------------

def _fed_unroll(model: MixerModel, src, tgt, feed: Callable):
    """Token cross-entropy of the decoder unrolled over the reference length, where
    ``feed(t, logits)`` gives the embedding fed at step t + 1 (XENT, DAD and E2E differ only
    there). Mean over non-pad target tokens."""
    cfg = model.cfg
    B, T = tgt.shape
    state = model.encode(src)
    x = model.tgt_emb(torch.full((B,), cfg.bos_id, dtype=torch.long, device=src.device))
    ce = []
    for t in range(T):
        logits, state = model.step_embedded(x, state)
        ce.append(F.cross_entropy(logits, tgt[:, t], ignore_index=cfg.pad_id, reduction="none"))
        if t + 1 < T:
            x = feed(t, logits)
    loss = torch.stack(ce, 1).sum() / (tgt != cfg.pad_id).sum().clamp(min=1)
    return loss, {"xent": loss.detach()}


def xent_loss(model: MixerModel, src, tgt):
    """XENT: teacher forcing, the reference token is fed at every step."""
    return _fed_unroll(model, src, tgt, lambda t, logits: model.tgt_emb(tgt[:, t]))


def dad_loss(model: MixerModel, src, tgt, *, p: float, generator=None):
    """DAD ("data as demonstrator", scheduled sampling): each step feeds the model's own sample
    instead of the reference token with probability ``p``."""
    def feed(t, logits):
        sampled = torch.multinomial(torch.softmax(logits.detach(), -1), 1, generator=generator)[:, 0]
        use = torch.rand(tgt.shape[0], device=src.device, generator=generator) < p
        return model.tgt_emb(torch.where(use, sampled, tgt[:, t]))
    return _fed_unroll(model, src, tgt, feed)


def e2e_loss(model: MixerModel, src, tgt, *, k: int = 10):
    """E2E: each step feeds the average of the top-``k`` embeddings of the previous
    distribution, weighted by their renormalised probabilities; the gradient flows through
    the weights."""
    def feed(t, logits):
        prob = torch.softmax(logits, -1)
        w, idx = prob.topk(min(k, prob.shape[1]), -1)
        w = w / w.sum(-1, keepdim=True)
        return torch.einsum("bk,bke->be", w, model.tgt_emb(idx))
    return _fed_unroll(model, src, tgt, feed)


def reinforce_loss(model: MixerModel, src, tgt, *, reward_fn, refs, xent_steps: int = 0, xent_weight: float = 0.5,
                   baseline_weight: float = 0.1, generator=None):
    """REINFORCE on sampled continuations: the first ``xent_steps`` target tokens are teacher
    forced (their cross-entropy weighted by ``xent_weight``), the rest of the sequence is
    sampled, rewarded once at the end by ``reward_fn(hyp, refs)``, and trained with
    ``-(R - r_hat_t) log p(w_t)`` plus the baselines' squared error (``baseline_weight``)."""
    cfg = model.cfg
    B, T = tgt.shape
    state = model.encode(src)
    x = model.tgt_emb(torch.full((B,), cfg.bos_id, dtype=torch.long, device=src.device))
    nonpad = tgt != cfg.pad_id
    s = min(int(xent_steps), T)
    ce = []
    for t in range(s):
        logits, state = model.step_embedded(x, state)
        ce.append(F.cross_entropy(logits, tgt[:, t], ignore_index=cfg.pad_id, reduction="none"))
        x = model.tgt_emb(tgt[:, t])
    prefix = tgt[:, :s]
    alive = ~(prefix == cfg.eos_id).any(1) if s else torch.ones(B, dtype=torch.bool, device=src.device)
    # A reference shorter than s leaves nothing to sample.
    alive = alive & (nonpad[:, s - 1] if s else alive)
    samples, logps, bases, masks = [], [], [], []
    for t in range(s, cfg.max_tgt_len + 1):
        logits, state = model.step_embedded(x, state)
        logp = torch.log_softmax(logits, -1)
        w = torch.multinomial(logp.detach().exp(), 1, generator=generator)[:, 0]
        w = torch.where(alive, w, cfg.pad_id)
        samples.append(w)
        logps.append(logp.gather(1, w[:, None])[:, 0])
        bases.append(model.baseline(state["h"], t))
        masks.append(alive)
        alive = alive & (w != cfg.eos_id)
        x = model.tgt_emb(w)
    hyp = torch.cat([prefix, torch.stack(samples, 1)], 1) if samples else prefix
    hyp = _cut_at_eos(hyp, cfg)
    with torch.no_grad():
        reward = reward_fn(hyp, refs).to(src.device, torch.float32)
    m = torch.stack(masks, 1).float()
    b = torch.stack(bases, 1)
    lp = torch.stack(logps, 1)
    advantage = (reward[:, None] - b).detach()
    rl = -(advantage * lp * m).sum() / B
    base_loss = (((b - reward[:, None]) ** 2) * m).sum() / B
    xent = torch.stack(ce, 1).sum() / nonpad[:, :s].sum().clamp(min=1) if ce else reward.new_zeros(())
    loss = rl + baseline_weight * base_loss + (xent_weight * xent if ce else 0.0)
    return loss, {"reward": reward.mean(), "baseline_mse": base_loss.detach(), "xent": xent.detach()}


def mixer_loss(model: MixerModel, src, tgt, *, xent_steps: int, reward_fn, refs, xent_weight: float = 0.5,
               baseline_weight: float = 0.1, generator=None):
    """MIXER: XENT on the first ``xent_steps`` (s) target tokens and REINFORCE on the rest; s
    is annealed from T to 0 by :func:`mixer_schedule`. While s covers the whole target, the
    step is plain XENT (the schedule's first phase)."""
    if xent_steps >= tgt.shape[1]:
        return xent_loss(model, src, tgt)
    return reinforce_loss(model, src, tgt, reward_fn=reward_fn, refs=refs, xent_steps=xent_steps,
                          xent_weight=xent_weight, baseline_weight=baseline_weight, generator=generator)


def sequence_loss(model: MixerModel, src, tgt, *, algo: str, reward_fn=None, refs=None, xent_steps: int = 0,
                  dad_p: float = 0.0, e2e_k: int = 10, xent_weight: float = 0.5, baseline_weight: float = 0.1,
                  generator=None):
    """Training loss of one batch under ``algo`` (one of ALGOS): the criterion functions above
    with the options each one takes.

    Args:
        src: (B, S) source ids. tgt: (B, T) reference ids ending with EOS, pad after.
        reward_fn: ``(hyp_ids [B, L] padded, refs) -> rewards [B]`` (REINFORCE / MIXER).
        refs: whatever ``reward_fn`` takes as references.
        xent_steps: MIXER's s. dad_p: DAD's probability of feeding a sample. e2e_k: E2E's top-k.
        xent_weight: weight of the XENT part while mixing (0.5 in the reference code).
        baseline_weight: weight of the baselines' squared error.

    Returns:
        (loss, logs) where logs is a dict of detached scalars.
    """
    if algo not in ALGOS:
        raise ValueError(f"algo must be one of {ALGOS}, got {algo!r}")
    if algo in ("reinforce", "mixer") and reward_fn is None:
        raise ValueError(f"reward_fn is required for algo={algo!r}")
    if algo == "xent":
        return xent_loss(model, src, tgt)
    if algo == "dad":
        return dad_loss(model, src, tgt, p=dad_p, generator=generator)
    if algo == "e2e":
        return e2e_loss(model, src, tgt, k=e2e_k)
    rl = dict(reward_fn=reward_fn, refs=refs, xent_weight=xent_weight, baseline_weight=baseline_weight,
              generator=generator)
    if algo == "reinforce":
        return reinforce_loss(model, src, tgt, **rl)
    return mixer_loss(model, src, tgt, xent_steps=xent_steps, **rl)


def _cut_at_eos(hyp, cfg):
    """Tokens after the first EOS (and the EOS) become padding."""
    is_eos = hyp == cfg.eos_id
    after = (torch.cumsum(is_eos.long(), 1) > 0)
    return hyp.masked_fill(after, cfg.pad_id)


# ---------------------------------------------------------------------------------------------
# rewards
# ---------------------------------------------------------------------------------------------

def bleu_reward(pad_id: int = 0, eos_id: int = 2) -> Callable:
    """Reward = +1-smoothed sentence BLEU-4 against the best of the references (B, R, L),
    vectorised on the device (fastpapers.metrics.best_reference_bleu)."""
    from ..metrics import best_reference_bleu

    def reward(hyp, refs):
        return best_reference_bleu(hyp, refs, pad_id=pad_id, eos_id=eos_id, smooth="add-k")
    return reward


def rouge_reward(pad_id: int = 0, eos_id: int = 2) -> Callable:
    """Reward = sentence ROUGE-L against the best reference (token ids as words; per sentence
    on the host, the reference code's other reward)."""
    from ..metrics import rouge_l_sentence

    def words(ids):
        out = []
        for t in ids:
            if t in (pad_id, eos_id):
                break
            out.append(str(t))
        return " ".join(out)

    def reward(hyp, refs):
        h = hyp.tolist()
        r = refs.tolist()
        return torch.tensor([max(rouge_l_sentence(words(h[i]), [words(x)]) for x in r[i]) for i in range(len(h))])
    return reward
