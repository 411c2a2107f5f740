"""MIXER's headline (Ranzato et al. 2015, Table 1): sequence-level training (MIXER) against
XENT, DAD and E2E, every method given the same learning-rate sweep, on the offline
ambiguous-transduction task (BLEU-4 against the better of the two references)."""
from ..data import AmbiguousTransduction
from . import Protocol, register


def train(config, run_dir, *, device="cpu", progress=False, resume=False):
    from ..recipes import mixer as R
    return R.train(R.Config(**config), run_dir, resume=resume, device=device, progress=progress)


def evaluate(run, config, *, device="cpu"):
    from ..recipes import mixer as R

    cfg = R.Config(**config)
    model = R.load(run, device).nets["model"]
    # Validation (picks the learning rate) and test pairs come from seed streams no training
    # seed uses.
    val = AmbiguousTransduction(1000, seed=20_000 + cfg.seed)
    test = R.load_data(cfg.replace(size=None), held_out=True)
    v = R.evaluate(model, val, beam_size=1, device=device)
    g = R.evaluate(model, test, beam_size=1, device=device)
    b = R.evaluate(model, test, beam_size=5, device=device)
    return {"val_bleu4": v["bleu4"], "bleu4_greedy": g["bleu4"], "bleu4_beam5": b["bleu4"],
            "sentence_bleu4_greedy": g["sentence_bleu4"], "exact_match_greedy": g["exact_match"]}


PROTOCOL = register(Protocol(
    paper="mixer",
    claim="MIXER (XENT annealed into REINFORCE on a BLEU reward) beats XENT, DAD and E2E in BLEU-4 "
          "with greedy and with beam decoding.",
    variants={"xent": {"algo": "xent"}, "dad": {"algo": "dad"}, "e2e": {"algo": "e2e"}, "mixer": {"algo": "mixer"}},
    train=train,
    evaluate=evaluate,
    metrics=("val_bleu4", "bleu4_greedy", "bleu4_beam5", "sentence_bleu4_greedy", "exact_match_greedy"),
    headline="bleu4_greedy",
    base={"data": "ambiguous", "batch_size": 32, "hidden": 128, "emb": 64},
    budget={"steps": 2000},
    sweep={"lr": [1e-3, 3e-3, 1e-2]},
    select_by="val_bleu4",
    notes="Test: 1,000 held-out pairs (seed stream 10,000 + seed); validation: 1,000 others "
          "(20,000 + seed). MIXER runs XENT for the first half of the steps, then moves 2 tokens per "
          "stage to REINFORCE.",
))
