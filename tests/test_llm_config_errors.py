"""Bad configs found before anything is written: list items of the wrong type, a device torch cannot
name, TOML keys outside a section, mixed ranks for a method that needs one, ``model.max_length``
beyond the model's positions, undecodable files; each message names the key or the file (and where
the error came from: a file, or a command-line override)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rolora.federated import METHODS
from rolora.llm.cli import main
from rolora.llm.config import ConfigError, load_config
from rolora.llm.file_data import load_file, load_instructions, read_records
from rolora.llm.models import load_model, position_limit
from rolora.llm.prepare import build, load_data, prepare_data
from rolora.llm.task_encoding import encode_generation_classification
from rolora.llm.text_dataset import TextDataset


def _refused(overrides: list[str], config: str | None = None) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(config, overrides)
    return str(err.value)


def _write_csv(path, rows: int = 24):
    path.write_text("text,label,user\n" + "".join(f"sentence number {i},{i % 2},u{i % 3}\n" for i in range(rows)))
    return path


# ---------------------------------------------------------------- list keys: item types, bare words

@pytest.mark.parametrize("overrides, words", [
    (["federated.method=flexlora", 'lora.client_ranks=["x"]'], ["lora.client_ranks", "list of int", "'x'"]),
    (["lora.client_ranks=[2, true]"], ["lora.client_ranks", "list of int", "bool True"]),
    (["data.label_words=[1,2,3,4,5,6]"], ["data.label_words", "list of str", "int 1", "quote"]),
    (["lora.targets=[1]"], ["lora.targets", "list of str"]),
    (["lora.layers=[a,b]"], ["lora.layers", "list of int", "'a'"]),
    (["lora.layers=[1.5]"], ["lora.layers", "list of int", "float 1.5"]),
    (["run.eval_splits=[[1]]"], ["run.eval_splits", "list of str"]),
], ids=["ranks str", "ranks bool", "label words int", "targets int", "layers bare words", "layers float",
        "eval splits nested"])
def test_a_list_item_of_the_wrong_type_names_the_key(overrides, words):
    message = _refused(overrides)
    for word in words:
        assert word in message, message
    assert "Targets" not in message


def test_a_list_of_the_wrong_type_in_a_file_names_the_key(tmp_path):
    path = tmp_path / "ranks.toml"
    path.write_text('[federated]\nmethod = "flexlora"\n[lora]\nclient_ranks = [4, "8"]\n')
    assert "lora.client_ranks: expected a list of int, got str '8'" in _refused([], str(path))


BARE_LISTS = [  # a list on the command line, the key, what it reads as
    ("[query,value]", "lora.targets", ["query", "value"]),
    ("[query, value]", "lora.targets", ["query", "value"]),
    ("query,value", "lora.targets", ["query", "value"]),
    ('["query", "value"]', "lora.targets", ["query", "value"]),
    ("[-2,-1]", "lora.layers", [-2, -1]),
    ("0,1", "lora.layers", [0, 1]),
    ("[]", "lora.layers", []),
    ("[val]", "run.eval_splits", ["val"]),
]


def test_bare_list_items_on_the_command_line_are_read_as_values():
    """``[a, b]`` and ``a,b``: each item read as a command-line value (numbers, else a bare word)."""
    for text, key, expected in BARE_LISTS:
        section, _, name = key.partition(".")
        config = load_config(None, [f"{key}={text}", "data.val_size=0.1"])
        assert getattr(getattr(config, section), name) == expected, text


# ---------------------------------------------------------------- model.device

def test_model_device_is_one_torch_can_name_and_runs_use():
    for device in ["xyz", "cuda:x", "meta", "", "cpu:cpu"]:
        message = _refused([f"model.device={device}"])
        assert message.startswith("model.device: ") and repr(device) in message
    for device in ["auto", "cpu", "cuda", "cuda:1"]:  # parsed, not looked for: no GPU needed here
        assert load_config(None, [f"model.device={device}"]).model.device == device


# ---------------------------------------------------------------- the TOML file's layout

@pytest.mark.parametrize("text, words", [
    ("rounds = 3\n", ["`rounds` is not in a section", "put it under [federated]"]),
    ("bogus = 3\n[model]\nname = 'tiny-bert'\n", ["`bogus` is not in a section", "[model]"]),
    ("[model]\nname = 'tiny-roberta'\n[[data]]\ndataset = 'x'\n", ["[[data]]", "one table [data]"]),
    ("data = 'x'\n", ["`data` must be a table [data]"]),
], ids=["a key of a section at the top", "an unknown key at the top", "an array of tables", "a section as a value"])
def test_a_key_outside_a_section_names_the_file_and_where_it_belongs(tmp_path, text, words):
    path = tmp_path / "layout.toml"
    path.write_text(text)
    message = _refused(["train.lr=1e-3"], str(path))
    assert message.startswith(f"{path}: ")
    for word in words:
        assert word in message, message


def test_a_config_file_that_is_not_utf8_is_named_with_the_place(tmp_path):
    path = tmp_path / "binary.toml"
    path.write_bytes(b"[model]\nname = 'tiny-\xe9'\n")
    message = _refused([], str(path))
    assert message.startswith(f"{path}: not UTF-8 text") and "0xe9" in message and "line 2" in message


# ---------------------------------------------------------------- where an unknown key came from

def test_an_unknown_key_is_blamed_on_the_override_or_the_file_it_came_from(tmp_path):
    message = _refused(["federated.bogus=1"], "tiny-roberta")
    assert "tiny-roberta.toml" not in message
    assert "override 'federated.bogus=1': unknown key federated.bogus" in message
    assert "override 'bogus.key=1': unknown section [bogus]" in _refused(["bogus.key=1"], "tiny-roberta")
    path = tmp_path / "bogus.toml"
    path.write_text("[federated]\nbogus = 1\n")
    assert _refused([], str(path)).startswith(f"{path}: unknown key federated.bogus")


# ---------------------------------------------------------------- mixed ranks

def test_mixed_client_ranks_follow_each_methods_own_declaration():
    for name, cls in METHODS.items():
        settings = [f"federated.method={name}", "lora.client_ranks=[2, 4]"]
        if cls.mixes_ranks:
            assert load_config(None, settings).lora.client_ranks == [2, 4]
        else:
            message = _refused(settings)
            assert message.startswith("lora.client_ranks: ") and f"federated.method {name}" in message


def test_one_rank_in_client_ranks_suits_every_method():
    assert load_config(None, ["lora.client_ranks=[4, 4]"]).lora.client_ranks == [4, 4]
    # clients cycle through the list: one client only ever gets the first rank
    assert load_config(None, ["lora.client_ranks=[2, 4]", "federated.clients=1"]).federated.clients == 1
    # a method spec with parameters is read by its name
    assert "federated.method rolora" in _refused(["federated.method=rolora:period=2", "lora.client_ranks=[2, 4]"])


# ---------------------------------------------------------------- model.max_length and the model's positions

@pytest.mark.parametrize("name, task", [("tiny-roberta", "classification"), ("tiny-bert", "classification")])
def test_the_position_limit_is_the_longest_input_the_model_takes(name, task):
    model, tokenizer = load_model(name, task, num_labels=2)
    limit = position_limit(model)
    word = tokenizer.convert_tokens_to_ids("the")
    model(input_ids=torch.full((1, limit), word))
    with pytest.raises((IndexError, RuntimeError)):  # the position table, or RoBERTa's token-type buffer of its size
        model(input_ids=torch.full((1, limit + 1), word))


def test_a_decoder_with_rotary_positions_has_no_position_table_limit():
    model, _ = load_model("tiny-llama", "causal-lm")
    assert position_limit(model) is None


def test_max_length_beyond_the_models_positions_is_refused_when_the_model_loads(tmp_path):
    data = _write_csv(tmp_path / "d.csv")
    config = load_config("tiny-roberta", [f"data.dataset={data}", "data.test_size=4", "model.max_length=100000"])
    model, _ = load_model("tiny-roberta", "classification", num_labels=2)
    with pytest.raises(ConfigError) as err:
        build(config)
    message = str(err.value)
    assert message.startswith("model.max_length: 100000") and f" {position_limit(model)}" in message


# ---------------------------------------------------------------- data files

def test_a_data_file_that_is_not_utf8_is_named_with_the_line(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\nfine,0\ncaf\u00e9,1\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.csv: not UTF-8 text \(byte 0xe9 at line 3"):
        load_file(path, "text", "label")
    lines = tmp_path / "latin1.jsonl"
    lines.write_bytes(b'{"instruction": "a", "output": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"latin1\.jsonl: not UTF-8 text \(byte 0xe9 at line 1"):
        load_instructions(lines)


def test_invalid_json_names_the_file_and_the_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n{"text": "a", "label": 0},\n{not json\n]')
    with pytest.raises(ValueError, match=r"bad\.json: not valid JSON .*line 3, column 2"):
        load_file(path, "text", "label")


def test_a_broken_parquet_file_is_named(tmp_path):
    pytest.importorskip("pyarrow")
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match=r"broken\.parquet: not a readable parquet file"):
        read_records(path)


def test_a_folder_given_as_the_data_file_is_called_a_folder(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    with pytest.raises(ValueError, match="is a folder, not a data file"):
        read_records(folder)
    with pytest.raises(ConfigError, match=r"data.dataset: .*data' is a folder"):
        load_data(load_config(None, [f"data.dataset={folder}"]))


def test_a_natural_partition_without_groups_names_the_group_column_key(tmp_path):
    path = _write_csv(tmp_path / "good.csv")
    config = load_config(None, [f"data.dataset={path}", "data.test_size=4", "data.partition=natural"])
    with pytest.raises(ConfigError, match="data.group_column") as err:
        prepare_data(config)
    assert "load_file" not in str(err.value)
    grouped = load_config(None, [f"data.dataset={path}", "data.test_size=4", "data.partition=natural",
                                 "data.group_column=user", "federated.clients=3"])
    assert len(prepare_data(grouped)[2]) == 3


def test_label_words_that_are_not_strings_are_refused_by_the_encoder():
    _, tokenizer = load_model("tiny-llama", "causal-lm")
    ds = TextDataset(["a", "b"], None, np.array([0, 1]), ["x", "y"], None, "tiny")
    with pytest.raises(ValueError, match=r"label words must be strings, got \[1, 2\]"):
        encode_generation_classification(tokenizer, ds, 16, label_words=[1, 2])


# ---------------------------------------------------------------- end to end: exit 2, one line, nothing written

@pytest.mark.parametrize("settings, words", [
    (["model.device=xyz"], ["model.device", "'xyz'"]),
    (["lora.client_ranks=[2,4]"], ["lora.client_ranks", "rolora"]),
    (["federated.method=flexlora", 'lora.client_ranks=["x"]'], ["lora.client_ranks"]),
    (["--config", "tiny-llama", "data.label_words=[1,2,3,4,5,6]"], ["data.label_words"]),
    (["federated.bogus=1"], ["override 'federated.bogus=1'"]),
    (["model.max_length=100000", "data.dataset={csv}", "data.test_size=4"], ["model.max_length", "100000"]),
    (["data.dataset={latin1}", "data.test_size=4"], ["latin1.csv", "not UTF-8"]),
], ids=["device", "mixed ranks", "rank of a str", "label words of ints", "unknown override", "max_length",
        "latin-1 data"])
def test_the_cli_refuses_with_exit_2_and_writes_nothing(settings, words, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _write_csv(tmp_path / "d.csv")
    (tmp_path / "latin1.csv").write_bytes("text,label\ncaf\u00e9,1\n".encode("latin-1"))
    settings = [s.replace("{csv}", str(tmp_path / "d.csv")).replace("{latin1}", str(tmp_path / "latin1.csv"))
                for s in settings]
    config = [] if "--config" in settings else ["--config", "tiny-roberta"]
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main(["run", *config, "--quiet", "--out", str(tmp_path / "run"), "federated.rounds=1",
                 "train.local_steps=1", *settings])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.startswith("rolora llm: error: ") and err.count("\n") == 1
    for word in words:
        assert word in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_the_cli_refuses_a_config_file_with_a_key_outside_a_section(tmp_path, capsys):
    path = tmp_path / "toplevel.toml"
    path.write_text("rounds = 3\n")
    assert main(["run", "--config", str(path), "--quiet", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "`rounds` is not in a section" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
