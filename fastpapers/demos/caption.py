"""Semantic-attention captioning demo: held-out shapes-world scenes captioned by beam search
with their detected attributes and α/β attention, by the shipped model
(``fastpapers/weights/semantic_attention``, checked against its SHA-256) or, with ``--train``,
by a model trained here for a few seconds."""
import os

import torch

ORDER = 60
TITLE = "Semantic attention captioning: shapes-world scenes, detected attributes, α/β attention"
WEIGHTS = "semantic_attention"


def run_shipped(out_dir, *, device, seed):
    from .. import weights
    loaded = weights.load(WEIGHTS, device=device)
    m = weights.entry(WEIGHTS)["metrics"]
    print(f"   loaded the shipped model ({weights.path(WEIGHTS)}): held-out BLEU-4 {m['BLEU-4']:.3f}, "
          f"CIDEr {m['CIDEr']:.3f}, detector precision {m['detector_precision']:.2f}")
    return _show(loaded.nets["captioner"], loaded.artefacts["vocab"], loaded.artefacts["image_size"], out_dir,
                 device=device, seed=seed)


def run(out_dir, *, device, seed):
    from ..data import shapes_vocabulary
    from ..recipes import semantic_attention as C

    train = C.shapes_corpus(400, size=32, split="train", seed=seed)
    vocab = shapes_vocabulary()
    torch.manual_seed(seed)
    model = C.make_model(vocab, train, num_attributes=20, top_k=5, dim=64, feature_dim=64, cnn_channels=(8, 16, 32))
    # A few seconds of training: enough for the attribute detector and the sentence frame,
    # not for exact scenes (`fastpapers semantic_attention train` runs the real thing).
    last = C.fit(model, vocab, train, steps=120, out_dir=os.path.join(out_dir, "caption_run"), batch_size=16,
                   lr=5e-3, seed=seed, device=device, log_every=120, checkpoint_every=0, progress=False)
    print(f"   120 steps: caption cross-entropy {last['xe']:.3f}/token, attribute BCE {last['attr']:.3f}")
    return _show(model, vocab, 32, out_dir, device=device, seed=seed)


def _show(model, vocab, size, out_dir, *, device, seed):
    from ..recipes import semantic_attention as C
    from ..models.semantic_attention_viz import render_attention

    test = C.shapes_corpus(3, size=size, split="test", seed=seed)
    model.eval()
    images = test.float_images().to(device)
    out = C.predict(model, images, num_beams=3, max_length=30)
    att = C.explain(model, images, out["sequences"], out["attributes"])
    paths = []
    for i, seq in enumerate(out["sequences"]):
        words = [vocab.itos[t] for t in seq]
        attrs = [vocab.itos[t] for t in out["attributes"][i].tolist()]
        print(f"   truth: {test.captions[i][0]}\n   model: {' '.join(words)}\n   attributes: "
              + ", ".join(f"{a} {s:.2f}" for a, s in zip(attrs, out["attribute_scores"][i].tolist())))
        paths.append(render_attention(images[i].cpu(), " ".join(words), words + ["<eos>"], attrs,
                                      out["attribute_scores"][i].tolist(), att["alpha"][i], att["beta"][i],
                                      os.path.join(out_dir, f"caption_{i}.png")))
    return paths
