"""Helpers for the per-subcommand bad-input tables: run ``fastpapers ARGV`` in-process and
check that it is refused with one line naming the flag or the file, and no traceback."""
import os

from fastpapers import cli


def run_cli(argv, capsys):
    """(exit status, stderr) of ``fastpapers ARGV``, whether argparse or the command refused it."""
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def assert_refused(argv, needle, capsys, *, one_line=False, absent=None, code=None):
    """The command exits non-zero (``code`` when given) without a traceback, its last stderr line
    (its only line with ``one_line``) names ``needle``, and ``absent`` was not created."""
    got, err = run_cli(argv, capsys)
    assert got != 0 and (code is None or got == code), (got, err)
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert lines and needle in lines[-1], err
    if one_line:
        assert len(lines) == 1, err
    if absent is not None:
        assert not os.path.exists(absent), absent
    return err


def corrupt(path, how):
    """Replace the file's bytes: "empty", "truncate" (first half), "flip" (one bit), "random", or bytes."""
    data = open(path, "rb").read()
    if how == "empty":
        new = b""
    elif how == "truncate":
        new = data[:len(data) // 2]
    elif how == "flip":
        new = bytearray(data)
        new[len(new) // 2] ^= 0x10
        new = bytes(new)
    elif how == "random":
        new = os.urandom(max(64, len(data) // 4))
    else:
        new = how
    with open(path, "wb") as f:
        f.write(new)


CORRUPTIONS = ("flip", "empty", "truncate", "random")


def bad_files(*names):
    """(file name, corruption) for every corruption of every named run file."""
    return [(name, how) for name in names for how in CORRUPTIONS]


def corrupted_copy(run, tmp_path, name, how):
    """A copy of the run folder ``run`` under ``tmp_path`` with its file ``name`` corrupted."""
    import shutil
    folder = tmp_path / "bad"
    shutil.copytree(run, folder)
    corrupt(folder / name, how)
    return folder


def assert_flag_refused(command, argv, flag, capsys, tmp_path, *, out_verbs=("train",)):
    """``fastpapers COMMAND ARGV`` (with ``--out`` in ``tmp_path`` for ``out_verbs``) exits 2
    naming ``flag``, and writes no run folder."""
    out = tmp_path / "run"
    if argv[0] in out_verbs and "--out" not in argv:
        argv = argv + ["--out", str(out)]
    assert_refused([command] + argv, flag, capsys, code=2, absent=out)
