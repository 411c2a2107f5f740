"""One run-folder format for every paper: ``fastpapers-run``, version 1.

A run folder holds everything one training run made::

    <out>/run.json          {"format": "fastpapers-run", "version": 1, "paper": "<paper>",
                             "config": {...}, "fastpapers_version": "<x.y.z>"}
    <out>/checkpoint.pt     the Trainer's checkpoint (modules, optimisers, RNG, data position, step)
    <out>/metrics.jsonl     one JSON record per logged step (and metrics.csv, tb/ beside it)
    <out>/samples/*.png     sample grids
    <out>/<artefact>        vocabularies and other files a paper needs (Run.save_json / save_tensors)
    <out>/<file>.sha256     the SHA-256 of each file above that is written whole (sha256sum format)

Every file written whole (``run.json``, ``checkpoint.pt``, the artefacts) is written atomically
and carries a ``<name>.sha256`` sidecar that every reader verifies (see
:mod:`fastpapers.train.checkpoint`): a corrupt, truncated or empty file is refused with a
one-line :class:`RunFolderError` naming it.

:func:`create_run` starts a run (or, with ``resume=True``, reopens the one already there);
:func:`load_run` opens one for sampling or evaluation, from the folder or any file inside it,
and refuses a folder of another paper, another format version, or none at all. Folders
written by older releases (a ``config.json`` or ``<paper>.json`` and a checkpoint, no
``run.json``) are named as such, with the call that converts them: :func:`convert_legacy`,
which adds a ``run.json`` and changes nothing else.

Example::

    >>> import tempfile, os
    >>> out = os.path.join(tempfile.mkdtemp(), "run")
    >>> run = create_run(out, "gran", {"image_size": 28})
    >>> os.path.basename(run.save_json("vocab.json", ["<pad>", "a"]))
    'vocab.json'
    >>> load_run(run.checkpoint_path, "gran").config
    {'image_size': 28}
    >>> load_run(out, "lapgan")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fastpapers.train.rundir.RunFolderError: ... holds a 'gran' run, not a 'lapgan' run
"""
import os
from typing import Any, Dict, Optional

from . import checkpoint as C

RUN_FORMAT = "fastpapers-run"
RUN_VERSION = 1
RUN_FILE = "run.json"
# Files a run writes itself: their presence means the folder already holds a run.
_RUN_FILES = (RUN_FILE, "checkpoint.pt", "metrics.jsonl", "metrics.csv")
# Where older releases kept a run's settings, in the order convert_legacy looks for them.
_LEGACY_CONFIGS = ("config.json", "{paper}.json", "captioner.json", "judge.json")


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked; the one-line message names the path."""


class CorruptRunFileError(RunFolderError, C.CorruptFileError):
    """A file of a run folder that is empty, truncated, bit-flipped or not what it should be."""


def _fastpapers_version() -> str:
    from .. import __version__
    return __version__


class Run:
    """An open run folder: ``path``, ``paper``, ``config`` (the stored settings), ``version``."""

    def __init__(self, path: str, paper: str, config: Dict[str, Any], version: int = RUN_VERSION,
                 fastpapers_version: Optional[str] = None):
        self.path = path
        self.paper = paper
        self.config = config
        self.version = version
        self.fastpapers_version = fastpapers_version

    def __repr__(self):
        return f"Run(path={self.path!r}, paper={self.paper!r}, version={self.version})"

    @property
    def checkpoint_path(self) -> str:
        return self.file("checkpoint.pt")

    @property
    def metrics_path(self) -> str:
        return self.file("metrics.jsonl")

    @property
    def has_checkpoint(self) -> bool:
        return os.path.isfile(self.checkpoint_path)

    def check_config(self, config: Dict[str, Any], keys=None) -> None:
        """Refuse to resume with settings that differ from the stored ones (all, or ``keys``).

        Keys missing on one side count as different. The message lists every difference.
        """
        names = sorted(set(self.config) | set(config)) if keys is None else list(keys)
        missing = object()
        differ = [(k, self.config.get(k, missing), config.get(k, missing)) for k in names
                  if self.config.get(k, missing) != config.get(k, missing)]
        if differ:
            shown = "; ".join(f"{k}: run has {'(none)' if a is missing else repr(a)}, "
                              f"asked {'(none)' if b is missing else repr(b)}" for k, a, b in differ)
            raise RunFolderError(f"--resume: the run in {self.path} was made with other settings ({shown}); "
                                 f"resume with the same settings or pick another --out")

    def file(self, name: str) -> str:
        """The path of ``name`` inside the run folder."""
        if not isinstance(name, str) or not name or os.path.isabs(name) or ".." in name.split(os.sep):
            raise ValueError(f"name must be a relative file name inside the run folder, got {name!r}")
        return os.path.join(self.path, name)

    def exists(self, name: str) -> bool:
        return os.path.isfile(self.file(name))

    def save_json(self, name: str, obj) -> str:
        """Write ``obj`` as ``<run>/<name>`` (atomic, checksummed); returns the path."""
        return C.atomic_save_json(obj, self.file(name))

    def load_json(self, name: str):
        """Read ``<run>/<name>``; a missing file is FileNotFoundError, a bad one RunFolderError."""
        return _reraise(C.read_json_file, self.file(name), what=f"{self.paper} run file")

    def save_tensors(self, name: str, obj) -> str:
        """``torch.save`` ``obj`` (tensors, dicts, lists, numbers, strings) as ``<run>/<name>``."""
        return C.atomic_save(obj, self.file(name))

    def load_tensors(self, name: str, map_location="cpu"):
        """``torch.load(weights_only=True)`` of ``<run>/<name>`` after its checksum is verified."""
        return _reraise(C.load_torch_file, self.file(name), map_location, what=f"{self.paper} run file")

    def load_checkpoint(self, modules=None, *, checkpoint: Optional[str] = None, map_location="cpu",
                        strict: bool = True) -> dict:
        """:func:`fastpapers.train.load_checkpoint` of this run's ``checkpoint.pt`` (or of the file
        ``checkpoint``, e.g. a snapshot the user named with ``--checkpoint``)."""
        path = self.checkpoint_path if checkpoint is None else os.path.abspath(checkpoint)
        if checkpoint is None and not self.has_checkpoint:
            raise RunFolderError(f"run folder {self.path} has no checkpoint.pt yet "
                                 f"(train it first: `fastpapers {self.paper} train --out {self.path}`)")
        return _reraise(C.load_checkpoint, path, modules, map_location=map_location, strict=strict)


def _reraise(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except C.CorruptFileError as exc:
        if isinstance(exc, RunFolderError):
            raise
        raise CorruptRunFileError(str(exc)) from exc


def _read_run_json(folder: str, paper: Optional[str]) -> Run:
    meta = _reraise(C.read_json_file, os.path.join(folder, RUN_FILE), what="run.json")
    where = os.path.join(folder, RUN_FILE)
    if not isinstance(meta, dict) or meta.get("format") != RUN_FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise RunFolderError(f"{where} is not a fastpapers run file (format {got!r}, expected {RUN_FORMAT!r})")
    version = meta.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise RunFolderError(f"{where} has no integer 'version' (expected {RUN_VERSION})")
    if version > RUN_VERSION:
        raise RunFolderError(f"{where} is run-folder version {version}, written by a newer fastpapers "
                             f"({meta.get('fastpapers_version')}); this one reads version {RUN_VERSION}: "
                             f"upgrade fastpapers")
    if version < RUN_VERSION:
        raise RunFolderError(f"{where} is run-folder version {version}; this fastpapers reads version {RUN_VERSION}")
    if not isinstance(meta.get("paper"), str) or not isinstance(meta.get("config"), dict):
        raise RunFolderError(f"{where} lacks 'paper' (a string) or 'config' (an object)")
    if paper is not None and meta["paper"] != paper:
        raise RunFolderError(f"run folder {folder} holds a {meta['paper']!r} run, not a {paper!r} run")
    return Run(folder, meta["paper"], meta["config"], version, meta.get("fastpapers_version"))


def _legacy_config(folder: str, paper: Optional[str]) -> Optional[str]:
    for pattern in _LEGACY_CONFIGS:
        if "{paper}" in pattern and paper is None:
            continue
        candidate = os.path.join(folder, pattern.format(paper=paper))
        if os.path.isfile(candidate):
            return candidate
    return None


def _no_run_json(folder: str, paper: Optional[str]) -> RunFolderError:
    legacy = _legacy_config(folder, paper)
    if legacy is not None or os.path.isfile(os.path.join(folder, "checkpoint.pt")):
        what = os.path.basename(legacy) if legacy else "checkpoint.pt"
        name = paper if paper is not None else "PAPER"
        return RunFolderError(
            f"{folder} is a run folder of an older fastpapers format ({what}, no run.json); convert it with "
            f"`python -c \"from fastpapers.train.rundir import convert_legacy; convert_legacy({folder!r}, {name!r})\"`")
    return RunFolderError(f"{folder} is not a fastpapers run folder (no run.json)")


def _folder_of(path: str) -> str:
    if not isinstance(path, str) or not path:
        raise RunFolderError(f"expected a run folder or a file inside one, got {path!r}")
    path = os.path.abspath(path)
    if os.path.isdir(path):
        return path
    folder = os.path.dirname(path)
    if os.path.isfile(path) or os.path.isdir(folder):
        return folder
    raise FileNotFoundError(f"run folder not found: {path}")


def load_run(path: str, paper: Optional[str] = None) -> Run:
    """Open the run folder ``path`` (or the folder of the file ``path``, e.g. its checkpoint.pt).

    With ``paper`` given, a run of another paper is refused. Raises :class:`RunFolderError`
    for a folder without ``run.json``, of another format or version, or with a corrupt one.
    """
    folder = _folder_of(path)
    if not os.path.isfile(os.path.join(folder, RUN_FILE)):
        raise _no_run_json(folder, paper)
    return _read_run_json(folder, paper)


def create_run(out: str, paper: str, config: Dict[str, Any], *, resume: bool = False) -> Run:
    """Make the run folder ``out`` for ``paper`` and write its ``run.json``.

    With ``resume=True`` and a ``run.json`` already there, check its format, version and paper
    and return that run, with its stored config (the caller compares the settings that must
    match). Without ``resume``, a folder that already holds a run is refused: nothing a user
    made is ever deleted or overwritten. Leftover temporary files of a killed write are
    removed on resume.
    """
    if not isinstance(out, str) or not out.strip():
        raise RunFolderError(f"--out must name a folder, got {out!r}")
    if not isinstance(paper, str) or not paper:
        raise TypeError(f"paper must be a non-empty string, got {paper!r}")
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    folder = os.path.abspath(out)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise RunFolderError(f"--out {out} is a file, expected a run folder")
    present = [n for n in _RUN_FILES if os.path.exists(os.path.join(folder, n))]
    if resume and present:
        if RUN_FILE not in present:
            raise _no_run_json(folder, paper)
        C.remove_stale_temp_files(folder)
        return _read_run_json(folder, paper)
    if present:
        raise RunFolderError(f"--out {out} already holds a run ({', '.join(present)}): pass --resume to continue "
                             f"it, or pick another --out")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise C.FileWriteError(folder, exc) from exc
    meta = {"format": RUN_FORMAT, "version": RUN_VERSION, "paper": paper, "config": config,
            "fastpapers_version": _fastpapers_version()}
    C.atomic_save_json(meta, os.path.join(folder, RUN_FILE))
    return Run(folder, paper, config, RUN_VERSION, meta["fastpapers_version"])


def convert_legacy(path: str, paper: str) -> Run:
    """Add a ``run.json`` to a run folder written before the run-folder format existed.

    The config is read from the first of ``config.json``, ``<paper>.json``,
    ``captioner.json``, ``judge.json`` found in the folder (an empty config when none is);
    no existing file is changed or removed. Returns the converted run.
    """
    folder = _folder_of(path)
    if os.path.isfile(os.path.join(folder, RUN_FILE)):
        raise RunFolderError(f"{folder} already has a run.json; nothing to convert")
    legacy = _legacy_config(folder, paper)
    config = _reraise(C.read_json_file, legacy, what="config file") if legacy else {}
    if not isinstance(config, dict):
        raise RunFolderError(f"{legacy}: expected a JSON object of settings, got {type(config).__name__}")
    meta = {"format": RUN_FORMAT, "version": RUN_VERSION, "paper": paper, "config": config,
            "fastpapers_version": _fastpapers_version(), "converted_from": os.path.basename(legacy) if legacy else None}
    C.atomic_save_json(meta, os.path.join(folder, RUN_FILE))
    return Run(folder, paper, config, RUN_VERSION, meta["fastpapers_version"])
