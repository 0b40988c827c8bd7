"""``rolora sweep`` and ``rolora bench aggregate`` on badly shaped input: exit 2 with one line naming
the file and key, no traceback, nothing written; method specs with parameters accepted by the bench."""

from __future__ import annotations

import json
import textwrap

import pytest

from rolora.lab.bench.aggregate import main as bench_main
from rolora.lab.sweep.cli import main as sweep_main
from rolora.llm.config import load_config, to_toml

TINY = ["model.name=tiny-bert", "federated.clients=3", "federated.rounds=2"]
METHOD = '[[methods]]\nlabel = "a"\nmethod = "rolora"\n'
AXIS = '[axes.n]\n2 = ["federated.clients=2"]\n'


def write_spec(folder, text: str) -> str:
    (folder / "base.toml").write_text(to_toml(load_config(None, TINY)))
    path = folder / "exp.toml"
    path.write_text('base = "base.toml"\n' + textwrap.dedent(text))
    return str(path)


@pytest.mark.parametrize("text, message", [
    (f"columns = [1]\n{AXIS}{METHOD}", "columns[0]: must be a table"),
    (f"seeds = [true]\n{METHOD}", "seeds[0]: must be an integer ≥ 0, got bool true"),
    (f"seeds = [0, \"1\"]\n{METHOD}", 'seeds[1]: must be an integer ≥ 0, got str "1"'),
    (f"evals = true\n{METHOD}", "evals: must be an integer ≥ 0, got bool true"),
    (f"{AXIS}{METHOD}[lr]\ngrid = [0.1]\nat = 5\n", "lr.at: must be a table"),
    (f"{AXIS}{METHOD}[lr]\ngrid = [0.1]\nat = {{n = 2, seed = true}}\n",
     "lr.at.seed: must be an integer ≥ 0, got bool true"),
])
def test_a_badly_shaped_spec_exits_2_naming_the_file_and_key(tmp_path, capsys, text, message):
    spec = write_spec(tmp_path, text)
    assert sweep_main([spec, "--dry-run", "--out", str(tmp_path / "sweep")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rolora sweep: error: {spec}: {message}"), err
    assert "Traceback" not in err and not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("content, message", [
    ("[]", "not a sweep record"),
    ('{"cells": 5}', "not a sweep record"),
    ('{"cells": [1]}', "not a sweep record"),
    ("{bad", "not valid JSON"),
    ('\xff{"cells": []}', "not UTF-8 text"),
])
@pytest.mark.parametrize("flag", ["--dry-run", "--status"])
def test_a_sweep_json_of_another_shape_exits_2_naming_it_and_stays(tmp_path, capsys, content, message, flag):
    spec = write_spec(tmp_path, METHOD)
    record = tmp_path / "sweep" / "sweep.json"
    record.parent.mkdir()
    record.write_bytes(content.encode("latin-1"))
    assert sweep_main([spec, flag, "--out", str(record.parent)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rolora sweep: error: {record}: {message}"), err
    assert record.read_bytes() == content.encode("latin-1") and sorted(record.parent.iterdir()) == [record]


def test_bench_aggregate_takes_method_specs_with_parameters(tmp_path, capsys):
    out_json = tmp_path / "bench.json"
    assert bench_main(["--layers", "1", "--dim", "6", "--rank", "1", "--clients", "2", "--repeats", "1",
                       "--methods", "rolora:period=2,rolora", "--no-progress", "--no-memory",
                       "--json", str(out_json)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| rolora")]
    assert [r.split(" | ")[0] for r in rows] == ["| rolora:period=2", "| rolora"]  # each row names its spec
    assert [r["method"] for r in json.loads(out_json.read_text())["rows"]] == ["rolora:period=2", "rolora"]


def test_bench_aggregate_refuses_a_bad_method_parameter_naming_it(capsys):
    with pytest.raises(SystemExit) as exc:
        bench_main(["--methods", "rolora:perio=2", "--no-progress"])
    assert exc.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert "'perio'" in last and "unknown" not in last  # the parameter is wrong, not the method name


@pytest.mark.parametrize("content", ["[]", '{"cells": 5}', "{not json"])
def test_report_names_a_sweep_record_it_cannot_read_and_writes_nothing(tmp_path, capsys, content):
    from rolora.lab.report.cli import main as report_main

    (tmp_path / "sweeps" / "x").mkdir(parents=True)
    (tmp_path / "sweeps" / "x" / "sweep.json").write_text(content)
    out = tmp_path / "docs" / "r.md"
    assert report_main(["--sweeps", str(tmp_path / "sweeps"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rolora report: error: {tmp_path / 'sweeps' / 'x' / 'sweep.json'}: ") and "Traceback" not in err
    assert not (tmp_path / "docs").exists()
