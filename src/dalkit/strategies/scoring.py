"""Where a round's forward passes over the pool run: in this process (the default), or split over
workers by a *pool scorer* (``--score-workers K`` with the Ray executor, :mod:`dalkit.experiment.executors`).

A scorer runs ``fn(model, images_block, *args)`` on contiguous blocks of the pool and concatenates the
results in order.  Blocks are cut only at multiples of ``align``, the unit the computation batches by
(the inference batch, the gradient-norm slice), so every batch a worker computes is the batch the
single-process path computes: the merged arrays, and so every selection made from them, are bit for bit
the single-process ones (given the same number of torch threads per process).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from torch import Tensor

PoolFn = Callable[..., Any]  # fn(model, uint8 images [B, ...], *args) -> Tensor or tuple of Tensors


class PoolScorer(Protocol):
    """Anything with ``map(fn, model, images, align, *args)``: fn over aligned blocks, concatenated."""

    def map(self, fn: PoolFn, model: Any, images: Tensor, align: int, *args: Any) -> Any: ...


def blocks(n: int, k: int, align: int) -> list[tuple[int, int]]:
    """[start, end) of at most ``k`` contiguous blocks covering ``range(n)``, every start a multiple of
    ``align``, as even as that allows."""
    units = math.ceil(n / max(align, 1))
    per = math.ceil(units / max(k, 1)) if units else 0
    out = []
    for start_unit in range(0, units, max(per, 1)):
        out.append((start_unit * align, min(n, (start_unit + per) * align)))
    return out


def concat(parts: list[Any]) -> Any:
    """Results of consecutive blocks joined along dim 0 (a tuple result joined element-wise)."""
    import torch

    if isinstance(parts[0], tuple):
        return tuple(None if parts[0][i] is None else torch.cat([p[i] for p in parts])
                     for i in range(len(parts[0])))
    return torch.cat(parts)


_SCORER: contextvars.ContextVar[PoolScorer | None] = contextvars.ContextVar("dalkit_pool_scorer",
                                                                            default=None)


def current_scorer() -> PoolScorer | None:
    """The scorer a new :class:`QueryContext` uses when it is given none (set by :func:`use_scorer`)."""
    return _SCORER.get()


@contextlib.contextmanager
def use_scorer(scorer: PoolScorer | None) -> Iterator[None]:
    """Query contexts created inside the block score the pool with ``scorer``."""
    token = _SCORER.set(scorer)
    try:
        yield
    finally:
        _SCORER.reset(token)
