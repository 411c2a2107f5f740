"""The run-folder format (fastpapers.train.rundir) and the checksummed files under it."""
import doctest
import json
import os

import pytest
import torch

from fastpapers.train import checkpoint as C
from fastpapers.train import rundir as R
from fastpapers.train.rundir import RUN_FORMAT, RUN_VERSION, Run, RunFolderError, create_run, load_run


def _flip_byte(path, offset=None):
    data = bytearray(open(path, "rb").read())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x01
    open(path, "wb").write(bytes(data))


def test_doctests():
    assert doctest.testmod(R, optionflags=doctest.ELLIPSIS).failed == 0


def test_create_writes_run_json_and_load_reads_it(tmp_path):
    out = str(tmp_path / "r")
    run = create_run(out, "gran", {"image_size": 28, "steps": 5})
    assert isinstance(run, Run) and run.path == os.path.abspath(out) and run.version == RUN_VERSION
    with open(os.path.join(out, "run.json")) as f:
        meta = json.load(f)
    assert meta["format"] == RUN_FORMAT == "fastpapers-run" and meta["version"] == 1
    assert meta["paper"] == "gran" and meta["config"] == {"image_size": 28, "steps": 5}
    assert isinstance(meta["fastpapers_version"], str)
    assert run.checkpoint_path == os.path.join(run.path, "checkpoint.pt")
    assert run.metrics_path == os.path.join(run.path, "metrics.jsonl")
    assert run.file("vocab.json") == os.path.join(run.path, "vocab.json")
    # From the folder or from a file inside it.
    for p in (out, run.checkpoint_path, os.path.join(out, "run.json")):
        again = load_run(p, "gran")
        assert (again.path, again.paper, again.config) == (run.path, "gran", run.config)
    assert load_run(out).paper == "gran"


def test_existing_run_needs_resume_and_is_never_overwritten(tmp_path):
    out = str(tmp_path / "r")
    create_run(out, "gran", {"a": 1})
    before = open(os.path.join(out, "run.json"), "rb").read()
    with pytest.raises(RunFolderError, match=r"--resume.*another --out"):
        create_run(out, "gran", {"a": 2})
    assert open(os.path.join(out, "run.json"), "rb").read() == before
    # resume returns the stored run; comparing configs is the caller's job.
    run = create_run(out, "gran", {"a": 2}, resume=True)
    assert run.config == {"a": 1}
    with pytest.raises(RunFolderError, match="'gran' run, not a 'lapgan' run"):
        create_run(out, "lapgan", {}, resume=True)
    # A folder with a checkpoint of an older release (no run.json) is not taken over either.
    old = tmp_path / "old"
    old.mkdir()
    (old / "checkpoint.pt").write_bytes(b"x")
    with pytest.raises(RunFolderError, match="--resume"):
        create_run(str(old), "gran", {})
    with pytest.raises(RunFolderError, match="convert_legacy"):
        create_run(str(old), "gran", {}, resume=True)
    assert os.listdir(old) == ["checkpoint.pt"]


def test_resume_of_nothing_starts_fresh_and_user_files_stay(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    run = create_run(str(out), "mixer", {"x": 1}, resume=True)
    assert run.config == {"x": 1} and (out / "notes.txt").read_text() == "mine"


def test_refusals_name_the_path_and_what_was_expected(tmp_path):
    with pytest.raises(RunFolderError, match="no run.json"):
        load_run(str(tmp_path))
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "config.json").write_text(json.dumps({"image_size": 28}))
    with pytest.raises(RunFolderError, match=r"older fastpapers format \(config.json.*convert_legacy"):
        load_run(str(legacy), "gran")
    run = R.convert_legacy(str(legacy), "gran")
    assert run.config == {"image_size": 28} and load_run(str(legacy), "gran").config == {"image_size": 28}
    assert json.loads((legacy / "config.json").read_text()) == {"image_size": 28}  # untouched
    # Another format, a newer version, another paper.
    for meta, pattern in [({"format": "x", "version": 1, "paper": "gran", "config": {}}, "format 'x'"),
                          ({"format": RUN_FORMAT, "version": 7, "paper": "gran", "config": {}}, "version 7.*newer"),
                          ({"format": RUN_FORMAT, "version": 1, "paper": "caption", "config": {}}, "'caption' run")]:
        d = tmp_path / f"m{len(os.listdir(tmp_path))}"
        d.mkdir()
        (d / "run.json").write_text(json.dumps(meta))
        with pytest.raises(RunFolderError, match=pattern):
            load_run(str(d), "gran")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_run(str(tmp_path / "nowhere" / "deeper"))
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(RunFolderError, match="is a file"):
        create_run(str(f), "gran", {})
    with pytest.raises(RunFolderError, match="--out"):
        create_run("", "gran", {})


def test_json_and_tensor_artefacts_round_trip(tmp_path):
    run = create_run(str(tmp_path / "r"), "caption", {})
    run.save_json("vocab.json", {"itos": ["<pad>", "a", "b"]})
    assert run.load_json("vocab.json") == {"itos": ["<pad>", "a", "b"]}
    run.save_tensors("feats.pt", {"w": torch.arange(6.0), "names": ["a", "b"], "n": 3})
    got = run.load_tensors("feats.pt")
    assert torch.equal(got["w"], torch.arange(6.0)) and got["names"] == ["a", "b"] and got["n"] == 3
    assert os.path.isfile(run.file("vocab.json.sha256")) and os.path.isfile(run.file("feats.pt.sha256"))
    with pytest.raises(ValueError, match="relative"):
        run.file("../x")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        run.load_json("missing.json")


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
@pytest.mark.parametrize("kind", ["json", "tensors", "run.json"])
def test_damaged_files_are_refused_naming_the_file(tmp_path, damage, kind):
    run = create_run(str(tmp_path / "r"), "gran", {"k": list(range(50))})
    name = {"json": "a.json", "tensors": "a.pt", "run.json": "run.json"}[kind]
    if kind == "json":
        run.save_json(name, {"k": list(range(100))})
    elif kind == "tensors":
        run.save_tensors(name, {"w": torch.randn(100)})
    path = run.file(name)
    if damage == "flip":
        _flip_byte(path)
    elif damage == "truncate":
        data = open(path, "rb").read()
        open(path, "wb").write(data[:len(data) // 2])
    else:
        open(path, "wb").close()
    expected = {"flip": "checksum mismatch: file corrupt", "truncate": "checksum mismatch", "empty": "empty"}[damage]
    with pytest.raises(RunFolderError, match=expected) as info:
        if kind == "json":
            run.load_json(name)
        elif kind == "tensors":
            run.load_tensors(name)
        else:
            load_run(run.path, "gran")
    msg = str(info.value)
    assert name in msg and "\n" not in msg
    assert isinstance(info.value, C.CorruptFileError) and isinstance(info.value, ValueError)


def test_files_without_a_checksum_still_load(tmp_path):
    run = create_run(str(tmp_path / "r"), "gran", {})
    torch.save({"w": torch.ones(3)}, run.file("old.pt"))
    (tmp_path / "r" / "old.json").write_text("[1, 2]")
    assert torch.equal(run.load_tensors("old.pt")["w"], torch.ones(3))
    assert run.load_json("old.json") == [1, 2]
    # Without a sidecar the check cannot run; a broken file is still named.
    (tmp_path / "r" / "bad.json").write_text('{"a": 1,')
    with pytest.raises(RunFolderError, match="bad.json.*line 1"):
        run.load_json("bad.json")
    (tmp_path / "r" / "bad.pt").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(RunFolderError, match="bad.pt"):
        run.load_tensors("bad.pt")


def test_run_load_checkpoint(tmp_path):
    run = create_run(str(tmp_path / "r"), "gran", {})
    lin = torch.nn.Linear(2, 2)
    with pytest.raises(RunFolderError, match="no checkpoint.pt yet"):
        run.load_checkpoint({"m": lin})
    C.atomic_save({"format": C.FORMAT, "step": 3, "modules": {"m": lin.state_dict()}}, run.checkpoint_path)
    other = torch.nn.Linear(2, 2)
    assert run.load_checkpoint({"m": other})["step"] == 3
    assert torch.equal(other.weight, lin.weight)
    with pytest.raises(ValueError, match="does not fit"):
        run.load_checkpoint({"m": torch.nn.Linear(3, 2)})
    snap = run.file("step_3.pt")
    C.atomic_save({"format": C.FORMAT, "step": 2, "modules": {"m": lin.state_dict()}}, snap)
    assert load_run(snap, "gran").load_checkpoint({"m": other}, checkpoint=snap)["step"] == 2
    with pytest.raises(FileNotFoundError, match="step_9.pt"):
        run.load_checkpoint({"m": other}, checkpoint=run.file("step_9.pt"))


def test_check_config_lists_every_difference(tmp_path):
    run = create_run(str(tmp_path / "r"), "gran", {"a": 1, "b": [2, 3], "c": "x"})
    run.check_config({"a": 1, "b": [2, 3], "c": "x"})
    run.check_config({"a": 1, "b": [9], "c": "x"}, keys=["a", "c"])
    with pytest.raises(RunFolderError, match=r"b: run has \[2, 3\], asked \[9\]; c: run has 'x', asked \(none\)"):
        run.check_config({"a": 1, "b": [9]})
