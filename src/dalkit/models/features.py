"""The ``features`` model: an MLP head on user-supplied embeddings (one float row per sample).

Practitioners often hold embeddings of their samples from a foundation model run elsewhere; AL then
trains only a small head on them.  :class:`FeatureMLP` is a :class:`DalkitModel` on inputs [B, D]:
standardise each feature with the pool's mean/std -> ``depth`` x (Linear(hidden) -> ReLU) -> the
embedding -> dropout -> Linear(C).  ``depth=0`` is a linear (softmax-regression) head whose embedding
is the standardised input itself.

Every strategy works on it as on an image model; the input-level ones act in feature space: DM2 mixes
the anchor's feature row with its neighbours' rows, and DM2-AT's FGSM perturbs feature rows (no [0, 1]
clipping: ``input_range`` is None).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dalkit.errors import ConfigError
from dalkit.models.base import DalkitModel


class FeatureMLP(DalkitModel):
    """MLP head on feature rows [B, D]: ``depth`` hidden layers of width ``hidden`` (ReLU).

    Stages (for a loss-prediction module): the output of every hidden layer, or the standardised input
    for ``depth=0``.

    Args:
        in_channels: D, the feature dimension (the runner passes the pool's row width).
        num_classes: C.
        mean, std: per-feature standardisation (the runner computes them on the pool); None = 0 / 1.
        hidden: width of each hidden layer (= the embedding size when depth >= 1).
        depth: number of hidden layers; 0 = a linear head on the standardised features.
        dropout: dropout on the embedding (training and MC dropout).
        image_size: ignored (the runner passes the last input dimension to every model).
    """

    input_range = None  # FGSM perturbs features without clipping

    def __init__(self, in_channels: int, num_classes: int = 10, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, hidden: int = 256, depth: int = 1, dropout: float = 0.3,
                 image_size: int | None = None) -> None:
        for name, value, low in (("hidden", hidden, 1), ("depth", depth, 0), ("in_channels", in_channels, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"features model {name} must be an integer >= {low}, got {value!r}")
        embed_dim = hidden if depth > 0 else in_channels
        super().__init__(in_channels, num_classes, embed_dim, dropout=dropout)
        mean = list(mean) if mean is not None else [0.0] * in_channels
        std = list(std) if std is not None else [1.0] * in_channels
        if len(mean) != in_channels or len(std) != in_channels:
            raise ConfigError(f"features model: mean/std need {in_channels} values, "
                              f"got {len(mean)}/{len(std)}")
        self.input_mean = torch.tensor(mean, dtype=torch.float32).view(1, -1)
        self.input_std = torch.tensor(std, dtype=torch.float32).view(1, -1)
        self.hidden = hidden
        self.depth = depth
        widths = [in_channels] + [hidden] * depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))

    def forward_features(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """[B, D] -> (embedding [B, hidden] (or the standardised [B, D] at depth 0), hidden outputs)."""
        if x.dim() != 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"the features model takes rows [B, {self.in_channels}], got {tuple(x.shape)}")
        h = self.normalize(x)
        stages = []
        for layer in self.layers:
            h = F.relu(layer(h))
            stages.append(h)
        return h, stages or [h]


__all__ = ["FeatureMLP"]
