"""An endless batch iterator whose position (epoch, batch) can be saved and restored exactly."""
from typing import Callable, Optional

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


class ResumableLoader:
    """Endless batches of ``dataset``, epoch after epoch, sharded across ranks.

    Each epoch's order is a permutation drawn from ``seed + epoch`` (DistributedSampler with
    ``drop_last=True``), so it does not depend on the global RNG or on when the run was
    resumed. ``batch_size`` is the *global* batch: each of the ``world_size`` ranks receives
    ``batch_size // world_size`` items, and the union over ranks of global batch k is the
    same set of items whatever the world size. Incomplete trailing batches are dropped.

    ``state_dict()`` returns ``{"epoch", "batch"}``: the next batch to be yielded. A loader
    restored with ``load_state_dict`` yields exactly the batches the original would have.
    """

    def __init__(self, dataset: Dataset, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1, num_workers: int = 0,
                 collate_fn: Optional[Callable] = None, pin_memory: bool = False):
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(f"data must be a map-style Dataset (with __len__ and __getitem__), "
                            f"got {type(dataset).__name__}")
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if batch_size % world_size:
            raise ValueError(f"batch_size (global) must be divisible by the world size {world_size}, "
                             f"got {batch_size}")
        if len(dataset) < batch_size:
            raise ValueError(f"batch_size {batch_size} is larger than the dataset ({len(dataset)} items)")
        self.dataset = dataset
        self.batch_size = batch_size
        self.local_batch = batch_size // world_size
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.num_workers = num_workers
        self.collate_fn = collate_fn
        self.pin_memory = pin_memory
        self.epoch = 0
        self.batch = 0

    @property
    def batches_per_epoch(self) -> int:
        return len(self.dataset) // self.batch_size

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        self.batch = int(state["batch"])

    def _epoch_batches(self, epoch: int):
        sampler = DistributedSampler(self.dataset, num_replicas=self.world_size, rank=self.rank,
                                     shuffle=self.shuffle, seed=self.seed, drop_last=True)
        sampler.set_epoch(epoch)
        idx = list(sampler)
        b = self.local_batch
        return [idx[i * b:(i + 1) * b] for i in range(self.batches_per_epoch)]

    def __iter__(self):
        while True:
            batches = self._epoch_batches(self.epoch)[self.batch:]
            # A private generator: DataLoader draws a base seed for its workers from it, which
            # would otherwise consume the global torch RNG each time an iterator is created
            # (and a resumed run creates one at a different moment than a straight run).
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            loader = DataLoader(self.dataset, batch_sampler=batches, num_workers=self.num_workers,
                                collate_fn=self.collate_fn, pin_memory=self.pin_memory, generator=gen)
            for item in loader:
                self.batch += 1
                yield item
            self.epoch += 1
            self.batch = 0
