"""MC dropout as the NoiseStability authors' baseline code runs it: dropout after every block of the
network and the model in train mode (BatchNorm normalising with the statistics of each inference
batch), K full forward passes.

dalkit's default (:meth:`dalkit.models.base.DalkitModel.mc_logits_from_embedding`) samples dropout on the
cached embedding only, with BatchNorm in eval mode: K cheap classifier passes.  This module is the
paper-protocol reading (``mc="blocks"`` on ``bald`` / ``entropy-bayesian``, set by ``--preset
dm2-paper``).  BatchNorm running statistics are saved before and restored after, so the query never
changes the model; dropout masks come from the round's seeded generator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dalkit.data.dataset import to_float

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)


def mc_blocks(model: nn.Module) -> list[nn.Module]:
    """The modules after which MC dropout acts: every direct child of the model but the classifier and
    normalisation layers; containers (``ModuleList``) are opened, and a ``Sequential`` stage of residual
    blocks contributes each block."""
    own = getattr(model, "mc_block_modules", None)
    if callable(own):  # a user's network behind ModelAdapter: its named stage blocks
        return list(own())
    blocks: list[nn.Module] = []

    def visit(m: nn.Module, depth: int) -> None:
        if isinstance(m, _NORMS) or not any(True for _ in m.parameters()):
            return
        if isinstance(m, nn.ModuleList) and depth < 2:
            for child in m:
                visit(child, depth + 1)
            return
        children = list(m.children())
        if (isinstance(m, nn.Sequential) and depth >= 1 and children
                and all(len(list(c.children())) > 0 for c in children)):
            for child in children:  # a stage of composite blocks
                visit(child, depth + 1)
            return
        blocks.append(m)

    for name, child in model.named_children():
        if name != "classifier":
            visit(child, 0)
    return blocks


def mc_block_logits(model: nn.Module, x: Tensor, k: int, p: float, generator: torch.Generator) -> Tensor:
    """K stochastic passes [K, B, C]: dropout(p) after every block of :func:`mc_blocks` and on the
    embedding, the model in train mode; the model's buffers (BatchNorm statistics) and mode are restored.

    Args:
        x: float inputs in [0, 1] [B, C, H, W] on the model's device.
        generator: CPU generator; each pass's masks come from a seed it draws.
    """
    if not 0 < p < 1:
        raise ValueError(f"MC dropout needs 0 < p < 1, got {p}")
    was_training = model.training
    saved = {name: buf.detach().clone() for name, buf in model.named_buffers()}

    def hook(_module: nn.Module, _inputs: tuple, out: Tensor) -> Tensor:
        return F.dropout(out, p, training=True)

    handles = [b.register_forward_hook(hook) for b in mc_blocks(model)]
    out = torch.empty(k, x.shape[0], model.num_classes, device=x.device)
    devices = [x.device] if x.device.type == "cuda" else []
    try:
        model.train()
        with torch.inference_mode():
            for i in range(k):
                seed = int(torch.randint(0, 2**62, (1,), generator=generator))
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(seed)
                    emb = model.embed(x)
                    out[i] = model.classifier(F.dropout(emb, p, training=True)).float()
    finally:
        for h in handles:
            h.remove()
        with torch.no_grad():
            for name, buf in model.named_buffers():
                buf.copy_(saved[name])
        model.train(was_training)
    return out


def mc_block_probs(model: nn.Module, images: Tensor, k: int, p: float, generator: torch.Generator,
                   device: torch.device | str = "cpu", batch_size: int = 1024) -> Tensor:
    """Softmax of :func:`mc_block_logits` over pool samples ``images`` [N, ...] in batches: [K, N, C] on the
    CPU."""
    out = torch.empty(k, images.shape[0], model.num_classes)
    for start in range(0, images.shape[0], batch_size):
        x = to_float(images[start:start + batch_size], device)
        out[:, start:start + x.shape[0]] = torch.softmax(mc_block_logits(model, x, k, p, generator), -1).cpu()
    return out


__all__ = ["mc_block_logits", "mc_block_probs", "mc_blocks"]
