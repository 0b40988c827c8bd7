"""Bad input to every command, as a new user types it: one message naming what is wrong, a non-zero
exit (2 for usage errors), no traceback, and nothing written.

Each row runs ``rolora.cli.main(argv)`` in-process, in an empty working folder that holds one
regular file (``{file}``, for paths that run into a file); ``{tmp}`` is that folder. The folder's
contents are compared before and after: a refused command leaves them as they were.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from rolora.cli import main

TINY = ["model.max_length=24", "data.test_size=8", "data.max_train_samples=16", "run.eval_batch_size=8",
        "federated.clients=2", "federated.rounds=1", "train.local_steps=1", "train.batch_size=4", "lora.rank=2"]
"""A run of seconds on the shipped tiny-roberta config."""
TOY = ["--split", "10x1", "--methods", "rolora", "--rounds", "1", "--subsample", "0.01", "--no-progress"]

CASES = {  # id -> (argv, exit code, words the message must hold)
    # --out (and other written paths) that cannot be written: a message, before any work starts
    "theory out in /proc": (["theory", "--quick", "--out", "/proc/nope"], 2, ["--out", "/proc"]),
    "theory out under a file": (["theory", "--quick", "--out", "{file}/figs"], 2, ["--out", "is a file"]),
    "theory out is a file": (["theory", "--quick", "--out", "{file}"], 2, ["--out", "is a file"]),
    "toy out under a file": (["toy", *TOY, "--out", "{file}/toy"], 2, ["--out", "is a file"]),
    "toy out in /proc": (["toy", *TOY, "--out", "/proc/nope"], 2, ["--out", "/proc"]),
    "llm run out under a file": (["llm", "run", "--config", "tiny-roberta", *TINY, "--out", "{file}/run"], 2,
                                 ["--out", "is a file"]),
    "llm run out in /proc": (["llm", "run", "--config", "tiny-roberta", *TINY, "--out", "/proc/nope"], 2,
                             ["--out", "/proc"]),
    "sweep out under a file": (["sweep", "clients", "--out", "{file}/sweep"], 2, ["--out", "is a file"]),
    "report out under a file": (["report", "--from-csv", "--data", "{tmp}", "--out", "{file}/r.md"], 2,
                                ["--out", "is a file"]),
    "report out in /proc": (["report", "--from-csv", "--data", "{tmp}", "--out", "/proc/r.md"], 2, ["--out", "/proc"]),
    "report out is a folder": (["report", "--from-csv", "--data", "{tmp}", "--out", "{tmp}"], 2,
                               ["--out", "is a folder"]),
    "report out without .md": (["report", "--from-csv", "--out", "{tmp}/report"], 2, ["--out", ".md"]),
    "bench aggregate json under a file": (["bench", "aggregate", "--quick", "--json", "{file}/rows.json"], 2,
                                          ["--json", "is a file"]),
    "bench llm json is a folder": (["bench", "llm", "--quick", "--rows", "", "--sweep", "", "--json", "{tmp}"], 2,
                                   ["--json", "is a folder"]),
    "bench flower work under a file": (["bench", "flower", "--part", "bytes", "--work", "{file}/w"], 2,
                                       ["--work", "is a file"]),
    "bench kernels out under a file": (["bench", "kernels", "--quick", "--out", "{file}/k"], 2,
                                       ["--out", "is a file"]),
    # methods: every one checked before anything trains
    "toy galore on a LoRA method": (["toy", "--methods", "rolora:optimizer=galore", "--out", "{tmp}/toy"], 2,
                                    ["galore", "rolora"]),
    "toy galore on the default methods": (["toy", "--optimizer", "galore", "--out", "{tmp}/toy"], 2, ["galore"]),
    "toy empty methods": (["toy", "--methods", "", "--out", "{tmp}/toy"], 2, ["--methods"]),
    "llm unknown method": (["llm", "run", "--config", "tiny-roberta", *TINY, "federated.method=nope", "--quiet"], 2,
                           ["unknown method 'nope'"]),
    "llm unknown second method": (["llm", "run", "--config", "tiny-roberta", *TINY, "--methods", "rolora,nope",
                                   "--out", "{tmp}/runs", "--quiet"], 2, ["--methods nope", "unknown method"]),
    "llm bad method parameter": (["llm", "run", "--config", "tiny-roberta", *TINY, "--methods", "rolora,rolora:period=x",
                                  "--out", "{tmp}/runs", "--quiet"], 2, ["rolora:period=x", "period"]),
    "llm method twice": (["llm", "run", "--config", "tiny-roberta", *TINY, "--methods", "rolora,rolora",
                          "--out", "{tmp}/runs", "--quiet"], 2, ["rolora", "more than once"]),
    "llm no method": (["llm", "run", "--config", "tiny-roberta", *TINY, "--methods", ",", "--quiet"], 2,
                      ["--methods", "no method"]),
    # settings anywhere on the line; bad settings and configs
    "llm settings on both sides of an option": (["llm", "run", "--config", "tiny-roberta", "train.lr=1e-3", "--quiet",
                                                 "train.local_steps=abc"], 2, ["train.local_steps", "expected int"]),
    "llm missing config file": (["llm", "run", "--config", "{tmp}/missing.toml"], 2, ["missing.toml", "no such file"]),
    "llm unknown config name": (["llm", "run", "--config", "no-such-config"], 2, ["no-such-config", "tiny-roberta"]),
    "llm unknown key": (["llm", "run", "--config", "tiny-roberta", "train.nope=1"], 2, ["train.nope", "unknown key"]),
    "llm unknown section": (["llm", "run", "--config", "tiny-roberta", "nope.key=1"], 2, ["[nope]"]),
    "llm setting without a value": (["llm", "run", "--config", "tiny-roberta", "train.lr"], 2, ["section.key=value"]),
    "llm zero rounds": (["llm", "run", "--config", "tiny-roberta", "federated.rounds=0"], 2, ["federated.rounds"]),
    "llm negative lr": (["llm", "run", "--config", "tiny-roberta", "train.lr=-1"], 2, ["train.lr"]),
    "llm missing dataset file": (["llm", "run", "--config", "tiny-roberta", *TINY, "data.dataset=missing.csv",
                                  "--quiet", "--out", "{tmp}/run"], 2, ["data.dataset", "missing.csv"]),
    "llm unknown model": (["llm", "run", "--config", "tiny-roberta", *TINY, "model.name=no-such-model",
                           "--quiet", "--out", "{tmp}/run"], 2, ["no-such-model"]),
    "llm run without config": (["llm", "run"], 2, ["--config"]),
    "llm resume of a folder that is not a run": (["llm", "run", "--resume", "{tmp}"], 2, ["not a run folder"]),
    "llm resume of a file": (["llm", "run", "--resume", "{file}"], 2, ["not a run folder"]),
    "llm export of a missing run": (["llm", "export", "{tmp}/missing", "--out", "{tmp}/peft"], 2, ["not a run folder"]),
    # the other commands
    "sweep missing spec": (["sweep", "{tmp}/missing.toml"], 2, ["missing.toml", "no such file"]),
    "sweep zero jobs": (["sweep", "clients", "--jobs", "0"], 2, ["--jobs"]),
    "sweep only matching no cell": (["sweep", "clients", "--only", "zzz", "--out", "{tmp}/sweep"], 2, ["--only", "zzz"]),
    "sweep missing recorded folder": (["sweep", "clients", "--recorded", "{tmp}/missing", "--dry-run"], 2,
                                      ["--recorded"]),
    "report missing data folder": (["report", "--from-csv", "--data", "{tmp}/missing", "--out", "{tmp}/r.md"], 2,
                                   ["--from-csv", "missing"]),
    "report missing sweeps folder": (["report", "--sweeps", "{tmp}/missing", "--out", "{tmp}/r.md"], 2,
                                     ["--sweeps", "no such folder"]),
    "report missing theory folder": (["report", "--theory-dir", "{tmp}/missing", "--out", "{tmp}/r.md"], 2,
                                     ["--theory-dir", "no such folder"]),
    "report missing toy csv": (["report", "--from-csv", "--data", "{tmp}", "--toy-csv", "{tmp}/missing.csv",
                                "--out", "{tmp}/r.md"], 2, ["--toy-csv", "no such file"]),
    "report drop-absent without sweeps": (["report", "--drop-absent", "--out", "{tmp}/r.md"], 2, ["--drop-absent"]),
    "report drop-absent with from-csv": (["report", "--drop-absent", "--from-csv", "--data", "{tmp}",
                                          "--out", "{tmp}/r.md"], 2, ["--drop-absent", "--from-csv"]),
    "theory negative seed": (["theory", "--quick", "--seed", "-1", "--out", "{tmp}/theory"], 2, ["--seed"]),
    "toy nonsense split": (["toy", "--split", "nonsense"], 2, ["--split", "nonsense"]),
    "toy zero rounds": (["toy", "--rounds", "0"], 2, ["--rounds"]),
    "toy negative lr": (["toy", "--lr", "-1"], 2, ["--lr"]),
    "toy infinite lr": (["toy", "--lr", "inf"], 2, ["--lr", "finite"]),
    "toy diverging run": (["toy", "--split", "10x1", "--methods", "rolora", "--rounds", "2", "--subsample", "0.01",
                           "--lr", "1e30", "--no-progress", "--out", "{tmp}/toy"], 1, ["diverged", "--lr"]),
    "bench aggregate bad device": (["bench", "aggregate", "--quick", "--device", "nonsense"], 2, ["--device"]),
    "bench llm unknown row": (["bench", "llm", "--quick", "--rows", "nope"], 2, ["--rows", "nope"]),
    "bench llm bad setting": (["bench", "llm", "--quick", "--rows", "ours-fast", "--sweep", "", "--set", "train.lr=abc"],
                              2, ["--set", "train.lr", "abc"]),
    "bench llm unknown setting": (["bench", "llm", "--quick", "--rows", "peft-fp32", "--sweep", "", "--set",
                                   "train.nope=1"], 2, ["--set", "train.nope"]),
    "bench llm bad client counts": (["bench", "llm", "--quick", "--rows", "", "--sweep", "a"], 2, ["--sweep"]),
    "bench llm zero steps": (["bench", "llm", "--quick", "--rows", "", "--sweep", "", "--steps", "0"], 2,
                             ["--steps"]),
    "bench eval missing config": (["bench", "eval", "--config", "{tmp}/missing.toml"], 2, ["missing.toml"]),
    "bench eval bad setting": (["bench", "eval", "--config", "tiny-llama", "--set", "train.nope=1"], 2, ["train.nope"]),
    "bench eval zero prompts": (["bench", "eval", "--prompts", "0"], 2, ["--prompts"]),
    "bench flower bad setting": (["bench", "flower", "--part", "engines", "--set", "train.nope=1"], 2,
                                 ["--set", "train.nope"]),
    "bench memory negative rank": (["bench", "memory", "--lora-rank", "-1"], 2, ["ranks"]),
    "bench compile zero repeats": (["bench", "compile", "--repeats", "0"], 2, ["--repeats"]),
    "bench compile missing model": (["bench", "compile", "--model", "{tmp}/missing"], 2, ["missing"]),
    "bench compile bad dtype": (["bench", "compile", "--model", "tiny-roberta", "--dtype", "f8"], 2, ["model.dtype"]),
    "llm run bad server optimiser": (["llm", "run", "--config", "tiny-roberta", "--out", "{tmp}/r",
                                      "--server-opt", "fedadamw"], 2, ["federated.server_opt", "fedadamw"]),
    "llm run refused addition": (["llm", "run", "--config", "tiny-roberta", "--out", "{tmp}/r",
                                  "train.scaffold=true", "federated.method=fedsa-lora"], 2, ["SCAFFOLD", "fedsa-lora"]),
    "llm run bad dp delta": (["llm", "run", "--config", "tiny-roberta", "--out", "{tmp}/r", "train.dp_delta=2"], 2,
                             ["train.dp_delta"]),
}


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """(exit code, stderr) of ``rolora argv``; usage errors exit through argparse's SystemExit."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def contents(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty working folder holding one regular file, ``file``."""
    (tmp_path / "file").write_text("a regular file\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("argv,code,words", CASES.values(), ids=CASES.keys())
def test_bad_input_is_one_message_and_changes_nothing(argv, code, words, workdir, capsys):
    argv = [a.replace("{tmp}", str(workdir)).replace("{file}", str(workdir / "file")) for a in argv]
    before = contents(workdir)
    got, err = run_cli(argv, capsys)
    assert got == code, err
    assert "Traceback" not in err
    for word in words:
        assert word in err, f"{word!r} not in: {err}"
    assert contents(workdir) == before


@pytest.mark.parametrize("cause", ["nan loss", "huge lr"])
def test_a_run_whose_every_client_fails_says_how_to_resume(cause, workdir, monkeypatch, capsys):
    """Every loss NaN (forced, or after a step of lr 1e30): the run stops with its checkpoint kept;
    the CLI says why and how to resume, exit 1."""
    import torch

    import rolora.llm.local_training as lt

    settings = [*TINY, "train.client_batching=off"]
    if cause == "nan loss":
        monkeypatch.setattr(lt, "loss", lambda model, tensors, task: torch.full((1,), float("nan"), requires_grad=True))
    else:
        settings += ["train.lr=1e30", "federated.rounds=2"]
    out = workdir / "dead"
    code, err = run_cli(["llm", "run", "--config", "tiny-roberta", *settings, "--quiet", "--out", str(out)], capsys)
    assert code == 1
    assert "Traceback" not in err
    assert "the run stopped" in err and f"rolora llm run --resume {out}" in err
    assert (out / "checkpoints").is_dir()


def test_secagg_refuses_every_method_it_cannot_run_before_the_first_run(workdir, monkeypatch, capsys):
    """ROLORA_FLOWER_SECAGG=1 with rolora (summable) then fedex-lora (not): refused before rolora runs."""
    simulation = importlib.import_module("rolora.flower.simulation")

    def no_run(*args, **kwargs):
        raise AssertionError("a run started before every method was checked")

    monkeypatch.setattr(simulation, "run", no_run)
    monkeypatch.setenv("ROLORA_FLOWER_SECAGG", "1")
    code, err = run_cli(["llm", "run", "--config", "tiny-roberta", *TINY, "--engine", "flower", "--methods",
                         "rolora,fedex-lora", "--out", str(workdir / "runs"), "--quiet"], capsys)
    assert code == 2
    assert "fedex-lora" in err and "SecAgg+" in err and "Traceback" not in err
    assert not (workdir / "runs").exists()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One finished tiny run (one round, two clients)."""
    from rolora.llm.config import load_config
    from rolora.llm.engine import run

    out = tmp_path_factory.mktemp("run") / "run"
    run(load_config("tiny-roberta", TINY), out, quiet=True)
    return out


@pytest.mark.parametrize("argv,words", [
    (["llm", "export", "{run}", "--out", "{tmp}"], ["--out", "exists", "--overwrite"]),
    (["llm", "export", "{run}", "--out", "{file}"], ["--out", "is a file"]),
    (["llm", "export", "{run}", "--out", "{file}/peft"], ["--out", "is a file"]),
    (["llm", "run", "--resume", "{run}", "--out", "{tmp}/other"], ["--out", "--resume"]),
    (["llm", "run", "--resume", "{run}", "--methods", "rolora"], ["--methods", "--resume"]),
    (["llm", "run", "--config", "tiny-roberta", *TINY, "--out", "{run}"], ["already holds a run", "--resume"]),
], ids=["export to an existing folder", "export to a file", "export under a file", "resume with --out",
        "resume with --methods", "a new run into a run folder"])
def test_bad_input_about_a_finished_run(argv, words, tiny_run, workdir, capsys):
    argv = [a.replace("{run}", str(tiny_run)).replace("{tmp}", str(workdir)).replace("{file}", str(workdir / "file"))
            for a in argv]
    before, run_before = contents(workdir), contents(tiny_run)
    code, err = run_cli(argv, capsys)
    assert code == 2, err
    assert "Traceback" not in err
    for word in words:
        assert word in err, f"{word!r} not in: {err}"
    assert contents(workdir) == before and contents(tiny_run) == run_before


def test_resume_with_changed_settings_names_only_those_keys(tiny_run, capsys):
    """Settings on both sides of an option are all read; resuming refuses them, naming just them."""
    code, err = run_cli(["llm", "run", "--resume", str(tiny_run), "train.lr=5", "--quiet", "federated.rounds=3"], capsys)
    assert code == 2
    assert "differing keys: federated.rounds, train.lr" in err and "model.name" not in err


@pytest.mark.parametrize("raised,code,words", [
    (KeyboardInterrupt(), 130, ["rolora theory: interrupted"]),
    (OSError(28, "No space left on device"), 1, ["rolora theory: error:", "No space left on device"]),
], ids=["ctrl-c", "file system error"])
def test_an_interrupted_or_failing_command_ends_with_one_line(raised, code, words, monkeypatch, capsys):
    """The last net under every command: Ctrl-C and a failing file system are a line, not a traceback."""
    import rolora.theory.cli as theory_cli

    def fail(argv):
        raise raised

    monkeypatch.setattr(theory_cli, "main", fail)
    got, err = run_cli(["theory"], capsys)
    assert got == code
    for word in words:
        assert word in err
