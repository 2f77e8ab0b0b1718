"""A user's own classifier as a dalkit model: embeddings, MC dropout and stage features by hooks.

Any ``nn.Module`` whose output is logits [B, C] works with every strategy and recipe once wrapped in
:class:`ModelAdapter` (:class:`dalkit.strategies.QueryContext` and the runner wrap it themselves):

- the *embedding* is the input of the network's final ``nn.Linear`` (the layer whose output is the
  logits), found by one probe forward pass, or named with ``embedding_layer``; a forward pre-hook on
  that layer captures it in the same pass as the logits;
- *MC dropout* samples dropout masks on those embeddings and re-applies that layer (K cheap passes,
  the model in eval mode, BatchNorm untouched), as dalkit's own models do; p is the network's own
  dropout feeding the layer (an ``nn.Dropout`` called between the last other layer and the
  classifier) or the ``dropout`` argument;
- *stage features* for the loss-prediction module are the outputs of named blocks (``stages``),
  captured by forward hooks; by default the network's top-level blocks with parameters.

Inputs reach the network as float tensors: uint8 image pools scaled to [0, 1], float pools as they are.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dalkit.errors import ConfigError
from dalkit.models.base import mc_logits

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)


def is_dalkit_model(model: Any) -> bool:
    """True when ``model`` already speaks dalkit's model interface (a :class:`DalkitModel`, an adapter, or
    a module of the user's with ``forward_all`` and ``num_classes``): it is used as it is."""
    return isinstance(model, ModelAdapter) or all(hasattr(type(model), a) or hasattr(model, a)
                                                  for a in ("forward_all", "num_classes"))


class ModelAdapter(nn.Module):
    """Wrap a classifier ``net`` (output: logits [B, C]) in the interface of :class:`DalkitModel`.

    ``forward`` is ``net`` itself (bit for bit); ``forward_all`` returns (logits, embedding, stages)
    from one pass with hooks; ``classifier`` is the net's final ``nn.Linear`` (not a copy);
    ``mc_logits_from_embedding`` samples dropout on embeddings.  Call :meth:`probe` (or build it with
    :func:`adapt_model`) before use: it finds the layers and checks the net fits.

    Args:
        net: the user's module.
        embedding_layer: name (as in ``net.named_modules()``, e.g. ``"fc1"`` or ``"head.2"``) of the
            ``nn.Linear`` whose input is the embedding and whose output is the logits; None finds it:
            the last ``nn.Linear`` called in a forward pass.
        stages: names of the blocks whose outputs feed the loss-prediction module (and after which
            ``mc=blocks`` applies dropout); None = the net's top-level children with parameters other
            than normalisation layers and the classifier (the embedding alone if there are none).
        dropout: MC-dropout probability on the embedding; None = the p of the net's own ``nn.Dropout``
            feeding the classifier (0 if it has none).  A number also applies that dropout to the
            embedding in training when the net has no dropout of its own there.
        input_range: (low, high) the inputs live in, for FGSM clipping; None = no clipping (float pools).
    """

    def __init__(self, net: nn.Module, embedding_layer: str | None = None,
                 stages: Sequence[str] | None = None, dropout: float | None = None,
                 input_range: tuple[float, float] | None = (0.0, 1.0)) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise ConfigError(f"the model must be a torch nn.Module, got {type(net).__name__}")
        if dropout is not None and not (isinstance(dropout, int | float) and 0 <= dropout < 1):
            raise ConfigError(f"dropout must lie in [0, 1), got {dropout!r}")
        if embedding_layer is not None and not isinstance(embedding_layer, str):
            raise ConfigError(f"embedding_layer must be a layer name (str), got {embedding_layer!r}")
        if stages is not None and (isinstance(stages, str) or not all(isinstance(s, str) for s in stages)):
            raise ConfigError(f"stages must be a list of layer names, got {stages!r}")
        self.net = net
        self.embedding_layer = embedding_layer
        self.stage_names: tuple[str, ...] | None = tuple(stages) if stages is not None else None
        self.dropout = dropout
        self.input_range = input_range
        self.num_classes = 0
        self.embed_dim = 0
        self.dropout_p = 0.0
        self.train_dropout = 0.0  # dropout the adapter adds to the embedding in training
        self.classifier_name = ""
        self._probed = False

    # -- discovery -------------------------------------------------------------------------------
    @property
    def label(self) -> str:
        return type(self.net).__name__

    def _modules_by_name(self) -> dict[str, nn.Module]:
        return dict(self.net.named_modules())

    def _linear_names(self) -> list[str]:
        return [n for n, m in self.net.named_modules() if isinstance(m, nn.Linear)]

    def probe(self, example: Tensor) -> ModelAdapter:
        """Find the classifier, the dropout and the stages with one forward pass of ``example`` (float
        [B, ...], B >= 1; eval mode, no gradients, the net's mode restored) and check the net fits.

        Raises:
            ConfigError: no final ``nn.Linear``; ``embedding_layer`` or a stage is not a module of the
                net; the output is not logits [B, C]; the output is not the classifier's output.
        """
        modules = self._modules_by_name()
        linears = self._linear_names()
        shown = ", ".join(repr(n) for n in linears[-8:]) or "none"
        if self.embedding_layer is not None:
            if self.embedding_layer not in modules or self.embedding_layer == "":
                raise ConfigError(f"embedding_layer {self.embedding_layer!r} is not a layer of {self.label}; "
                                  f"its nn.Linear layers are: {shown}")
            if not isinstance(modules[self.embedding_layer], nn.Linear):
                raise ConfigError(
                    f"embedding_layer {self.embedding_layer!r} of {self.label} is a "
                    f"{type(modules[self.embedding_layer]).__name__}, not an nn.Linear; name the final "
                    f"nn.Linear whose input is the embedding and whose output is the logits ({shown})")
        if not linears:
            raise ConfigError(f"{self.label} has no nn.Linear layer; dalkit reads the embedding as the input "
                              "of the final nn.Linear, whose output must be the logits [B, C]: end the "
                              "network with nn.Linear(embed_dim, num_classes)")
        for name in self.stage_names or ():
            if name not in modules or name == "":
                examples = ", ".join(repr(n) for n in list(modules)[1:4])
                raise ConfigError(f"stage {name!r} is not a layer of {self.label}; name blocks from "
                                  f"net.named_modules(), e.g. {examples}")
        # one pass recording the call order of every layer and each Linear's input and output
        calls: list[tuple[str, nn.Module]] = []
        io: dict[str, tuple[Tensor, Tensor]] = {}

        def record(name: str):
            def hook(mod: nn.Module, args: tuple, out: Any) -> None:
                calls.append((name, mod))
                if isinstance(mod, nn.Linear) and args and isinstance(out, Tensor):
                    io[name] = (args[0], out)
            return hook

        handles = [m.register_forward_hook(record(n)) for n, m in modules.items()]  # "" = the net itself
        modes = [(m, m.training) for m in self.net.modules()]
        try:
            self.net.eval()
            with torch.no_grad():
                param = next(self.net.parameters(), None)
                out = self.net(example.to(param.device) if param is not None else example)
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            msg = " ".join(str(exc).split())[:200]
            raise ConfigError(f"{self.label} cannot take inputs of shape {tuple(example.shape[1:])}: {msg}") \
                from None
        finally:
            for h in handles:
                h.remove()
            for m, mode in modes:
                m.training = mode
        b = example.shape[0]
        if not isinstance(out, Tensor):
            raise ConfigError(f"{self.label} returned a {type(out).__name__}; dalkit needs a model whose "
                              "output is one tensor of logits [B, C]")
        if out.dim() != 2 or out.shape[0] != b or out.shape[1] < 2:
            raise ConfigError(f"{self.label} returned shape {tuple(out.shape)} for a batch of {b}; dalkit "
                              "needs logits [B, C] (one row per sample, C >= 2 classes)")
        if self.embedding_layer is not None:
            name = self.embedding_layer
            if name not in io:
                raise ConfigError(f"embedding_layer {name!r} of {self.label} is not called in a forward pass")
        else:
            called = [n for n, _ in calls if n in io]
            if not called:
                raise ConfigError(f"{self.label} calls no nn.Linear in its forward pass; dalkit needs a "
                                  "final nn.Linear whose output is the logits")
            name = called[-1]
        emb, lin_out = io[name]
        if lin_out.shape != out.shape or not torch.equal(lin_out, out):
            raise ConfigError(f"the output of {self.label} is not the output of its nn.Linear {name!r}: "
                              "dalkit reads the embedding as that layer's input and needs logits = "
                              f"{name}(embedding); "
                              "return that layer's output (no softmax or scaling after it)"
                              + ("" if self.embedding_layer else ", or name the layer with embedding_layer"))
        if emb.dim() != 2:
            raise ConfigError(f"the input of {self.label}'s classifier {name!r} has shape "
                              f"{tuple(emb.shape)}; "
                              "dalkit needs an embedding [B, D] (flatten before the final nn.Linear)")
        classifier = modules[name]
        # the net's own dropout on the embedding: an nn.Dropout called after every other layer with
        # parameters and before the classifier
        order = [n for n, _ in calls]
        clf_pos = max(i for i, n in enumerate(order) if n == name)
        own_p, own_dropout = 0.0, None
        for _, m in reversed(calls[:clf_pos]):
            if isinstance(m, nn.Dropout):
                own_p, own_dropout = float(m.p), m
                break
            if any(True for _ in m.parameters(recurse=False)):
                break
        object.__setattr__(self, "_classifier", classifier)  # not registered twice: it lives in net
        object.__setattr__(self, "_own_dropout", own_dropout)
        self.classifier_name = name
        self.num_classes = int(out.shape[1])
        self.embed_dim = int(emb.shape[1])
        self.dropout_p = float(self.dropout) if self.dropout is not None else own_p
        self.train_dropout = float(self.dropout) if self.dropout is not None and own_p == 0.0 else 0.0
        if self.stage_names is None:
            self.stage_names = tuple(
                n for n, m in self.net.named_children()
                if any(True for _ in m.parameters()) and not isinstance(m, _NORMS)
                and m is not classifier and not any(c is classifier for c in m.modules())
                and n in {c.split(".")[0] for c in order})
        self._probed = True
        return self

    # -- the DalkitModel interface ---------------------------------------------------------------
    @property
    def classifier(self) -> nn.Linear:
        """The net's final nn.Linear (embedding [.., D] -> logits [.., C])."""
        self._check_probed()
        return self.__dict__["_classifier"]

    def _check_probed(self) -> None:
        if not self._probed:
            raise ConfigError("ModelAdapter: call probe(example_inputs) (or adapt_model) before use")

    def stage_modules(self) -> list[nn.Module]:
        """The named blocks whose outputs are the stage features."""
        self._check_probed()
        modules = self._modules_by_name()
        return [modules[n] for n in self.stage_names or ()]

    def mc_block_modules(self) -> list[nn.Module]:
        """Where ``mc=blocks`` applies dropout: after each stage block."""
        return self.stage_modules()

    @contextmanager
    def _capture(self, want_stages: bool, embedding_dropout: bool = True) -> Iterator[dict[str, Any]]:
        """Hooks for one forward pass: the classifier's input (and the training dropout on it) and the
        stage outputs.  ``embedding_dropout=False``: no dropout on the embedding in training, neither
        the adapter's nor the net's own (set to eval mode for the pass), as dalkit's models' ``embed``."""
        self._check_probed()
        found: dict[str, Any] = {"stages": {}}
        p_train = self.train_dropout if embedding_dropout else 0.0
        own = self.__dict__.get("_own_dropout")
        own_mode = own.training if own is not None else False
        if own is not None and not embedding_dropout:
            own.eval()

        def pre(_m: nn.Module, args: tuple) -> tuple | None:
            found["embedding"] = args[0]
            if p_train > 0 and self.training:
                return (F.dropout(args[0], p_train, True), *args[1:])
            return None

        handles = [self.classifier.register_forward_pre_hook(pre)]
        if want_stages:
            for i, mod in enumerate(self.stage_modules()):
                def keep(_m: nn.Module, _a: tuple, out: Any, i: int = i) -> None:
                    found["stages"].setdefault(i, out)
                handles.append(mod.register_forward_hook(keep))
        try:
            yield found
        finally:
            for h in handles:
                h.remove()
            if own is not None:
                own.train(own_mode)

    def forward(self, x: Tensor) -> Tensor:
        """Logits [B, C]: the net's own forward (plus the embedding dropout in training, if added)."""
        if self.train_dropout > 0 and self.training:
            with self._capture(False):
                return self.net(x)
        return self.net(x)

    def forward_all(self, x: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        """(logits [B, C], embedding [B, D], stage features) from one pass."""
        with self._capture(True) as found:
            logits = self.net(x)
        stages = [found["stages"][i] for i in sorted(found["stages"])]
        bad = [t for t in stages if not isinstance(t, Tensor)]
        if bad:
            raise ConfigError(f"a stage block of {self.label} returned a {type(bad[0]).__name__}; name "
                              "blocks "
                              "whose output is a tensor in stages")
        if not stages:
            stages = [found["embedding"]]
        return logits, found["embedding"], stages

    def forward_features(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """(embedding [B, D], stage features)."""
        _, emb, stages = self.forward_all(x)
        return emb, stages

    def embed(self, x: Tensor) -> Tensor:
        """Penultimate features [B, D]: the input of the final nn.Linear, without dropout on it in
        training (as dalkit's models: MC dropout with ``mc=blocks`` adds its own, once)."""
        with self._capture(False, embedding_dropout=False) as found:
            self.net(x)
        return found["embedding"]

    def head(self, embedding: Tensor) -> Tensor:
        """Embedding dropout (training only, when the adapter adds it) + the classifier."""
        active = self.training and self.train_dropout > 0
        return self.classifier(F.dropout(embedding, self.train_dropout, active))

    def mc_logits_from_embedding(self, embedding: Tensor, k: int, p: float | None = None,
                                 generator: torch.Generator | None = None) -> Tensor:
        """K dropout samples of the classifier on fixed embeddings [B, D] -> [K, B, C] (eval mode)."""
        return mc_logits(self.classifier, embedding, k, self.dropout_p if p is None else p, generator)

    def extra_repr(self) -> str:
        return (f"classifier={self.classifier_name!r}, num_classes={self.num_classes}, "
                f"embed_dim={self.embed_dim}, dropout_p={self.dropout_p}, stages={self.stage_names}")


def adapt_model(model: nn.Module, example: Tensor, embedding_layer: str | None = None,
                stages: Sequence[str] | None = None, dropout: float | None = None,
                input_range: tuple[float, float] | None = (0.0, 1.0)) -> nn.Module:
    """``model`` itself when it already has dalkit's model interface, else a probed
    :class:`ModelAdapter` around it.

    Args:
        example: a few float inputs [B, ...] (as the model will see them) for the probe pass.
        embedding_layer, stages, dropout, input_range: see :class:`ModelAdapter`.
    Raises:
        ConfigError: the model cannot be adapted (the message says what is missing).
    """
    if isinstance(model, ModelAdapter):
        return model if model._probed else model.probe(example)
    if is_dalkit_model(model):
        return model
    return ModelAdapter(model, embedding_layer, stages, dropout, input_range).probe(example)


__all__ = ["ModelAdapter", "adapt_model", "is_dalkit_model"]
