"""The bad-input corpus: every entry is one distinct bad input given to the CLI.  Each must end with
exit code 2, exactly one line on stderr (no traceback), and every file under the test's directory —
the completed run directory in it included — byte-for-byte as before.  Add an entry per new bad input.
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from dalkit.cli import main
from dalkit.experiment import ExperimentConfig, run_experiment
from dalkit.training import TrainConfig

BASE = ["--dataset", "digits", "--method", "random", "--initial-size", "10", "--budget", "5", "--rounds", "1",
        "--seeds", "0", "--epochs", "1", "--batch-size", "32", "--min-steps", "2", "--device", "cpu",
        "--out", "{T}/out", "--quiet"]
N_DIGITS = 1497  # samples in the digits training split


def R(*extra: str) -> list[str]:
    """``dalkit run`` of the completed run in ``{T}/out`` with ``extra`` flags appended (later flags win)."""
    return ["run", *BASE, *extra]


def NEW(*extra: str) -> list[str]:
    """As :func:`R` but into a fresh directory ``{T}/new``."""
    return R("--out", "{T}/new", *extra)


def CFG(*drop: str) -> list[str]:
    """``dalkit run {T}/c.yaml`` with the BASE flags less those in ``drop`` (so the file's value counts)."""
    argv, skip = ["run", "{T}/c.yaml"], False
    for a in BASE:
        if skip:
            skip = False
            continue
        if a in drop:
            skip = True
            continue
        argv.append(a)
    return argv


def _write(name: str, data: bytes | str) -> Callable[[Path], None]:
    def setup(t: Path) -> None:
        path = t / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    return setup


def _npy(name: str, arr: np.ndarray) -> Callable[[Path], None]:
    def setup(t: Path) -> None:
        np.save(t / name, arr)
    return setup


def _npz(t: Path) -> None:
    np.savez(t / "f.npz", a=np.zeros((N_DIGITS, 4), np.float32))


def _edit_rounds(edit: Callable[[list[dict]], list], run: str = "out") -> Callable[[Path], None]:
    def setup(t: Path) -> None:
        path = t / run / "rounds.jsonl"
        recs = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps(r) + "\n" for r in edit(recs)))
    return setup


def _set(rec: dict, **kw) -> dict:
    return {**rec, **kw}


def _bad_gz(t: Path) -> None:
    folder = t / "data" / "mnist"
    folder.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        good = gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 64)
        (folder / f"{name}.gz").write_bytes(good[: len(good) // 2] + b"garbage")


def _bad_gz_stream(t: Path) -> None:
    """Valid gzip headers over damaged deflate data (zlib.error, not a truncation)."""
    folder = t / "data" / "mnist"
    folder.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        good = gzip.compress(b"\x00\x00\x08\x03" + bytes(range(256)) * 64)
        (folder / f"{name}.gz").write_bytes(good[:10] + b"\xff" * 20 + good[30:])


def _append_rounds(data: bytes) -> Callable[[Path], None]:
    def setup(t: Path) -> None:
        with open(t / "out" / "rounds.jsonl", "ab") as fh:
            fh.write(data)
    return setup


ROBUST = ("--attack-epsilon", "0.1", "--pgd-steps", "2", "--test-corruptions", "gaussian_noise:1",
          "--open-set-fraction", "0.5")


def RB(*extra: str) -> list[str]:
    """``dalkit run`` of the completed robust, open-set run in ``{T}/rob`` (FGSM/PGD, a corrupted test set,
    half the pool out-of-distribution), with ``extra`` flags appended."""
    return R(*ROBUST, "--out", "{T}/rob", *extra)


def REP(run: str = "rob") -> list[str]:
    return ["report", "{T}/" + run, "--plot", "{T}/p.png"]


def _rob(**kw) -> Callable[[Path], None]:
    """Set fields of every round of the robust run (a value None deletes the field)."""
    return _edit_rounds(lambda rs: [{k: v for k, v in (r | kw).items() if v is not None or k not in kw}
                                    for r in rs], "rob")


def _rob_first(**kw) -> Callable[[Path], None]:
    """Set (None: delete) fields of the robust run's first round only."""
    return _edit_rounds(lambda rs: [{k: v for k, v in (rs[0] | kw).items() if v is not None or k not in kw},
                                    *rs[1:]], "rob")


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(  # 9**9 values, a few hundred bytes
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
) + "dataset: *i\n"

def _nonsquare(t: Path) -> None:
    folder = t / "data" / "npz"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.savez(folder / "data.npz", x_train=rng.integers(0, 256, (200, 12, 16), dtype=np.uint8),
             y_train=np.arange(200) % 4, x_test=rng.integers(0, 256, (40, 12, 16), dtype=np.uint8),
             y_test=np.arange(40) % 4)


OPTION_BOMB = "[&a [x, x, x, x, x, x, x, x], " + ", ".join(  # 8**5 values in one flow sequence
    f"&{c} [{', '.join(['*' + p] * 8)}]" for p, c in zip("abcd", "bcde", strict=True)) + "]"


# (id, setup or None, argv with {T} for the test directory, expected substring of the error line)
CORPUS: list[tuple[str, Callable[[Path], None] | None, list[str], str]] = [
    # --- flags
    ("empty-seeds", None, R("--seeds", ""), "--seeds"),
    ("empty-method", None, R("--method", ""), "--method"),
    ("empty-out", None, R("--out", ""), "--out"),
    ("seeds-hole", None, R("--seeds", "0,,1"), "--seeds"),
    ("seeds-word", None, R("--seeds", "a"), "--seeds"),
    ("seeds-negative", None, R("--seeds", "-1"), "seeds"),
    ("seeds-duplicate", None, R("--seeds", "0,0"), "seeds"),
    ("method-trailing-comma", None, R("--method", "random,"), "--method"),
    ("method-unknown", None, R("--method", "dm3"), "unknown method"),
    ("dataset-unknown", None, R("--dataset", "imagenet"), "unknown dataset"),
    ("model-unknown", None, R("--model", "alexnet"), "unknown model"),
    ("budget-zero", None, R("--budget", "0"), "budget"),
    ("budget-negative", None, R("--budget", "-1"), "budget"),
    ("budget-word", None, R("--budget", "abc"), "--budget"),
    ("initial-zero", None, R("--initial-size", "0"), "initial_size"),
    ("rounds-negative", None, R("--rounds", "-1"), "rounds"),
    ("epochs-float", None, R("--epochs", "1.5"), "--epochs"),
    ("epochs-zero", None, R("--epochs", "0"), "epochs"),
    ("batch-size-zero", None, R("--batch-size", "0"), "batch_size"),
    ("lr-nan", None, R("--lr", "nan"), "lr"),
    ("lr-inf", None, R("--lr", "inf"), "lr"),
    ("lr-negative", None, R("--lr", "-0.1"), "lr"),
    ("lr-zero", None, R("--lr", "0"), "lr"),
    ("optimizer-unknown", None, R("--optimizer", "rmsprop"), "--optimizer"),
    ("retrain-unknown", None, R("--retrain", "warm"), "--retrain"),
    ("initial-set-unknown", None, R("--initial-set", "balanced"), "--initial-set"),
    ("every-class-too-small", None, R("--initial-set", "every-class", "--initial-size", "5"), "every-class"),
    ("retrain-yaml", _write("c.yaml", "retrain: warm\n"), CFG(), "retrain"),
    ("class-balance-yaml", _write("c.yaml", "train: {class_balance: maybe}\n"), CFG(), "class_balance"),
    ("corruption-one-level", None, R("--test-corruptions", "stripe:3"), "one level"),
    ("pool-larger-than-dataset", None, R("--pool-size", "100000"), "pool_size"),
    ("test-larger-than-dataset", None, R("--test-size", "100000"), "test_size"),
    ("pool-zero", None, R("--pool-size", "0"), "pool_size"),
    ("device-unknown", None, R("--device", "tpu"), "device"),
    ("device-cuda-absent", None, R("--device", "cuda"), "CUDA"),
    ("dropout-above-one", None, R("--model-dropout", "1.5"), "model_dropout"),
    ("dropout-nan", None, R("--model-dropout", "nan"), "model_dropout"),
    ("budget-exceeds-pool", None, R("--budget", "900", "--rounds", "2"), "exceeds"),
    ("different-experiment", None, R("--method", "entropy"), "different experiment"),
    ("unknown-flag", None, R("--bogus"), "--bogus"),
    # --- strategy and recipe options
    ("option-unknown", None, R("--option", "bogus=1"), "bogus"),
    ("option-no-equals", None, R("--option", "noequals"), "KEY=VALUE"),
    ("option-int-as-float", None, R("--method", "dm2", "--option", "n_neighbors=2.5"), "n_neighbors"),
    ("option-int-as-bool", None, R("--method", "dm2", "--option", "n_neighbors=true"), "n_neighbors"),
    ("option-int-as-word", None, R("--method", "dm2", "--option", "n_neighbors=many"), "n_neighbors"),
    ("option-candidates-zero", None, R("--method", "dm2", "--option", "candidates=0"), "candidates"),
    ("option-batch-size-zero", None, R("--method", "dm2", "--option", "batch_size=0"), "batch_size"),
    ("option-neighbours-beyond-pool", None, R("--method", "dm2", "--option", "n_neighbors=1490"),
     "n_neighbors"),
    ("option-offset-plus-budget-beyond-pool", None, R("--method", "dm2", "--option", "offset=1483"),
     "offset 1483 + budget 5"),
    ("option-offset-plus-budget-beyond-subset", None,
     R("--method", "dm2", "--subset", "100", "--option", "offset=96"), "offset 96 + budget 5"),
    ("option-neighbours-beyond-subset", None,
     R("--method", "dm2", "--subset", "100", "--option", "n_neighbors=100"), "n_neighbors"),
    ("option-shortlist-below-neighbours", None, R("--method", "dm2", "--option", "candidates=3"),
     "candidates 3"),
    ("option-float-as-bool", None, R("--method", "dm2", "--option", "lam=true"), "lam"),
    ("option-float-nan", None, R("--method", "dm2", "--option", "lam=.nan"), "lam"),
    ("option-str-as-int", None, R("--method", "dm2", "--option", "mixing=3"), "mixing"),
    ("option-bald-k-float", None, R("--method", "bald", "--option", "k=2.5"), "k"),
    ("option-bald-k-bool", None, R("--method", "bald", "--option", "k=true"), "k"),
    ("option-alias-bomb", None, R("--option", "k=" + OPTION_BOMB),
     "expands"),
    ("per-method-option-unknown", None, R("--option", "random.bogus=1"), "bogus"),
    ("recipe-option-label", None, R("--method", "dm2-at", "--recipe-option", "label=oracle"), "label"),
    ("recipe-option-epsilon-range", None, R("--method", "dm2-at", "--recipe-option", "epsilon=2"), "epsilon"),
    ("recipe-option-epsilon-bool", None, R("--method", "dm2-at", "--recipe-option", "epsilon=true"),
     "epsilon"),
    ("recipe-option-epsilon-units-unknown", None,
     R("--method", "dm2-at", "--recipe-option", "epsilon_units=sigma"), "epsilon_units must be one of"),
    ("recipe-option-epsilon-units-std-own-model", None,
     NEW("--model", "usernets:sequential", "--method", "dm2-at", "--recipe-option", "epsilon_units=std"),
     "epsilon_units 'std' needs a model that standardises its inputs"),
    ("recipe-unknown", None, R("--recipe", "bogus"), "unknown recipe"),
    ("ssl-option-int-as-float", None, R("--method", "fixmatch:margin", "--recipe-option", "mu=2.5"), "mu"),
    ("ssl-option-float-as-bool", None, R("--method", "fixmatch:margin", "--recipe-option", "tau=true"),
     "tau"),
    ("ssl-unknown-training", None, R("--method", "bogusmatch:margin"), "bogusmatch"),
    ("ssl-empty-strategy", None, R("--method", "fixmatch:"), "fixmatch:"),
    ("lplgrad-unknown-norm", None, R("--method", "lplgrad", "--option", "norm=spectral"), "norm"),
    ("lplgrad-chunk-bool", None, R("--method", "lplgrad", "--option", "chunk_size=true"), "chunk_size"),
    ("activeft-features-absent", None, R("--method", "activeft", "--option", "source=features"), "features"),
    # --- features
    ("features-missing-file", None, R("--method", "coreset", "--option", "source=features", "--features",
                                      "{T}/none.npy"), "features"),
    ("features-string-dtype", _npy("f.npy", np.array([["a"] * 4] * N_DIGITS)),
     R("--method", "coreset", "--option", "source=features", "--features", "{T}/f.npy"), "dtype"),
    ("features-zero-width", _npy("f.npy", np.zeros((N_DIGITS, 0), np.float32)),
     R("--method", "coreset", "--option", "source=features", "--features", "{T}/f.npy"), "features"),
    ("features-npz", _npz, R("--method", "coreset", "--option", "source=features", "--features", "{T}/f.npz"),
     "npz"),
    ("features-text-file", _write("f.npy", "1,2,3\n"),
     R("--method", "coreset", "--option", "source=features", "--features", "{T}/f.npy"), "features"),
    ("features-wrong-rows", _npy("f.npy", np.zeros((10, 4), np.float32)),
     R("--method", "coreset", "--option", "source=features", "--features", "{T}/f.npy"), "N_train"),
    ("features-nan", _npy("f.npy", np.full((N_DIGITS, 4), np.nan, np.float32)),
     R("--method", "coreset", "--option", "source=features", "--features", "{T}/f.npy"), "NaN"),
    ("features-object-pickle", _npy("f.npy", np.array([{"a": 1}] * N_DIGITS, dtype=object)),
     R("--method", "coreset", "--option", "source=features", "--features", "{T}/f.npy"), "features"),
    ("features-not-read", _npy("f.npy", np.zeros((N_DIGITS, 4), np.float32)),
     R("--features", "{T}/f.npy"), "does not read"),
    ("features-needed-absent", None, R("--method", "coreset", "--option", "source=features"), "features"),
    # --- your own model (usernets.py in tests/) and the features model on your embeddings
    ("own-model-no-linear", None, NEW("--model", "usernets:no_linear"), "has no nn.Linear layer"),
    ("own-model-layer-missing", None, NEW("--model", "usernets:Net", "--model-option", "embedding_layer=fc9"),
     "embedding_layer 'fc9' is not a layer of Net"),
    ("own-model-layer-not-linear", None, NEW("--model", "usernets:Net", "--model-option",
                                             "embedding_layer=body.2"), "not an nn.Linear"),
    ("own-model-vector-output", None, NEW("--model", "usernets:vector_output"), "needs logits [B, C]"),
    ("own-model-softmax-output", None, NEW("--model", "usernets:softmax_output"),
     "is not the output of its nn.Linear"),
    ("own-model-wrong-classes", None, NEW("--model", "usernets:wrong_classes"), "10 classes"),
    ("own-model-not-importable", None, NEW("--model", "nosuchpkg.nets:build"), "cannot import model"),
    ("own-model-no-attribute", None, NEW("--model", "usernets:bogus"), "no attribute"),
    ("own-model-instance", None, NEW("--model", "usernets:a_module_instance"), "fresh nn.Module"),
    ("own-model-unknown-option", None, NEW("--model", "usernets:sequential", "--model-option", "width=3"),
     "could not be built"),
    ("own-model-stage-missing", None, NEW("--model", "usernets:Net", "--model-option", "stages=[nope]",
                                          "--method", "learning-loss"), "stage 'nope'"),
    ("features-model-no-features", None, NEW("--model", "features"), "feature rows [N, D]"),
    ("features-model-wrong-rows", _npy("f.npy", np.zeros((10, 4), np.float32)),
     NEW("--model", "features", "--features", "{T}/f.npy"), "N_train=1497"),
    ("features-model-nan-rows", _npy("f.npy", np.where(np.isin(np.arange(N_DIGITS), [3, 7])[:, None], np.nan,
                                                       np.ones((N_DIGITS, 4), np.float32))),
     NEW("--model", "features", "--features", "{T}/f.npy"), "NaN or inf in 2 rows (first: 3, 7)"),
    ("features-model-3d", _npy("f.npy", np.zeros((N_DIGITS, 4, 2), np.float32)),
     NEW("--model", "features", "--features", "{T}/f.npy"), "D >= 1"),
    ("features-model-1d", _npy("f.npy", np.zeros(N_DIGITS, np.float32)),
     NEW("--model", "features", "--features", "{T}/f.npy"), "D >= 1"),
    ("features-model-npz-no-test", _npz, NEW("--model", "features", "--features", "{T}/f.npz"),
     "'train' and 'test'"),
    ("features-model-corruptions", _npy("f.npy", np.ones((N_DIGITS, 4), np.float32)),
     NEW("--model", "features", "--features", "{T}/f.npy", "--test-corruptions", "fog:1"), "float pool"),
    ("features-model-bad-depth", _npy("f.npy", np.ones((N_DIGITS, 4), np.float32)),
     NEW("--model", "features", "--features", "{T}/f.npy", "--model-option", "depth=-1"), "depth"),
    ("features-model-unknown-option", _npy("f.npy", np.ones((N_DIGITS, 4), np.float32)),
     NEW("--model", "features", "--features", "{T}/f.npy", "--model-option", "width=3"), "width"),
    # --- data files
    ("data-root-missing", None, R("--dataset", "mnist", "--data-root", "{T}/nonexistent"), "missing file"),
    ("data-corrupt-gz", _bad_gz, R("--dataset", "mnist", "--data-root", "{T}/data"), "mnist"),
    # --- config files
    ("config-not-utf8", _write("c.yaml", b"dataset: digits\nmethod: \xff\xfe\n"), CFG(),
     "UTF-8"),
    ("config-alias-bomb", _write("c.yaml", ALIAS_BOMB), CFG(), "aliases"),
    ("config-oversized", _write("c.yaml", "# padding\n" * 200_000), CFG(), "MiB"),
    ("config-not-yaml", _write("c.yaml", "a: [1, 2\n"), CFG(), "YAML"),
    ("config-a-list", _write("c.yaml", "- 1\n- 2\n"), CFG(), "mapping"),
    ("config-epochs-word", _write("c.yaml", "train: {epochs: abc}\n"), CFG("--epochs"), "epochs"),
    ("config-epochs-float", _write("c.yaml", "train: {epochs: 1.5}\n"), CFG("--epochs"), "epochs"),
    ("config-epochs-bool", _write("c.yaml", "train: {epochs: true}\n"), CFG("--epochs"), "epochs"),
    ("config-hflip-int", _write("c.yaml", "train: {hflip: 1}\n"), CFG(), "hflip"),
    ("config-lr-nan", _write("c.yaml", "train: {lr: .nan}\n"), CFG(), "lr"),
    ("config-pool-size-bool", _write("c.yaml", "pool_size: true\n"), CFG(), "pool_size"),
    ("config-train-not-mapping", _write("c.yaml", "train: 5\n"), CFG(), "train"),
    ("config-unknown-field", _write("c.yaml", "bogus: 1\n"), CFG(), "bogus"),
    ("config-unknown-train-field", _write("c.yaml", "train: {bogus: 1}\n"), CFG(),
     "bogus"),
    ("config-initial-size-bool", _write("c.yaml", "initial_size: true\n"),
     CFG("--initial-size"), "initial_size"),
    ("config-seeds-bool", _write("c.yaml", "seeds: [true]\n"),
     CFG("--seeds"), "seeds"),
    ("config-pool-size-float", _write("c.yaml", "pool_size: 200.5\n"), CFG(),
     "pool_size"),
    ("config-options-not-mapping", _write("c.yaml", "strategy_options: [1]\n"), CFG(),
     "strategy_options"),
    ("config-missing", None, ["run", "{T}/none.yaml", *BASE], "cannot read"),
    ("config-is-directory", None, ["run", "{T}/out", *BASE], "cannot read"),
    # --- output paths
    ("out-is-a-file", _write("afile", "x"), R("--out", "{T}/afile"), "afile"),
    ("out-under-a-file", _write("afile", "x"), R("--out", "{T}/afile/run"), "afile"),
    ("report-plot-is-directory", None, ["report", "{T}/out", "--plot", "{T}/out"], "directory"),
    ("report-markdown-is-directory", None, ["report", "{T}/out", "--markdown", "{T}/out", "--plot",
                                            "{T}/p.png"], "directory"),
    ("report-plot-under-a-file", _write("afile", "x"), ["report", "{T}/out", "--plot", "{T}/afile/p.png"],
     "afile"),
    ("report-not-a-run-directory", None, ["report", "{T}"], "not a run directory"),
    # --- into a new directory: every check runs before the directory is made
    ("new-nonsquare-images", _nonsquare, NEW("--dataset", "npz", "--data-root", "{T}/data"), "cannot take"),
    ("new-device-cuda-absent", None, NEW("--device", "cuda"), "CUDA"),
    ("new-option-type", None, NEW("--method", "dm2", "--option", "n_neighbors=2.5"), "n_neighbors"),
    ("new-features-needed-absent", None, NEW("--method", "probcover", "--option", "source=features"),
     "features"),
    ("new-recipe-option-type", None, NEW("--method", "dm2-at", "--recipe-option", "regenerate=1"),
     "regenerate"),
    ("new-pool-larger-than-dataset", None, NEW("--pool-size", "5000"), "pool_size"),
    ("new-two-methods-one-bad", None, NEW("--method", "random,dm2", "--option", "dm2.candidates=0"),
     "candidates"),
    # --- damaged run directories, given to report or met on resume
    ("report-empty-rounds", _write("out/rounds.jsonl", ""), ["report", "{T}/out", "--plot", "{T}/p.png"],
     "no completed rounds"),
    ("report-missing-key", _edit_rounds(lambda rs: [{k: v for k, v in r.items() if k != "test_acc"}
                                                    for r in rs]),
     ["report", "{T}/out", "--plot", "{T}/p.png"], "test_acc"),
    ("report-json-list-line", _edit_rounds(lambda rs: [[1, 2], *rs]), ["report", "{T}/out", "--plot",
                                                                        "{T}/p.png"], "line 1"),
    ("report-duplicate-round", _edit_rounds(lambda rs: rs + rs), ["report", "{T}/out", "--plot", "{T}/p.png"],
     "more than once"),
    ("report-acc-out-of-range", _edit_rounds(lambda rs: [_set(r, test_acc=7.5) for r in rs]),
     ["report", "{T}/out", "--plot", "{T}/p.png"], "test_acc"),
    ("resume-duplicate-round", _edit_rounds(lambda rs: rs[:1] + rs[:1]), R(), "more than once"),
    ("resume-skipped-round", _edit_rounds(lambda rs: [_set(rs[0], round=1)]), R(), "instead of 0..0"),
    ("resume-index-out-of-range", _edit_rounds(lambda rs: [_set(rs[0], selected=[5000, 1, 2, 3, 4])]), R(),
     "outside the pool"),
    ("resume-index-repeated", _edit_rounds(lambda rs: [_set(rs[0], selected=[1, 1, 2, 3, 4])]), R(), "twice"),
    ("resume-wrong-count", _edit_rounds(lambda rs: [_set(rs[0], selected=[1, 2])]), R(), "expected 5"),
    ("resume-index-not-int", _edit_rounds(lambda rs: [_set(rs[0], selected=["a", 1, 2, 3, 4])]), R(),
     "pool index"),
    ("resume-wrong-n-labeled", _edit_rounds(lambda rs: [_set(rs[0], n_labeled=99)]), R(), "labeled"),
    ("resume-missing-selected",
     _edit_rounds(lambda rs: [{k: v for k, v in rs[0].items() if k != "selected"}]), R(), "selected"),
    # --- issue 16, section 2
    ("method-listed-twice", None, R("--method", "entropy,entropy"), "listed twice"),
    ("config-method-listed-twice", _write("c.yaml", "method: [random, entropy, random]\n"), CFG("--method"),
     "listed twice"),
    ("report-plot-unknown-suffix", None, ["report", "{T}/out", "--plot", "{T}/curves.xyz"], ".png, .pdf"),
    ("report-plot-no-suffix", None, ["report", "{T}/out", "--plot", "{T}/curves"], ".png, .pdf"),
    ("data-corrupt-gz-stream", _bad_gz_stream, R("--dataset", "mnist", "--data-root", "{T}/data"), "damaged"),
    ("resume-garbage-last-line", _append_rounds(b"not json at all\n"), R(), "line 3 is corrupt"),
    ("resume-garbage-json-last-line", _append_rounds(b'{"seed": 0, "round": 2,\n'), R(), "line 3 is corrupt"),
    ("report-garbage-last-line", _append_rounds(b"\x00\x00garbage\n"),
     ["report", "{T}/out", "--plot", "{T}/p.png"], "line 3 is corrupt"),
    # --- issue 16, section 3: one entry per class of bad input met by the second hostile pass
    # presets and empty values
    ("config-preset-list", _write("c.yaml", "preset: [dm2-paper]\n"), CFG(), "unknown preset"),
    ("config-preset-map", _write("c.yaml", "preset: {dm2-paper: 1}\n"), CFG(), "unknown preset"),
    ("preset-empty", None, R("--preset", ""), "--preset expects a value"),
    ("corruptions-empty", None, R("--test-corruptions", ""), "--test-corruptions expects a value"),
    ("corruptions-only-commas", None, R("--test-corruptions", ","), "no empty entry"),
    ("corruptions-hole", None, R("--test-corruptions", "fog:1,,fog:2"), "no empty entry"),
    ("config-path-empty", None, ["run", "", *BASE], "config expects a value"),
    ("report-plot-empty", None, ["report", "{T}/out", "--plot", " "], "--plot expects a value"),
    ("dataset-blank", None, R("--dataset", "  "), "--dataset expects a value"),
    # settings that act only through another one
    ("open-set-source-without-fraction", None, R("--open-set-source", "photos"), "needs an open-set pool"),
    ("open-set-oracle-without-fraction", None, R("--open-set-oracle", "random-label"),
     "needs an open-set pool"),
    ("config-open-set-oracle-without-fraction", _write("c.yaml", "open_set_oracle: random-label\n"), CFG(),
     "needs an open-set pool"),
    ("config-open-set-oracle-default-without-fraction", _write("c.yaml", "open_set_oracle: discard\n"), CFG(),
     "open_set_oracle 'discard' needs an open-set pool"),
    ("config-open-set-source-without-fraction", _write("c.yaml", "open_set_source: photos\n"), CFG(),
     "open_set_source 'photos' needs an open-set pool"),
    ("pgd-steps-without-epsilon", None, R("--pgd-steps", "3"), "needs attack_epsilon"),
    ("robust-rounds-without-robustness", None, R("--robust-rounds", "final"), "needs test_corruptions"),
    ("robust-rounds-unknown", None, R("--robust-rounds", "last", "--test-corruptions", "fog:1"),
     "robust_rounds must be one of every, final, got 'last'"),
    ("robust-rounds-changed-on-resume", None, RB("--robust-rounds", "final"), "robust_rounds"),
    # contradictions between a method's name and other flags
    ("ssl-method-recipe-contradiction", None, R("--method", "fixmatch:random", "--recipe", "supervised"),
     "trains with 'fixmatch'"),
    ("ssl-fa-option-contradiction", None, R("--method", "fixmatch+fa:random", "--recipe-option", "fa=false"),
     "by its name"),
    ("config-ssl-recipe-contradiction", _write("c.yaml", "method: freematch:margin\nrecipe: adversarial\n"),
     CFG("--method"), "trains with 'freematch'"),
    # what cannot be served
    ("open-set-fraction-near-one", None, R("--open-set-fraction", "0.999"), "open_set_fraction"),
    ("imbalance-empties-classes", None, R("--imbalance-ratio", "1e9"), "empties the tail classes"),
    ("open-set-initial-beyond-in-distribution", None,
     NEW("--open-set-fraction", "0.5", "--initial-size", "1500"), "1497 in-distribution pool samples"),
    ("imbalance-just-too-large", None, R("--imbalance-ratio", "200"), "at most"),
    ("ssl-unlabeled-pool-runs-out", None,
     NEW("--method", "fixmatch:random", "--pool-size", "20", "--rounds", "2"), "leaves none"),
    ("features-beyond-float32", _npy("f.npy", np.full((N_DIGITS, 4), 1e300)),
     R("--method", "coreset", "--option", "source=features", "--features", "{T}/f.npy"), "float32"),
    ("features-model-beyond-float32", _npy("f.npy", np.full((N_DIGITS, 4), 1e300)),
     NEW("--model", "features", "--features", "{T}/f.npy"), "float32"),
    # sizes whose memory no machine holds: refused from the estimate, before anything is allocated
    ("lplgrad-hidden-huge", None, NEW("--method", "lplgrad", "--recipe-option", "hidden=1000000000"),
     "(hidden)"),
    ("fa-queue-huge", None, NEW("--method", "fixmatch+fa:random", "--recipe-option", "fa_queue=1000000000"),
     "(fa_queue)"),
    ("ssl-mu-huge", None, NEW("--method", "fixmatch:random", "--recipe-option", "mu=1000000000"), "mu)"),
    # damaged round records: every field type- and range-checked, in report and on resume
    ("report-robust-word", _rob(corrupt_acc_mean="abc"), REP(), "corrupt_acc_mean"),
    ("report-robust-list", _rob(fgsm_acc=[0.5]), REP(), "fgsm_acc"),
    ("report-robust-null", _edit_rounds(lambda rs: [r | {"pgd_acc": None} for r in rs], "rob"), REP(),
     "pgd_acc"),
    ("report-robust-bool", _rob(fgsm_acc=True), REP(), "fgsm_acc"),
    ("report-robust-nan", _rob(fgsm_acc=float("nan")), REP(), "fgsm_acc"),
    ("report-robust-minus-inf", _rob(corrupt_acc_mean=float("-inf")), REP(), "corrupt_acc_mean"),
    ("report-robust-above-one", _rob(fgsm_acc=7.5), REP(), "accuracy in [0, 1]"),
    ("report-corrupt-acc-not-mapping", _rob(corrupt_acc=[0.5]), REP(), "corrupt_acc"),
    ("report-column-missing-in-one-round", _rob_first(fgsm_acc=None), REP(), "lacks 'fgsm_acc'"),
    ("report-train-s-missing", _rob(train_s=None), REP(), "train_s"),
    ("report-query-s-word", _rob(query_s="fast"), REP(), "query_s"),
    ("report-ood-count-word", _rob(n_ood_labeled="3"), REP(), "n_ood_labeled"),
    ("report-ood-count-negative", _rob(n_ood_labeled=-2), REP(), "n_ood_labeled"),
    ("report-ood-selected-beyond-picks", _rob_first(n_ood_selected=999), REP(), "more than its selected"),
    ("report-epsilon-word", _rob(attack_epsilon="big"), REP(), "attack_epsilon"),
    ("resume-robust-word", _rob(corrupt_acc_mean="abc"), RB(), "corrupt_acc_mean"),
    ("resume-robust-nan", _rob_first(fgsm_acc=float("nan")), RB(), "fgsm_acc"),
    ("resume-train-s-missing", _rob(train_s=None), RB(), "train_s"),
    ("resume-query-s-word", _rob(query_s="1"), RB(), "query_s"),
    ("resume-ood-selected-beyond-picks", _rob_first(n_ood_selected=999), RB(), "more than its selected"),
    ("resume-ood-count-disagrees", _rob_first(n_ood_selected=0, n_ood_labeled=3), RB(), "give"),
    ("resume-robust-column-absent", _rob(fgsm_acc=None, pgd_acc=None), RB(), "lacks 'fgsm_acc'"),
    ("resume-too-many-rounds", _edit_rounds(lambda rs: rs + [_set(rs[-1], round=2, selected=[])]), R(),
     "more than"),
    # --- executors (issue 14): refused before Ray starts or anything is written
    ("score-workers-zero", None, NEW("--executor", "ray", "--score-workers", "0"),
     "score-workers must be a positive integer, got 0"),
    ("cpus-per-run-zero", None, NEW("--executor", "ray", "--cpus-per-run", "0"),
     "cpus-per-run must be a positive integer, got 0"),
    ("score-workers-without-ray", None, NEW("--score-workers", "2"), "score-workers needs the Ray executor"),
    ("address-without-ray", None, NEW("--address", "auto"), "address needs the Ray executor"),
    ("executor-unknown", _write("c.yaml", "executor: dask\n"), CFG(), "executor must be one of local, ray"),
    ("executor-field-unknown", _write("c.yaml", "executor: {name: ray, workers: 2}\n"), CFG(),
     "unknown field executor.workers"),
    ("ray-address-malformed", None, NEW("--executor", "ray", "--address", "headnode"), "HOST:PORT"),
    ("ray-address-unreachable", None, NEW("--executor", "ray", "--address", "127.0.0.1:9"),
     "cannot reach the Ray cluster at 127.0.0.1:9"),
]


@pytest.fixture(scope="session")
def completed(tmp_path_factory, digits) -> Path:
    """A finished digits run (the one BASE describes) to copy into each test."""
    run_dir = tmp_path_factory.mktemp("completed") / "out"
    cfg = ExperimentConfig(dataset="digits", method="random", initial_size=10, budget=5, rounds=1, seeds=(0,),
                           train=TrainConfig(epochs=1, batch_size=32, min_steps=2), device="cpu")
    run_experiment(cfg, run_dir, splits=digits, progress=False)
    return run_dir


@pytest.fixture(scope="session")
def completed_robust(tmp_path_factory) -> Path:
    """A finished robust, open-set digits run (the one :func:`RB` describes) to copy into each test."""
    root = tmp_path_factory.mktemp("completed_robust")
    assert main([a.replace("{T}", str(root)) for a in RB()]) == 0
    return root / "rob"


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for directories)."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def test_the_corpus_is_large_and_distinct():
    ids = [c[0] for c in CORPUS]
    assert len(ids) == len(set(ids)) and len(ids) >= 60
    inputs = [(c[1], tuple(c[2])) for c in CORPUS]
    assert len({repr(i) for i in inputs}) == len(inputs)


@pytest.mark.parametrize(("setup", "argv", "expected"), [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_bad_input(capsys, tmp_path, completed, completed_robust, setup, argv, expected):
    shutil.copytree(completed, tmp_path / "out")
    shutil.copytree(completed_robust, tmp_path / "rob")
    if setup is not None:
        setup(tmp_path)
    before = snapshot(tmp_path)
    try:
        rc = main([a.replace("{T}", str(tmp_path)) for a in argv])
    except SystemExit as exc:  # argparse --help and the like; a usage error must return, not exit
        rc = exc.code
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2, f"exit code {rc}; stderr: {err[-2000:]}"
    assert "Traceback" not in err + out
    assert len(lines) == 1, f"expected one line on stderr, got {err[:2000]!r}"
    assert lines[0].startswith("dalkit: error: ") and len(lines[0]) <= 500
    assert expected in lines[0]
    assert snapshot(tmp_path) == before, "a bad input changed files on disk"


def test_method_default_subset_smaller_than_the_budget(capsys, tmp_path, completed, monkeypatch):
    """A method's own candidate subset (not the config's, which the config checks) below the budget is
    refused before anything is written, not left to fail in round 0."""
    from dalkit.experiment.methods import METHODS, MethodSpec
    monkeypatch.setitem(METHODS, "tiny-subset", MethodSpec("random", subset=3))
    shutil.copytree(completed, tmp_path / "out")
    before = snapshot(tmp_path)
    rc = main([a.replace("{T}", str(tmp_path)) for a in NEW("--method", "tiny-subset")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "candidate subset of 3, smaller than the budget 5" in lines[0]
    assert snapshot(tmp_path) == before


def test_ray_executor_without_ray_installed(capsys, tmp_path, completed, monkeypatch):
    """``--executor ray`` where ``import ray`` fails: one line naming the extra to install, exit 2,
    nothing written."""
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    shutil.copytree(completed, tmp_path / "out")
    before = snapshot(tmp_path)
    rc = main([a.replace("{T}", str(tmp_path)) for a in NEW("--executor", "ray")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(lines) == 1
    assert lines[0] == ("dalkit: error: the Ray executor needs Ray, which is not installed; "
                        "pip install 'dalkit[ray]'")
    assert snapshot(tmp_path) == before
