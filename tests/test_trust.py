"""Run directories that cannot be corrupted, and one class of bad input per test: the lock, replay
checks, config/summary consistency, atomic writes, output errors, interrupts, message length, and the
option-type check every registered strategy and recipe gets."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import runpy
import sys
import typing
from pathlib import Path

import pytest

from dalkit.checks import short
from dalkit.cli import main
from dalkit.errors import ConfigError, OutputError, RunDirectoryError
from dalkit.experiment import ExperimentConfig, RunDirectory, run_experiment
from dalkit.experiment.rundir import check_records
from dalkit.files import atomic_write_bytes
from dalkit.report import summarize
from dalkit.report.plots import plot_learning_curves
from dalkit.strategies import STRATEGIES, create_strategy
from dalkit.training import TrainConfig
from dalkit.training.recipes import RECIPES, create_recipe

ARGS = ["run", "--dataset", "digits", "--method", "random", "--initial-size", "10", "--budget", "5",
        "--rounds", "1", "--epochs", "1", "--batch-size", "32", "--min-steps", "2", "--device", "cpu",
        "--quiet"]
_SRC = Path(__file__).parents[1] / "src"  # child processes import this checkout's dalkit


def _config(seeds=(0,), rounds=1) -> ExperimentConfig:
    return ExperimentConfig(dataset="digits", method="random", initial_size=10, budget=5, rounds=rounds,
                            seeds=seeds, train=TrainConfig(epochs=1, batch_size=32, min_steps=2),
                            device="cpu")


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------ the lock


def test_a_second_run_into_a_locked_directory_is_refused(capsys, tmp_path, digits):
    out = tmp_path / "out"
    run_experiment(_config(), out, splits=digits, progress=False)
    before = _files(out)
    with RunDirectory(out).locked():  # another run holds the directory
        rc = main([*ARGS, "--seeds", "0,1", "--out", str(out)])
        assert rc == 2
        assert "in use by another dalkit run" in _one_error_line(capsys)
        with pytest.raises(RunDirectoryError, match="in use"):
            run_experiment(_config(seeds=(0, 1)), out, splits=digits, progress=False)
    assert _files(out) == before
    # released: the same command now runs
    assert main([*ARGS, "--seeds", "0,1", "--out", str(out)]) == 0
    recs = RunDirectory(out).read_rounds()
    assert sorted((r["seed"], r["round"]) for r in recs) == [(0, 0), (0, 1), (1, 0), (1, 1)]


# ------------------------------------------------------------------------------------- replay checks


def _rec(seed, rnd, selected=(), n=10):
    return {"seed": seed, "round": rnd, "n_labeled": n, "test_acc": 0.5, "selected": list(selected),
            "train_s": 0.0, "query_s": 0.0}


@pytest.mark.parametrize(("records", "message"), [
    ([_rec(0, 0), _rec(0, 0)], "round 0 more than once"),
    ([_rec(0, 1)], "instead of 0..0"),
    ([_rec(0, 0), _rec(0, 2)], "instead of 0..1"),
    ([_rec(0, 0), _rec(1, 0), _rec(1, 0)], "seed 1 has round 0 more than once"),
    ([{"seed": 0, "round": 0}], "n_labeled"),
    ([_rec(0, 0) | {"seed": True}], "seed"),
    ([_rec(0, 0) | {"test_acc": float("nan")}], "test_acc"),
    ([_rec(0, 0, selected=[1.5])], "pool index"),
    ([_rec(-1, 0)], "negative"),
    (["text"], "line 1"),
])
def test_check_records_refuses_what_cannot_be_replayed(records, message):
    with pytest.raises(RunDirectoryError, match=message):
        check_records(records, "rounds.jsonl")


def test_interleaved_seeds_in_order_are_accepted():
    check_records([_rec(0, 0), _rec(1, 0), _rec(1, 1), _rec(0, 1)], "rounds.jsonl")


# ------------------------------------------------------- config.yaml and summary.json agree with disk


def test_rerun_with_fewer_seeds_keeps_config_and_summary_consistent(tmp_path, digits):
    out = tmp_path / "out"
    run_experiment(_config(seeds=(0, 1)), out, splits=digits, progress=False)
    rounds_before = (out / "rounds.jsonl").read_bytes()
    run_experiment(_config(seeds=(1,)), out, splits=digits, progress=False)
    assert (out / "rounds.jsonl").read_bytes() == rounds_before
    rd = RunDirectory(out)
    on_disk = rd.read_rounds()
    assert sorted(rd.read_config().seeds) == sorted({r["seed"] for r in on_disk}) == [0, 1]
    summary = json.loads((out / "summary.json").read_text())
    expected = summarize(on_disk)
    assert summary["seeds"] == [0, 1]
    assert summary["rounds"] == expected["rounds"] and summary["aubc_mean"] == expected["aubc_mean"]
    # gaining a seed later still works and the config follows
    run_experiment(_config(seeds=(2,)), out, splits=digits, progress=False)
    assert sorted(rd.read_config().seeds) == [0, 1, 2]
    assert json.loads((out / "summary.json").read_text())["seeds"] == [0, 1, 2]


def test_nothing_is_created_when_a_check_fails(tmp_path, digits):
    with pytest.raises(ConfigError):
        run_experiment(_config().replace(device="cuda:7") if not _has_cuda() else
                       _config().replace(strategy_options={"bogus": 1}), tmp_path / "new", splits=digits)
    assert not (tmp_path / "new").exists()


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# ------------------------------------------------------------------------------------- atomic writes


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"old")

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OutputError, match="No space left"):
        atomic_write_bytes(path, b"new" * 1000)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_the_learning_curve_png_is_written_atomically(tmp_path, monkeypatch):
    summaries = {"a": summarize([_rec(0, 0) | {"train_s": 0, "query_s": 0},
                                 _rec(0, 1, n=20) | {"train_s": 0, "query_s": 0}])}
    png = tmp_path / "curves.png"
    png.write_bytes(b"previous")
    real_replace = os.replace
    calls = []

    def failing_replace(src, dst):
        calls.append((src, dst))
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OutputError):
        plot_learning_curves(summaries, png)
    assert png.read_bytes() == b"previous" and calls  # went through a rename, and failed cleanly
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]
    monkeypatch.setattr(os, "replace", real_replace)
    plot_learning_curves(summaries, png)
    assert png.read_bytes().startswith(b"\x89PNG")


def test_a_kill_at_the_summary_rename_leaves_a_temporary_that_resume_removes(tmp_path):
    """A real process SIGKILLed between writing summary.json's temporary and renaming it: the
    `.summary.json.*.tmp` it leaves is removed by the next run into the directory (which holds the lock),
    and the run completes."""
    import subprocess

    out = tmp_path / "out"
    child = ("import os, signal, sys\n"
             "real = os.replace\n"
             "def replace(src, dst):\n"
             "    if str(dst).endswith('summary.json'):\n"
             "        os.kill(os.getpid(), signal.SIGKILL)\n"
             "    return real(src, dst)\n"
             "os.replace = replace\n"
             "from dalkit.cli import main\n"
             "sys.exit(main(sys.argv[1:]))\n")
    env = {**os.environ, "PYTHONPATH": str(_SRC)}
    proc = subprocess.run([sys.executable, "-c", child, *ARGS, "--seeds", "0", "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    left = sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp"))
    assert len(left) == 1 and left[0].startswith(".summary.json."), sorted(p.name for p in out.iterdir())
    assert not (out / "summary.json").exists()
    rounds = (out / "rounds.jsonl").read_bytes()
    assert main([*ARGS, "--seeds", "0", "--out", str(out)]) == 0
    assert not [p for p in out.rglob("*.tmp")]
    assert (out / "rounds.jsonl").read_bytes() == rounds  # nothing redone
    assert json.loads((out / "summary.json").read_text())["seeds"] == [0]


_KILL_AT_RENAME = ("import os, signal, sys\n"
                   "real, target = os.replace, sys.argv.pop(1)\n"
                   "def replace(src, dst):\n"
                   "    if str(dst).endswith(target):\n"
                   "        os.kill(os.getpid(), signal.SIGKILL)\n"
                   "    return real(src, dst)\n"
                   "os.replace = replace\n"
                   "from dalkit.cli import main\n"
                   "sys.exit(main(sys.argv[1:]))\n")


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_kill_at_the_rename_of_a_report_output_leaves_a_temporary_the_next_write_removes(capsys, tmp_path,
                                                                                          digits):
    """Outputs outside a run directory (here `dalkit report --markdown/--plot`, written next to their
    target with no lock): a real process SIGKILLed at a rename leaves `.NAME.HOST.PID.*.tmp`; the next
    write of the same target removes it, so the next report leaves no temporary at all."""
    import subprocess

    run_experiment(_config(), tmp_path / "out", splits=digits, progress=False)
    md, png = tmp_path / "t.md", tmp_path / "p.png"
    report = ["report", str(tmp_path / "out"), "--markdown", str(md), "--plot", str(png)]
    env = {**os.environ, "PYTHONPATH": str(_SRC)}
    for kill_at, left in (("t.md", ".t.md."), ("p.png", ".p.png.")):  # the first write, then the second
        proc = subprocess.Popen([sys.executable, "-c", _KILL_AT_RENAME, kill_at, *report], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == -9, err[-2000:]
        # the second child's markdown write removed the first child's markdown temporary
        assert [t.startswith(left) and f".{proc.pid}." in t for t in _temporaries(tmp_path)] == [True]
    assert md.is_file() and not png.exists()
    capsys.readouterr()
    assert main(report) == 0
    assert _temporaries(tmp_path) == [] and png.read_bytes().startswith(b"\x89PNG")
    assert md.read_text() == capsys.readouterr().out  # the table


def _dead_pid() -> int:
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()  # reaped: the pid names no process now
    return proc.pid


def test_a_write_removes_only_the_dead_temporaries_of_its_own_target(tmp_path):
    """Stale: this target's temporary of a dead process of this host, and an ownerless (older dalkit)
    one older than an hour.  Kept: a live process's (a write in flight), another host's (its process
    cannot be checked), a fresh ownerless one, and every other target's."""
    from dalkit.files import owner_tag

    host, dead, live = owner_tag().rsplit(".", 1)[0], _dead_pid(), os.getppid()
    names = {"dead": f".f.bin.{host}.{dead}.abcd1234.tmp", "live": f".f.bin.{host}.{live}.abcd1234.tmp",
             "other-host": f".f.bin.elsewhere.{dead}.abcd1234.tmp", "old-ownerless": ".f.bin.x1y2z3w4.tmp",
             "fresh-ownerless": ".f.bin.q1w2e3r4.tmp", "other-target": f".g.bin.{host}.{dead}.abcd1234.tmp",
             "longer-target": f".f.bin.x.{host}.{dead}.abcd1234.tmp"}
    for name in names.values():
        (tmp_path / name).write_bytes(b"half")
    os.utime(tmp_path / names["old-ownerless"], (1, 1))
    atomic_write_bytes(tmp_path / "f.bin", b"new")
    kept = {k for k, n in names.items() if (tmp_path / n).exists()}
    assert kept == {"live", "other-host", "fresh-ownerless", "other-target", "longer-target"}
    assert (tmp_path / "f.bin").read_bytes() == b"new"
    assert _temporaries(tmp_path) == sorted(names[k] for k in kept)  # the write left none of its own


def test_a_killed_fetch_extraction_and_project_init_leave_folders_the_next_one_removes(tmp_path):
    """The two temporary folders dalkit makes outside a locked directory (a dataset archive's extraction,
    a labeling project under construction) carry their owner; the next fetch or init removes those of a
    dead process and keeps a live one's."""
    import io
    import tarfile

    from dalkit.data.fetch import _extract_tar_gz
    from dalkit.files import owner_tag

    host, dead, live = owner_tag().rsplit(".", 1)[0], _dead_pid(), os.getppid()
    dest = tmp_path / "data"
    for name in (f".fetch-{host}.{dead}.abcd1234", f".fetch-{host}.{live}.abcd1234"):
        (dest / name / "half").mkdir(parents=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("a.bin")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    _extract_tar_gz(buf.getvalue(), "https://x/", dest)
    assert sorted(p.name for p in dest.iterdir()) == [f".fetch-{host}.{live}.abcd1234", "a.bin"]

    from dalkit.label import Project

    images = tmp_path / "imgs"
    images.mkdir()
    from PIL import Image

    for i in range(4):
        Image.new("L", (8, 8), 40 * i).save(images / f"{i}.png")
    stale, live_dir = tmp_path / f".proj.init-{host}.{dead}", tmp_path / f".proj.init-{host}.{live}"
    for folder in (stale, live_dir):
        (folder / "cache-0.u8").parent.mkdir()
        (folder / "cache-0.u8").write_bytes(b"half")
    Project.create(tmp_path / "proj", images, ["a", "b"])
    assert not stale.exists() and live_dir.exists() and (tmp_path / "proj").is_dir()


def test_disk_full_during_a_run_is_one_line_and_resumable(capsys, tmp_path, digits, monkeypatch):
    from dalkit.experiment import rundir as rundir_module

    out = tmp_path / "out"

    def full(self, record):
        raise OSError(28, "No space left on device", str(self.rounds_path))

    monkeypatch.setattr(rundir_module.RunDirectory, "append_round", full)
    assert main([*ARGS, "--seeds", "0", "--out", str(out)]) == 2
    line = _one_error_line(capsys)
    assert "No space left on device" in line and "rounds.jsonl" in line
    monkeypatch.undo()
    assert main([*ARGS, "--seeds", "0", "--out", str(out)]) == 0
    assert len(RunDirectory(out).read_rounds()) == 2


# ------------------------------------------------------------------------------ interrupts, messages


def test_ctrl_c_during_start_up_is_one_line(capsys, monkeypatch):
    import dalkit.cli as cli

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert main(["strategies"]) == 130
    assert "interrupted" in _one_error_line(capsys)


def test_ctrl_c_while_importing_is_one_line(capsys, monkeypatch):
    class Interrupting:
        def find_spec(self, name, path=None, target=None):
            if name == "dalkit.cli":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "dalkit.cli")
    monkeypatch.setattr(sys, "meta_path", [Interrupting(), *sys.meta_path])
    with pytest.raises(SystemExit) as exc:
        runpy.run_module("dalkit.__main__", run_name="__main__")
    assert exc.value.code == 130
    assert "interrupted" in _one_error_line(capsys)


# the console script's own code (setuptools' entry point) and `python -m dalkit`, each preceded by a spy
# that touches a file the moment torch starts to import: the test's SIGINT then lands inside that import
_SPY = ("import pathlib, sys\n"
        "FLAG = pathlib.Path(sys.argv[1])\n"
        "class Spy:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch':\n"
        "            FLAG.touch()\n"
        "sys.meta_path.insert(0, Spy())\n"
        "argv = sys.argv[2:]\n")
_ENTRIES = {
    "console-script": "from dalkit.cli import main\nsys.exit(main(argv))\n",
    "python-m": ("import runpy\nsys.argv = ['dalkit', *argv]\n"
                 "runpy.run_module('dalkit', run_name='__main__')\n"),
}


@pytest.mark.parametrize("entry", sorted(_ENTRIES))
def test_sigint_while_torch_imports_in_a_real_process_is_one_line(tmp_path, entry):
    """A real process gets SIGINT while `import torch` runs (the first seconds of every command): one
    line on stderr, exit 130, nothing written."""
    import signal
    import subprocess
    import time

    flag, out = tmp_path / "importing-torch", tmp_path / "out"
    argv = [*ARGS, "--seeds", "0", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(_SRC)}
    proc = subprocess.Popen([sys.executable, "-c", _SPY + _ENTRIES[entry], str(flag), *argv], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not flag.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert flag.exists(), "the child never started to import torch"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, (proc.returncode, stderr[-3000:])
    assert "Traceback" not in stderr and stdout == ""
    assert stderr.strip().splitlines() == ["dalkit: interrupted; re-run the same command to resume"]
    assert not out.exists()


def test_long_messages_are_capped_to_one_short_line(capsys, monkeypatch):
    import dalkit.cli as cli

    def long_error(args):
        raise ConfigError("x" * 100_000 + "\nsecond line")

    monkeypatch.setattr(cli, "_cmd_strategies", long_error)
    assert main(["strategies"]) == 2
    assert len(_one_error_line(capsys)) <= 420


def test_short_bounds_huge_and_self_referencing_values():
    nested: list = []
    nested.append(nested)
    for value in ("y" * 10**6, list(range(10**6)), {i: [i] * 1000 for i in range(1000)}, nested):
        assert len(short(value)) <= 170


# ----------------------------------------------- option types: every registered strategy and recipe


def _bad_values(tp) -> list:
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, __import__("types").UnionType) \
        else (tp,)
    base = [a for a in args if a is not type(None)]
    if len(base) != 1:
        return []
    kind = base[0]
    return {int: [2.5, True, "3"], float: [True, "x", math.inf, math.nan], bool: [1, "yes"],
            str: [3, True]}.get(kind, [])


def _cases(registry):
    out = []
    for name in registry.names():
        cls = registry.get(name)
        if not dataclasses.is_dataclass(cls):
            continue
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            for bad in _bad_values(hints.get(f.name)):
                out.append(pytest.param(name, f.name, bad, id=f"{name}.{f.name}={bad!r}"))
    return out


@pytest.mark.parametrize(("name", "option", "bad"), _cases(STRATEGIES))
def test_every_strategy_option_refuses_the_wrong_type(name, option, bad):
    with pytest.raises(ConfigError, match=option):
        create_strategy(name, **{option: bad})


@pytest.mark.parametrize(("name", "option", "bad"), _cases(RECIPES))
def test_every_recipe_option_refuses_the_wrong_type(name, option, bad):
    with pytest.raises(ConfigError, match=option):
        create_recipe(name, **{option: bad})


@pytest.mark.parametrize(("field", "bad"), [(f.name, b) for f in dataclasses.fields(TrainConfig)
                                            for b in _bad_values(typing.get_type_hints(TrainConfig)[f.name])])
def test_every_train_field_refuses_the_wrong_type(field, bad):
    with pytest.raises(ConfigError, match=f"train.{field}"):
        TrainConfig(**{field: bad})
