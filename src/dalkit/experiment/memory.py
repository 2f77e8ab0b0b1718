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
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from dalkit.errors import ConfigError

GIB = 1 << 30
_FLOAT = 4  # bytes per float32


def available_bytes() -> int:
    """Memory this process may still allocate: Linux's MemAvailable, else the physical memory."""
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


__all__ = ["activation_floats", "available_bytes", "check_round_memory", "parameter_count", "round_bytes"]
