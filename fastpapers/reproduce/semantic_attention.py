"""Semantic attention's headline (You et al. 2016, Table 2): the ablation CNN-LSTM, input
attention only, output attention only, both, both + the regulariser g, at one equal budget, on
shapes-world scenes with relational captions."""
from . import Protocol, register


def train(config, run_dir, *, device="cpu", progress=False, resume=False):
    from ..recipes import semantic_attention as R
    return R.train(R.Config(**config), run_dir, resume=resume, device=device, progress=progress)


def evaluate(run, config, *, device="cpu"):
    from ..recipes import semantic_attention as R

    cfg = R.Config(**config)
    loaded = R.load(run, device)
    _, held_out = R.corpora(cfg)
    scores = R.evaluate(loaded.nets[R.MODULE], loaded.artefacts["vocab"], held_out, num_beams=3, max_length=30,
                        device=device, meteor=False)
    return {k: float(v) for k, v in scores.items()}


PROTOCOL = register(Protocol(
    paper="semantic_attention",
    claim="Input and output semantic attention each improve a CNN-LSTM captioner, both together more, "
          "and the attention regulariser g adds a little more (BLEU, METEOR, CIDEr).",
    variants={name: opts for name, opts in [
        ("CNN-LSTM", dict(input_attention=False, output_attention=False, regularize=False)),
        ("input", dict(input_attention=True, output_attention=False, regularize=False)),
        ("output", dict(input_attention=False, output_attention=True, regularize=False)),
        ("input+output", dict(input_attention=True, output_attention=True, regularize=False)),
        ("input+output+g", dict(input_attention=True, output_attention=True, regularize=True))]},
    train=train,
    evaluate=evaluate,
    metrics=("BLEU-1", "BLEU-4", "CIDEr", "attr_recall", "detector_precision"),
    headline="CIDEr",
    base={"scenes": 3000, "size": 32, "batch_size": 32, "lr": 2e-3},
    budget={"steps": 1500},
    notes="Held-out scenes come from another seed stream than the training scenes; beam 3; METEOR is "
          "left out (its Java process is slow to start on a loaded machine).",
))
