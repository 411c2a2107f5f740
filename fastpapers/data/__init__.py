"""Offline data for the paper models: the shapes world, bundled datasets, real-format loaders.

- Shapes world (:mod:`fastpapers.data.shapes`): ``generate(n, size=64, min_objects=1,
  max_objects=3, seed=0)`` -> :class:`ShapesBatch` (images + boxes, attributes, captions,
  style); datasets :class:`ShapesTextToImage`, :class:`ShapesCaptions`, :class:`ShapesDense`
  with ``split`` in train/val/test/heldout and ``held_out=[("red", "triangle"), ...]``.
- Vocabulary (:mod:`fastpapers.data.vocab`): :class:`Vocabulary` with ``<pad> <bos> <eos> <unk>``
  = ids 0..3, ``encode/encode_batch/decode``, ``save/load``; ``shapes_vocabulary()``.
- Bundled (:mod:`fastpapers.data.bundled`): ``mnist(size)``, ``digits(size)``, ``photo(name)``,
  ``texture(name)``, ``glove(words)``, ``glove_matrix(vocab)``, ``split_indices``.
- MIXER proxy (:mod:`fastpapers.data.transduction`): :class:`AmbiguousTransduction` (target =
  reverse or sort of the source; both references given).
- Real formats (:mod:`fastpapers.data.formats`): ``load_cifar10``, :class:`CocoCaptions`,
  :class:`VisualGenomeRegions`, :class:`ParallelText` (+ ``pad_collate``), :class:`ImageFolder`.
- Fixtures (:mod:`fastpapers.data.fixtures`): a COCO captions JSON and Visual Genome regions of
  scikit-image's photos, and 40 German-English sentence pairs, shipped in the package.
- Caption corpora (:mod:`fastpapers.data.captions`): :class:`CaptionCorpus` from the shapes world
  or a COCO JSON, with a seeded held-out split.

Example::

    from fastpapers.data import ShapesCaptions
    train = ShapesCaptions(3000, size=64, split="train", held_out=[("red", "triangle")])
    item = train[0]                    # {"image", "caption", "attributes", "style"}
    print(train.captions[0], train.vocab.decode(item["caption"]))
"""
from . import fixtures
from .bundled import digits, glove, glove_matrix, mnist, photo, split_indices, texture
from .formats import (CocoCaptions, ImageFolder, ParallelText, VisualGenomeRegions, load_cifar10, pad_collate,
                      read_image)
from .shapes import (BACKGROUNDS, COLOURS, SHAPES, SIZES, ShapesBatch, ShapesCaptions, ShapesDense,
                     ShapesTextToImage, dense_collate, generate, shapes_vocabulary)
from .transduction import AmbiguousTransduction, transduction_vocabulary
from .vocab import Vocabulary, tokenize

__all__ = ["fixtures", "digits", "glove", "glove_matrix", "mnist", "photo", "split_indices", "texture", "CocoCaptions",
           "ImageFolder", "ParallelText", "VisualGenomeRegions", "load_cifar10", "pad_collate", "read_image",
           "BACKGROUNDS", "COLOURS", "SHAPES", "SIZES", "ShapesBatch", "ShapesCaptions", "ShapesDense",
           "ShapesTextToImage", "dense_collate", "generate", "shapes_vocabulary", "Vocabulary", "tokenize",
           "AmbiguousTransduction", "transduction_vocabulary"]
