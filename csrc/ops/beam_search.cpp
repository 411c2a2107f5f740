// Schema of the fused beam-search step. Kernels: cpu/beam_search_kernel.cpp (C++) and, for
// CUDA tensors, the Triton kernels in kernels/beam_search.py registered from Python.
//
// beam_search_step(logits[B*K, V], beam_scores[B*K], num_beams=K, num_candidates=C, banned)
//   -> (scores[B, C], indices[B, C] int64)
// scores are log_softmax(logits) + beam_scores over the K*V continuations of each sentence,
// best first, equal scores ordered by the lower flat index beam*V + token (the index returned).
// banned[B*K, M] (int64, -1 = unused slot) lists tokens whose log-probability counts as -inf in
// the ranking while still taking part in the softmax normaliser (transformers' processors run
// after log_softmax).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fastpapers, m) {
  m.def(
      "beam_search_step(Tensor logits, Tensor beam_scores, int num_beams, int num_candidates, "
      "Tensor? banned=None) -> (Tensor, Tensor)");
}
