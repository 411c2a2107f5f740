"""DenseCap's headline (Johnson et al. 2016, Table 1): the fully convolutional localisation
network (FCLN) against the fixed-grid proposals and the full-image captioner, by the
dense-captioning mAP, on shapes-world canvases."""
from . import Protocol, register


def train(config, run_dir, *, device="cpu", progress=False, resume=False):
    from ..recipes import densecap as R
    config = {k: v for k, v in config.items() if k != "n_test"}
    return R.train(R.Config(**config), run_dir, resume=resume, device=device, progress=progress)


def evaluate(run, config, *, device="cpu"):
    from ..recipes import densecap as R

    loaded = R.load(run, device)
    cfg = loaded.config
    r = R.evaluate(loaded.nets[R.MODULE], cfg.size, config["n_test"], seed=cfg.seed, beam=1, language="token_f1",
                   device=device)
    return {"map": float(r["map"]), "det_map": float(r["det_map"])}


PROTOCOL = register(Protocol(
    paper="densecap",
    claim="The FCLN's learned proposals give a higher dense-captioning mAP than region proposals from a "
          "fixed grid and than captioning the whole image.",
    variants={"FCLN (rpn)": {"proposals": "rpn"}, "fixed grid": {"proposals": "grid"},
              "full image": {"proposals": "image"}},
    train=train,
    evaluate=evaluate,
    metrics=("map", "det_map"),
    headline="map",
    base={"data": "shapes", "n_train": 4000, "batch_size": 8, "lr": 1e-3, "n_test": 200},
    budget={"steps": 2000},
    notes="mAP over IoU thresholds 0.3-0.7 x language thresholds, with the token-F1 language score "
          "(deterministic and fast; METEOR needs Java); `n_test` (200) test canvases from another seed stream.",
))
