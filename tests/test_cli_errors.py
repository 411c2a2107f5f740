"""Bad invocations of the CLI: a non-zero exit with one line naming the flag or the file,
never a traceback; a bare paper command prints its verbs."""
import json
import os

import pytest
import torch

from fastpapers import cli
from fastpapers.train import atomic_save
from fastpapers.train import checkpoint as C


def _call(argv, capsys):
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse refuses the flags itself
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _flip(path):
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x08
    open(path, "wb").write(bytes(data))


@pytest.fixture
def files(tmp_path):
    """Damaged files of every kind a command loads."""
    f = {}
    run = tmp_path / "gran_run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    atomic_save({"format": C.FORMAT, "step": 1, "modules": {}, "w": torch.randn(2000)}, str(run / "checkpoint.pt"))
    _flip(str(run / "checkpoint.pt"))
    f["flipped"] = str(run / "checkpoint.pt")
    blob = tmp_path / "good.pt"
    torch.save({"format": "fastpapers-mixer", "w": torch.randn(2000)}, blob)
    data = blob.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    f["truncated"] = str(tmp_path / "truncated.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    f["empty"] = str(tmp_path / "empty.pt")
    (tmp_path / "random.pt").write_bytes(bytes(range(256)) * 4)
    f["random"] = str(tmp_path / "random.pt")
    lap = tmp_path / "lapgan_run"
    lap.mkdir()
    (lap / "lapgan.json").write_text('{"model": {"levels": 3,')  # torn
    (lap / "checkpoint.pt").write_bytes(data)
    f["lapgan_torn_json"] = str(lap / "checkpoint.pt")
    (tmp_path / "a_file").write_text("x")
    f["a_file"] = str(tmp_path / "a_file")
    f["folder"] = str(tmp_path)
    f["missing"] = str(tmp_path / "missing.pt")
    return f


# (argv with {name} placeholders, what the one line must contain)
BAD = [
    (["gran", "sample", "--checkpoint", "{flipped}"], ["checkpoint.pt", "checksum mismatch: file corrupt"]),
    (["gran", "battle", "--checkpoint", "{flipped}", "--checkpoint", "{flipped}"], ["checksum mismatch"]),
    (["gran", "sample", "--checkpoint", "{missing}"], ["not found"]),
    (["gran", "sample", "--checkpoint", "{flipped}", "--rows", "0"], ["--rows", "'0'"]),
    (["mixer", "eval", "--checkpoint", "{truncated}"], ["truncated.pt", "truncated or corrupt"]),
    (["mixer", "eval", "--checkpoint", "{empty}"], ["empty.pt"]),
    (["mixer", "eval", "--checkpoint", "{random}"], ["random.pt"]),
    (["mixer", "eval", "--checkpoint", "{folder}"], []),
    (["mixer", "translate", "--checkpoint", "{truncated}"], ["truncated.pt"]),
    (["mixer", "eval", "--checkpoint", "{missing}"], ["missing.pt"]),
    (["mixer", "eval", "--checkpoint", "{truncated}", "--beam", "0"], ["--beam", "positive int", "'0'"]),
    (["lapgan", "sample", "--checkpoint", "{lapgan_torn_json}"], ["lapgan.json", "JSON"]),
    (["lapgan", "train", "--steps", "0"], ["--steps", "expected a positive int, got '0'"]),
    (["lapgan", "train", "--batch-size", "-2"], ["--batch-size", "'-2'"]),
    (["lapgan", "train", "--out", ""], ["--out", "non-empty path"]),
    (["lapgan", "train", "--lr", "nan"], ["--lr", "'nan'"]),
    (["lapgan", "train", "--checkpoint-every", "-1"], ["--checkpoint-every", "'-1'"]),
    (["gran", "train", "--lr-d", "inf"], ["--lr-d", "'inf'"]),
    (["mixer", "train", "--lr", "nan"], ["--lr", "'nan'"]),
    (["caption", "train", "--steps", "0"], ["--steps", "'0'"]),
    (["caption", "eval", "--beams", "0"], ["--beams", "'0'"]),
    (["gran", "train", "--steps", "ten"], ["--steps", "'ten'"]),
    (["gran", "nosuchverb"], ["nosuchverb"]),
    (["gran", "battle", "--checkpoint", "{flipped}", "--checkpoint", "{flipped}", "--tolerance", "nan"],
     ["--tolerance", "'nan'"]),
    (["style", "--content-weight", "-1"], ["--content-weight", "'-1'"]),
    (["nosuchcommand"], ["nosuchcommand"]),
    (["demo", "--only", "nosuchstep", "--out", "{folder}"], ["--only", "nosuchstep"]),
    (["demo", "--only", "nms", "--out", "{a_file}"], ["a_file"]),
    (["demo", "--device", "tpu", "--out", "{folder}"], ["--device", "tpu"]),
    (["demo", "--only", "nms", "--out", "/proc/fastpapers_test/x"], ["/proc/fastpapers_test"]),
]


@pytest.mark.parametrize("argv, needles", BAD, ids=[" ".join(a[:3]) + f"-{i}" for i, (a, _) in enumerate(BAD)])
def test_bad_invocations_fail_in_one_line(argv, needles, files, capsys):
    argv = [a.format(**files) for a in argv]
    code, out, err = _call(argv, capsys)
    assert code not in (0, None), (out, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "error:" in lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize("paper", ["caption", "gran", "lapgan", "mixer", "text2image", "densecap"])
def test_bare_paper_command_prints_its_verbs(paper, capsys):
    code, out, err = _call([paper], capsys)
    assert code == 2
    assert "train" in out and out.startswith("usage: fastpapers " + paper)
    assert "Traceback" not in err


def test_programming_errors_keep_their_traceback(monkeypatch, capsys):
    from fastpapers.commands import info

    def broken(args):
        return {}["missing"]

    monkeypatch.setattr(info, "run", broken)
    with pytest.raises(KeyError):
        cli.main(["info"])

    def runtime(args):
        raise RuntimeError("an op's internal assertion")

    monkeypatch.setattr(info, "run", runtime)
    with pytest.raises(RuntimeError):
        cli.main(["info"])


def test_traceback_on_request(monkeypatch, files, capsys):
    monkeypatch.setenv("FASTPAPERS_TRACEBACK", "1")
    with pytest.raises(ValueError, match="checksum mismatch"):
        cli.main(["gran", "sample", "--checkpoint", files["flipped"]])


def test_os_errors_name_the_file(monkeypatch, capsys, tmp_path):
    from fastpapers.commands import info

    def denied(args):
        open(os.path.join(tmp_path, "x"), "w").close()
        raise PermissionError(13, "Permission denied", str(tmp_path / "out.json"))

    monkeypatch.setattr(info, "run", denied)
    code, _, err = _call(["info"], capsys)
    assert code == 2 and err.strip() == f"fastpapers info: error: {tmp_path / 'out.json'}: Permission denied"


def test_sigterm_exit_status_passes_through(monkeypatch):
    from fastpapers.commands import info

    def terminated(args):  # what Trainer.fit raises after saving on SIGTERM
        raise SystemExit(143)

    monkeypatch.setattr(info, "run", terminated)
    with pytest.raises(SystemExit) as exc:
        cli.main(["info"])
    assert exc.value.code == 143


def test_interrupt_exits_130(monkeypatch, capsys):
    from fastpapers.commands import info

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(info, "run", interrupted)
    code, _, err = _call(["info"], capsys)
    assert code == 130 and "interrupted" in err


def test_good_invocation_still_works(capsys):
    code, out, err = _call(["info"], capsys)
    assert code == 0 and json.loads(out)


def test_conventions_keep_a_commands_own_type():
    import argparse

    from fastpapers.commands import _common as T
    parser = cli.build_parser()
    commands = cli._verbs_action(parser).choices
    train = cli._verbs_action(commands["gran"]).choices["train"]
    types = {a.dest: a.type for a in train._actions if a.option_strings}
    assert types["steps"] is T.positive_int and types["checkpoint_every"] is T.nonneg_int
    assert types["lr_d"] is T.positive_float and types["out"] is T.nonempty_path and types["seed"] is int

    sub = argparse.ArgumentParser().add_subparsers()
    p = sub.add_parser("x")
    p.add_argument("--steps", type=lambda s: int(s) - 1)
    own = p._actions[-1].type
    cli._apply_conventions(p)
    assert p._actions[-1].type is own
