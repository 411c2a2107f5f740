"""Interrupted work loses nothing: real SIGKILL / SIGTERM / SIGINT on a tiny training run,
torn metrics logs, leftover temporary files, a full disk and corrupt checkpoints."""
import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from fastpapers.train import FileWriteError, Trainer
from fastpapers.train import checkpoint as C
from fastpapers.train.log import MetricLogger, read_records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK = os.path.join(ROOT, "tests", "_fault_task.py")
STEPS = 60

pytestmark = pytest.mark.usefixtures("one_thread")


def _task(out, *args, wait=True):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    cmd = [sys.executable, TASK, str(out), *map(str, args)]
    if not wait:
        return subprocess.Popen(cmd, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


def _inproc(out, *args):
    from tests import _fault_task
    assert _fault_task.main([str(out), *map(str, args)]) == 0


def _records(out):
    records = read_records(os.path.join(out, "metrics.jsonl"))
    return [{k: v for k, v in r.items() if k != "steps_per_s"} for r in records]


def _params(out):
    return torch.load(os.path.join(out, "params.pt"), weights_only=True)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    _inproc(out, STEPS)
    return out


def _assert_same_run(a, b):
    pa, pb = _params(a), _params(b)
    assert pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)
    assert _records(a) == _records(b)
    with open(os.path.join(a, "metrics.csv")) as fa, open(os.path.join(b, "metrics.csv")) as fb:
        rows_a = [line.split(",")[:3] for line in fa.read().splitlines()]
        rows_b = [line.split(",")[:3] for line in fb.read().splitlines()]
    assert rows_a == rows_b  # step, loss, acc (steps_per_s is a timing)


def test_sigkill_then_resume_gives_the_uninterrupted_log(straight, tmp_path):
    out = tmp_path / "run"
    # Checkpoints every 20 steps, log lines every 7: killed at 47, the checkpoint of step 40 is
    # mid log-window (36..42) and rows 42 was logged after it.
    proc = _task(out, STEPS, "--signal", "SIGKILL", "--at", 47)
    assert proc.returncode == -signal.SIGKILL
    assert [r["step"] for r in _records(out)][-1] == 42
    assert C.read_checkpoint(str(out / "checkpoint.pt"))["step"] == 40
    _inproc(out, STEPS, "--resume")
    _assert_same_run(straight, out)


def test_torn_last_line_is_dropped_and_the_run_continues(straight, tmp_path):
    out = tmp_path / "run"
    assert _task(out, STEPS, "--signal", "SIGKILL", "--at", 47).returncode == -signal.SIGKILL
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 49, "loss": 0.6')  # what a kill in the middle of a write leaves
    with open(out / "metrics.csv", "a") as f:
        f.write("49,0.6")
    _inproc(out, STEPS, "--resume")
    _assert_same_run(straight, out)


def test_sigterm_saves_and_exits_143(straight, tmp_path):
    out = tmp_path / "run"
    proc = _task(out, STEPS, "--signal", "SIGTERM", "--at", 33)
    assert proc.returncode == 143, proc.stderr[-2000:]
    assert C.read_checkpoint(str(out / "checkpoint.pt"))["step"] == 34
    last = proc.stderr.strip().splitlines()[-1]
    assert "SIGTERM" in last and "step 34" in last and "checkpoint.pt" in last and "--resume" in last
    _inproc(out, STEPS, "--resume")
    _assert_same_run(straight, out)


def test_sigterm_from_outside_during_a_step(straight, tmp_path):
    out = tmp_path / "run"
    proc = _task(out, STEPS, "--signal", "wait", "--at", 25, wait=False)
    try:
        deadline = time.time() + 60
        while not (out / "ready").exists():
            assert proc.poll() is None and time.time() < deadline, "the task never reached step 25"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-2000:]
    assert C.read_checkpoint(str(out / "checkpoint.pt"))["step"] == 26
    (out / "ready").unlink()
    _inproc(out, STEPS, "--resume")
    _assert_same_run(straight, out)


def _tiny_trainer(out, step_hook=None, checkpoint_every=5):
    torch.manual_seed(0)
    lin = nn.Linear(3, 1)
    opt = {"m": torch.optim.SGD(lin.parameters(), lr=0.1)}

    def step(tr, batch):
        loss = lin(torch.ones(4, 3)).pow(2).mean()
        tr.step("m", loss)
        if step_hook:
            step_hook(tr)
        return {"loss": loss}

    return Trainer({"m": lin}, opt, step, out_dir=str(out), log_every=2, checkpoint_every=checkpoint_every,
                   progress=False)


def test_sigint_saves_then_raises_keyboard_interrupt(tmp_path):
    def hook(tr):
        if tr.global_step == 7:  # steps done before this one
            os.kill(os.getpid(), signal.SIGINT)

    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        _tiny_trainer(tmp_path, hook).fit(20)
    assert C.read_checkpoint(str(tmp_path / "checkpoint.pt"))["step"] == 8
    assert signal.getsignal(signal.SIGINT) is handler  # restored after fit


def test_leftover_temp_files_are_removed_at_resume(tmp_path):
    _tiny_trainer(tmp_path).fit(5)
    ours = [".checkpoint.pt.k2j4_x9a.tmp", ".checkpoint.pt.sha256.00aa11bb.tmp", ".metrics.jsonl.zzzzzzzz.tmp"]
    theirs = ["mine.tmp", ".checkpoint.pt.tmp", "checkpoint.pt.abcdefgh.tmp"]
    for name in ours + theirs:
        (tmp_path / name).write_bytes(b"x")
    _tiny_trainer(tmp_path).fit(6, resume=True)
    names = set(os.listdir(tmp_path))
    assert not names & set(ours) and set(theirs) <= names


def test_full_disk_during_a_trainer_save(tmp_path, monkeypatch):
    tr = _tiny_trainer(tmp_path)
    tr.fit(5)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    real = torch.save

    def full(obj, f):
        real(obj, f)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(C.torch, "save", full)
    with pytest.raises(FileWriteError) as info:
        tr.fit(10)
    msg = str(info.value)
    assert "checkpoint.pt" in msg and "No space left on device" in msg and "\n" not in msg
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    monkeypatch.setattr(C.torch, "save", real)
    assert C.read_checkpoint(str(tmp_path / "checkpoint.pt"))["step"] == 5
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_resume_refuses_a_corrupt_checkpoint_in_one_line(tmp_path):
    _tiny_trainer(tmp_path).fit(5)
    path = tmp_path / "checkpoint.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x04
    path.write_bytes(bytes(data))
    with pytest.raises(C.CorruptFileError, match="checkpoint.pt: checksum mismatch: file corrupt"):
        _tiny_trainer(tmp_path).fit(10, resume=True)
    path.write_bytes(bytes(data[:100]))
    os.unlink(str(path) + ".sha256")  # an older checkpoint without a checksum, truncated
    with pytest.raises(C.CorruptFileError, match="checkpoint.pt: not a readable checkpoint file"):
        _tiny_trainer(tmp_path).fit(10, resume=True)


def test_resume_refuses_a_weights_only_checkpoint(tmp_path):
    C.atomic_save({"format": C.FORMAT, "step": 3, "modules": {}}, str(tmp_path / "checkpoint.pt"))
    with pytest.raises(C.CorruptFileError, match=r"checkpoint.pt is not a Trainer checkpoint \(it lacks"):
        _tiny_trainer(tmp_path).fit(10, resume=True)


def test_log_reader_tolerates_a_torn_tail_only(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1, "a": 1.0}\n{"step": 2, "a": 2.0}\n{"step": 3, "a"')
    assert [r["step"] for r in read_records(str(p))] == [1, 2]
    p.write_text('{"step": 1, "a": 1.0}\n{"step": 2, "a": 2.0}')  # complete, only the newline missing
    assert [r["step"] for r in read_records(str(p))] == [1, 2]
    log = MetricLogger(str(tmp_path), tensorboard=False)
    log.log(3, {"a": 3.0})  # appended after repairing, not glued onto the last line
    assert [r["step"] for r in read_records(str(p))] == [1, 2, 3]
    assert (tmp_path / "metrics.csv").read_text().splitlines() == ["step,a", "1,1.0", "2,2.0", "3,3.0"]
    p.write_text('{"step": 1, "a": 1.0}\n{"step": 2, "a\n{"step": 3, "a": 3.0}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl: line 2 is not a metrics record"):
        read_records(str(p))
    json.loads('{"step": 1}')
