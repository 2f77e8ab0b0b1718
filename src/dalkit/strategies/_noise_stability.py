"""NoiseStability: output deviation under random weight perturbations (Li et al., AAAI 2024).

Reference: Xingjian Li, Pengkun Yang, Yangcheng Gu, Xueying Zhan, Tianyang Wang, Min Xu, Chengzhong Xu,
"Deep Active Learning with Noise Stability", AAAI 2024 (arXiv:2205.13340); reference code
github.com/lixingjian/AL-noise-stability (read to confirm the details below, not copied).

The method, as the paper and its reference code do it:

1. Draw K noisy copies of the trained model.  Every weight tensor W gets its own Gaussian direction Z,
   rescaled so that ``||dW|| = xi * ||W||`` (dW = xi * ||W|| * Z / ||Z||): the noise is relative to each
   layer's own scale.  The reference perturbs every module's ``weight`` (convolutions, linear layers and
   the BatchNorm scales) and leaves biases alone: ``perturb="weights"``; ``perturb="all"`` perturbs every
   parameter.  Defaults from the reference: K = 30 (``run.sh``: ``-k 30`` for MNIST and CIFAR-10) and
   xi = 1e-3 (``NOISE_SCALE = 0.001``).
2. For every unlabeled sample, the deviation of each noisy copy's output from the clean output,
   ``f(x; W + dW_k) - f(x; W)`` (softmax outputs for classification), divided by ``||f(x; W)||``, and
   concatenated over the K copies: a feature vector of length K * C.  Its norm is the uncertainty (the
   paper's theory: ~ xi * a randomly projected gradient norm); its direction carries the diversity.
3. Greedy k-center on those features with the origin as the first center: the first pick is the sample
   with the largest deviation, each next pick is the sample farthest from the origin and from all picks
   so far.  Uncertain samples are far from the origin and diverse ones far from each other, so one
   criterion balances both.  The labeled samples are not centers (as in the reference).

Here the model is never modified: the noisy copies are parameter dictionaries passed to
``torch.func.functional_call``, in eval mode (BatchNorm uses its running statistics, untouched), under
``torch.inference_mode``.  Cost: K + 1 forward passes over the unlabeled pool (or ``subset`` of it; the
reference draws a random subset of 25,000 on CIFAR-10); memory N * K * C floats for the features plus one
model-sized noise dictionary at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from dalkit.data.dataset import to_float
from dalkit.errors import ConfigError
from dalkit.strategies._coreset import k_center_greedy
from dalkit.strategies.base import QueryContext, Selection, register_strategy, top_k

OUTPUTS = ("probs", "logits")
PERTURB = ("weights", "all")
SELECTIONS = ("kcenter", "uncertainty")


def perturbed_names(model: nn.Module, perturb: str = "weights") -> list[str]:
    """Names of the parameters the noise touches, in ``named_parameters`` order.

    ``weights``: every parameter whose own name is ``weight`` (convolution and linear kernels, BatchNorm
    scales), as the reference; ``all``: every parameter (biases too).
    """
    if perturb not in PERTURB:
        raise ConfigError(f"noise-stability perturb must be one of {PERTURB}, got {perturb!r}")
    names = [name for name, _ in model.named_parameters()]
    if perturb == "weights":
        names = [name for name in names if name.rsplit(".", 1)[-1] == "weight"]
    return names


def weight_noise(params: dict[str, Tensor], xi: float, generator: torch.Generator) -> dict[str, Tensor]:
    """One draw of the relative weight noise: dW = xi * ||W|| * Z / ||Z||, Z ~ N(0, I), per tensor.

    So ``||dW|| = xi * ||W||`` exactly for every tensor (a zero tensor gets zero noise).  The Gaussian
    directions are drawn on the CPU from ``generator``, one ``torch.randn`` per tensor in the order of
    ``params``, so the noise does not depend on the device.

    Args:
        params: name -> W.
        xi: the relative noise scale (the paper's noise magnitude).
        generator: CPU generator.
    Returns:
        name -> dW, same shapes, devices and dtypes as ``params``.
    """
    noise = {}
    for name, w in params.items():
        if w.numel() == 0:
            noise[name] = torch.zeros_like(w)
            continue
        z = torch.randn(w.shape, generator=generator).to(device=w.device, dtype=torch.float64)
        # dW = xi * ||W|| * Z / ||Z||, computed in float64, then cast to W's dtype
        scale = xi * torch.linalg.vector_norm(w.detach(), dtype=torch.float64) / torch.linalg.vector_norm(z)
        noise[name] = (z * scale).to(w.dtype)
    return noise


def _outputs(model: nn.Module, params: dict[str, Tensor], images: Tensor, output: str, batch_size: int,
             device: torch.device) -> Tensor:
    """f(x; params) for every image: softmax probabilities or logits, [N, C] float32 on the CPU."""
    n = images.shape[0]
    out = torch.empty(n, model.num_classes)
    for start in range(0, n, batch_size):
        chunk = images[start:start + batch_size]
        x = to_float(chunk, device) if chunk.dtype == torch.uint8 else chunk.to(device)
        logits = functional_call(model, params, (x,)).float()
        out[start:start + chunk.shape[0]] = (torch.softmax(logits, 1) if output == "probs" else logits).cpu()
    return out


def noise_deviation_features(
    model: nn.Module,
    images: Tensor,
    k: int = 30,
    xi: float = 1e-3,
    generator: torch.Generator | None = None,
    output: str = "probs",
    perturb: str = "weights",
    normalize: bool = True,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    eps: float = 1e-12,
) -> Tensor:
    """Output deviations of K noisy copies of ``model`` from the clean model, per sample.

    ``features[i, j] = (f(x_i; W + dW_j) - f(x_i; W)) / ||f(x_i; W)||`` (the division only with
    ``normalize``), dW_j from :func:`weight_noise` for copy j = 0..K-1 in turn.  The model is used in
    eval mode through ``functional_call`` and is never modified; every module's training flag is
    restored.

    Args:
        model: a model whose ``forward`` returns logits [B, C] and that has ``num_classes``.
        images: uint8 [N, C, H, W] (or float in [0, 1]).
        k: K, number of noisy copies.
        xi: relative noise scale; 0 gives all-zero features.
        generator: CPU generator for the noise.
        output: "probs" (softmax, as the reference for classification) or "logits".
        perturb: "weights" or "all" (see :func:`perturbed_names`).
        normalize: divide each sample's deviations by the norm of its clean output (the reference).
        batch_size, device: inference batching.
        eps: floor of the clean-output norm.
    Returns:
        [N, K, C] float32 on the CPU.
    """
    if output not in OUTPUTS:
        raise ConfigError(f"noise-stability output must be one of {OUTPUTS}, got {output!r}")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    device = torch.device(device)
    names = perturbed_names(model, perturb)
    modes = [(m, m.training) for m in model.modules()]  # restored exactly afterwards
    model.eval()
    try:
        with torch.inference_mode():
            params = {name: p.detach() for name, p in model.named_parameters()}
            clean = _outputs(model, params, images, output, batch_size, device)  # [N, C]
            feats = torch.empty(images.shape[0], k, clean.shape[1])  # [N, K, C]
            for j in range(k):
                noise = weight_noise({name: params[name] for name in names}, xi, generator)
                noisy = {**params, **{name: params[name] + dw for name, dw in noise.items()}}
                feats[:, j] = _outputs(model, noisy, images, output, batch_size, device) - clean
            if normalize:
                feats /= torch.linalg.vector_norm(clean, dim=1).clamp_min(eps)[:, None, None]
    finally:
        for module, mode in modes:
            module.training = mode
    return feats


def deviation_uncertainty(features: Tensor) -> Tensor:
    """The noise-stability uncertainty: the norm of each sample's deviation vector.  [N, K, C] -> [N]."""
    return torch.linalg.vector_norm(features.flatten(1), dim=1)


def kcenter_greedy_from_origin(features: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """Greedy k-center with the origin as the only initial center (the reference's diverse selection).

    Each step picks the row farthest (Euclidean) from its nearest center among {0} and the picks so far,
    so the first pick is the row of largest norm.  Memory O(N * F), no pairwise matrix; ties break at
    random via ``generator`` (CoreSet's :func:`k_center_greedy` with one zero center).

    Args:
        features: [N, F].
        k: how many rows to pick, 1 <= k <= N.
    Returns:
        positions [k] into ``features``, in the order picked.
    """
    origin = features.new_zeros(1, features.shape[1])
    return k_center_greedy(features, origin, k, generator).positions


@register_strategy("noise-stability")
@dataclass(frozen=True)
class NoiseStability:
    """Largest and most diverse output deviations under relative Gaussian weight noise: greedy k-center
    over the deviation features.  Reference: Li et al., "Deep Active Learning with Noise Stability",
    AAAI 2024 (arXiv:2205.13340).

    Options:
        k: K, number of noisy model copies (reference: 30).
        xi: relative noise scale, ||dW|| = xi * ||W|| per tensor (reference: 1e-3).
        output: "probs" (softmax deviations, the reference for classification) or "logits".
        perturb: "weights" (every module weight incl. BatchNorm scales, the reference) or "all".
        normalize: divide the deviations by the norm of the clean output (the reference).
        selection: "kcenter" (greedy k-center from the origin over the deviation features, the
            reference) or "uncertainty" (top deviation norms, no diversity; an ablation).
        batch_size: inference batch size; None = the context's.
    """

    k: int = 30
    xi: float = 1e-3
    output: str = "probs"
    perturb: str = "weights"
    normalize: bool = True
    selection: str = "kcenter"
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(f"noise-stability k (number of noisy copies) must be an integer >= 1, "
                              f"got {self.k!r}")
        if not isinstance(self.xi, (int, float)) or not math.isfinite(self.xi) or self.xi < 0:
            raise ConfigError(f"noise-stability xi (relative noise scale) must be a finite number >= 0, "
                              f"got {self.xi!r}; the paper uses 1e-3")
        if self.output not in OUTPUTS:
            raise ConfigError(f"noise-stability output must be one of {OUTPUTS}, got {self.output!r}")
        if self.perturb not in PERTURB:
            raise ConfigError(f"noise-stability perturb must be one of {PERTURB}, got {self.perturb!r}")
        if self.selection not in SELECTIONS:
            raise ConfigError(f"noise-stability selection must be one of {SELECTIONS}, "
                              f"got {self.selection!r}")
        if self.batch_size is not None and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise ConfigError(f"noise-stability batch_size must be a positive integer or None, "
                              f"got {self.batch_size!r}")

    def features(self, ctx: QueryContext, positions: Tensor) -> Tensor:
        """Deviation features [len(positions), K, C] of the unlabeled samples at ``positions``."""
        images = ctx.pool_images[ctx.unlabeled_idx[positions]]
        return noise_deviation_features(
            ctx.model, images, self.k, self.xi, ctx.generator, self.output, self.perturb, self.normalize,
            self.batch_size or ctx.batch_size, ctx.device,
        )

    def memory_parts(self, s: Any) -> dict[str, int]:
        """Memory of a selection beyond the pool's outputs (:mod:`dalkit.experiment.memory`): the
        candidates' inputs, the [U, K, C] deviation features and k-center's copy of them."""
        u, c = s.n_unlabeled, s.num_classes
        return {"candidate inputs (--subset)": u * s.input_bytes * s.input_floats,
                "deviation features and their k-center copy (k, --subset)": 2 * u * self.k * c * 4
                + u * (3 * c * 4 + 6 * 4 + 2 * 8)}

    def select(self, ctx: QueryContext, budget: int) -> Selection:
        positions = torch.arange(ctx.n_unlabeled)  # a random subset comes from the runner (``subset``)
        feats = self.features(ctx, positions)  # [M, K, C]
        uncertainty = deviation_uncertainty(feats)  # [M]
        if self.selection == "kcenter":
            picked = kcenter_greedy_from_origin(feats.flatten(1), budget, ctx.generator)
        else:
            picked = top_k(uncertainty, budget, ctx.generator)
        return Selection(
            ctx.unlabeled_idx[positions[picked]], uncertainty[picked],
            {"scored": int(positions.numel()), "mean_uncertainty": float(uncertainty.mean())},
        )
