"""What every recipe shares: the Config base class, the run a recipe trains into, and Loaded.

See :mod:`fastpapers.recipes` for the face these serve.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, Optional, Sequence, Tuple, Union

import torch

from ..train import checkpoint as C
from ..train.rundir import RUN_FILE, Run, create_run, load_run


class RecipeConfig:
    """Base of every recipe's ``Config`` dataclass: JSON round trip, validation helpers.

    Subclasses set ``PAPER``, ``RESUMABLE`` (fields a ``--resume`` may change) and ``FLAGS``
    (field -> CLI flag where the flag is not ``--<field-with-dashes>``), and validate in
    ``__post_init__`` with :meth:`check_int`, :meth:`check_float`, :meth:`check_choice`.
    """

    PAPER: ClassVar[str] = ""
    RESUMABLE: ClassVar[Tuple[str, ...]] = ()
    FLAGS: ClassVar[Dict[str, str]] = {}

    @classmethod
    def from_dict(cls, d: Dict[str, Any], *, source: Optional[str] = None):
        """A Config from stored settings: unknown keys are refused by name; keys missing take
        their defaults (a run saved before a field existed was trained with its default)."""
        where = f"{source}: " if source else ""
        if not isinstance(d, dict):
            raise ValueError(f"{where}{cls.PAPER} config must be a JSON object, got {type(d).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"{where}unknown {cls.PAPER} config keys {unknown}; known: {sorted(names)}")
        return cls(**d)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    # ---- validation ----------------------------------------------------------------------
    def label(self, name: str) -> str:
        """``field (--flag)``: how an error names a setting."""
        return f"{name} ({self.FLAGS.get(name, '--' + name.replace('_', '-'))})"

    def fail(self, name: str, expected: str):
        raise ValueError(f"{self.label(name)} must be {expected}, got {getattr(self, name)!r}")

    def check_int(self, name: str, minimum: int = 1):
        v = getattr(self, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
            self.fail(name, f"an int >= {minimum}")

    def check_float(self, name: str, low: float = 0.0, high: float = math.inf, *, open_low: bool = True,
                    open_high: bool = False, optional: bool = False):
        v = getattr(self, name)
        if optional and v is None:
            return
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ok = ok and (v > low if open_low else v >= low) and (v < high if open_high else v <= high)
        if not ok:
            lo, hi = ("(" if open_low else "["), (")" if open_high or high == math.inf else "]")
            self.fail(name, f"a finite number in {lo}{low:g}, {high:g}{hi}")

    def check_choice(self, name: str, choices: Sequence):
        if getattr(self, name) not in choices:
            self.fail(name, f"one of {list(choices)}")

    def differences(self, other: "RecipeConfig") -> list:
        """Fields other than ``RESUMABLE`` whose values differ between the two configs."""
        a, b = self.to_dict(), other.to_dict()
        return sorted(k for k in a if k not in self.RESUMABLE and a[k] != b[k])


@dataclass
class Loaded:
    """A trained run opened for use: ``config`` (the recipe's Config), ``nets`` (name -> module,
    eval mode, on ``device``), ``path`` (the run folder), ``run`` (its :class:`Run`) and
    ``artefacts`` (whatever else the paper stores, e.g. a vocabulary)."""

    config: Any
    nets: Dict[str, torch.nn.Module]
    path: str
    run: Optional[Run]
    device: torch.device
    artefacts: Dict[str, Any] = field(default_factory=dict)


def open_run(out: str, cfg: RecipeConfig, *, resume: bool) -> Run:
    """The run folder ``out`` for training ``cfg``: a new one, or with ``resume`` the one there.

    A resumed run must have been trained with the same settings except ``RESUMABLE`` ones
    (the refusal names the differing fields); its ``run.json`` then records the new schedule.
    """
    run = create_run(out, cfg.PAPER, cfg.to_dict(), resume=resume)
    if run.config == cfg.to_dict():
        return run
    saved = type(cfg).from_dict(run.config, source=run.file(RUN_FILE))
    differ = cfg.differences(saved)
    if differ:
        raise ValueError(f"--resume: the run in {out} was trained with other settings of {differ}: "
                         f"{ {k: getattr(saved, k) for k in differ} }, not { {k: getattr(cfg, k) for k in differ} } "
                         f"(its config is in {run.file(RUN_FILE)})")
    meta = C.read_json_file(run.file(RUN_FILE), what="run.json")
    meta["config"] = cfg.to_dict()
    C.atomic_save_json(meta, run.file(RUN_FILE))
    run.config = meta["config"]
    return run


RunLike = Union[str, os.PathLike, Run]


# Where releases before the run-folder format kept a run's settings, per paper.
LEGACY_CONFIG = {"gran": "config.json", "text2image": "config.json", "lapgan": "lapgan.json",
                 "text2image_judge": "judge.json"}


def find_run(run: RunLike, paper: str) -> Run:
    """The :class:`Run` of a run folder, a file inside one, or a Run (checked to be ``paper``'s).

    A folder of the older format (its settings in ``LEGACY_CONFIG[paper]``, no run.json) is
    read in place, nothing written; ``fastpapers.train.rundir.convert_legacy`` makes it a
    current one."""
    if isinstance(run, Run):
        if run.paper != paper:
            raise ValueError(f"run folder {run.path} holds a {run.paper!r} run, not a {paper!r} run")
        return run
    path = os.path.abspath(os.fspath(run)) if isinstance(run, (str, os.PathLike)) and os.fspath(run) else None
    if path is not None and not os.path.exists(path):
        raise FileNotFoundError(f"file not found: {os.fspath(run)} (expected a {paper} run folder or a file in one)")
    folder = path if path is not None and os.path.isdir(path) else os.path.dirname(path or "")
    legacy = os.path.join(folder, LEGACY_CONFIG.get(paper, "")) if path is not None else ""
    if path is not None and not os.path.isfile(os.path.join(folder, RUN_FILE)) and os.path.isfile(legacy):
        return Run(folder, paper, C.read_json_file(legacy, what="JSON config file"), version=0)
    return load_run(os.fspath(run), paper)


def stored_config(run: Run, config_cls):
    """The run's Config (``run.json``), keys added since it was written at their defaults."""
    source = run.file(RUN_FILE) if run.version else run.file(LEGACY_CONFIG.get(run.paper, RUN_FILE))
    return config_cls.from_dict(run.config, source=source)


def load_trained(run, paper: str, config_cls, build: Callable, device="cpu", *,
                 weights: Optional[Callable] = None) -> Loaded:
    """What every recipe's ``load`` does: open the run (a folder, a file in it, a Run; a Loaded
    is returned as it is), read its Config, ``build(cfg)`` the networks, load their weights
    (``weights(run, nets)``; default: the run's checkpoint.pt) and put them in eval mode on
    ``device``. ``weights`` may return the names of the networks to keep (default: all)."""
    if isinstance(run, Loaded):
        return run
    r = find_run(run, paper)
    cfg = stored_config(r, config_cls)
    nets = build(cfg)
    keep = None
    if weights is None:
        r.load_checkpoint(nets)
    else:
        keep = weights(r, nets)
    names = list(keep) if keep else list(nets)
    return Loaded(cfg, {k: nets[k].to(device).eval() for k in names}, r.path, r, torch.device(device))


def last_metrics(folder: str) -> Dict[str, float]:
    """The last record of ``<folder>/metrics.jsonl`` without its step ({} before any)."""
    from ..train.log import MetricLogger
    records = MetricLogger(folder, tensorboard=False).records()
    return {k: v for k, v in records[-1].items() if k != "step"} if records else {}
