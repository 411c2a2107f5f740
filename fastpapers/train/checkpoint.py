"""Atomic, checksummed files, and the random-number-generator state a checkpoint carries.

Every file fastpapers writes whole (checkpoints, model files, ``run.json`` and the other JSON
or tensor files of a run folder) goes through :func:`atomic_write`:

- the bytes go to a temporary file ``.<name>.XXXXXXXX.tmp`` in the same folder, are flushed
  and fsynced, and only then replace ``<name>`` with ``os.replace``: the file is always the
  old or the new one, never a mixture;
- a sidecar ``<name>.sha256`` records the SHA-256 of the whole file in ``sha256sum`` format
  (``sha256sum -c <name>.sha256`` checks it by hand). While a replacement is under way the
  sidecar lists both the old and the new digest, so a kill between the two renames leaves a
  pair that still verifies;
- readers (:func:`load_torch_file`, :func:`read_json_file`, :func:`read_checkpoint`) verify
  the digest before parsing: a file with flipped bits is refused with
  ``<file>: checksum mismatch: file corrupt``. A file with no sidecar (written by an older
  release, or by hand) is read without the check;
- temporary files left by a kill during a write are removed at the next write of the same
  file (:func:`remove_stale_temp_files`), and only files of that exact pattern;
- a failed write (full disk, read-only folder) raises :class:`FileWriteError`, an ``OSError``
  whose one-line message names the file; the previous file and its sidecar stay intact.

The metrics logs (``metrics.jsonl`` / ``metrics.csv``) are appended to, not written whole, so
they carry no checksum: :class:`~fastpapers.train.log.MetricLogger` checks them line by line.

Errors while reading are :class:`CorruptFileError` (a ``ValueError``) with a one-line message
that names the file; a missing file is ``FileNotFoundError``, a folder ``IsADirectoryError``.
"""
import hashlib
import json
import os
import random
import re
import tempfile
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

FORMAT = "fastpapers-checkpoint"
VERSION = 1
CHECKSUM_SUFFIX = ".sha256"
_TEMP = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")  # what tempfile.mkstemp makes below


class CorruptFileError(ValueError):
    """A file that exists but cannot be read back: empty, truncated, bit-flipped or foreign."""


class FileWriteError(OSError):
    """A write that failed (e.g. a full disk); the message names the file, the old file is intact."""

    def __init__(self, path: str, cause: OSError):
        reason = cause.strerror or str(cause) or type(cause).__name__
        super().__init__(cause.errno, reason)
        self.filename = path
        self.message = f"could not write {path}: {reason} (the previous version of the file, if any, is intact)"

    def __str__(self):
        return self.message


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def torch_load_reason(exc: BaseException) -> str:
    """The useful part of what ``torch.load`` raised for a damaged file, in one short line.

    Its messages run to several sentences of advice that does not apply to a damaged file
    (e.g. to retry with ``weights_only=False``); keep the sentence that says what failed.
    """
    text = " ".join(str(exc).split()) or type(exc).__name__
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text[text.index(marker) + len(marker):].strip()
    text = text.split(" Check the documentation")[0]
    first = text.split(". ")[0].rstrip(".")
    return first[:160] or type(exc).__name__


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checksum_path(path: str) -> str:
    return path + CHECKSUM_SUFFIX


def _read_digests(path: str) -> Optional[List[str]]:
    side = checksum_path(path)
    if not os.path.isfile(side):
        return None
    with open(side, encoding="ascii", errors="replace") as f:
        digests = [line.split()[0].lower() for line in f if line.strip()]
    if not digests or not all(re.fullmatch(r"[0-9a-f]{64}", d) for d in digests):
        raise CorruptFileError(f"{side}: not a sha256 checksum file (expected '<64 hex digits>  <name>' lines)")
    return digests


def verify_checksum(path: str) -> Optional[str]:
    """Check ``path`` against its ``.sha256`` sidecar; returns the digest, or None without a sidecar."""
    digests = _read_digests(path)
    if digests is None:
        return None
    actual = sha256_file(path)
    if actual not in digests:
        raise CorruptFileError(
            f"{path}: checksum mismatch: file corrupt (its sha256 is not the one recorded in "
            f"{os.path.basename(checksum_path(path))}; if you changed the file on purpose, delete that sidecar)")
    return actual


def remove_stale_temp_files(folder: str, name: Optional[str] = None) -> List[str]:
    """Delete the ``.<name>.XXXXXXXX.tmp`` files a killed :func:`atomic_write` left in ``folder``
    (for one file ``name``, or for every file). Nothing else is touched. Returns what was removed."""
    removed = []
    try:
        entries = os.listdir(folder)
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP.match(entry)
        if m and (name is None or m.group("name") in (name, name + CHECKSUM_SUFFIX)):
            full = os.path.join(folder, entry)
            try:
                if os.path.isfile(full) and not os.path.islink(full):
                    os.unlink(full)
                    removed.append(full)
            except OSError:
                pass
    return removed


def _fsync_folder(folder: str) -> None:
    # Makes the rename itself durable; some filesystems refuse to open a folder, which is harmless.
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def _write_temp(folder: str, name: str, write: Callable) -> str:
    """``write(f)`` into a new ``.<name>.XXXXXXXX.tmp`` in ``folder``, flushed and fsynced."""
    fd, tmp = tempfile.mkstemp(prefix="." + name + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _unlink(tmp)
        raise
    return tmp


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _rename_over(tmp: str, path: str) -> None:
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def _replace_with(path: str, write: Callable) -> None:
    """Write ``path`` via ``write(f)`` to a temporary file beside it, then rename it over ``path``."""
    folder, name = os.path.split(path)
    _rename_over(_write_temp(folder, name, write), path)


def _current_digest(path: str) -> Optional[str]:
    # The digest of the file now at ``path``: the sidecar's, unless a killed write left two
    # candidates there (or none, or a broken sidecar), in which case the file is hashed.
    if not os.path.isfile(path):
        return None
    try:
        digests = _read_digests(path)
    except CorruptFileError:
        digests = None
    return digests[0] if digests and len(digests) == 1 else sha256_file(path)


def _os_error_in(exc: BaseException) -> Optional[OSError]:
    # torch.save reports a failed write as RuntimeError with the OSError as its context.
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def atomic_write(path: str, write: Callable, *, checksum: bool = True) -> str:
    """Write ``path`` through ``write(binary_file)`` atomically, with a ``.sha256`` sidecar.

    See the module docstring for the protocol. Returns the absolute path.
    """
    path = os.path.abspath(path)
    folder, name = os.path.split(path)
    try:
        os.makedirs(folder, exist_ok=True)
        remove_stale_temp_files(folder, name)
        tmp = _write_temp(folder, name, write)
        if not checksum:
            _rename_over(tmp, path)
        else:
            try:
                new = sha256_file(tmp)
                old = _current_digest(path)
                keep = [new] + ([old] if old and old != new else [])
                # 1) the sidecar accepts old and new, 2) the file is replaced, 3) only new is accepted.
                _replace_with(checksum_path(path), lambda f: f.write("".join(f"{d}  {name}\n" for d in keep).encode()))
            except BaseException:
                _unlink(tmp)
                raise
            _rename_over(tmp, path)
            if len(keep) > 1:
                _replace_with(checksum_path(path), lambda f: f.write(f"{new}  {name}\n".encode()))
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        cause = _os_error_in(exc)
        if cause is None or isinstance(exc, FileWriteError):
            raise
        raise FileWriteError(path, cause) from exc
    _fsync_folder(folder)
    return path


def atomic_save(obj, path: str) -> str:
    """``torch.save`` ``obj`` to ``path`` atomically, with a checksum (see the module docstring)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_save_json(obj, path: str, *, indent: int = 1) -> str:
    """Write ``obj`` as JSON to ``path`` atomically, with a checksum.

    Strict JSON: NaN and infinities are refused (``ValueError`` naming the file) rather than
    written as the non-standard tokens other readers reject; the previous file stays."""
    try:
        text = json.dumps(obj, indent=indent, sort_keys=False, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot write {path} as JSON: {exc}") from exc
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _check_readable(path: str, what: str) -> None:
    if os.path.isdir(path):
        raise IsADirectoryError(f"{what} {path} is a folder, expected a file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    if os.path.getsize(path) == 0:
        raise CorruptFileError(f"{path}: file is empty (expected a {what}; truncated by a kill or a full disk?)")


def load_torch_file(path: str, map_location="cpu", *, what: str = "torch file"):
    """``torch.load(path, weights_only=True)`` after verifying the checksum.

    Empty, truncated, bit-flipped or foreign files raise :class:`CorruptFileError` naming the file.
    """
    _check_readable(path, what)
    verify_checksum(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, OSError, EOFError or UnpicklingError for bad files
        raise CorruptFileError(f"{path}: not a readable {what} (truncated or corrupt?): "
                               f"{torch_load_reason(exc)}") from exc


def read_json_file(path: str, *, what: str = "JSON file"):
    """``json.load`` after verifying the checksum; errors name the file and the line."""
    _check_readable(path, what)
    verify_checksum(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"{path}: not a readable {what} (truncated or corrupt?): {_one_line(exc)}") from exc


def read_checkpoint(path: str, map_location="cpu") -> dict:
    """Load a checkpoint written by :class:`Trainer` (``weights_only``: no code is unpickled)."""
    ckpt = load_torch_file(path, map_location, what="checkpoint file")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CorruptFileError(f"checkpoint file {path} is not a fastpapers checkpoint (no '{FORMAT}' marker)")
    return ckpt


def load_checkpoint(path: str, modules: Optional[Dict[str, torch.nn.Module]] = None, *,
                    map_location="cpu", strict: bool = True) -> dict:
    """Read a checkpoint and, when ``modules`` is given, load each named module's weights.

    This is what ``sample``/``eval`` commands use: no optimiser or trainer is needed.
    Returns the whole checkpoint dict (``step``, ``modules``, ``optimizers``, ...).
    """
    ckpt = read_checkpoint(path, map_location)
    if modules:
        missing = [name for name in modules if name not in ckpt.get("modules", {})]
        if missing:
            raise ValueError(f"checkpoint file {path} has no module named {missing}; "
                             f"it holds {sorted(ckpt.get('modules', {}))}")
        for name, module in modules.items():
            try:
                module.load_state_dict(ckpt["modules"][name], strict=strict)
            except RuntimeError as exc:  # shape or key mismatch: another model's checkpoint
                raise ValueError(f"checkpoint file {path}: module {name!r} does not fit this model: "
                                 f"{_one_line(exc)}") from exc
    return ckpt


def get_rng_state() -> dict:
    """Every generator a training step may draw from, as tensors and plain Python values.

    numpy's state is stored as a tensor plus ints so that the checkpoint loads with
    ``weights_only=True``.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy, torch (CPU) and every CUDA device.

    The one definition in the library; ``fastpapers.commands._common`` re-exports it.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
