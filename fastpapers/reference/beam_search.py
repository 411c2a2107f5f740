"""References for the beam-search engine.

- :func:`beam_search_step`: the fused step written as log_softmax + mask + add + a stable
  descending sort (equal scores by lower flat index): the oracle of the C++ and Triton
  kernels, and their float64 CUDA path.
- :func:`transformers_generate`: runs a step function through Hugging Face transformers'
  own decoders (``generate``: beam search, greedy, sampling), by wrapping it in a minimal
  ``PreTrainedModel`` whose forward returns the step function's logits. This is the oracle of
  :func:`fastpapers.ops.beam_search` and the peer of its benchmark: both sides call the same
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
    scores = (lp + beam_scores.to(sdt)[:, None]).reshape(rows // num_beams, num_beams * vocab)
    vals, idx = torch.sort(scores, dim=1, descending=True, stable=True)
    return vals[:, :num_candidates].contiguous(), idx[:, :num_candidates].contiguous()


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
                          no_repeat_ngram_size=0, num_return_sequences=1, temperature=1.0, top_k=0):
    """transformers' decoder on the stateless step ``fn(input_ids[N, cur_len]) -> logits[N, V]``.

    ``num_beams`` > 1 goes through ``generate``. ``num_beams == 1`` without sampling is
    greedy in ``generate``, so beam search with one beam calls transformers' ``_beam_search``
    directly with the processors and stopping criteria ``generate`` would build. Returns
    transformers' output object (sequences, sequences_scores, beam_indices).
    """
    from transformers import GenerationConfig
    from transformers.generation.logits_process import (LogitsProcessorList, MinLengthLogitsProcessor,
                                                        NoRepeatNGramLogitsProcessor)
    from transformers.generation.stopping_criteria import EosTokenCriteria, MaxLengthCriteria, StoppingCriteriaList

    config_cls, model_cls = _step_model_class()
    model = model_cls(config_cls(vocab_size=vocab_size, eos_token_id=eos_token_id, pad_token_id=pad_token_id),
                      fn).to(input_ids.device).eval()
    opts = dict(max_length=max_length, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                length_penalty=length_penalty, early_stopping=early_stopping, min_length=min_length,
                no_repeat_ngram_size=no_repeat_ngram_size, num_return_sequences=num_return_sequences,
                do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=1.0, use_cache=False,
                return_dict_in_generate=True, output_scores=True)
    with torch.no_grad():
        if num_beams > 1 or do_sample:
            return model.generate(input_ids, num_beams=num_beams, **opts)
        gc = GenerationConfig(num_beams=1, **opts)
        eos = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
        gc._eos_token_tensor = torch.tensor(eos, device=input_ids.device)
        gc._pad_token_tensor = torch.tensor(pad_token_id, device=input_ids.device)
        procs = LogitsProcessorList()
        if min_length > 0:
            procs.append(MinLengthLogitsProcessor(min_length, eos, device=input_ids.device))
        if no_repeat_ngram_size > 0:
            procs.append(NoRepeatNGramLogitsProcessor(no_repeat_ngram_size))
        stops = StoppingCriteriaList([MaxLengthCriteria(max_length), EosTokenCriteria(eos)])
        return model._beam_search(input_ids, procs, stops, gc, use_cache=False)
