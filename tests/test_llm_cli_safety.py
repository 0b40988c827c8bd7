"""``rolora llm`` never loses a user's files: a refused ``run --overwrite`` keeps the earlier run, a run
or an export is never written over files that are not its own, a checkpoint that cannot be resumed
from (or data changed since the run started) is bad input that names the file and touches nothing,
and a sub-command's bad option prints that sub-command's usage.

Every command runs in-process through ``rolora.cli.main`` on tiny runs of seconds; a finished run is
made once per module and copied where a test changes it.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from test_cli_errors import TINY, contents, run_cli

from rolora.federated.serial import save_kept
from rolora.llm.config import load_config
from rolora.llm.engine import run

CHECKPOINTS = ("round-000001", "round-000002")
"""The checkpoints a finished two-round run keeps (the latest two)."""


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished tiny run of two rounds: its checkpoints are CHECKPOINTS."""
    out = tmp_path_factory.mktemp("safety") / "run"
    run(load_config("tiny-roberta", [*TINY, "federated.rounds=2"]), out, quiet=True)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == list(CHECKPOINTS)
    return out


@pytest.fixture
def copied_run(finished_run, tmp_path):
    """A copy of the finished run, in a folder of its own (``tmp_path`` holds nothing else)."""
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


def _write_csv(path: Path, rows: list[tuple[str, str]], header=("text", "label")) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _examples(n: int = 48) -> list[tuple[str, str]]:
    return [(f"example number {i} is {'good' if i % 2 else 'bad'}", "pos" if i % 2 else "neg") for i in range(n)]


# 1. --overwrite: the earlier run survives a new run that is refused

@pytest.mark.parametrize("setting", ["data.dataset={tmp}/nolabel.csv", "model.name=no-such-model"],
                         ids=["data without the label column", "unknown model"])
def test_a_refused_overwrite_keeps_the_earlier_run(setting, copied_run, tmp_path, capsys):
    _write_csv(tmp_path / "nolabel.csv", _examples(), header=("text", "y"))
    before = contents(tmp_path)
    code, err = run_cli(["llm", "run", "--config", "tiny-roberta", *TINY, "--quiet", "--out", str(copied_run),
                         "--overwrite", setting.replace("{tmp}", str(tmp_path))], capsys)
    assert code == 2, err
    assert "Traceback" not in err
    assert contents(tmp_path) == before  # the run as it was, and nothing set aside left beside it


def test_an_overwrite_that_starts_replaces_the_earlier_run(copied_run, tmp_path, capsys):
    code, err = run_cli(["llm", "run", "--config", "tiny-roberta", *TINY, "--quiet", "--out", str(copied_run),
                         "--overwrite", "train.lr=2e-3"], capsys)
    assert code == 0, err
    assert json.loads((copied_run / "config.json").read_text())["train"]["lr"] == 2e-3
    assert sorted(p.name for p in (copied_run / "checkpoints").iterdir()) == ["round-000000", "round-000001"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # the earlier run set aside is gone


# 3. a run is never written into a folder of other files

@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_a_run_into_a_folder_of_other_files_is_refused(overwrite, tmp_path, capsys):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "metrics.csv").write_text("my precious notes\n")
    (mixed / "config.toml").write_text("keep = 1\n")
    before = contents(tmp_path)
    code, err = run_cli(["llm", "run", "--config", "tiny-roberta", *TINY, "--quiet", "--out", str(mixed),
                         *overwrite], capsys)
    assert code == 2, err
    assert str(mixed) in err and "not a run" in err and "Traceback" not in err
    assert contents(tmp_path) == before


# 2. an export replaces only an earlier export, never the run or other files

@pytest.mark.parametrize("out,words", [
    ("{tmp}/mine", ["not an export"]),
    ("{run}", ["is the run folder"]),
    ("{run}/peft", ["is inside the run folder"]),
    ("{tmp}", ["holds the run folder"]),
], ids=["a folder of other files", "the run folder", "inside the run folder", "holding the run folder"])
def test_export_overwrite_refuses_what_is_not_an_export(out, words, copied_run, tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("precious\n")
    out = out.replace("{tmp}", str(tmp_path)).replace("{run}", str(copied_run))
    before = contents(tmp_path)
    code, err = run_cli(["llm", "export", str(copied_run), "--out", out, "--overwrite"], capsys)
    assert code == 2, err
    assert f"--out {out}" in err and "Traceback" not in err
    for word in words:
        assert word in err, err
    assert contents(tmp_path) == before


@pytest.mark.parametrize("merged", [[], ["--merged"]], ids=["peft", "merged"])
def test_export_overwrite_replaces_an_earlier_export(merged, finished_run, tmp_path, capsys):
    out = tmp_path / "export"
    argv = ["llm", "export", str(finished_run), "--out", str(out), *merged]
    assert run_cli(argv, capsys)[0] == 0
    code, err = run_cli(argv, capsys)
    assert code == 2 and "--overwrite" in err  # an export is not replaced unasked
    code, err = run_cli([*argv, "--overwrite"], capsys)
    assert code == 0, err


# 7. a checkpoint that cannot be resumed from: bad input, naming it and the intact older one

def _foreign_kept(path: Path) -> None:
    """A kept state (a fedsa-lora run's kind) where this rolora run keeps nothing."""
    save_kept(path, {0: {"layer": {"A": torch.zeros(2, 3)}}})


BREAKS = {
    "truncated state": lambda ckpt: _truncate(ckpt / "state.safetensors"),
    "truncated kept": lambda ckpt: _truncate(ckpt / "kept.safetensors"),
    "truncated progress": lambda ckpt: _truncate(ckpt / "progress.json"),
    "another run's kept state": lambda ckpt: _foreign_kept(ckpt / "kept.safetensors"),
}


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:20])


@pytest.mark.parametrize("how", BREAKS.keys())
def test_resume_from_an_unusable_checkpoint_names_it_and_the_older_one(how, copied_run, capsys):
    newest, older = (copied_run / "checkpoints" / name for name in reversed(CHECKPOINTS))
    BREAKS[how](newest)
    before = contents(copied_run)
    code, err = run_cli(["llm", "run", "--resume", str(copied_run), "--quiet"], capsys)
    assert code == 2, err
    assert "Traceback" not in err and "rolora llm run --resume" not in err
    assert str(newest) in err and f"{older} is intact" in err
    assert contents(copied_run) == before  # run.log included


def test_resume_with_every_checkpoint_unusable_says_none_is_intact(copied_run, capsys):
    for name in CHECKPOINTS:
        _truncate(copied_run / "checkpoints" / name / "state.safetensors")
    before = contents(copied_run)
    code, err = run_cli(["llm", "run", "--resume", str(copied_run), "--quiet"], capsys)
    assert code == 2 and "no older intact checkpoint" in err and "rolora llm run --resume" not in err
    assert contents(copied_run) == before


def test_moving_the_broken_checkpoint_aside_resumes_from_the_older_one(copied_run, tmp_path, capsys):
    newest = copied_run / "checkpoints" / CHECKPOINTS[-1]
    _truncate(newest / "state.safetensors")
    shutil.move(str(newest), str(tmp_path / "broken"))
    code, err = run_cli(["llm", "run", "--resume", str(copied_run), "--quiet"], capsys)
    assert code == 0, err
    assert (copied_run / "checkpoints" / CHECKPOINTS[-1] / "state.safetensors").is_file()


# 12. resuming on data changed since the run started

@pytest.mark.parametrize("changed,words", [
    (None, []),
    ("test", ["the test split"]),
    ("train", ["the train split", "client"]),
], ids=["unchanged data resumes", "a test example reworded", "a training example reworded"])
def test_resume_refuses_data_changed_since_the_run_started(changed, words, tmp_path, capsys):
    data = _write_csv(tmp_path / "data.csv", _examples())
    out = tmp_path / "run"
    run(load_config("tiny-roberta", [*TINY, f"data.dataset={data}"]), out, quiet=True)
    if changed:
        split = json.loads((out / "data_split.json").read_text())["splits"][changed]
        from rolora.llm.data_split import content_hash

        rows = _examples()
        i = next(i for i, (text, _) in enumerate(rows) if content_hash(text) == split[0])
        rows[i] = (rows[i][0] + " reworded", rows[i][1])
        _write_csv(data, rows)
    before = contents(out)
    code, err = run_cli(["llm", "run", "--resume", str(out), "--quiet"], capsys)
    if changed is None:
        assert code == 0, err
        return
    assert code == 2, err
    assert "changed since the run started" in err and str(data) in err and "Traceback" not in err
    for word in words:
        assert word in err, err
    assert contents(out) == before


# 14. a sub-command's bad option: that sub-command's usage

@pytest.mark.parametrize("argv,usage", [
    (["llm", "export", "{run}", "--out", "{tmp}/x", "--bogus"], "usage: rolora llm export"),
    (["llm", "configs", "--bogus"], "usage: rolora llm configs"),
], ids=["export", "configs"])
def test_a_bad_option_prints_the_sub_commands_usage(argv, usage, finished_run, tmp_path, capsys):
    argv = [a.replace("{run}", str(finished_run)).replace("{tmp}", str(tmp_path)) for a in argv]
    code, err = run_cli(argv, capsys)
    assert code == 2
    assert usage in err and "--bogus" in err


@pytest.mark.parametrize("content, words", [(b"{not json", "not valid JSON"), (b"\xff\xfe[]", "not UTF-8"),
                                            (b"[1, 2]", "not a run's config")])
def test_resume_of_an_unreadable_config_names_the_file(tmp_path, capsys, content, words):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_bytes(content)
    code, err = run_cli(["llm", "run", "--resume", str(run_dir)], capsys)
    assert code == 2
    assert str(run_dir / "config.json") in err and words in err and "Traceback" not in err
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json"]


def test_methods_are_checked_against_the_settings_not_the_files_own_method(tmp_path, capsys):
    # tiny-roberta's own method (rolora) cannot mix ranks; the methods run can, so the runs start
    code, err = run_cli(["llm", "run", "--config", "tiny-roberta", *TINY, "lora.client_ranks=[2, 4]", "--quiet",
                         "--methods", "flexlora,flora", "--out", str(tmp_path / "runs")], capsys)
    assert code == 0, err
    assert all((tmp_path / "runs" / m / "config.json").is_file() for m in ("flexlora", "flora"))
    code, err = run_cli(["llm", "run", "--config", "tiny-roberta", *TINY, "lora.client_ranks=[2, 4]", "--quiet",
                         "--methods", "flexlora,rolora", "--out", str(tmp_path / "mixed")], capsys)
    assert code == 2 and "--methods rolora" in err and "lora.client_ranks" in err
    assert not (tmp_path / "mixed").exists()
