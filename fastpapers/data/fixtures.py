"""Small real-format files shipped with the package, built on scikit-image's sample photos:
a COCO captions JSON (hand-written captions, three per photo), Visual Genome region
descriptions with a split file (hand-drawn boxes and phrases), and 40 German-English sentence
pairs as line-aligned parallel text. They show the real-format loaders and commands end to
end without any download; the photos themselves come from scikit-image and are written out
by :func:`write_photos` under the names the JSON files use.

Example::

    from fastpapers.data import fixtures
    folder = fixtures.write_photos("/tmp/photos")                  # astronaut.jpg, ..., 1.jpg, ...
    coco = fixtures.path("coco_captions_skimage.json")
"""
import json
import os
from typing import List

__all__ = ["FILES", "path", "photo_ids", "write_photos"]

_HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
FILES = ("coco_captions_skimage.json", "vg_regions_skimage.json", "vg_split_skimage.json", "parallel_de.txt",
         "parallel_en.txt")


def path(name: str) -> str:
    """The installed path of one of :data:`FILES`."""
    if name not in FILES:
        raise ValueError(f"name must be one of {FILES}, got {name!r}")
    return os.path.join(_HERE, name)


def photo_ids() -> List[tuple]:
    """(image id, scikit-image sample name, COCO file name) of every photo the fixtures use."""
    with open(path("coco_captions_skimage.json"), encoding="utf-8") as f:
        images = json.load(f)["images"]
    return [(im["id"], os.path.splitext(im["file_name"])[0], im["file_name"]) for im in images]


def write_photos(folder: str, *, quality: int = 90) -> str:
    """Write each photo twice into ``folder``: under its COCO ``file_name`` (``astronaut.jpg``)
    and under Visual Genome's ``<image_id>.jpg``, RGB at its original size. Returns ``folder``."""
    import skimage.data
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    for image_id, name, file_name in photo_ids():
        img = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        for out in (file_name, f"{image_id}.jpg"):
            img.save(os.path.join(folder, out), quality=quality)
    return folder
