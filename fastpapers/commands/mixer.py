"""``fastpapers mixer train|eval|translate``: MIXER (Ranzato et al. 2015).

Data: ``--data ambiguous`` (default: the offline ambiguous-transduction task, target = reverse
or sort of the source) or ``--data SRC_FILE,TGT_FILE`` (line-aligned parallel text, e.g. a
user's IWSLT files). ``train`` writes ``<out>/model.pt`` (config, weights, vocabularies), the
trainer's checkpoint and metrics; ``eval`` and ``translate`` read ``--checkpoint model.pt``.
"""
import os
import sys

from ._common import add_common, resolve_device, seed_everything

ALGOS = ("xent", "dad", "e2e", "reinforce", "mixer")


def register(sub):
    p = sub.add_parser("mixer", help="MIXER: sequence-level training of an attentive encoder-decoder",
                       description=__doc__.split("\n\n")[1])
    verbs = p.add_subparsers(dest="verb", metavar="VERB")

    t = verbs.add_parser("train", help="train with xent, dad, e2e, reinforce or mixer")
    add_common(t, out_default="runs/mixer", out_help="run folder")
    _add_data(t)
    t.add_argument("--algo", default="mixer", choices=ALGOS, help="training algorithm (default: mixer)")
    t.add_argument("--steps", type=int, default=2000, help="training steps (default: 2000)")
    t.add_argument("--batch-size", type=int, default=32, help="batch size (default: 32)")
    t.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default: 0.003)")
    t.add_argument("--hidden", type=int, default=128, help="decoder LSTM size (default: 128)")
    t.add_argument("--emb", type=int, default=64, help="embedding size (default: 64)")
    t.add_argument("--encoder", default="attentive", choices=("attentive", "birnn"), help="encoder (default: attentive)")
    t.add_argument("--max-len", type=int, default=None, help="longest target in tokens (default: from the data)")
    t.add_argument("--xent-steps", type=int, default=None,
                   help="mixer: XENT-only steps before annealing (default: half of --steps)")
    t.add_argument("--delta", type=int, default=2, help="mixer: tokens moved from XENT to REINFORCE per stage")
    t.add_argument("--stage-steps", type=int, default=None, help="mixer: steps per stage (default: spread evenly)")
    t.add_argument("--reward", default="bleu", choices=("bleu", "rouge"), help="REINFORCE reward (default: bleu)")
    t.add_argument("--rl-lr", type=float, default=None,
                   help="mixer: learning rate from the first REINFORCE stage on (default: --lr)")
    t.add_argument("--init", default=None, help="start from this model.pt (e.g. a XENT model)")
    t.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    t.set_defaults(func=run_train)

    e = verbs.add_parser("eval", help="BLEU-4 and exact match, greedy and beam")
    add_common(e, out_default=None, out_help="optional JSON file for the scores")
    _add_data(e, held_out=True)
    e.add_argument("--checkpoint", required=True, help="model.pt written by `mixer train`")
    e.add_argument("--beam", type=int, default=5, help="beam size for the beam row (default: 5)")
    e.set_defaults(func=run_eval)

    tr = verbs.add_parser("translate", help="translate lines from a file or stdin")
    add_common(tr, out_default=None, out_help="output file (default: stdout)")
    tr.add_argument("--checkpoint", required=True, help="model.pt written by `mixer train`")
    tr.add_argument("--input", default=None, help="text file, one sentence per line (default: stdin)")
    tr.add_argument("--beam", type=int, default=5, help="beam size; 1 = greedy (default: 5)")
    tr.set_defaults(func=run_translate)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _add_data(p, held_out=False):
    p.add_argument("--data", default="ambiguous",
                   help="'ambiguous' (offline task) or SRC_FILE,TGT_FILE parallel text (default: ambiguous)")
    p.add_argument("--size", type=int, default=None,
                   help="ambiguous task: number of pairs (default: %s)" % ("1000" if held_out else "20000"))


def _load_data(args, *, held_out, vocab=None):
    from ..data import AmbiguousTransduction, ParallelText
    if args.data == "ambiguous":
        n = args.size or (1000 if held_out else 20000)
        if n < 1:
            raise ValueError(f"--size must be >= 1, got {n}")
        # Held-out pairs come from another seed stream than any training seed.
        return AmbiguousTransduction(n, seed=(10_000 + args.seed) if held_out else args.seed)
    parts = args.data.split(",")
    if len(parts) != 2:
        raise ValueError(f"--data must be 'ambiguous' or SRC_FILE,TGT_FILE, got {args.data!r}")
    src_vocab, tgt_vocab = vocab if vocab is not None else (None, None)
    return ParallelText(parts[0], parts[1], source_vocab=src_vocab, target_vocab=tgt_vocab)


def _vocabs(data):
    if hasattr(data, "vocab"):
        return data.vocab, data.vocab
    return data.source_vocab, data.target_vocab


def _check_positive(**values):
    for name, v in values.items():
        if v is not None and v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {v}")


def run_train(args):
    from ..models import mixer as M

    _check_positive(steps=args.steps, batch_size=args.batch_size, hidden=args.hidden, emb=args.emb,
                    max_len=args.max_len, delta=args.delta, stage_steps=args.stage_steps)
    for name, v in (("lr", args.lr), ("rl_lr", args.rl_lr)):
        if v is not None and not v > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {v}")
    device = resolve_device(args.device)
    seed_everything(args.seed)
    data = _load_data(args, held_out=False)
    src_vocab, tgt_vocab = _vocabs(data)
    if args.init:
        model, _, _ = M.load_model(args.init)
    else:
        sample = M.collate_pairs([data[i] for i in range(min(len(data), 4096))])
        max_len = args.max_len or max(int((sample["target"] != 0).sum(1).max()) - 1, 1)
        model = M.MixerModel(M.MixerConfig(src_vocab=len(src_vocab), tgt_vocab=len(tgt_vocab), emb=args.emb,
                                           hidden=args.hidden, encoder=args.encoder, max_tgt_len=max_len,
                                           max_src_len=max(64, int(sample["source"].shape[1]))))
    xent_steps = args.steps // 2 if args.xent_steps is None else args.xent_steps
    T = model.cfg.max_tgt_len + 1
    stages = max(1, -(-T // args.delta))
    stage_steps = args.stage_steps or max(1, (args.steps - xent_steps) // stages)
    last = M.train(model, data, algo=args.algo, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                   out_dir=args.out, seed=args.seed, device=device, reward=args.reward, xent_steps=xent_steps,
                   delta=args.delta, stage_steps=stage_steps, rl_lr=args.rl_lr, resume=args.resume)
    path = M.save_model(model.cpu(), os.path.join(args.out, "model.pt"), source_vocab=src_vocab,
                        target_vocab=tgt_vocab)
    print(f"trained {args.algo} for {args.steps} steps: " + ", ".join(f"{k}={v:.4g}" for k, v in last.items()))
    print(f"wrote {path}")


def run_eval(args):
    import json

    from ..models import mixer as M

    _check_positive(beam=args.beam)
    device = resolve_device(args.device)
    model, src_vocab, tgt_vocab = M.load_model(args.checkpoint)
    model.to(device)
    data = _load_data(args, held_out=True, vocab=(src_vocab, tgt_vocab))
    scores = {"greedy": M.evaluate(model, data, beam_size=1, device=device),
              f"beam{args.beam}": M.evaluate(model, data, beam_size=args.beam, device=device)}
    for name, s in scores.items():
        print(f"{name:>8}: " + ", ".join(f"{k}={v:.2f}" for k, v in s.items()))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(scores, f, indent=2)


def run_translate(args):
    import torch

    from ..models import mixer as M

    _check_positive(beam=args.beam)
    device = resolve_device(args.device)
    model, src_vocab, tgt_vocab = M.load_model(args.checkpoint)
    if src_vocab is None or tgt_vocab is None:
        raise ValueError(f"{args.checkpoint} holds no vocabularies; it cannot translate text")
    model.to(device)
    if args.input:
        if not os.path.isfile(args.input):
            raise FileNotFoundError(f"--input file not found: {args.input}")
        with open(args.input, encoding="utf-8") as f:
            lines = [line.rstrip("\n") for line in f]
    else:
        lines = [line.rstrip("\n") for line in sys.stdin]
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    try:
        for i in range(0, len(lines), 128):
            chunk = lines[i:i + 128]
            ids, _ = src_vocab.encode_batch(chunk, max_len=model.cfg.max_src_len)
            hyps = model.translate(ids.to(device), beam_size=args.beam)
            for line, h in zip(chunk, hyps):
                out.write((tgt_vocab.decode(torch.tensor(h)) if line.strip() else "") + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
