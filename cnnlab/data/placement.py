"""Where a data set's images live while training, and the batches the loops read from them.

A data set that fits keeps today's fast path: the whole uint8 set on the training device,
each batch gathered there by indexing. One that does not fit stays on the host (for an
ImageFolder tree: its memory-mapped decode cache) as ``StreamedImages``, and ``batches``
copies each batch to the device while the previous one trains: a background thread gathers
the batch's rows (reading the mapping pages it needs, and only those), into pinned memory on a
GPU, and starts a non-blocking copy on a side stream. Both paths yield the same uint8 rows in
the same order, so the same seed gives the same results.

``CNNLAB_DATA_PLACEMENT=device`` or ``=stream`` overrides the choice (``auto`` by default).
"""

from __future__ import annotations

import os
import queue
import threading

import torch

from cnnlab.errors import UsageError

PLACEMENT_ENV = "CNNLAB_DATA_PLACEMENT"
PLACEMENTS = ("auto", "device", "stream")
# share of the free memory the images may take; the rest is for the model, its activations
# and the optimiser (a set that takes more streams instead)
DEVICE_MEMORY_SHARE = 0.5
PREFETCH_BATCHES = 2  # batches prepared ahead of the one training


def free_memory(device: torch.device) -> int:
    """Bytes free where images on ``device`` would live: the GPU's free memory, or available RAM."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):  # not Linux: the physical memory as the bound
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def placement() -> str:
    chosen = os.environ.get(PLACEMENT_ENV, "auto")
    if chosen not in PLACEMENTS:
        raise UsageError(f"${PLACEMENT_ENV} must be one of {', '.join(PLACEMENTS)}, not {chosen!r}")
    return chosen


def fits_on_device(image_bytes: int, device: torch.device) -> bool:
    """Whether the images go to the device whole (True) or stream (False)."""
    chosen = placement()
    if chosen != "auto":
        return chosen == "device"
    return image_bytes <= DEVICE_MEMORY_SHARE * free_memory(device)


class StreamedImages:
    """uint8 ``N x C x H x W`` images held on the host, read by ``batches`` onto ``device``.

    Acts like the device tensor it stands for where the loops need it to: ``len``, ``shape``,
    ``device``, and row slices (``images[rank::world_size]`` under torchrun), which are views.
    """

    def __init__(self, host: torch.Tensor, device):
        self.host = host
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.host)

    @property
    def shape(self) -> torch.Size:
        return self.host.shape

    @property
    def nbytes(self) -> int:
        return self.host.numel()

    def __getitem__(self, rows: slice) -> "StreamedImages":
        if not isinstance(rows, slice):
            raise TypeError("streamed images are read in batches (cnnlab.data.batches); only slices give views")
        return StreamedImages(self.host[rows], self.device)


def batches(images, labels: torch.Tensor | None, batch_size: int, order: torch.Tensor | None = None,
            steps: int | None = None):
    """Yield ``(uint8 images, labels)`` batches on ``images.device`` (labels None when not given).

    Without ``order``: consecutive rows, the last batch possibly short (evaluation). With
    ``order`` (row indices on the device): ``steps`` full batches of it, by default as many as fit.
    """
    if order is None:
        spans = [slice(start, start + batch_size) for start in range(0, len(images), batch_size)]
    else:
        steps = len(order) // batch_size if steps is None else steps
        spans = [order[step * batch_size:(step + 1) * batch_size] for step in range(steps)]
    if isinstance(images, StreamedImages):
        yield from stream(images, labels, spans)
        return
    for rows in spans:
        yield images[rows], None if labels is None else labels[rows]


def stream(images: StreamedImages, labels, spans):
    """``batches`` for host images: a background thread prepares the next batches on the device."""
    device = images.device
    on_gpu = device.type == "cuda"
    host_spans = [rows if isinstance(rows, slice) else rows.cpu() for rows in spans]  # one read of the order
    ready: queue.Queue = queue.Queue(maxsize=PREFETCH_BATCHES)
    stop = threading.Event()

    def offer(item) -> bool:
        """Queue ``item`` unless the loop has stopped reading; False once it has."""
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def prepare():
        # a gather is a memory copy: one thread, not a second OpenMP team beside the training one
        # (fighting it for the cores); torch's thread count is per thread, so training keeps its own
        torch.set_num_threads(1)
        copy_stream = torch.cuda.Stream(device) if on_gpu else None
        try:
            for rows in host_spans:
                picked = images.host[rows]  # a gather, or a slice view: only these rows' pages are read
                if not on_gpu:
                    batch = (picked.clone() if isinstance(rows, slice) else picked, None)  # read here, not in the loop
                else:
                    pinned = torch.empty(picked.shape, dtype=torch.uint8, pin_memory=True)
                    pinned.copy_(picked)
                    with torch.cuda.stream(copy_stream):
                        on_device = pinned.to(device, non_blocking=True)
                        copied = torch.cuda.Event()
                        copied.record(copy_stream)
                    batch = (on_device, copied)
                if not offer(batch):
                    return
        except BaseException as error:  # handed to the loop, which raises it
            offer((error, None))

    worker = threading.Thread(target=prepare, name="cnnlab-prefetch", daemon=True)
    worker.start()
    try:
        for rows in spans:
            batch, copied = ready.get()
            if isinstance(batch, BaseException):
                raise batch
            if copied is not None:  # the training stream waits for the copy, and keeps the memory alive
                current = torch.cuda.current_stream(device)
                current.wait_event(copied)
                batch.record_stream(current)
            yield batch, None if labels is None else labels[rows]
    finally:
        stop.set()
        worker.join()
