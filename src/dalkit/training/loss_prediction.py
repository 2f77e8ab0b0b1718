"""Loss prediction (Yoo & Kweon, "Learning Loss for Active Learning", CVPR 2019; LPLgrad section III-B).

A small module w_aux reads the main model's per-stage feature maps and predicts each sample's loss.
It is trained jointly with the main model:

- one block per stage: global average pooling -> FC(C_l, hidden) -> ReLU; the blocks' outputs are
  concatenated -> FC(L * hidden, 1) = the predicted loss l_aux,i;
- Eq. 2-3: the batch's two halves form P/2 pairs (x_m, x_n), m in the first half and n = m + P/2;
  d = +1 where the true loss of x_m exceeds that of x_n, else -1 (the printed Eq. 3,
  d = max(0, l_main,i), is the reference code's 2 * sign(max(0, l_m - l_n)) - 1 with the sign lost),
  and l_aux = mean over pairs of max(0, M - d * (l_aux,m - l_aux,n)) with margin M (default 1);
- Eq. 4: L_total = l_main + lambda * l_aux (lambda = 1 in the paper);
- after a fraction of the epochs (Yoo & Kweon: 120 of 200, i.e. 0.6) the feature maps fed to w_aux
  are detached, so the ranking loss no longer shapes the main model's features.

The module is attached to the model as the submodule ``loss_module`` (:func:`attach_loss_module`), so
the one optimiser of :func:`dalkit.training.fit` trains it, ``state_dict()`` saves and restores it with
the model, and the query context's model carries it to the ``learning-loss`` strategy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dalkit.data.dataset import to_float
from dalkit.training.fit import Batch, StepFn

LOSS_MODULE = "loss_module"  # the submodule name on the model


class LossPredictionModule(nn.Module):
    """w_aux: per-stage GAP -> FC -> ReLU, concatenated -> FC -> one predicted loss per sample.

    Args:
        channels: channels C_l of each stage's feature map.
        hidden: width of each stage's FC layer (Yoo & Kweon: 128).
    """

    def __init__(self, channels: Sequence[int], hidden: int = 128) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(c, hidden) for c in channels)
        self.out = nn.Linear(hidden * len(channels), 1)

    def forward(self, stages: Sequence[Tensor]) -> Tensor:
        """Stage maps [B, C_l, H_l, W_l] (or [B, C_l]) -> predicted losses [B]."""
        parts = []
        for fc, fmap in zip(self.blocks, stages, strict=True):
            pooled = fmap.mean(dim=(2, 3)) if fmap.dim() == 4 else fmap.flatten(1)  # GAP
            parts.append(F.relu(fc(pooled)))
        return self.out(torch.cat(parts, dim=1)).squeeze(1)


def attach_loss_module(model: nn.Module, image_shape: Sequence[int], hidden: int = 128) -> nn.Module:
    """Give ``model`` a fresh :class:`LossPredictionModule` as ``model.loss_module`` (sized by one dry
    forward pass in eval mode, so BatchNorm statistics are untouched); returns ``model``."""
    was_training = model.training
    model.eval()
    param = next(model.parameters())
    with torch.no_grad():
        _, stages = model.forward_features(torch.zeros(1, *image_shape, device=param.device))
    model.train(was_training)
    module = LossPredictionModule([s.shape[1] for s in stages], hidden).to(param.device)
    model.add_module(LOSS_MODULE, module)
    return model


def loss_module(model: nn.Module) -> LossPredictionModule | None:
    """The model's loss-prediction module, or None."""
    module = getattr(model, LOSS_MODULE, None)
    return module if isinstance(module, LossPredictionModule) else None


def ranking_loss(predicted: Tensor, true: Tensor, margin: float = 1.0) -> Tensor:
    """Eq. 2-3: pairwise margin ranking loss between the batch's two halves.

    Args:
        predicted: predicted losses l_aux [B].
        true: true per-sample losses l_main [B] (treated as constants).
        margin: M.
    Returns:
        scalar: mean over the B // 2 pairs (m, m + B // 2) of max(0, M - d * (l_aux,m - l_aux,n)),
        d = +1 if l_main,m > l_main,n else -1; 0 for a batch of one.
    """
    half = predicted.shape[0] // 2
    if half == 0:
        return predicted.sum() * 0.0
    diff_pred = predicted[:half] - predicted[half:2 * half]
    diff_true = (true[:half] - true[half:2 * half]).detach()
    d = torch.where(diff_true > 0, 1.0, -1.0).to(predicted.dtype)
    return F.relu(margin - d * diff_pred).mean()


def loss_prediction_step(margin: float = 1.0, weight: float = 1.0, detach_after: float = 0.6) -> StepFn:
    """Step function: l_main + lambda * l_aux (Eq. 1, 2, 4) on a model with a ``loss_module``.

    Args:
        margin: M of Eq. 2.
        weight: lambda of Eq. 4.
        detach_after: from epoch ``floor(detach_after * epochs)`` on, w_aux reads detached features.
    """

    def step(model: nn.Module, batch: Batch) -> Tensor:
        module = loss_module(model)
        if module is None:
            raise ValueError("the loss-prediction recipe needs a model with a loss_module "
                             "(attach_loss_module)")
        logits, _, stages = model.forward_all(batch.x)
        per_sample = F.cross_entropy(logits, batch.y, reduction="none")  # l_main,i
        if batch.epoch >= int(detach_after * batch.epochs):
            stages = [s.detach() for s in stages]
        predicted = module(stages)  # l_aux,i
        return per_sample.mean() + weight * ranking_loss(predicted, per_sample, margin)

    return step


@torch.inference_mode()
def predicted_losses(model: nn.Module, images: Tensor, batch_size: int = 1024,
                     device: torch.device | str = "cpu") -> Tensor:
    """w_aux's predicted loss [N] for uint8 (or [0, 1] float) images, in eval mode, on the CPU.

    Raises:
        ValueError: the model has no loss-prediction module.
    """
    module = loss_module(model)
    if module is None:
        raise ValueError("model has no loss-prediction module")
    model.eval()
    out = torch.empty(images.shape[0])
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start:start + batch_size]
        x = to_float(chunk, device) if chunk.dtype == torch.uint8 else chunk.to(device)
        _, stages = model.forward_features(x)
        out[start:start + len(chunk)] = module(stages).float().cpu()
    return out
