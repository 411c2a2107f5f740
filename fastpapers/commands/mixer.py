"""``fastpapers mixer train|eval|translate``: MIXER (Ranzato et al. 2015).

Data: ``--data ambiguous`` (default: the offline ambiguous-transduction task, target = reverse
or sort of the source) or ``--data SRC_FILE,TGT_FILE`` (line-aligned parallel text, e.g. a
user's IWSLT files). ``train`` writes a run folder with ``<out>/model.pt`` (config, weights,
vocabularies), the trainer's checkpoint and metrics; ``eval`` and ``translate`` read
``--checkpoint model.pt`` (or the run folder). The work is in :mod:`fastpapers.recipes.mixer`.
"""
import os
import sys

from ._common import add_common, add_training_flags, nonneg_int, positive_float, positive_int, resolve_device

ALGOS = ("xent", "dad", "e2e", "reinforce", "mixer")


def register(sub):
    p = sub.add_parser("mixer", help="MIXER: sequence-level training of an attentive encoder-decoder",
                       description=__doc__.split("\n\n")[1])
    verbs = p.add_subparsers(dest="verb", metavar="VERB")

    t = verbs.add_parser("train", help="train with xent, dad, e2e, reinforce or mixer")
    add_common(t, out_default="runs/mixer", out_help="run folder")
    _add_data(t)
    t.add_argument("--algo", default="mixer", choices=ALGOS, help="training algorithm (default: mixer)")
    add_training_flags(t, steps=2000, batch_size=32, lr=3e-3, checkpoint_every="a quarter of --steps",
                       sample_every=False)
    t.add_argument("--hidden", type=positive_int, default=128, help="decoder LSTM size (default: 128)")
    t.add_argument("--emb", type=positive_int, default=64, help="embedding size (default: 64)")
    t.add_argument("--encoder", default="attentive", choices=("attentive", "birnn"), help="encoder (default: attentive)")
    t.add_argument("--max-len", type=positive_int, default=None, help="longest target in tokens (default: from the data)")
    t.add_argument("--xent-steps", type=nonneg_int, default=None,
                   help="mixer: XENT-only steps before annealing (default: half of --steps)")
    t.add_argument("--delta", type=positive_int, default=2, help="mixer: tokens moved from XENT to REINFORCE per stage")
    t.add_argument("--stage-steps", type=positive_int, default=None,
                   help="mixer: steps per stage (default: spread evenly)")
    t.add_argument("--reward", default="bleu", choices=("bleu", "rouge"), help="REINFORCE reward (default: bleu)")
    t.add_argument("--rl-lr", type=positive_float, default=None,
                   help="mixer: learning rate from the first REINFORCE stage on (default: --lr)")
    t.add_argument("--init", default=None, help="start from this model.pt (e.g. a XENT model)")
    t.set_defaults(func=run_train)

    e = verbs.add_parser("eval", help="BLEU-4 and exact match, greedy and beam")
    add_common(e, out_default=None, out_help="optional JSON file for the scores")
    _add_data(e, held_out=True)
    e.add_argument("--checkpoint", required=True, help="model.pt written by `mixer train` (or its run folder)")
    e.add_argument("--beam", type=positive_int, default=5, help="beam size for the beam row (default: 5)")
    e.set_defaults(func=run_eval)

    tr = verbs.add_parser("translate", help="translate lines from a file or stdin")
    add_common(tr, out_default=None, out_help="output file (default: stdout)")
    tr.add_argument("--checkpoint", required=True, help="model.pt written by `mixer train` (or its run folder)")
    tr.add_argument("--input", default=None, help="text file, one sentence per line (default: stdin)")
    tr.add_argument("--beam", type=positive_int, default=5, help="beam size; 1 = greedy (default: 5)")
    tr.set_defaults(func=run_translate)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _add_data(p, held_out=False):
    p.add_argument("--data", default="ambiguous",
                   help="'ambiguous' (offline task) or SRC_FILE,TGT_FILE parallel text (default: ambiguous)")
    p.add_argument("--size", type=positive_int, default=None,
                   help="ambiguous task: number of pairs (default: %s)" % ("1000" if held_out else "20000"))


def _data_config(args):
    from ..recipes.mixer import Config
    return Config(data=args.data, size=args.size, seed=args.seed)


def run_train(args):
    from ..recipes import mixer as R

    device = resolve_device(args.device)
    cfg = R.Config(data=args.data, size=args.size, algo=args.algo, steps=args.steps, batch_size=args.batch_size,
                   lr=args.lr, hidden=args.hidden, emb=args.emb, encoder=args.encoder, max_len=args.max_len,
                   xent_steps=args.xent_steps, delta=args.delta, stage_steps=args.stage_steps, reward=args.reward,
                   rl_lr=args.rl_lr, init=args.init, seed=args.seed,
                   checkpoint_every=args.checkpoint_every)
    from ..recipes._common import last_metrics

    run = R.train(cfg, args.out, resume=args.resume, device=device)
    print(f"trained {args.algo} for {args.steps} steps: "
          + ", ".join(f"{k}={v:.4g}" for k, v in last_metrics(run.path).items()))
    print(f"wrote {run.file(R.MODEL_FILE)}")


def run_eval(args):
    from ..recipes import mixer as R
    from ..train.checkpoint import atomic_save_json

    device = resolve_device(args.device)
    loaded = R.load(args.checkpoint, device)
    model, src_vocab, tgt_vocab = loaded.nets["model"], loaded.artefacts["source_vocab"], loaded.artefacts["target_vocab"]
    data = R.load_data(_data_config(args), held_out=True, vocab=(src_vocab, tgt_vocab))
    scores = {"greedy": R.evaluate(model, data, beam_size=1, device=device),
              f"beam{args.beam}": R.evaluate(model, data, beam_size=args.beam, device=device)}
    for name, s in scores.items():
        print(f"{name:>8}: " + ", ".join(f"{k}={v:.2f}" for k, v in s.items()))
    if args.out:
        atomic_save_json(scores, args.out, indent=2)


def run_translate(args):
    from ..recipes import mixer as R

    device = resolve_device(args.device)
    loaded = R.load(args.checkpoint, device)
    model, src_vocab, tgt_vocab = loaded.nets["model"], loaded.artefacts["source_vocab"], loaded.artefacts["target_vocab"]
    if src_vocab is None or tgt_vocab is None:
        raise ValueError(f"{args.checkpoint} holds no vocabularies; it cannot translate text")
    if args.input:
        if not os.path.isfile(args.input):
            raise FileNotFoundError(f"--input file not found: {args.input}")
        with open(args.input, encoding="utf-8") as f:
            lines = [line.rstrip("\n") for line in f]
    else:
        lines = [line.rstrip("\n") for line in sys.stdin]
    hyps = R.translate(model, src_vocab, tgt_vocab, lines, beam_size=args.beam, device=device)
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    try:
        for h in hyps:
            out.write(h + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
