"""MIXER demo: a small attentive encoder-decoder trained briefly on the ambiguous-transduction
task (XENT, then MIXER's XENT+REINFORCE mix), then held-out sources decoded greedily and with
the batched beam search (K=5), each output scored against its better reference."""
import os
import time

import torch

ORDER = 70
TITLE = "MIXER: ambiguous transduction (reverse or sort), greedy vs beam-5 decodes after a short XENT+MIXER run"


def run(out_dir, *, device, seed):
    from PIL import Image, ImageDraw

    from ..data import AmbiguousTransduction
    from ..metrics import best_reference_bleu
    from ..models import mixer as M
    from ..recipes import mixer as R

    train = AmbiguousTransduction(4000, seed=seed)
    test = AmbiguousTransduction(8, seed=10_000 + seed)
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
        model.eval()
        batch = R.collate_pairs([test[i] for i in range(len(test))])
        src = batch["source"].to(device)
        greedy = model.translate(src)
        beam = model.translate(src, beam_size=5)
    finally:
        torch.set_num_threads(threads)
    secs = time.perf_counter() - t0

    def words(ids):
        return " ".join(train.vocab.itos[t] for t in ids)

    def score(hyps):
        t = torch.zeros(len(hyps), model.cfg.max_tgt_len + 1, dtype=torch.long)
        for i, h in enumerate(hyps):
            t[i, :len(h)] = torch.tensor(h, dtype=torch.long)
        return best_reference_bleu(t, batch["references"], pad_id=0, eos_id=2).tolist()

    g_scores, b_scores = score(greedy), score(beam)
    lines = [f"{len(test)} held-out sources after 160 steps ({secs:.1f} s); BLEU vs the better reference", ""]
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
    print(f"   mean BLEU greedy {sum(g_scores) / len(g_scores):.2f}, beam-5 {sum(b_scores) / len(b_scores):.2f} "
          f"({secs:.1f} s)")
    return [path]
