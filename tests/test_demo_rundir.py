import os

from fastpapers.demos._rundir import run_dir


def test_run_dir_depends_on_every_setting_and_not_on_their_order(tmp_path):
    a = run_dir(str(tmp_path), "gran_run", steps=100, seed=0, ngf=16)
    assert os.path.dirname(a) == str(tmp_path)
    assert os.path.basename(a).startswith("gran_run_")
    assert run_dir(str(tmp_path), "gran_run", ngf=16, seed=0, steps=100) == a
    assert run_dir(str(tmp_path), "gran_run", steps=100, seed=1, ngf=16) != a
    assert run_dir(str(tmp_path), "gran_run", steps=100, seed=0, ngf=8) != a
    assert run_dir(str(tmp_path), "text2image_run", steps=100, seed=0, ngf=16) != a


def test_gran_demo_trains_beside_a_run_made_with_other_settings(tmp_path):
    # A demo folder from an older release holds a run whose settings differ: the demo must
    # neither fail to resume it nor touch it.
    from fastpapers.demos import gran as demo
    from fastpapers.recipes import gran
    out = tmp_path / "out"
    stale = out / "gran_run_old"
    gran.train(gran.Config(steps=2, batch_size=8, seed=0, sample_every=0, checkpoint_every=2, timesteps=2,
                           image_size=16, ngf=8, ndf=8), str(stale), device="cpu", progress=False)
    before = {f: os.path.getmtime(stale / f) for f in os.listdir(stale)}
    written = demo.run(str(out), device="cpu", seed=0)
    assert written and all(os.path.isfile(p) for p in written)
    assert {f: os.path.getmtime(stale / f) for f in os.listdir(stale)} == before
    runs = sorted(d for d in os.listdir(out) if d.startswith("gran_run_"))
    assert len(runs) == 2 and "gran_run_old" in runs


def test_run_dir_depends_on_the_run_folder_format(tmp_path, monkeypatch):
    from fastpapers.demos import _rundir
    a = run_dir(str(tmp_path), "gran_run", steps=100)
    monkeypatch.setattr(_rundir, "RUN_VERSION", _rundir.RUN_VERSION + 1)
    assert run_dir(str(tmp_path), "gran_run", steps=100) != a
