"""Small trained models that ship with fastpapers, one run folder per paper.

``fastpapers/weights/<paper>/`` is a run folder (:mod:`fastpapers.train.rundir`) whose
checkpoint holds only the model weights (float16 storage, converted back to the model's dtype
on load); ``manifest.json`` records, for each paper, the command that trained it
(``scripts/train_shipped_weights.py``), the commit, seed and settings, the training time, the
recipe's metrics on held-out data and the SHA-256 of every shipped file. :func:`load` checks
every file against the manifest before the recipe reads it.

    >>> "densecap" in papers()
    True
"""
import json
import os
from typing import Dict, List

ROOT = os.path.dirname(os.path.abspath(__file__))
MANIFEST = os.path.join(ROOT, "manifest.json")

__all__ = ["ROOT", "MANIFEST", "WeightsError", "manifest", "papers", "entry", "path", "verify", "load"]


class WeightsError(ValueError):
    """Shipped weights that are missing or do not match the manifest; the message names the file."""


def manifest() -> Dict:
    """The parsed ``manifest.json``."""
    try:
        with open(MANIFEST) as f:
            return json.load(f)
    except FileNotFoundError:
        return {"format": "fastpapers-weights", "version": 1, "papers": {}}
    except ValueError as exc:
        raise WeightsError(f"{MANIFEST} is not valid JSON: {exc}") from None


def papers() -> List[str]:
    """The papers that ship trained weights."""
    return sorted(manifest()["papers"])


def entry(paper: str) -> Dict:
    """``paper``'s manifest entry: command, commit, seed, settings, metrics, files."""
    shipped = manifest()["papers"]
    if paper not in shipped:
        raise WeightsError(f"no shipped weights for {paper!r}; shipped: {sorted(shipped)}")
    return shipped[paper]


def path(paper: str, root: str = ROOT) -> str:
    """The shipped run folder of ``paper``."""
    entry(paper)
    return os.path.join(root, paper)


def verify(paper: str, root: str = ROOT) -> str:
    """Check every file of ``paper``'s shipped folder against the manifest's SHA-256; returns the folder."""
    from ..train.checkpoint import sha256_file
    folder = path(paper, root)
    for name, digest in entry(paper)["files"].items():
        f = os.path.join(folder, name)
        if not os.path.isfile(f):
            raise WeightsError(f"shipped weights file {f} is missing (reinstall fastpapers)")
        got = sha256_file(f)
        if got != digest:
            raise WeightsError(f"shipped weights file {f} has SHA-256 {got[:12]}..., the manifest says "
                               f"{digest[:12]}...: the file is corrupt (reinstall fastpapers)")
    return folder


def load(paper: str, device="cpu", root: str = ROOT):
    """The recipe's :class:`~fastpapers.recipes._common.Loaded` for ``paper``'s shipped model,
    after :func:`verify`. ``root`` is for tests that check a copied folder."""
    import importlib
    folder = verify(paper, root)
    recipe = importlib.import_module(f"fastpapers.recipes.{paper}")
    return recipe.load(folder, device=device)
