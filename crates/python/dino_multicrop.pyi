"""DINO multi-crop augmentation and loading in Rust, for PyTorch training loops.

The augmentation is the official ``DataAugmentationDINO`` of facebookresearch/dino
(``main_dino.py``): per image 2 global crops (RandomResizedCrop ``global_crops_size``, scale
``global_crops_scale``, bicubic) and ``local_crops_number`` local crops (``local_crops_size``,
``local_crops_scale``); each crop: horizontal flip p 0.5, ColorJitter(0.4, 0.4, 0.2, 0.1) w.p.
0.8, grayscale p 0.2, Gaussian blur (p 1.0 / 0.1 / 0.5 for global 1 / global 2 / locals, sigma
~ U(0.1, 2)), solarize (global 2 only, p 0.2). The pixel ops follow Pillow's kernels; the crops
are ``uint8`` unless ``normalize=True`` asks for ``ToTensor`` + ``Normalize(mean, std)`` in
``float32``.

Every random draw comes from a stream seeded by ``(seed, epoch, dataset index)``: the same seed
gives the same bytes whatever the number of threads, and the same bytes as the Rust trainer's
loader (``dino train``) with the same configuration.

Arrays own the Rust buffers (no copy); ``torch.from_numpy(a)`` wraps them without a copy too::

    loader = MultiCropLoader("data/train", 64, threads=8)
    for epoch in range(100):
        loader.set_epoch(epoch)
        for crops, labels in loader:          # crops: 2 + 8 arrays [64, 3, H, W] uint8
            crops = [torch.from_numpy(c).cuda(non_blocking=True) for c in crops]
            crops = [(c.float() / 255 - mean) / std for c in crops]   # on the device
"""

import os
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str

_Path = Union[str, "os.PathLike[str]"]

class LoaderError(RuntimeError):
    """The loader stopped: more images failed to load than ``max_failed_fraction`` allows, a
    worker panicked, or its threads could not start. The message is the Rust loader's."""

def default_config() -> Dict[str, Dict[str, Any]]:
    """Every key of the Rust trainer's configuration with its default (the official DINO values),
    section by section: ``{"data": {...}, "augmentation": {...}, "model": {...}, ...}``."""

def load_config(
    path: Optional[_Path] = None, overrides: Sequence[str] = ()
) -> Dict[str, Dict[str, Any]]:
    """A TOML preset of the Rust trainer (e.g. ``configs/cifar10_cpu.toml``, only what differs from
    the defaults) resolved as ``dino config show`` resolves it: the defaults, the preset, then
    ``overrides`` (``"section.key=value"``, as ``dino train --set``), validated as ``dino
    train`` validates it. Returns every section as a dict; without ``path``, the defaults with
    the overrides. A bad key raises ``ValueError`` naming it, a missing file ``OSError``."""

class MultiCropLoader:
    """The DINO multi-crop loader over a dataset folder: ``DataLoader(ImageFolder(root,
    DataAugmentationDINO(...)), batch_size, shuffle=True, drop_last=True)`` in Rust threads.

    ``root`` is an ImageFolder (``root/<class>/<image>``, label = sorted class index), a flat
    folder of images (label 0), CIFAR-10 binary batches or MNIST-family IDX files (``format``
    ``"auto"`` detects which). Iterating gives one epoch, ``len(loader)`` batches of
    ``(crops, labels)``:

    - ``crops``: a list of ``2 + local_crops_number`` arrays, the official list of crops batched:
      ``crops[0]``, ``crops[1]`` the global views ``[B, 3, global_crops_size, global_crops_size]``,
      then the local views ``[B, 3, local_crops_size, local_crops_size]``; ``uint8`` RGB
      (normalize on the device: ``(x / 255 - mean) / std``), or ``float32`` normalized with
      ``normalize=True``. The 2 globals are views into one ``[2, B, 3, H, W]`` array and the
      locals into one ``[n, B, 3, h, w]`` array that owns the Rust buffer (no copy);
    - ``labels``: ``int64`` ``[B]`` class indices;
    - with ``return_indices=True`` a third item, ``int64`` ``[B]`` dataset indices used.

    Arguments (``global_crops_scale`` .. ``local_crops_size`` are the official
    ``DataAugmentationDINO``'s, with its defaults):

    - ``batch_size``: images per batch and rank (official ``--batch_size_per_gpu 64``);
    - ``global_crops_scale`` (0.4, 1.0), ``local_crops_scale`` (0.05, 0.4): RandomResizedCrop
      area ranges; ``local_crops_number`` 8; ``global_crops_size`` 224, ``local_crops_size`` 96;
    - ``threads``: Rust worker threads, 0 = all cores;
    - ``seed``: seed of the shuffle and of every augmentation draw (official ``--seed 0``);
    - ``shuffle``: a seeded new order each epoch (official); False: index order;
    - ``drop_last``: drop each epoch's last incomplete batch (official True);
    - ``rank``, ``world_size``: this process's share of every epoch under ``torch.distributed``,
      dealt as ``DistributedSampler`` deals it and as the Rust trainer shards (rank ``r`` reads
      positions ``r, r + world_size, ...`` of the epoch order; without ``drop_last`` the order is
      padded by repeating its start). Pass ``dist.get_rank()``, ``dist.get_world_size()``;
    - ``normalize``: ``float32`` ``(x / 255 - mean) / std`` crops instead of ``uint8``;
    - ``return_indices``: also yield the dataset indices;
    - ``prefetch``: batches prepared ahead (back-pressure beyond that);
    - ``format``: ``"auto"``, ``"image_folder"``, ``"flat"``, ``"cifar10_bin"`` or ``"idx"``;
    - ``split``: ``"train"`` or ``"test"`` (CIFAR-10 binary and IDX only);
    - ``max_failed_fraction``: fraction of the dataset that may fail to load before
      ``LoaderError`` (0.01); ``max_image_pixels``: larger images are rejected from their
      header (Pillow's decompression-bomb limit);
    - ``**augmentation``: any other ``[augmentation]`` key of the Rust config, e.g.
      ``blur_global1_p=0.0``, ``solarize_p=0.0``, ``crop_ratio=(0.75, 1.333)``, ``mean``, ``std``
      (all keys and defaults: ``default_config()["augmentation"]``).

    A bad image (corrupt, truncated, unsupported, too large) is skipped: a random other image of
    the dataset takes its place, ``skipped`` counts it, ``failures`` names it with the reason and
    a ``UserWarning`` is issued once per image. A bad argument raises ``ValueError`` naming it;
    a missing ``root`` ``FileNotFoundError``. Batches are awaited without holding the GIL, and
    Ctrl-C raises ``KeyboardInterrupt`` at once.

    Epochs: each iteration reads epoch ``loader.epoch``, which then advances by one;
    ``set_epoch(e)`` sets it, as ``DistributedSampler.set_epoch``. The Rust threads keep working
    across epoch boundaries when the next iteration reads the next epoch.
    """

    def __init__(
        self,
        root: _Path,
        batch_size: int = 64,
        *,
        global_crops_scale: Sequence[float] = (0.4, 1.0),
        local_crops_scale: Sequence[float] = (0.05, 0.4),
        local_crops_number: int = 8,
        global_crops_size: int = 224,
        local_crops_size: int = 96,
        threads: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
        normalize: bool = False,
        return_indices: bool = False,
        prefetch: int = 2,
        format: str = "auto",
        split: str = "train",
        max_failed_fraction: float = 0.01,
        max_image_pixels: int = 178_956_970,
        crop_ratio: Sequence[float] = ...,
        flip_p: float = ...,
        color_jitter_p: float = ...,
        brightness: float = ...,
        contrast: float = ...,
        saturation: float = ...,
        hue: float = ...,
        grayscale_p: float = ...,
        blur_global1_p: float = ...,
        blur_global2_p: float = ...,
        blur_local_p: float = ...,
        blur_sigma: Sequence[float] = ...,
        solarize_p: float = ...,
        solarize_threshold: int = ...,
        mean: Sequence[float] = ...,
        std: Sequence[float] = ...,
    ) -> None: ...
    @staticmethod
    def from_config(
        config: _Path,
        root: Optional[_Path] = None,
        batch_size: Optional[int] = None,
        *,
        overrides: Sequence[str] = (),
        threads: Optional[int] = None,
        seed: Optional[int] = None,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        normalize: bool = False,
        return_indices: bool = False,
    ) -> "MultiCropLoader":
        """The loader of a TOML preset of the Rust trainer (e.g. ``configs/cifar10_cpu.toml``):
        its ``[augmentation]``, its ``[data]`` (format, split, drop_last, max_failed_fraction,
        max_image_pixels), ``optim.batch_size``, ``runtime.seed``, ``runtime.data_threads`` and
        ``runtime.prefetch_batches``. ``overrides`` are ``"section.key=value"`` strings applied
        first (``dino train --set``); ``root``, ``batch_size``, ``threads`` and ``seed`` replace
        the config's when given. The config is validated as ``dino train`` validates it: a bad
        key raises ``ValueError`` naming it. Same config and seed: the same batches as ``dino
        train``'s loader."""
    def __len__(self) -> int:
        """Batches in one epoch of this rank."""
    def __iter__(self) -> "MultiCropLoader":
        """Starts the epoch ``self.epoch`` (then ``self.epoch`` advances by one)."""
    def __next__(
        self,
    ) -> Union[
        Tuple[List[npt.NDArray[Any]], npt.NDArray[np.int64]],
        Tuple[List[npt.NDArray[Any]], npt.NDArray[np.int64], npt.NDArray[np.int64]],
    ]:
        """The next ``(crops, labels)`` of the epoch (``(crops, labels, indices)`` with
        ``return_indices``); ``StopIteration`` after ``len(self)`` batches."""
    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch the next iteration reads (its shuffle and augmentation streams)."""
    @property
    def epoch(self) -> int:
        """The epoch the next iteration reads."""
    @property
    def batch_size(self) -> int:
        """Images per batch (of this rank)."""
    @property
    def dataset_size(self) -> int:
        """Samples in the dataset (all ranks together)."""
    @property
    def classes(self) -> List[str]:
        """Class names; label ``i`` is ``classes[i]`` (empty for unlabeled data)."""
    @property
    def skipped(self) -> int:
        """Delivered samples that stand in for an image that failed to load."""
    @property
    def failures(self) -> List[str]:
        """Each distinct image that failed to load: ``"path: reason"``, by dataset index."""
    @property
    def config(self) -> Dict[str, Dict[str, Any]]:
        """The resolved ``{"augmentation": ..., "data": ..., "loader": ...}``."""
    def stats(self) -> Dict[str, float]:
        """The running Rust loader's counters: failed load attempts, batches and samples built,
        seconds spent loading and augmenting (summed over threads), seconds its producer waited
        for the consumer. Empty before the first iteration."""
    def close(self) -> None:
        """Stops the loader's threads now (they also stop when it is garbage collected)."""

class DataAugmentationDINO:
    """The multi-crop transform of one image, for an existing ``torch.utils.data.Dataset``: the
    official ``DataAugmentationDINO(global_crops_scale, local_crops_scale, local_crops_number)``
    with the same arguments and defaults, plus the crop sizes, ``seed``, ``normalize`` and any
    ``[augmentation]`` key of the Rust config.

    ``transform(image)`` takes a PIL image (converted with ``.convert("RGB")`` as the official
    loader does), a NumPy ``uint8`` array ``[H, W, 3]`` (``[H, W]`` gray, ``[H, W, 4]`` RGBA:
    alpha dropped) or a path (decoded as the Rust loader decodes: format by content, EXIF
    orientation applied, ``max_image_pixels`` limit). It returns a list of ``2 +
    local_crops_number`` NumPy arrays in CHW layout, the 2 globals ``[3, global_crops_size,
    global_crops_size]`` then the locals ``[3, local_crops_size, local_crops_size]``: ``uint8``
    RGB by default (``torch.from_numpy(c).float().div(255)`` then ``Normalize`` gives the
    official tensors), or ``float32`` normalized as ``ToTensor`` + ``Normalize(mean, std)``
    with ``normalize=True`` (``torch.from_numpy(c)`` is then the official tensor). A
    ``DataLoader``'s default collate turns the list into the official list of ``[B, 3, H, W]``
    tensors.

    Reproducible from ``seed``: ``transform(image, index=i)`` draws from the Rust loader's
    stream for dataset index ``i`` in epoch ``transform.epoch`` (``set_epoch`` or ``epoch=``),
    so it gives the very crops ``MultiCropLoader`` gives for that image, in any process. Without
    ``index`` each call draws from a stream keyed by a call counter and, inside a DataLoader
    worker, the worker's seed, so workers never repeat each other's crops. Errors: ``TypeError``
    for another input type, ``ValueError`` for a bad argument (naming it) or array shape,
    ``OSError`` for a file that cannot be decoded.
    """

    def __init__(
        self,
        global_crops_scale: Sequence[float] = (0.4, 1.0),
        local_crops_scale: Sequence[float] = (0.05, 0.4),
        local_crops_number: int = 8,
        *,
        global_crops_size: int = 224,
        local_crops_size: int = 96,
        seed: int = 0,
        normalize: bool = False,
        max_image_pixels: int = 178_956_970,
        crop_ratio: Sequence[float] = ...,
        flip_p: float = ...,
        color_jitter_p: float = ...,
        brightness: float = ...,
        contrast: float = ...,
        saturation: float = ...,
        hue: float = ...,
        grayscale_p: float = ...,
        blur_global1_p: float = ...,
        blur_global2_p: float = ...,
        blur_local_p: float = ...,
        blur_sigma: Sequence[float] = ...,
        solarize_p: float = ...,
        solarize_threshold: int = ...,
        mean: Sequence[float] = ...,
        std: Sequence[float] = ...,
    ) -> None: ...
    def __call__(
        self, image: Any, index: Optional[int] = None, epoch: Optional[int] = None
    ) -> List[npt.NDArray[Any]]:
        """The ``2 + local_crops_number`` crops of ``image`` (see the class docstring).
        ``index``: draw from the loader's stream of that dataset index; ``epoch``: the epoch of
        the stream for this call only (default ``self.epoch``)."""
    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch of the streams of later calls (default 0)."""
    @property
    def epoch(self) -> int:
        """The epoch of the streams of later calls."""
    @property
    def seed(self) -> int:
        """The seed of every stream."""
    @property
    def n_crops(self) -> int:
        """2 + local_crops_number."""
    @property
    def config(self) -> Dict[str, Any]:
        """The resolved ``[augmentation]`` section."""
