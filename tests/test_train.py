import json
import os
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import TensorDataset

from fastpapers.train import ResumableLoader, Trainer, atomic_save, load_checkpoint, seed_everything
from fastpapers.train import checkpoint as ckpt_mod
from tests._train_tasks import ddp_run
from tests.utils import needs_cuda

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Crash(RuntimeError):
    pass


pytestmark = pytest.mark.usefixtures("one_thread")


def _data():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(37, 6, generator=g)  # 37 = 4 full batches of 8 + a dropped tail: epochs turn over
    return TensorDataset(x, (x[:, 0] > 0).long())


def _run(out, steps, *, resume=False, crash_at=None, sample=False, seed_model=1, device="cpu", amp=False,
         sample_every=700):
    """Two modules, two optimisers (alternating), dropout, a scheduler, clipping, numpy/python RNG use."""
    import random

    import numpy as np
    seed_everything(seed_model)  # a resumed run starts from different weights: load must overwrite them
    body = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Dropout(0.3))
    head = nn.Linear(32, 2)
    opts = {"body": torch.optim.SGD(body.parameters(), lr=0.05, momentum=0.9),
            "head": torch.optim.Adam(head.parameters(), lr=3e-3)}
    scheds = {"head": torch.optim.lr_scheduler.StepLR(opts["head"], 300, 0.5)}

    def step(tr, batch):
        if crash_at is not None and tr.global_step == crash_at:
            raise Crash()
        x, y = batch
        x = x + 0.01 * torch.randn_like(x) + 0.001 * float(np.random.rand()) + 0.001 * random.random()
        assert x.device.type == tr.device.type
        logits = head(body(x))
        if tr.global_step % 2:
            loss = F.cross_entropy(logits, y)
            tr.step("body", loss)
        else:
            loss = F.cross_entropy(logits, y) + 0.01 * head.weight.pow(2).sum()
            tr.step("head", loss)
        return {"loss": loss, "acc": (logits.argmax(1) == y).float().mean()}

    sample_fn = (lambda tr: torch.rand(4, 3, 8, 8)) if sample else None
    tr = Trainer({"body": body, "head": head}, opts, step, data=_data(), batch_size=8, out_dir=str(out), seed=3,
                 schedulers=scheds, grad_clip=0.5, log_every=100, checkpoint_every=500, sample_fn=sample_fn,
                 sample_every=sample_every, progress=False, device=device, amp=amp)
    tr.fit(steps, resume=resume)
    return {f"{n}.{k}": v.detach().cpu().clone()
            for n, m in (("body", body), ("head", head)) for k, v in m.state_dict().items()}


def _records(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k != "steps_per_s"} for line in f]


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_is_bit_exact(tmp_path):
    straight = _run(tmp_path / "straight", 2000, sample=True)
    # 1k steps; then a fresh start (new weights) resumes towards 2k and is killed at step 1234;
    # the checkpoint of step 1000 survives and a second resume finishes the 2k steps.
    _run(tmp_path / "halves", 1000)
    with pytest.raises(Crash):
        _run(tmp_path / "halves", 2000, resume=True, crash_at=1234, seed_model=2)
    assert load_checkpoint(str(tmp_path / "halves" / "checkpoint.pt"))["step"] == 1000
    halves = _run(tmp_path / "halves", 2000, resume=True, seed_model=3)
    _assert_same(straight, halves)
    # The log holds no line from the killed run's steps after 1000.
    assert _records(tmp_path / "straight") == _records(tmp_path / "halves")
    # Sampling (straight run only) drew random numbers without disturbing training, and wrote PNGs.
    pngs = sorted(os.listdir(tmp_path / "straight" / "samples"))
    assert pngs == ["sample_0000700.png", "sample_0001400.png"]
    assert Image.open(tmp_path / "straight" / "samples" / pngs[0]).size == (2 * 8 + 3 * 2, 2 * 8 + 3 * 2)


def test_training_makes_progress_and_logs_csv(tmp_path):
    _run(tmp_path, 600)
    recs = _records(tmp_path)
    assert [r["step"] for r in recs] == [100, 200, 300, 400, 500, 600]
    assert recs[-1]["loss"] < recs[0]["loss"]
    assert recs[0]["lr/head"] == 3e-3 and recs[-1]["lr/head"] == pytest.approx(1.5e-3)
    with open(tmp_path / "metrics.csv") as f:
        lines = f.read().splitlines()
    assert lines[0].split(",")[:3] == ["step", "loss", "acc"] and len(lines) == 7


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    a = _run(tmp_path / "a", 50)
    b = _run(tmp_path / "b", 50, resume=True)
    _assert_same(a, b)


def test_two_process_gloo_matches_one_process(tmp_path):
    single = ddp_run(str(tmp_path / "one"))
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.join(ROOT, "tests", "_train_tasks.py"), str(tmp_path / "two")]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        with open(tmp_path / "two" / f"params_rank{rank}.json") as f:
            two = torch.tensor(json.load(f), dtype=torch.float64)
        torch.testing.assert_close(two, single, rtol=1e-12, atol=1e-13)
    # Rank 0 alone logged (one line per step, not two), with the loss averaged over both ranks.
    one_log, two_log = _records(tmp_path / "one"), _records(tmp_path / "two")
    assert [r["step"] for r in two_log] == list(range(1, 7))
    # Logged values are float32 (the trainer sums metrics in float32): each rank's float64 MSE
    # is rounded once (u = 2^-24 each), their all-reduced sum once more, and the one-process
    # loss once; the MSEs are >= 0, so the two logs differ by at most 3u * loss (+ O(u^2)).
    for r1, r2 in zip(one_log, two_log):
        assert r2["loss"] == pytest.approx(r1["loss"], rel=4 * 2.0 ** -24, abs=0)
    assert load_checkpoint(str(tmp_path / "two" / "checkpoint.pt"))["world_size"] == 2


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    atomic_save({"format": ckpt_mod.FORMAT, "w": torch.arange(10)}, str(path))
    before = path.read_bytes()

    def half_written(obj, f):
        f.write(b"\x80\x02partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", half_written)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"format": ckpt_mod.FORMAT, "w": torch.zeros(10)}, str(path))
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["ck.pt", "ck.pt.sha256"]  # the temporary file was removed


_WRITER = """
import sys, torch
from fastpapers.train import atomic_save
big = torch.randn(6_000_000)
i = 0
while True:
    big[0] = i
    atomic_save({"format": "fastpapers-checkpoint", "i": i, "big": big}, sys.argv[1])
    i += 1
"""


def test_kill_during_write_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "ck.pt"
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], env=env)
    try:
        deadline = time.time() + 120
        # Kill while a temporary file exists, i.e. in the middle of a write that follows a complete one.
        while time.time() < deadline:
            if path.exists() and any(n.endswith(".tmp") for n in os.listdir(tmp_path)):
                proc.kill()
                break
            time.sleep(0.001)
        else:
            pytest.fail("the writer never started a second checkpoint")
    finally:
        proc.kill()
        proc.wait()
    ck = load_checkpoint(str(path))  # verifies the checksum too
    assert ck["big"][0].item() == ck["i"] and ck["big"].numel() == 6_000_000
    # The next write of the same file removes the temporary file the kill left behind.
    atomic_save({"format": ckpt_mod.FORMAT, "i": -1}, str(path))
    assert sorted(os.listdir(tmp_path)) == ["ck.pt", "ck.pt.sha256"]
    assert load_checkpoint(str(path))["i"] == -1


def test_missing_and_corrupt_checkpoint_errors_name_the_file(tmp_path):
    missing = str(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(missing)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load_checkpoint(str(bad))
    other = tmp_path / "other.pt"
    torch.save({"w": torch.ones(2)}, other)
    with pytest.raises(ValueError, match="other.pt"):
        load_checkpoint(str(other))


def test_load_checkpoint_into_modules(tmp_path):
    _run(tmp_path, 20)
    seed_everything(9)
    head = nn.Linear(32, 2)
    ck = load_checkpoint(str(tmp_path / "checkpoint.pt"), {"head": head})
    assert ck["step"] == 20
    assert torch.equal(head.weight, ck["modules"]["head"]["weight"])
    with pytest.raises(ValueError, match="tail"):
        load_checkpoint(str(tmp_path / "checkpoint.pt"), {"tail": head})


def test_loader_workers_give_the_same_batches():
    ds = TensorDataset(torch.arange(40))
    plain, workers = iter(ResumableLoader(ds, 8, seed=1)), iter(ResumableLoader(ds, 8, seed=1, num_workers=2))
    for _ in range(7):  # crosses an epoch, so a second set of workers starts
        assert torch.equal(next(plain)[0], next(workers)[0])


def test_step_fn_must_return_scalars(tmp_path):
    m = nn.Linear(2, 1)
    opt = {"m": torch.optim.SGD(m.parameters(), lr=0.1)}
    with pytest.raises(ValueError, match="'v'"):
        Trainer({"m": m}, opt, lambda tr, b: {"v": torch.ones(3)}, out_dir=str(tmp_path), progress=False).fit(1)
    with pytest.raises(TypeError, match="dict"):
        Trainer({"m": m}, opt, lambda tr, b: 1.0, out_dir=str(tmp_path), progress=False).fit(1)


def test_loader_position_restores_exactly_and_shards_cover_the_global_batch():
    ds = TensorDataset(torch.arange(23))
    full = ResumableLoader(ds, 6, seed=4)
    it = iter(full)
    first = [next(it)[0].tolist() for _ in range(5)]   # 3 batches per epoch: crosses an epoch
    state = full.state_dict()
    rest = [next(it)[0].tolist() for _ in range(4)]
    again = ResumableLoader(ds, 6, seed=4)
    again.load_state_dict(state)
    it2 = iter(again)
    assert [next(it2)[0].tolist() for _ in range(4)] == rest
    assert state == {"epoch": 1, "batch": 2}
    # Epoch 1 is a new permutation, not a replay of epoch 0.
    assert first[3] != first[0]
    # Two shards of a global batch of 6 are 3 + 3 items whose union is the single-process batch.
    shards = [iter(ResumableLoader(ds, 6, seed=4, rank=r, world_size=2)) for r in (0, 1)]
    for k in range(5):
        union = sorted(next(shards[0])[0].tolist() + next(shards[1])[0].tolist())
        assert union == sorted(first[k])


@pytest.mark.parametrize("kwargs, arg", [
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 7, "world_size": 2}, "batch_size"),
    ({"batch_size": 100}, "batch_size"),
])
def test_loader_bad_arguments(kwargs, arg):
    ws = kwargs.pop("world_size", 1)
    with pytest.raises(ValueError, match=arg):
        ResumableLoader(TensorDataset(torch.arange(23)), world_size=ws, **kwargs)


def test_trainer_bad_arguments(tmp_path):
    m = nn.Linear(2, 2)
    opt = {"m": torch.optim.SGD(m.parameters(), lr=0.1)}
    with pytest.raises(TypeError, match="modules"):
        Trainer([m], opt, lambda tr, b: None, out_dir=str(tmp_path))
    with pytest.raises(ValueError, match="schedulers"):
        Trainer({"m": m}, opt, lambda tr, b: None, out_dir=str(tmp_path),
                schedulers={"x": torch.optim.lr_scheduler.StepLR(opt["m"], 1)})
    with pytest.raises(ValueError, match="batch_size"):
        Trainer({"m": m}, opt, lambda tr, b: None, data=TensorDataset(torch.ones(4)), out_dir=str(tmp_path))
    tr = Trainer({"m": m}, opt, lambda tr, b: {"l": tr.step("n", m.weight.sum())}, out_dir=str(tmp_path),
                 progress=False)
    with pytest.raises(ValueError, match="optimizers"):
        tr.fit(1)


def test_eval_fn_logged_and_no_data_steps(tmp_path):
    seed_everything(0)
    w = nn.Parameter(torch.tensor([3.0]))
    holder = nn.Module()
    holder.w = w
    opt = {"w": torch.optim.SGD([w], lr=0.25)}

    def step(tr, batch):
        assert batch is None
        loss = (w ** 2).sum()
        tr.step("w", loss)
        return {"loss": loss}

    tr = Trainer({"w": holder}, opt, step, out_dir=str(tmp_path), log_every=2, eval_every=2,
                 eval_fn=lambda tr: {"w": w.item()}, progress=False)
    last = tr.fit(4)
    assert w.item() == pytest.approx(3.0 * 0.5 ** 4)
    assert last["eval/w"] == pytest.approx(3.0 * 0.5 ** 4)
    recs = _records(tmp_path)
    assert [r["step"] for r in recs] == [2, 2, 4, 4]


@needs_cuda
@pytest.mark.parametrize("amp", [False, "fp16", "bf16"])
def test_cuda_resume_is_bit_exact(tmp_path, amp):
    straight = _run(tmp_path / "straight", 400, device="cuda", amp=amp, sample=True, sample_every=150)
    _run(tmp_path / "halves", 200, device="cuda", amp=amp)
    halves = _run(tmp_path / "halves", 400, resume=True, seed_model=2, device="cuda", amp=amp)
    _assert_same(straight, halves)
    recs = _records(tmp_path / "straight")
    assert recs[-1]["loss"] < recs[0]["loss"]
    if amp == "fp16":
        ck = load_checkpoint(str(tmp_path / "halves" / "checkpoint.pt"))
        assert set(ck["scalers"]) == {"body", "head"} and ck["scalers"]["head"]["scale"] > 0


def test_fresh_run_replaces_old_logs(tmp_path):
    _run(tmp_path, 200)
    _run(tmp_path, 100)
    assert [r["step"] for r in _records(tmp_path)] == [100]


def test_lbfgs_closure_step(tmp_path):
    holder = nn.Module()
    holder.x = nn.Parameter(torch.tensor([3.0, -2.0], dtype=torch.float64))
    opt = {"x": torch.optim.LBFGS([holder.x], lr=1.0, max_iter=20, line_search_fn="strong_wolfe")}
    target = torch.tensor([1.0, 4.0], dtype=torch.float64)

    def step(tr, batch):
        loss = tr.step("x", closure=lambda: ((holder.x - target) ** 2).sum())
        return {"loss": loss}

    Trainer({"x": holder}, opt, step, out_dir=str(tmp_path), log_every=1, progress=False).fit(2)
    torch.testing.assert_close(holder.x.detach(), target)
    with pytest.raises(ValueError, match="loss or closure"):
        Trainer({"x": holder}, opt, lambda tr, b: tr.step("x"), out_dir=str(tmp_path), progress=False).fit(1)


def test_tensorboard_used_when_installed(tmp_path, monkeypatch):
    import sys
    import types
    calls = []

    class Writer:
        def __init__(self, log_dir):
            calls.append(("init", log_dir))

        def add_scalar(self, tag, value, step):
            calls.append((tag, value, step))

        def close(self):
            calls.append(("close",))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    _run(tmp_path, 200)
    assert calls[0] == ("init", os.path.join(str(tmp_path), "tb")) and calls[-1] == ("close",)
    assert [c[2] for c in calls if c[0] == "loss"] == [100, 200]


def test_second_fit_continues(tmp_path):
    def make(out):
        seed_everything(0)
        net = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.2), nn.Linear(8, 2))
        opt = {"net": torch.optim.Adam(net.parameters(), lr=1e-2)}

        def step(tr, batch):
            x, y = batch
            loss = F.cross_entropy(net(x), y)
            tr.step("net", loss)
            return {"loss": loss}

        return net, Trainer({"net": net}, opt, step, data=_data(), batch_size=8, out_dir=str(out), log_every=10,
                            progress=False)

    net_a, tr_a = make(tmp_path / "a")
    tr_a.fit(50)
    net_b, tr_b = make(tmp_path / "b")
    tr_b.fit(20)
    tr_b.fit(50)
    for p, q in zip(net_a.parameters(), net_b.parameters()):
        assert torch.equal(p, q)
    assert _records(tmp_path / "a") == _records(tmp_path / "b")
