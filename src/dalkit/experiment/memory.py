"""The memory an experiment's sizes imply, checked before anything is allocated or written.

A size option (the loss-prediction module's ``hidden`` width, FA's queue length ``fa_queue``, the SSL
ratio ``mu``) can ask for more memory than the machine has: unchecked, round 0 then dies in a raw
allocator error after the run directory exists, or the OS kills the process, or (``mu`` = 1e9) the
unlabeled sampler never finishes.  :func:`check_memory` adds up the largest allocations of a round from
the model's parameter count (the recipe's modules included, counted on PyTorch's ``meta`` device, so
nothing is allocated), its activations per sample (one real forward pass of one sample, measured with
hooks) and the recipe's own state, and refuses the experiment when the sum exceeds the memory available.

The estimate is deliberately rough (activations x2 for their gradients, no allocator slack): it is meant
to catch sizes that are off by orders of magnitude, never to refuse a run that fits.

The *selection* of a round is estimated separately (:func:`selection_parts`): the pool's model outputs
(logits, probabilities, embeddings of every candidate and labeled sample) plus what the strategy itself
allocates, from its ``memory_parts(shape)`` hook (each part keyed by what causes it, the option that
shrinks it in brackets).  These are upper bounds of the peak a round's selection adds (tested against
measured peaks), so a million-sample pool either fits or is refused before anything runs, with the
largest ``--subset`` that fits (:func:`check_selection_memory`).  ``DALKIT_MEMORY_GIB`` caps the memory
the checks count as available (e.g. a machine shared with other jobs).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dalkit.errors import ConfigError

GIB = 1 << 30
_FLOAT = 4  # bytes per float32


def available_bytes() -> int:
    """Memory this process may still allocate: Linux's MemAvailable, else the physical memory; at most
    ``$DALKIT_MEMORY_GIB`` GiB when that is set."""
    limit = os.environ.get("DALKIT_MEMORY_GIB")
    if limit:
        try:
            cap = int(float(limit) * GIB)
        except ValueError:
            raise ConfigError(f"DALKIT_MEMORY_GIB must be a number of GiB, got {limit!r}") from None
        return min(cap, _system_available())
    return _system_available()


def _system_available() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not a POSIX system
        return 1 << 62


def activation_floats(model: nn.Module, example: torch.Tensor) -> int:
    """Floats every leaf module of ``model`` outputs for ONE sample (``example`` [1, ...]), i.e. what a
    training step keeps for the backward pass, per sample."""
    total = 0

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal total
        outputs = output if isinstance(output, tuple | list) else (output,)
        total += sum(int(o.numel()) for o in outputs if isinstance(o, torch.Tensor))

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return total


def parameter_count(build: Any) -> int | None:
    """Parameters of the model ``build()`` returns when built on the ``meta`` device (nothing is
    allocated); None when the model cannot be built there (e.g. a user's model that computes at init)."""
    try:
        with torch.device("meta"), torch.random.fork_rng(devices=[]):
            model = build()
        return sum(int(p.numel()) for p in model.parameters())
    except Exception:  # noqa: BLE001 - best effort: the real build reports real errors later
        return None


def round_bytes(
    *, params: int | None, act_per_sample: int, sample_floats: int, batch: int, unlabeled_ratio: int,
    extra_views: int, recipe_state: int, eval_batch: int,
) -> dict[str, int]:
    """The largest allocations of one round, in bytes, by what causes them.

    Args:
        params: parameters of the trained model (recipe modules included), None if unknown.
        act_per_sample: activation floats per sample; sample_floats: floats of one model input.
        batch: labeled samples per step (the batch size, at most the labeled set).
        unlabeled_ratio: mu (semi-supervised recipes; 0 otherwise); extra_views: further views per
            labeled sample in a step (FA's strong labeled view).
        recipe_state: bytes of the recipe's own state (FA's feature queues and their similarity matrix).
        eval_batch: inference batch (no gradients kept).
    """
    images = batch * (1 + extra_views) + 2 * unlabeled_ratio * batch  # labeled + weak/strong unlabeled
    out = {
        "training batch (batch_size, mu)": images * (sample_floats + 2 * act_per_sample) * _FLOAT
        + unlabeled_ratio * batch * 8,  # the unlabeled sampler's index stream
        "inference batch (eval_batch_size)": eval_batch * (sample_floats + act_per_sample) * _FLOAT,
        "recipe state (fa_queue)": recipe_state,
    }
    if params is not None:
        out["model and recipe modules with gradients and optimiser state (hidden)"] = 4 * params * _FLOAT
    return out


def check_round_memory(parts: dict[str, int], what: str, available: int | None = None) -> None:
    """Raise ConfigError when ``parts`` add up to more than the available memory.

    Raises:
        ConfigError: names the total, the largest part and the memory available.
    """
    available = available_bytes() if available is None else available
    total = sum(parts.values())
    if total <= available:
        return
    largest = max(parts, key=parts.__getitem__)
    raise ConfigError(f"{what} needs about {total / GIB:,.1f} GiB of memory per round ({largest}: "
                      f"{parts[largest] / GIB:,.1f} GiB), more than the {available / GIB:,.1f} GiB "
                      "available; lower the option named in brackets")


@dataclass(frozen=True)
class SelectionShape:
    """The sizes one selection works on.

    Attributes:
        n_unlabeled: U, the samples a round ranks (the unlabeled pool, or the ``--subset`` candidates).
        n_labeled: L, the labeled set (the largest of the run).
        embed_dim: E, the model's embedding width; num_classes: C; budget: B, picks per round.
        input_floats: floats of one model input (pixels, feature values); input_bytes: bytes of one
            stored pool sample (uint8 images 1 per value, float pools 4).
        batch: the inference batch of the pool's forward passes (``eval_batch_size``).
    """

    n_unlabeled: int
    n_labeled: int
    embed_dim: int
    num_classes: int
    budget: int
    input_floats: int
    input_bytes: int
    batch: int = 1024

    def with_unlabeled(self, n: int) -> SelectionShape:
        return dataclasses.replace(self, n_unlabeled=n)


#: the part every strategy without a ``memory_parts`` hook has: a score per candidate, ranked
RANKING = "scores and their seeded ranking"


def pool_outputs_bytes(s: SelectionShape) -> int:
    """The round's cached model outputs: logits, probabilities and embeddings of every candidate and
    labeled sample, plus the index vectors of the context (candidates, masks)."""
    return (s.n_unlabeled + s.n_labeled) * (2 * s.num_classes + s.embed_dim) * _FLOAT + s.n_unlabeled * 8 * 3


def batch_bytes(s: SelectionShape) -> int:
    """One inference batch of a pass over the pool: the gathered inputs, their float copy and the
    model's standardised input, the embeddings and logits, twice (measured: the allocator keeps the
    previous batch's buffers while the next one is built)."""
    return 2 * s.batch * (3 * s.input_floats + 2 * s.embed_dim + 2 * s.num_classes) * _FLOAT


def ranking_bytes(s: SelectionShape) -> int:
    """Scores [U] and :func:`~dalkit.strategies.top_k`'s permutation, permuted scores and order."""
    return s.n_unlabeled * (s.num_classes * _FLOAT + 2 * _FLOAT + 16)


def selection_parts(strategy: Any, s: SelectionShape) -> dict[str, int]:
    """Upper bound of the memory one selection of ``strategy`` adds, in bytes, by what causes it."""
    out = {"model outputs of the pool (--subset)": pool_outputs_bytes(s),
           "inference batches (eval_batch_size)": batch_bytes(s)}
    hook = getattr(strategy, "memory_parts", None)
    out.update(hook(s) if hook is not None else {f"{RANKING} (--subset)": ranking_bytes(s)})
    return out


def largest_fitting_subset(strategy: Any, s: SelectionShape, available: int) -> int | None:
    """The largest number of candidates (>= the budget, < U) whose selection fits ``available``
    bytes, rounded down to two significant digits; None when not even ``budget`` candidates fit."""
    def fits(n: int) -> bool:
        return sum(selection_parts(strategy, s.with_unlabeled(n)).values()) <= available

    lo, hi = s.budget, s.n_unlabeled - 1
    if hi < lo or not fits(lo):
        return None
    while lo < hi:  # the largest n in [lo, hi] that fits (the estimate grows with n)
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    digits = max(0, len(str(lo)) - 2)
    return max(s.budget, lo // 10**digits * 10**digits)


def check_selection_memory(strategy: Any, name: str, s: SelectionShape, available: int | None = None) -> None:
    """Raise ConfigError when one selection of ``strategy`` (registered as ``name``) on ``s`` would need
    more than the available memory; the message names the largest part and the largest ``--subset``
    that fits.

    Raises:
        ConfigError: one line, naming the option(s) that make the selection fit.
    """
    available = available_bytes() if available is None else available
    parts = selection_parts(strategy, s)
    total = sum(parts.values())
    if total <= available:
        return
    largest = max(parts, key=parts.__getitem__)
    subset = largest_fitting_subset(strategy, s, available)
    hook = getattr(strategy, "memory_fix", None)  # a strategy option value that fits, e.g. max_edges=N
    option = hook(s, available) if hook is not None else None
    if subset is not None:
        fix = f"use --subset {subset} (a random {subset:,} of the unlabeled pool ranked per round)"
        fix += f" or --option {option}" if option else " or lower the option named in brackets"
    else:
        fix = f"use --option {option}" if option else "lower the option named in brackets"
    raise ConfigError(f"strategy {name!r} needs about {total / GIB:,.1f} GiB to select from "
                      f"{s.n_unlabeled:,} samples ({largest}: {parts[largest] / GIB:,.1f} GiB), more than "
                      f"the {available / GIB:,.1f} GiB available; {fix}")


__all__ = ["RANKING", "SelectionShape", "activation_floats", "available_bytes", "batch_bytes",
           "check_round_memory", "check_selection_memory", "largest_fitting_subset", "parameter_count",
           "pool_outputs_bytes", "ranking_bytes", "round_bytes", "selection_parts"]
