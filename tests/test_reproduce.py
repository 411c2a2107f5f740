"""`fastpapers reproduce` on a tiny budget: every protocol's runs, results.json with every
number and its replicate, the README table, figures, and --resume reusing finished runs."""
import json

import pytest

from fastpapers import reproduce as P
from fastpapers.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def _small(paper, **changes):
    """The paper's protocol with the budget and data cut to seconds (restored afterwards)."""
    P.load_protocols()
    proto = P.PROTOCOLS[paper]
    saved = dict(base=proto.base, replicates=proto.replicates, sweep=proto.sweep)
    proto.base = {**proto.base, **changes.pop("base", {})}
    for k, v in changes.items():
        setattr(proto, k, v)
    return proto, saved


def _restore(proto, saved):
    for k, v in saved.items():
        setattr(proto, k, v)


def test_mixer_protocol_sweep_selection_and_resume(tmp_path):
    proto, saved = _small("mixer", base={"size": 64, "hidden": 8, "emb": 8, "batch_size": 8},
                          replicates={"seed0": {"seed": 0}, "seed1": {"seed": 1}}, sweep={"lr": [1e-3, 1e-2]})
    try:
        # budget 2000 steps x 0.002 = 4 steps per run
        res = P.reproduce("mixer", out_dir=str(tmp_path / "docs"), runs_dir=str(tmp_path / "runs"),
                          budget_scale=0.002, progress=False, variants=["xent", "mixer"])
        assert len(res["runs"]) == 2 * 2 * 2 and res["budget"] == {"steps": 4}
        for row in res["runs"]:
            assert row["train_cpu_seconds"] > 0 and row["eval_cpu_seconds"] > 0 and not row["resumed"]
            assert 0.0 <= row["metrics"]["bleu4_greedy"] <= 100.0
            assert row["config"]["seed"] == int(row["replicate"][-1])
        for variant, s in res["summary"].items():
            # The chosen learning rate is the one with the best mean validation BLEU.
            rows = [r for r in res["runs"] if r["variant"] == variant]
            best = max((1e-3, 1e-2), key=lambda lr: sum(r["metrics"]["val_bleu4"] for r in rows
                                                        if r["sweep"]["lr"] == lr))
            assert s["sweep"]["lr"] == best and s["metrics"]["bleu4_greedy"]["n"] == 2
        folder = tmp_path / "docs" / "mixer"
        on_disk = json.loads((folder / "results.json").read_text())
        assert on_disk["runs"] == res["runs"] and on_disk["commit"]
        table = (folder / "README.md").read_text()
        assert "| xent |" in table and "±" in table and (folder / "bleu4_greedy.png").is_file()
        with pytest.raises(ValueError, match="--resume"):
            P.reproduce("mixer", out_dir=str(tmp_path / "docs"), runs_dir=str(tmp_path / "runs"),
                        budget_scale=0.002, progress=False, variants=["xent"])
        # Another budget over the same runs is refused by name, never mixed in.
        with pytest.raises(ValueError, match="steps"):
            P.reproduce("mixer", out_dir=str(tmp_path / "docs"), runs_dir=str(tmp_path / "runs"),
                        budget_scale=0.004, progress=False, variants=["xent"], resume=True)
        train = proto.train

        def no_training(*args, **kwargs):
            raise AssertionError("a finished run was trained again")
        proto.train = no_training
        try:
            again = P.reproduce("mixer", out_dir=str(tmp_path / "docs"), runs_dir=str(tmp_path / "runs"),
                                budget_scale=0.002, progress=False, variants=["xent", "mixer"], resume=True)
        finally:
            proto.train = train
        assert again["runs"] == res["runs"]
    finally:
        _restore(proto, saved)


def _row(variant, lr, seed, val, test):
    return {"variant": variant, "replicate": f"seed{seed}", "sweep": {"lr": lr}, "config": {}, "resumed": False,
            "train_cpu_seconds": 1.0, "metrics": {"val_bleu4": val, "bleu4_greedy": test}}


def test_summary_picks_the_sweep_value_by_validation_not_test():
    P.load_protocols()
    proto = P.PROTOCOLS["mixer"]
    # lr 0.1 is better on validation, lr 0.01 on test: the summary must report lr 0.1's test.
    rows = [_row("xent", 0.1, s, 50.0 + s, 10.0 + s) for s in range(3)]
    rows += [_row("xent", 0.01, s, 40.0 + s, 90.0 + s) for s in range(3)]
    rows += [_row("mixer", 0.1, 0, 1.0, 5.0), _row("mixer", 0.1, 1, float("nan"), 7.0)]
    summary = P.summarise(proto, rows)
    assert summary["xent"]["sweep"] == {"lr": 0.1}
    stat = summary["xent"]["metrics"]["bleu4_greedy"]
    assert stat["mean"] == pytest.approx(11.0) and stat["std"] == pytest.approx(1.0) and stat["n"] == 3
    # A replicate without a number is counted out, not hidden.
    assert summary["mixer"]["metrics"]["val_bleu4"]["n"] == 1 and summary["mixer"]["replicates"] == 2
    assert "(1/2)" in P._fmt(summary["mixer"]["metrics"]["val_bleu4"], 2)


@pytest.mark.parametrize("paper,base", [
    ("semantic_attention", {"scenes": 16, "size": 16, "dim": 8, "attributes": 6, "top_k": 2, "batch_size": 4}),
    ("densecap", {"n_train": 4, "batch_size": 2}),
    ("neural_style", {"size": 24}),
])
def test_other_protocols_run_on_a_tiny_budget(paper, base, tmp_path):
    proto, saved = _small(paper, base=base, replicates=dict(list(proto_replicates(paper).items())[:1]))
    try:
        res = P.reproduce(paper, out_dir=str(tmp_path / "docs"), runs_dir=str(tmp_path / "runs"),
                          budget_scale=0.001, progress=False, variants=list(proto.variants)[:2])
        assert len(res["runs"]) == 2
        for row in res["runs"]:
            for m in proto.metrics:
                assert m in row["metrics"]
        assert (tmp_path / "docs" / paper / "README.md").is_file()
        for f in res["figures"]:
            assert (tmp_path / "docs" / paper / f).is_file()
    finally:
        _restore(proto, saved)


def proto_replicates(paper):
    P.load_protocols()
    return P.PROTOCOLS[paper].replicates


def test_cli_refuses_bad_reproduce_flags(tmp_path, capsys):
    assert main(["reproduce", "mixer", "--budget-scale", "0", "--out", str(tmp_path)]) == 2
    assert "--budget-scale" in capsys.readouterr().err
    assert main(["reproduce", "mixer", "--variants", "nope", "--out", str(tmp_path),
                 "--runs", str(tmp_path / "r")]) == 2
    assert "nope" in capsys.readouterr().err
