"""`fastpapers reproduce` for the three GAN papers on a tiny budget, one seed: two variants of
text2image, all three of LAPGAN and three of GRAN (the class-conditional LAPGAN and the
matched DCGAN train their own way); every metric of the protocol in every row, the README
table and the figures; text2image's shared judge and text encoder trained once."""
import pytest

from fastpapers import reproduce as P

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {
    # budget cpu_seconds 600 x 0.002 = 1.2 CPU s per run
    "lapgan": ({"size": 8, "levels": 2, "conv_hidden": 4, "base_hidden": 16, "noise_dim": 8, "batch_size": 8,
                "samples": 20}, 0.002, ["LAPGAN", "single-scale GAN", "class-conditional LAPGAN"]),
    # budget steps 2500 x 0.002 = 5 steps per run; the later variants battle the first
    "gran": ({"ngf": 4, "ndf": 4, "nz": 8, "hz_dim": 8, "hc_dim": 8, "batch_size": 8, "battle_samples": 20,
              "parzen_samples": 20}, 0.002, ["T=1", "T=3 new noise", "DCGAN (matched)"]),
    # budget steps 2000 x 0.001 = 2 GAN steps; the judge and the text encoder train 1 step each
    "text2image": ({"ngf": 4, "ndf": 4, "nz": 8, "embed_dim": 8, "proj_dim": 8, "text_width": 8, "batch_size": 4,
                    "train_size": 16, "n_eval": 8, "judge_batch_size": 4, "judge_train_size": 16}, 0.001, None),
}


@pytest.mark.parametrize("paper", sorted(TINY))
def test_gan_protocols_run_on_a_tiny_budget(paper, tmp_path):
    base, scale, variants = TINY[paper]
    P.load_protocols()
    proto = P.PROTOCOLS[paper]
    saved = dict(base=proto.base, replicates=proto.replicates)
    proto.base = {**proto.base, **base}
    proto.replicates = {"seed0": {"seed": 0}}
    try:
        chosen = variants or list(proto.variants)[:2]
        res = P.reproduce(paper, out_dir=str(tmp_path / "docs"), runs_dir=str(tmp_path / "runs"),
                          budget_scale=scale, progress=False, variants=chosen)
        assert len(res["runs"]) == len(chosen) and [r["variant"] for r in res["runs"]] == chosen
        for row in res["runs"]:
            missing = [m for m in proto.metrics if m not in row["metrics"]]
            assert not missing, (row["variant"], missing)
        folder = tmp_path / "docs" / paper
        table = (folder / "README.md").read_text()
        assert all(f"| {v} |" in table for v in chosen)
        assert len(res["figures"]) >= 2
        for f in res["figures"]:
            assert (folder / f).is_file()
    finally:
        for k, v in saved.items():
            setattr(proto, k, v)


def test_text2image_trains_its_judge_once_and_one_text_encoder_per_seed(tmp_path, monkeypatch):
    from fastpapers.recipes import text2image as R
    base, scale, _ = TINY["text2image"]
    P.load_protocols()
    proto = P.PROTOCOLS["text2image"]
    saved = dict(base=proto.base, replicates=proto.replicates)
    proto.base = {**proto.base, **base}
    proto.replicates = {"seed0": {"seed": 0}}
    kw = dict(out_dir=str(tmp_path / "docs"), runs_dir=str(tmp_path / "runs"), budget_scale=scale, progress=False)
    try:
        P.reproduce("text2image", variants=["GAN"], **kw)
        shared = tmp_path / "runs" / "text2image" / "_shared"
        assert (shared / "judge" / "done.json").is_file()
        assert [p.name for p in (shared / "text_encoder").iterdir()] == ["seed0"]

        def no_judge(*args, **kwargs):
            raise AssertionError("the judge was trained again")
        monkeypatch.setattr(R, "train_judge", no_judge)
        res = P.reproduce("text2image", variants=["GAN-CLS"], **kw)
        assert res["runs"][0]["metrics"]["generated_seen_all"] is not None
        model = R.load(tmp_path / "runs" / "text2image" / "GAN-CLS" / "seed0")
        assert model.config.text_encoder == str(shared / "text_encoder" / "seed0" / "model.pt")
        # Another judge budget over the same runs folder is refused by name, never mixed in.
        with pytest.raises(ValueError, match="steps"):
            P.reproduce("text2image", variants=["GAN-INT"], **{**kw, "budget_scale": 2 * scale})
    finally:
        for k, v in saved.items():
            setattr(proto, k, v)


def test_the_gan_papers_all_have_protocols():
    protocols = P.load_protocols()
    skipped = [p for p in P.PAPERS if p not in protocols]
    assert not {"text2image", "gran", "lapgan"} & set(skipped), skipped
    for paper in ("text2image", "gran", "lapgan"):
        proto = protocols[paper]
        assert len(proto.replicates) == 3 and proto.headline in proto.metrics and proto.budget
