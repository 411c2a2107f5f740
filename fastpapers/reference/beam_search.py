"""References for the beam-search engine.

- :func:`beam_search_step`: the fused step written as log_softmax + mask + add + a stable
  descending sort (equal scores by lower flat index), with the op's NaN rule for bad values:
  the oracle of the C++ and Triton kernels, and their float64 CUDA path.
- :func:`transformers_generate`: runs a step function through Hugging Face transformers'
  own decoders (``generate``: beam search, greedy, sampling), by wrapping it in a minimal
  ``PreTrainedModel`` whose forward returns the step function's logits. This is the oracle of
  :func:`fastpapers.ops.beam_search` (and greedy_search, sample) and the peer of its benchmark: both sides call the same
  step function on the same [B*K, cur_len] token ids.
"""
import torch

__all__ = ["beam_search_step", "transformers_generate"]


def beam_search_step(logits, beam_scores, num_beams, num_candidates, banned=None):
    rows, vocab = logits.shape
    sdt = torch.float64 if logits.dtype == torch.float64 else torch.float32
    lp = torch.log_softmax(logits.to(sdt), dim=-1)
    if banned is not None and banned.shape[1]:
        mask = torch.zeros((rows, vocab + 1), dtype=torch.bool, device=logits.device)
        mask.scatter_(1, torch.where(banned < 0, vocab, banned), True)
        lp = lp.masked_fill(mask[:, :vocab], float("-inf"))
    bs = beam_scores.to(sdt)
    scores = (lp + bs[:, None]).reshape(rows // num_beams, num_beams * vocab)
    vals, idx = torch.sort(scores, dim=1, descending=True, stable=True)
    vals, idx = vals[:, :num_candidates].contiguous(), idx[:, :num_candidates].contiguous()
    # The op's contract for bad values: a sentence with a row of NaN/+inf logits, a row without a
    # finite logit, or a NaN/+inf beam score gets NaN scores.
    bad_row = ~torch.isfinite(torch.logsumexp(logits.to(sdt), dim=-1)) | ~(bs < float("inf"))
    bad = bad_row.view(rows // num_beams, num_beams).any(1, keepdim=True)
    return vals.masked_fill(bad, float("nan")), idx


def _step_model_class():
    from torch import nn
    from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
    from transformers.modeling_outputs import CausalLMOutput

    class StepFnConfig(PretrainedConfig):
        model_type = "fastpapers_step_fn"

    class StepFnLM(PreTrainedModel, GenerationMixin):
        """A transformers causal LM whose forward is ``fn(input_ids) -> logits[N, V]``."""
        config_class = StepFnConfig

        def __init__(self, config, fn):
            super().__init__(config)
            self.fn = fn
            # generate() reads the device and dtype from the parameters.
            self._anchor = nn.Parameter(torch.zeros(1))

        def forward(self, input_ids=None, attention_mask=None, **kwargs):
            return CausalLMOutput(logits=self.fn(input_ids)[:, None, :])

        def prepare_inputs_for_generation(self, input_ids, **kwargs):
            return {"input_ids": input_ids}

    return StepFnConfig, StepFnLM


def transformers_generate(fn, input_ids, vocab_size, *, max_length, eos_token_id, pad_token_id, num_beams=1,
                          do_sample=False, length_penalty=1.0, early_stopping=False, min_length=0,
                          no_repeat_ngram_size=0, num_return_sequences=1, temperature=1.0, top_k=0,
                          output_scores: bool = True):
    """transformers' ``generate`` on the stateless step ``fn(input_ids[N, cur_len]) -> logits[N, V]``.

    ``num_beams > 1`` runs transformers' beam search, ``num_beams == 1`` its greedy search (it
    ignores ``length_penalty`` and ``early_stopping`` there), ``do_sample=True`` its sampling.
    Returns transformers' output object (``return_dict_in_generate=True``): ``sequences``
    always; ``beam_indices`` from beam search. ``output_scores=True`` also keeps the per-step
    processed scores (``scores``, a [N, V] tensor per step) and beam search's
    ``sequences_scores``; ``output_scores=False`` does no per-step score work, and transformers
    then returns ``sequences_scores=None`` and ``scores=None``.
    """
    config_cls, model_cls = _step_model_class()
    model = model_cls(config_cls(vocab_size=vocab_size, eos_token_id=eos_token_id, pad_token_id=pad_token_id),
                      fn).to(input_ids.device).eval()
    opts = dict(max_length=max_length, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                length_penalty=length_penalty, early_stopping=early_stopping, min_length=min_length,
                no_repeat_ngram_size=no_repeat_ngram_size, num_return_sequences=num_return_sequences,
                do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=1.0, use_cache=False,
                return_dict_in_generate=True, output_scores=bool(output_scores))
    with torch.no_grad():
        return model.generate(input_ids, num_beams=num_beams, **opts)
