"""The one training loop every paper model runs through (see the package docstring)."""
import contextlib
import math
import os
import signal
import sys
import threading
import time
import warnings
from typing import Any, Callable, Dict, Optional, Union

import torch
from torch import nn

from .. import viz
from . import distributed as D
from .checkpoint import (FORMAT, VERSION, CorruptFileError, atomic_save, get_rng_state, read_checkpoint,
                         remove_stale_temp_files, seed_everything, set_rng_state)
from .data import ResumableLoader
from .log import MetricLogger

StepFn = Callable[["Trainer", Any], Optional[Dict[str, Any]]]


def _to_device(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(_to_device(v, device) for v in obj)
    if isinstance(obj, tuple):  # namedtuple
        return type(obj)(*(_to_device(v, device) for v in obj))
    return obj


@contextlib.contextmanager
def _rng_preserved():
    state = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


class _DeferredSignals:
    """Turns the first SIGINT / SIGTERM into a flag the loop reads between steps.

    Stopping in the middle of a step would leave some optimisers stepped and others not, so
    the loop finishes the step, saves a checkpoint and only then stops. A second signal stops
    at once. Installed only in the main thread of a single-process run: with several ranks
    the save is a collective that every rank would have to reach at the same step.
    """

    def __init__(self, enabled: bool):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.received: Optional[int] = None
        self._old: Dict[int, Any] = {}

    def _handle(self, signum, frame):
        if self.received is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        self.received = signum

    def __enter__(self):
        if self.enabled:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}
        return False


class Trainer:
    """Runs ``step_fn(trainer, batch)`` for a number of steps; see :mod:`fastpapers.train`."""

    def __init__(self, modules: Dict[str, nn.Module], optimizers: Dict[str, torch.optim.Optimizer],
                 step_fn: StepFn, *, data=None, batch_size: Optional[int] = None, out_dir: str = "runs/train",
                 seed: int = 0, device: Union[str, torch.device] = "cpu",
                 schedulers: Optional[Dict[str, Any]] = None, grad_clip: Optional[float] = None,
                 amp: Union[bool, str] = False, shuffle: bool = True, num_workers: int = 0,
                 collate_fn: Optional[Callable] = None, log_every: int = 50, checkpoint_every: int = 500,
                 checkpoint_path: Optional[str] = None, sample_fn: Optional[Callable] = None,
                 sample_every: int = 0, sample_range=(0.0, 1.0), eval_fn: Optional[Callable] = None,
                 eval_every: int = 0, progress: bool = True):
        if not isinstance(modules, dict) or not all(isinstance(m, nn.Module) for m in modules.values()):
            raise TypeError("modules must be a dict of name -> nn.Module")
        if not isinstance(optimizers, dict) or not all(isinstance(o, torch.optim.Optimizer)
                                                       for o in optimizers.values()):
            raise TypeError("optimizers must be a dict of name -> torch.optim.Optimizer")
        if not callable(step_fn):
            raise TypeError(f"step_fn must be callable, got {type(step_fn).__name__}")
        schedulers = dict(schedulers or {})
        unknown = [k for k in schedulers if k not in optimizers]
        if unknown:
            raise ValueError(f"schedulers keys must name optimizers {sorted(optimizers)}, got {unknown}")
        for name, every in [("log_every", log_every), ("checkpoint_every", checkpoint_every),
                            ("sample_every", sample_every), ("eval_every", eval_every)]:
            if not isinstance(every, int) or every < 0:
                raise ValueError(f"{name} must be an int >= 0 (0 = never), got {every!r}")
        if grad_clip is not None and not grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {grad_clip!r}")
        if amp not in (False, True, "fp16", "bf16"):
            raise ValueError(f"amp must be False, True, 'fp16' or 'bf16', got {amp!r}")

        self.device = D.init_distributed(torch.device(device))
        self.rank = D.rank()
        self.world_size = D.world_size()
        self.is_main = self.rank == 0
        self.modules = modules
        self.optimizers = optimizers
        self.schedulers = schedulers
        self.step_fn = step_fn
        self.seed = seed
        self.grad_clip = grad_clip
        self.out_dir = out_dir
        self.checkpoint_path = checkpoint_path or os.path.join(out_dir, "checkpoint.pt")
        self.log_every, self.checkpoint_every = log_every, checkpoint_every
        self.sample_fn, self.sample_every, self.sample_range = sample_fn, sample_every, sample_range
        self.eval_fn, self.eval_every = eval_fn, eval_every
        self.progress = progress
        self.global_step = 0
        self._signals: Optional[_DeferredSignals] = None

        if amp and self.device.type != "cuda":
            warnings.warn("amp is used on CUDA only; training in float32 on " + str(self.device))
            amp = False
        self.amp_dtype = None if not amp else (torch.bfloat16 if amp == "bf16" else torch.float16)
        self.scalers = {name: torch.amp.GradScaler("cuda") for name in optimizers} \
            if self.amp_dtype == torch.float16 else {}

        for m in modules.values():
            m.to(self.device)  # in place: the optimisers keep pointing at the same Parameters
        self.loader = None
        if data is not None:
            if batch_size is None:
                raise ValueError("batch_size is required when data is given")
            self.loader = ResumableLoader(data, batch_size, seed=seed, shuffle=shuffle, rank=self.rank,
                                          world_size=self.world_size, num_workers=num_workers,
                                          collate_fn=collate_fn, pin_memory=self.device.type == "cuda")
        self.logger = MetricLogger(out_dir, enabled=self.is_main)
        self._sums: Dict[str, torch.Tensor] = {}
        self._count = 0

    # ---- inside step_fn ------------------------------------------------------------------
    @property
    def stop_requested(self) -> bool:
        """True once SIGINT or SIGTERM arrived during ``fit``: the loop saves and stops after the
        current step. A step that loops for long (an inner optimisation) may check it to return early."""
        return self._signals is not None and self._signals.received is not None

    def step(self, name: str, loss: Optional[torch.Tensor] = None, *, clip: Optional[float] = None,
             retain_graph: bool = False, closure: Optional[Callable[[], torch.Tensor]] = None
             ) -> Optional[torch.Tensor]:
        """One update of optimiser ``name`` from ``loss``: zero its grads, backward, average the
        gradients across ranks, clip (``clip`` or the trainer's ``grad_clip``), step, then step
        its scheduler. Returns the gradient norm before clipping when clipping is on.

        Optimisers that re-evaluate the loss (L-BFGS) take ``closure`` instead of ``loss``: a
        function returning the loss; the trainer zeroes, back-propagates and averages inside it
        (no clipping or AMP scaling on that path). Returns the loss of the first evaluation."""
        if name not in self.optimizers:
            raise ValueError(f"name must be one of the optimizers {sorted(self.optimizers)}, got {name!r}")
        if (loss is None) == (closure is None):
            raise ValueError("step needs exactly one of loss or closure")
        opt = self.optimizers[name]
        params = [p for g in opt.param_groups for p in g["params"]]
        if closure is not None:
            def evaluate():
                opt.zero_grad(set_to_none=True)
                with torch.enable_grad():
                    value = closure()
                    value.backward()
                D.average_gradients(params)
                return value
            first = opt.step(evaluate)
            self._step_scheduler(name)
            return first
        opt.zero_grad(set_to_none=True)
        scaler = self.scalers.get(name)
        # Backward runs outside autocast, as torch.amp recommends.
        with torch.autocast(self.device.type, enabled=False):
            (scaler.scale(loss) if scaler else loss).backward(retain_graph=retain_graph)
        D.average_gradients(params)
        clip = self.grad_clip if clip is None else clip
        norm = None
        if clip:
            if scaler:
                scaler.unscale_(opt)
            norm = torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], clip)
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        self._step_scheduler(name)
        return norm

    def _step_scheduler(self, name: str) -> None:
        sched = self.schedulers.get(name)
        if sched is not None and not isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sched.step()

    # ---- the loop --------------------------------------------------------------------------
    def fit(self, steps: int, *, resume: bool = False) -> Dict[str, float]:
        """Train until ``global_step == steps``. With ``resume=True`` and a checkpoint at
        ``checkpoint_path``, continue from it bit-exactly; a second ``fit`` on the same trainer
        continues where the first stopped. Returns the last logged metrics."""
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be an int >= 0, got {steps!r}")
        if resume and self.is_main:
            # Temporary files of a write that a kill interrupted (only our own pattern).
            for folder in {os.path.dirname(os.path.abspath(self.checkpoint_path)), os.path.abspath(self.out_dir)}:
                remove_stale_temp_files(folder)
        if resume and os.path.isfile(self.checkpoint_path):
            self.load(self.checkpoint_path)
            self.logger.truncate(self.global_step)
        elif self.global_step == 0:
            self.logger.truncate(0)  # a fresh run replaces the records of an earlier one in out_dir
            seed_everything(self.seed + self.rank)
            for m in self.modules.values():
                D.broadcast_module(m)
        for m in self.modules.values():
            m.train()
        batches = iter(self.loader) if self.loader is not None else None
        bar = None
        if self.progress and self.is_main:
            from tqdm.auto import tqdm
            bar = tqdm(total=steps, initial=self.global_step, desc=os.path.basename(self.out_dir.rstrip("/")),
                       dynamic_ncols=True, mininterval=0.5)
        last: Dict[str, float] = {}
        t0, s0 = time.perf_counter(), self.global_step
        signals = self._signals = _DeferredSignals(self.world_size == 1)
        try:
            with signals:
                self._loop(steps, batches, bar, last, t0, s0, signals)
        finally:
            self._signals = None
            if bar is not None:
                bar.close()
            self.logger.close()
        return last

    def _loop(self, steps, batches, bar, last, t0, s0, signals) -> None:
        saved_at = None
        while True:
            if signals.received is not None:
                self._stop(signals.received, saved_at)
            if self.global_step >= steps:
                return
            batch = _to_device(next(batches), self.device) if batches is not None else None
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                out = self.step_fn(self, batch)
            self.global_step += 1
            self._accumulate(out or {})
            s = self.global_step
            if self.log_every and (s % self.log_every == 0 or s == steps):
                last.clear()
                last.update(self._flush(steps_per_s=(s - s0) / max(time.perf_counter() - t0, 1e-9)))
                if bar is not None:
                    bar.set_postfix({k: f"{v:.4g}" for k, v in list(last.items())[:4]}, refresh=False)
            if self.sample_every and s % self.sample_every == 0:
                self.sample()
            if self.eval_every and s % self.eval_every == 0:
                last.update(self.evaluate())
            if (self.checkpoint_every and s % self.checkpoint_every == 0) or s == steps:
                self.save()
                saved_at = s
            if bar is not None:
                bar.update(1)

    def _stop(self, signum: int, saved_at: Optional[int]) -> None:
        """Save (unless this step was just saved) and stop: KeyboardInterrupt for SIGINT (exit
        status 130 from the CLI), SystemExit(143) for SIGTERM."""
        if saved_at != self.global_step:
            self.save()
        name = signal.Signals(signum).name
        print(f"fastpapers: {name} received: checkpoint of step {self.global_step} saved to "
              f"{self.checkpoint_path}; continue with --resume", file=sys.stderr)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    def _accumulate(self, out: Dict[str, Any]) -> None:
        # Sums stay on the device: no host sync until the next log line.
        if not isinstance(out, dict):
            raise TypeError(f"step_fn must return a dict of scalars or None, got {type(out).__name__}")
        for k, v in out.items():
            v = v.detach().float() if isinstance(v, torch.Tensor) else torch.tensor(float(v))
            if v.numel() != 1:
                raise ValueError(f"step_fn returned {k!r} with shape {tuple(v.shape)}; logged values must be scalars")
            v = v.to(self.device).reshape(())
            self._sums[k] = self._sums[k] + v if k in self._sums else v
        self._count += 1

    def _flush(self, **extra) -> Dict[str, float]:
        keys = list(self._sums)
        metrics: Dict[str, float] = {}
        if keys:
            vals = D.mean_across_ranks(torch.stack([self._sums[k] for k in keys]) / max(self._count, 1))
            metrics = dict(zip(keys, vals.tolist()))
        for name, opt in self.optimizers.items():
            metrics[f"lr/{name}"] = opt.param_groups[0]["lr"]
        metrics.update(extra)
        self._sums, self._count = {}, 0
        self.logger.log(self.global_step, metrics)
        return metrics

    @contextlib.contextmanager
    def _eval_mode(self):
        # Sampling and evaluation must not move the training RNG streams, or a run that
        # samples would differ from one that does not.
        modes = {n: m.training for n, m in self.modules.items()}
        try:
            with _rng_preserved(), torch.no_grad():
                seed_everything(self.seed)
                for m in self.modules.values():
                    m.eval()
                yield
        finally:
            for n, m in self.modules.items():
                m.train(modes[n])

    def sample(self) -> list:
        """Call ``sample_fn(trainer)`` on rank 0 (eval mode, no grad, fixed seed) and save each
        returned (N, C, H, W) tensor as ``<out_dir>/samples/<name>_<step>.png``."""
        paths = []
        if self.sample_fn is not None and self.is_main:
            with self._eval_mode():
                out = self.sample_fn(self)
            grids = out if isinstance(out, dict) else {"sample": out}
            for name, images in grids.items():
                path = os.path.join(self.out_dir, "samples", f"{name}_{self.global_step:07d}.png")
                paths.append(viz.save_grid(images.float().cpu(), path, nrow=int(math.ceil(math.sqrt(len(images)))),
                                           value_range=self.sample_range))
        D.barrier()
        return paths

    def evaluate(self) -> Dict[str, float]:
        """Call ``eval_fn(trainer) -> {name: value}`` on rank 0 and log it as ``eval/<name>``."""
        metrics: Dict[str, float] = {}
        if self.eval_fn is not None and self.is_main:
            with self._eval_mode():
                out = self.eval_fn(self) or {}
            metrics = {f"eval/{k}": float(v) for k, v in out.items()}
            self.logger.log(self.global_step, metrics)
        D.barrier()
        return metrics

    # ---- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        rng = D.all_gather_objects(get_rng_state())
        # The metric sums of a log window still open, so that a run resumed from a checkpoint
        # taken between two log lines logs the same averages as an uninterrupted one.
        acc = D.all_gather_objects({"sums": {k: v.detach().cpu() for k, v in self._sums.items()},
                                    "count": self._count})
        return {
            "format": FORMAT, "version": VERSION, "step": self.global_step, "seed": self.seed,
            "world_size": self.world_size,
            "modules": {n: m.state_dict() for n, m in self.modules.items()},
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
            "scalers": {n: s.state_dict() for n, s in self.scalers.items()},
            "data": self.loader.state_dict() if self.loader is not None else None,
            "rng": rng,
            "log": acc,
        }

    def save(self, path: Optional[str] = None) -> str:
        """Write the checkpoint atomically (rank 0 only; every rank must call it)."""
        path = path or self.checkpoint_path
        state = self.state_dict()  # a collective: every rank contributes its RNG state
        if self.is_main:
            atomic_save(state, path)
        D.barrier()
        return path

    def load(self, path: Optional[str] = None) -> dict:
        path = path or self.checkpoint_path
        ckpt = read_checkpoint(path, map_location="cpu")
        missing = [k for k in ("step", "world_size", "modules", "optimizers", "schedulers", "scalers", "data", "rng")
                   if k not in ckpt]
        if missing:
            raise CorruptFileError(f"checkpoint file {path} is not a Trainer checkpoint (it lacks {missing}); "
                                   f"weights alone load with load_checkpoint(path, modules)")
        for kind, have in [("modules", self.modules), ("optimizers", self.optimizers),
                           ("schedulers", self.schedulers), ("scalers", self.scalers)]:
            if set(ckpt[kind]) != set(have):
                raise ValueError(f"checkpoint file {path} holds {kind} {sorted(ckpt[kind])}, "
                                 f"this trainer has {sorted(have)}")
        for n, m in self.modules.items():
            m.load_state_dict(ckpt["modules"][n])
        for n, o in self.optimizers.items():
            o.load_state_dict(ckpt["optimizers"][n])
        for n, s in self.schedulers.items():
            s.load_state_dict(ckpt["schedulers"][n])
        for n, s in self.scalers.items():
            s.load_state_dict(ckpt["scalers"][n])
        if self.loader is not None and ckpt["data"] is not None:
            self.loader.load_state_dict(ckpt["data"])
        self.global_step = int(ckpt["step"])
        self._sums, self._count = {}, 0
        if ckpt["world_size"] == self.world_size:
            set_rng_state(ckpt["rng"][self.rank])
            acc = ckpt.get("log")
            if acc:  # checkpoints written before the open log window was saved have none
                self._sums = {k: v.to(self.device) for k, v in acc[self.rank]["sums"].items()}
                self._count = int(acc[self.rank]["count"])
        else:
            warnings.warn(f"checkpoint {path} was written by {ckpt['world_size']} processes, resuming with "
                          f"{self.world_size}: the random streams are re-seeded, so the run is not bit-exact")
            seed_everything(self.seed + self.rank + 7919 * self.global_step)
        return ckpt
