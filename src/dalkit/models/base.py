"""The model interface every dalkit model follows."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DalkitModel(nn.Module):
    """Base class: a feature extractor, one dropout layer on the embedding, and a linear classifier.

    Subclasses implement :meth:`forward_features` returning the embedding [B, D] and the feature maps
    of each stage (for a loss-prediction module).  Inputs are float images in [0, 1], [B, C, H, W];
    the model normalises them with the dataset's ``mean``/``std`` itself, so adversarial perturbations
    and clipping happen in pixel space.

    The only dropout sits between the embedding and the classifier.  MC dropout therefore needs the
    embedding once and K cheap classifier passes (:meth:`mc_logits_from_embedding`).

    Args:
        in_channels, num_classes: input channels and number of classes.
        embed_dim: size of the penultimate features.
        mean, std: per-channel input normalisation in [0, 1] units.
        dropout: dropout probability on the embedding (used in training and for MC dropout).
        image_size: input side length, for architectures whose layer sizes depend on it.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        embed_dim: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        dropout: float = 0.0,
        image_size: int | None = None,
    ) -> None:
        super().__init__()
        del image_size  # an input-size hint only some architectures need
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        mean = list(mean) if mean is not None else [0.5] * in_channels
        std = list(std) if std is not None else [0.5] * in_channels
        self.register_buffer("input_mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("input_std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.dropout_p = dropout
        self.classifier = nn.Linear(embed_dim, num_classes)

    def normalize(self, x: Tensor) -> Tensor:
        return (x - self.input_mean) / self.input_std

    def forward_features(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """[B, C, H, W] in [0, 1] -> (embedding [B, D], per-stage feature maps)."""
        raise NotImplementedError

    def embed(self, x: Tensor) -> Tensor:
        """Penultimate features [B, D]."""
        return self.forward_features(x)[0]

    def head(self, embedding: Tensor) -> Tensor:
        """Dropout (active in training mode only) + classifier: [B, D] -> logits [B, C]."""
        return self.classifier(F.dropout(embedding, self.dropout_p, self.training))

    def forward(self, x: Tensor) -> Tensor:
        """Logits [B, C]."""
        return self.head(self.embed(x))

    def forward_all(self, x: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        """(logits [B, C], embedding [B, D], stage feature maps) from one pass."""
        emb, stages = self.forward_features(x)
        return self.head(emb), emb, stages

    def mc_logits_from_embedding(self, embedding: Tensor, k: int, p: float | None = None,
                                 generator: torch.Generator | None = None) -> Tensor:
        """K dropout samples of the classifier on fixed embeddings, in one batched op.

        The model stays in eval mode (BatchNorm untouched); only the dropout mask is sampled.

        Args:
            embedding: [B, D].
            k: number of MC samples.
            p: dropout probability; defaults to the model's own (must then be > 0).
            generator: seeded generator for the masks (CPU).
        Returns:
            logits [K, B, C].
        """
        return mc_logits(self.classifier, embedding, k, self.dropout_p if p is None else p, generator)


def mc_logits(classifier: nn.Module, embedding: Tensor, k: int, p: float,
              generator: torch.Generator | None = None) -> Tensor:
    """K dropout samples of ``classifier`` on fixed embeddings [B, D] -> logits [K, B, C], in one batched
    op: masks kept where a uniform draw >= p, inverted-dropout rescale 1 / (1 - p).  Shared by dalkit's
    models and :class:`dalkit.models.adapter.ModelAdapter`.

    Raises:
        ValueError: p <= 0.
    """
    if p <= 0:
        raise ValueError("MC dropout needs a dropout probability > 0 (model dropout is 0; pass p)")
    keep = torch.rand((k, *embedding.shape), generator=generator).to(embedding.device) >= p
    dropped = embedding.unsqueeze(0) * keep / (1.0 - p)  # [K, B, D]
    return classifier(dropped)
