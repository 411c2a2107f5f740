"""MIXER demo: an attentive encoder-decoder on the ambiguous-transduction task (XENT, then
MIXER's XENT+REINFORCE mix), its held-out sources decoded greedily and with the batched beam
search (K=5), each output scored against its better reference. By default the shipped model
(``fastpapers/weights/mixer``, checked against its SHA-256) decodes; ``--train`` trains a
small one for a few seconds instead."""
import os
import time

import torch

ORDER = 70
TITLE = "MIXER: ambiguous transduction (reverse or sort), greedy vs beam-5 decodes"
WEIGHTS = "mixer"


def run_shipped(out_dir, *, device, seed):
    from .. import weights
    loaded = weights.load(WEIGHTS, device=device)
    entry = weights.entry(WEIGHTS)
    m = entry["metrics"]
    print(f"   loaded the shipped model ({weights.path(WEIGHTS)}): held-out BLEU-4 greedy {m['greedy']['bleu4']:.1f}, "
          f"beam-5 {m['beam5']['bleu4']:.1f}")
    model = loaded.nets["model"].eval()
    return _decode(model, out_dir, device=device, seed=seed,
                   what=f"the shipped model ({entry['settings']['steps']} training steps)")


def run(out_dir, *, device, seed):
    from ..data import AmbiguousTransduction
    from ..models import mixer as M
    from ..recipes import mixer as R

    train = AmbiguousTransduction(4000, seed=seed)
    V = len(train.vocab)
    torch.manual_seed(seed)
    model = M.MixerModel(M.MixerConfig(src_vocab=V, tgt_vocab=V, emb=32, hidden=64, max_tgt_len=9))
    # Tiny recurrent model: one thread avoids OpenMP wake-ups that cost more than they save.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    try:
        R.fit(model, train, algo="mixer", steps=160, batch_size=32, lr=1e-2, out_dir=os.path.join(out_dir, "mixer_run"),
              seed=seed, device=device, xent_steps=110, delta=2, stage_steps=10, progress=False, log_every=80)
    finally:
        torch.set_num_threads(threads)
    model.eval()
    what = f"160 training steps ({time.perf_counter() - t0:.1f} s)"
    print(f"   trained here: {what}")
    return _decode(model, out_dir, device=device, seed=seed, what=what)


def _decode(model, out_dir, *, device, seed, what):
    from PIL import Image, ImageDraw

    from ..data import AmbiguousTransduction
    from ..metrics import best_reference_bleu
    from ..recipes import mixer as R

    test = AmbiguousTransduction(8, seed=10_000 + seed)
    vocab = test.vocab
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        batch = R.collate_pairs([test[i] for i in range(len(test))])
        src = batch["source"].to(device)
        greedy = model.translate(src)
        beam = model.translate(src, beam_size=5)
    finally:
        torch.set_num_threads(threads)

    def words(ids):
        return " ".join(vocab.itos[t] for t in ids)

    def score(hyps):
        t = torch.zeros(len(hyps), model.cfg.max_tgt_len + 1, dtype=torch.long)
        for i, h in enumerate(hyps):
            t[i, :len(h)] = torch.tensor(h[:model.cfg.max_tgt_len + 1], dtype=torch.long)
        return best_reference_bleu(t, batch["references"], pad_id=0, eos_id=2).tolist()

    g_scores, b_scores = score(greedy), score(beam)
    lines = [f"{len(test)} held-out sources, {what}; BLEU vs the better reference", ""]
    for i in range(len(test)):
        src_ids = [t for t in batch["source"][i].tolist() if t > 3]
        lines.append(f"source  {words(src_ids)}")
        lines.append(f"  greedy {words(greedy[i]):<40} BLEU {g_scores[i]:.2f}")
        lines.append(f"  beam-5 {words(beam[i]):<40} BLEU {b_scores[i]:.2f}")
    img = Image.new("RGB", (560, 14 * len(lines) + 16), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for k, line in enumerate(lines):
        draw.text((8, 8 + 14 * k), line, fill=(0, 0, 0))
    path = os.path.join(out_dir, "mixer_decodes.png")
    img.save(path)
    print(f"   mean BLEU greedy {sum(g_scores) / len(g_scores):.2f}, beam-5 {sum(b_scores) / len(b_scores):.2f}")
    return [path]
