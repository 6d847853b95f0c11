"""``--data-device gpu``: the pretraining views decoded and resampled in batches on the training device.

Workers only read the encoded bytes and draw each view's plan (``ViewPlan``: box, flip) with the generator of
the PIL path, from the same (seed, epoch, index): the same boxes and flips, so resume stays exact and a run does
not depend on the number of workers. The training process decodes the batch's JPEGs at once
(``torchvision.io.decode_jpeg`` on a list, on the device) and applies every plan as two batched matrix
products, one per axis, whose weights are PIL's resampling coefficients (bicubic for rrc, bilinear for src,
antialiased the same way, quantised and rounded like PIL's 8-bit passes). So the views equal the PIL ones up to
the JPEG decoder (libjpeg-turbo's on the CPU, nvjpeg's on a GPU) and float rounding.

Files the device decoder does not take (PNG, WebP, BMP, CMYK JPEGs, EXIF-rotated photos, files without an end
marker, which may be truncated) are decoded with PIL in the worker and resampled the same way. A JPEG that passes
its header check but fails to decode is redone with PIL in the training process (skipped if PIL cannot read it
either, as in the PIL path). An npz pack whose images share one size and fit in ``RESIDENT_BYTES`` is decoded
once and kept on the device (CIFAR-10: 150 MB); its batches then move no pixels at all.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_jpeg

from mimzoo.data.images import MAX_ASPECT, MAX_PIXELS, PIL_FAILURES, UnreadableImage, read_rgb
from mimzoo.data.loader import ImageSource, load_readable, view_seed
from mimzoo.data.sources import ImageFolderSource, NpzPackSource
from mimzoo.data.transforms import RandomResizedCropFlip, SimpleResizedCropFlip, to_uint8_tensor
from mimzoo.errors import one_line

View = RandomResizedCropFlip | SimpleResizedCropFlip
JPEG, PIXELS, RESIDENT = 0, 1, 2  # what a sample's payload holds: encoded bytes, decoded pixels, a resident index
RESIDENT_BYTES = 4 << 30
PRECISION_BITS = 22  # PIL's fixed-point coefficients for 8-bit images (Resample.c)
FILTERS = {  # PIL's filters and their support
    "bicubic": (lambda x: torch.where(x < 1, (1.5 * x - 2.5) * x * x + 1,
                                      torch.where(x < 2, ((-0.5 * x + 2.5) * x - 4) * x + 2, 0.0)), 2.0),
    "bilinear": (lambda x: (1 - x).clamp(min=0), 1.0),
}
# one row of a batch's plans: epoch, index, then per axis (y, x) the effective image (offset, length) inside the
# decoded one, then per axis the plan (start, end, n, crop), then the flip
KEY, REGION, AXES, FLIP = slice(0, 2), slice(2, 6), slice(6, 14), 14


@dataclass
class Payload:
    kind: int
    data: torch.Tensor  # JPEG: the bytes (1-D uint8); PIXELS: (3, H, W) uint8; RESIDENT: the pack index (0-D)


@dataclass
class Encoded:
    """What a worker reads of one image: its payload and the region of the decoded image the view sees
    (``read_rgb``'s aspect cap), as (top, height, left, width)."""

    payload: Payload
    region: tuple[int, int, int, int]


def capped_region(width: int, height: int) -> tuple[int, int, int, int]:
    """``read_rgb``'s centre crop of a too-long image, as (top, height, left, width) in the full image."""
    keep_w, keep_h = min(width, MAX_ASPECT * height), min(height, MAX_ASPECT * width)
    return (height - keep_h) // 2, keep_h, (width - keep_w) // 2, keep_w


def read_bytes(source: ImageFolderSource | NpzPackSource, index: int) -> bytes:
    if isinstance(source, NpzPackSource):
        return source.buffer[int(source.offsets[index]) : int(source.offsets[index + 1])].tobytes()
    try:
        return source.paths[index].read_bytes()
    except OSError as exc:
        raise UnreadableImage(str(exc)) from None


def encode(data: bytes) -> Encoded:
    """A plain JPEG stays encoded for the device decoder; every other file is decoded here with PIL."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            fast = (img.format == "JPEG" and img.mode in ("RGB", "L") and data.endswith(b"\xff\xd9")
                    and img.width * img.height <= MAX_PIXELS and img.getexif().get(0x0112, 1) == 1)
            size = img.size
    except PIL_FAILURES as exc:
        raise UnreadableImage(one_line(exc)) from None
    if fast:
        return Encoded(Payload(JPEG, torch.frombuffer(bytearray(data), dtype=torch.uint8)), capped_region(*size))
    return decoded(read_rgb(io.BytesIO(data)))


def decoded(img: Image.Image) -> Encoded:
    """An image PIL decoded (``read_rgb``: upright, capped, RGB), whole."""
    pixels = to_uint8_tensor(img)
    return Encoded(Payload(PIXELS, pixels), (0, pixels.shape[1], 0, pixels.shape[2]))


class EncodedSource:
    """``source`` read as :class:`Encoded` images (unreadable headers raise :class:`UnreadableImage`, so
    :func:`load_readable` substitutes them as in the PIL path); with ``pixels=True``, everything decoded by PIL."""

    def __init__(self, source: ImageFolderSource | NpzPackSource, pixels: bool = False) -> None:
        self.source, self.pixels = source, pixels

    def __len__(self) -> int:
        return len(self.source)

    def load(self, index: int) -> Encoded:
        if self.pixels:
            return decoded(self.source.load(index))
        return encode(read_bytes(self.source, index))

    def describe(self, index: int) -> str:
        return self.source.describe(index)


class ResidentSource:
    """A pack decoded once: its images are indices into the device tensor; unreadable ones stay unreadable."""

    def __init__(self, source: ImageSource, readable: np.ndarray, height: int, width: int) -> None:
        self.source, self.readable, self.region = source, readable, (0, height, 0, width)

    def __len__(self) -> int:
        return len(self.readable)

    def load(self, index: int) -> Encoded:
        if not self.readable[index]:
            raise UnreadableImage("it did not decode")
        return Encoded(Payload(RESIDENT, torch.tensor(index)), self.region)

    def describe(self, index: int) -> str:
        return self.source.describe(index)


class PlannedViewDataset(Dataset):
    """Keyed by (epoch, index) like :class:`mimzoo.data.loader.ViewDataset`: (payload, plan row, substituted
    index or -1). The plan is drawn from the same seed as the PIL view of that key."""

    def __init__(self, source: EncodedSource | ResidentSource, view: View, seed: int) -> None:
        self.source, self.view, self.seed = source, view, seed
        load_readable(source, range(len(source)), 0)  # no readable image at all: one line now, not in a worker

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Payload, torch.Tensor, int]:
        return self.item(self.source, key)

    def item(self, source: ImageSource, key: tuple[int, int]) -> tuple[Payload, torch.Tensor, int]:
        epoch, index = key
        gen = torch.Generator().manual_seed(view_seed(self.seed, epoch, index))
        encoded, _, bad = load_readable(source, range(len(source)), index)
        top, height, left, width = encoded.region
        plan = self.view.plan(width, height, gen)
        row = torch.tensor([epoch, index, *encoded.region, *plan.y, *plan.x, plan.flip], dtype=torch.float64)
        return encoded.payload, row, bad


@dataclass
class Batch:
    """A collated batch: the JPEGs concatenated into one buffer (one shared-memory transfer from a worker, not
    one per file), the PIL-decoded images, and per sample its kind and where its image is: the JPEG's or decoded
    image's position, or the resident pack index."""

    kinds: list[int]
    refs: list[int]
    jpegs: torch.Tensor
    jpeg_offsets: list[int]
    pixels: list[torch.Tensor]
    rows: torch.Tensor
    bad: torch.Tensor

    def payloads(self) -> list[Payload]:
        cut = self.jpeg_offsets
        return [Payload(kind, self.jpegs[cut[ref] : cut[ref + 1]] if kind == JPEG else
                        self.pixels[ref] if kind == PIXELS else torch.tensor(ref))
                for kind, ref in zip(self.kinds, self.refs, strict=True)]


def collate(items: list[tuple[Payload, torch.Tensor, int]]) -> Batch:
    jpegs = [p.data for p, _, _ in items if p.kind == JPEG]
    pixels = [p.data for p, _, _ in items if p.kind == PIXELS]
    count = {JPEG: 0, PIXELS: 0}
    refs = []
    for payload, _, _ in items:
        if payload.kind == RESIDENT:
            refs.append(int(payload.data))
        else:
            refs.append(count[payload.kind])
            count[payload.kind] += 1
    offsets = np.cumsum([0] + [len(j) for j in jpegs]).tolist()
    return Batch([p.kind for p, _, _ in items], refs, torch.cat(jpegs) if jpegs else torch.empty(0, dtype=torch.uint8),
                 offsets, pixels, torch.stack([row for _, row, _ in items]), torch.tensor([b for _, _, b in items]))


def resample_weights(rows: torch.Tensor, axis: int, length: int, view: View, device: torch.device) -> torch.Tensor:
    """(B, size, length) float32 on ``device``: PIL's quantised resampling coefficients of each plan's output pixels
    along one axis (0 = y, 1 = x) over the decoded image's ``length`` pixels (Resample.c's precompute_coeffs).
    They are computed for each output pixel's few taps only, then scattered into the dense matrix."""
    kernel, support = FILTERS[view.filter]
    start, end, n = (rows[:, 6 + 4 * axis + k] for k in range(3))
    taps = int((2 * support * ((end - start) / n).clamp(min=1)).max().ceil()) + 2  # CPU rows: no device sync
    rows = to_device(rows, device)
    offset, span, start, end, n, crop = (rows[:, 2 + 2 * axis, None], rows[:, 3 + 2 * axis, None],
                                         *(rows[:, 6 + 4 * axis + k, None] for k in range(4)))
    j = torch.arange(view.size, dtype=torch.float64, device=device)
    r = (crop + j - view.padding).abs()  # numpy's reflect padding of the resampled line
    r = torch.where(r > n - 1, 2 * (n - 1) - r, r)
    scale = (end - start) / n
    filterscale = scale.clamp(min=1)[..., None]
    reach = support * filterscale
    center = (start + (r + 0.5) * scale)[..., None]
    lo = (center - reach + 0.5).trunc().clamp(min=0)
    hi = torch.minimum((center + reach + 0.5).trunc(), span[..., None])
    x = lo + torch.arange(taps, dtype=torch.float64, device=device)  # effective-image coordinates
    w = kernel(((x - center + 0.5) / filterscale).abs()) * (x < hi)
    total = w.sum(-1, keepdim=True)
    w = w / torch.where(total == 0, 1, total)
    w = (w.abs() * (1 << PRECISION_BITS) + 0.5).floor().copysign(w) / (1 << PRECISION_BITS)
    index = (x + offset[..., None]).clamp(max=length - 1).long()  # taps past the window weigh 0: adding is exact
    dense = torch.zeros(len(rows), view.size, length, device=device)
    return dense.scatter_add_(2, index, w.float())


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device`` without waiting for the device: a copy from pageable memory would wait for the
    work queued before it (the previous training step), one from pinned memory does not."""
    return tensor.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else tensor


def render(images: torch.Tensor, rows: torch.Tensor, view: View) -> torch.Tensor:
    """Apply each row's plan (``rows`` on the CPU) to the same-sized uint8 images (B, 3, H, W): the horizontal
    pass, rounded to 8 bits as PIL does, then the vertical one; (B, 3, size, size) uint8."""
    _, _, height, width = images.shape
    wx = resample_weights(rows, 1, width, view, images.device)
    wy = resample_weights(rows, 0, height, view, images.device)
    rows_pass = (images.float() @ wx.transpose(1, 2)[:, None]).add_(0.5).floor_().clamp_(0, 255)
    out = (wy[:, None] @ rows_pass).add_(0.5).floor_().clamp_(0, 255).to(torch.uint8)
    flip = to_device(rows[:, FLIP].bool(), out.device)
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


class DeviceViews:
    """Turns a batch of payloads and plans into (uint8 views (B, 3, S, S) on ``device``, substituted indices)."""

    def __init__(self, dataset: PlannedViewDataset, device: torch.device, resident: torch.Tensor | None = None,
                 fallback: ImageSource | None = None) -> None:
        self.dataset, self.device, self.resident, self.fallback = dataset, device, resident, fallback

    def __call__(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        rows, bad = batch.rows.clone(), batch.bad.clone()
        if self.resident is not None:  # a resident pack's batch: one gather, no decoding
            index = to_device(torch.tensor(batch.refs), self.device)
            return render(self.resident[index], rows, self.dataset.view), bad
        payloads = batch.payloads()
        images = self._decode(payloads, rows, bad)
        views = torch.empty(len(payloads), 3, self.dataset.view.size, self.dataset.view.size, dtype=torch.uint8,
                            device=self.device)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(tuple(image.shape), []).append(i)
        for members in groups.values():
            index = torch.tensor(members)
            views[to_device(index, self.device)] = render(torch.stack([images[i] for i in members]), rows[index],
                                                  self.dataset.view)
        return views, bad

    def _decode(self, payloads: list[Payload], rows: torch.Tensor, bad: torch.Tensor) -> list[torch.Tensor]:
        images = decode_payloads(payloads, self.device)
        for i, image in enumerate(images):
            if image is None:  # the device decoder refused it: the whole sample again, decoded by PIL
                epoch, index = (int(v) for v in rows[i, KEY])
                payload, rows[i], bad_i = self.dataset.item(EncodedSource(self.dataset.source.source, pixels=True),
                                                            (epoch, index))
                if bad_i >= 0:
                    bad[i] = bad_i
                images[i] = payload.data.to(self.device)
        return images


def decode_payloads(payloads: list[Payload], device: torch.device) -> list[torch.Tensor | None]:
    """Each payload as (3, H, W) uint8 on ``device``, the JPEGs in one call; None where the decoder failed."""
    images: list[torch.Tensor | None] = [None] * len(payloads)
    jpegs = [i for i, p in enumerate(payloads) if p.kind == JPEG]
    if jpegs:
        if device.type == "cuda":
            # torchvision's CUDA decoder writes from a stream of its own into memory it takes on the current one
            # without waiting for it (pytorch/vision#9606): memory that queued kernels (the previous training
            # step) still read would be overwritten, seen on an H200 as a device-side assert in MAE's gather
            torch.cuda.current_stream(device).synchronize()
        try:
            decoded = decode_jpeg([payloads[i].data for i in jpegs], mode=ImageReadMode.RGB, device=device)
        except RuntimeError:  # one bad file fails the whole list: decode one by one
            decoded = [_decode_one(payloads[i].data, device) for i in jpegs]
        for i, image in zip(jpegs, decoded, strict=True):
            images[i] = image
    for i, payload in enumerate(payloads):
        if payload.kind == PIXELS:
            images[i] = to_device(payload.data, device)
    return images


def _decode_one(data: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        return None


class DeviceViewLoader:
    """A loader of :class:`PlannedViewDataset` batches that yields (uint8 views on the device, substituted
    indices), as the PIL path's loader yields (views, substituted indices)."""

    def __init__(self, loader: DataLoader, views: DeviceViews) -> None:
        self.loader, self.views = loader, views

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in self.loader:
            yield self.views(batch)


def device_views(source: ImageFolderSource | NpzPackSource, view: View, seed: int,
                 device: torch.device) -> tuple[PlannedViewDataset, DeviceViews]:
    """The dataset for the workers and the batch renderer for the training process; an npz pack whose images
    share one size and fit in ``RESIDENT_BYTES`` is decoded here, once, onto ``device``."""
    encoded = EncodedSource(source)
    resident = decode_resident(encoded, device) if isinstance(source, NpzPackSource) else None
    if resident is None:
        dataset = PlannedViewDataset(encoded, view, seed)
        return dataset, DeviceViews(dataset, device)
    pixels, readable = resident
    dataset = PlannedViewDataset(ResidentSource(source, readable, *pixels.shape[2:]), view, seed)
    return dataset, DeviceViews(dataset, device, resident=pixels)


def decode_resident(encoded: EncodedSource, device: torch.device,
                    chunk: int = 4096) -> tuple[torch.Tensor, np.ndarray] | None:
    """(N, 3, H, W) uint8 on ``device`` and which images are readable, or None when the readable images differ in
    size or would take more than ``RESIDENT_BYTES``."""
    readable = np.zeros(len(encoded), dtype=bool)
    items: list[Encoded | None] = []
    for i in range(len(encoded)):
        try:
            items.append(encoded.load(i))
            readable[i] = True
        except UnreadableImage:
            items.append(None)
    regions = {item.region[1::2] for item in items if item is not None}
    if len(regions) != 1 or len(items) * 3 * np.prod(next(iter(regions))) > RESIDENT_BYTES:
        return None
    height, width = next(iter(regions))
    pixels = torch.zeros(len(items), 3, height, width, dtype=torch.uint8, device=device)
    for begin in range(0, len(items), chunk):
        members = [i for i in range(begin, min(begin + chunk, len(items))) if items[i] is not None]
        for i, image in zip(members, decode_payloads([items[i].payload for i in members], device), strict=True):
            if image is None:
                readable[i] = False
            else:
                top, h, left, w = items[i].region
                pixels[i] = image[:, top : top + h, left : left + w]
    return pixels, readable
