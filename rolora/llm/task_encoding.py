"""Tokenise a dataset once per run into an :class:`Encoded` set for one of the three tasks.

No padding is stored: each sample is its own token id list; :func:`rolora.llm.tasks.batch` pads per
batch. Choices:

- ``classification`` (encoders): the tokenizer's own single-sentence or pair encoding (special
  tokens, segment ids where it makes them), truncated to ``max_length`` longest-first.
- ``generation-classification`` (decoders): ``template`` is formatted with ``{text}`` (and ``{pair}``
  for pair sets; literal braces are doubled) and tokenised with the tokenizer's leading special
  tokens (BOS, if it adds one) but not its trailing ones (BERT's [SEP]): the answer must follow the
  prompt directly. Each class's label word is tokenised ON ITS OWN as ``label_word_prefix + word``
  (default prefix " ": the word follows "Type:" after a space) without special tokens and appended,
  so training and scoring see exactly the same answer tokens. A prompt that does not fit
  ``max_length`` minus the longest label word loses tokens from the end of the text, never the
  template's closing cue (``"\\nType:"``). Defaults per builtin set in
  :data:`rolora.llm.builtin_data.GENERATION_DEFAULTS`; other sets use ``"Text: {text}\\nLabel:"``
  (pairs: ``"Sentence 1: {text}\\nSentence 2: {pair}\\nLabel:"``) and their label names as words.
- ``instruction`` (decoders): the Alpaca prompt (with or without the input paragraph; or, with
  ``chat_template=True``, the tokenizer's chat format), then the response and the tokenizer's EOS id
  (so the model learns to stop); loss on the response and EOS. Too long: the response is cut at
  its end, keeping at least half the window (or all of itself); the prompt then loses tokens from
  its start.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rolora.llm.builtin_data import GENERATION_DEFAULTS
from rolora.llm.text_dataset import InstructionDataset, TextDataset

TASKS = ("classification", "generation-classification", "instruction")

DEFAULT_TEMPLATE = "Text: {text}\nLabel:"
DEFAULT_PAIR_TEMPLATE = "Sentence 1: {text}\nSentence 2: {pair}\nLabel:"

ALPACA_PROMPT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes "
    "the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)


@dataclass
class Encoded:
    """A tokenised set. ``input_ids[i]`` is sample i's full sequence (no padding).

    ``labels``: class per sample (classification tasks). ``token_type_ids``: segment ids when the
    tokenizer makes them. ``answer_start[i]``: position of the first loss token of a decoder sample
    (the label word or the response); everything before it is prompt. ``label_word_ids[c]``: class
    c's answer tokens (generation-classification).
    """

    task: str
    input_ids: list[list[int]]
    pad_id: int
    labels: np.ndarray | None = None
    token_type_ids: list[list[int]] | None = None
    answer_start: list[int] | None = None
    label_word_ids: list[list[int]] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    def subset(self, indices) -> Encoded:
        """The samples at ``indices`` (no re-tokenising; label words and pad id are shared)."""
        idx = [int(i) for i in np.asarray(indices).reshape(-1)]

        def take(values):
            return None if values is None else [values[i] for i in idx]

        return Encoded(self.task, take(self.input_ids), self.pad_id,
                       labels=None if self.labels is None else self.labels[idx],
                       token_type_ids=take(self.token_type_ids), answer_start=take(self.answer_start),
                       label_word_ids=self.label_word_ids)

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per sample (for tokens/s and, later, length grouping)."""
        return np.fromiter((len(ids) for ids in self.input_ids), dtype=np.int64, count=len(self.input_ids))


def pad_id_of(tokenizer) -> int:
    """The tokenizer's pad id, else its EOS id (decoders often have no pad token), else 0.
    Padded positions are masked, so the value only has to be a valid id."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def trailing_special_tokens(tokenizer) -> int:
    """How many special tokens the tokenizer appends after a text (a BERT tokenizer's [SEP]: 1;
    Llama and GPT-style tokenizers: 0). Decoder prompts drop them: the answer must follow the prompt."""
    full = tokenizer("a")["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return len(full) - start - len(plain)
    return 0


def _prompt_ids(tokenizer, prompt: str, trailing: int) -> list[int]:
    """A decoder prompt's ids with the tokenizer's leading special tokens (BOS) but no trailing ones."""
    ids = tokenizer(prompt)["input_ids"]
    return ids[:len(ids) - trailing]


def encode(task: str, tokenizer, dataset, max_length: int, **task_options) -> Encoded:
    """Tokenise ``dataset`` for ``task`` (options per task: module docstring and the encoders below)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")
    if len(dataset) == 0:
        raise ValueError(f"{dataset.name} has no rows to encode")
    want = InstructionDataset if task == "instruction" else TextDataset
    if not isinstance(dataset, want):
        raise TypeError(f"task {task!r} needs a {want.__name__}, got {type(dataset).__name__}")
    encoder = {"classification": encode_classification, "generation-classification": encode_generation_classification,
               "instruction": encode_instruction}[task]
    return encoder(tokenizer, dataset, max_length, **task_options)


def encode_classification(tokenizer, ds: TextDataset, max_length: int) -> Encoded:
    pairs = {} if ds.pairs is None else {"text_pair": ds.pairs}
    out = tokenizer(text=ds.texts, **pairs, truncation=True, max_length=max_length)
    return Encoded("classification", out["input_ids"], pad_id_of(tokenizer), labels=ds.labels.copy(),
                   token_type_ids=out.get("token_type_ids"))


def _render(template: str, values: dict, row: int) -> str:
    try:
        return template.format_map(values)
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(f"prompt template {template!r} cannot be filled for row {row} ({err!r}); "
                         f"use only {{text}}{' and {pair}' if 'pair' in values else ''}, "
                         f"and double literal braces") from err


def _label_words(tokenizer, ds: TextDataset, words: list[str] | None, prefix: str) -> list[list[int]]:
    words = list(words if words is not None else GENERATION_DEFAULTS.get(ds.name, (None, ds.label_names))[1])
    if not all(isinstance(w, str) for w in words):
        raise ValueError(f"label words must be strings, got {words}")
    if len(words) != ds.num_classes:
        raise ValueError(f"{len(words)} label words {words} for {ds.num_classes} classes {ds.label_names}")
    ids = [tokenizer(prefix + w, add_special_tokens=False)["input_ids"] for w in words]
    for word, word_ids in zip(words, ids):
        if not word_ids:
            raise ValueError(f"label word {word!r} tokenises to no tokens")
    if len({tuple(i) for i in ids}) != len(ids):
        raise ValueError(f"label words {words} do not all tokenise differently; choose distinct words")
    return ids


def encode_generation_classification(tokenizer, ds: TextDataset, max_length: int, template: str | None = None,
                                     label_words: list[str] | None = None,
                                     label_word_prefix: str = " ") -> Encoded:
    if template is None:
        template = (DEFAULT_PAIR_TEMPLATE if ds.pairs is not None
                    else GENERATION_DEFAULTS.get(ds.name, (DEFAULT_TEMPLATE,))[0])
    if "{text}" not in template or (ds.pairs is not None) != ("{pair}" in template):
        raise ValueError(f"template {template!r} must contain {{text}}"
                         + (" and {pair} (the set has sentence pairs)" if ds.pairs is not None else " and no {pair}"))
    word_ids = _label_words(tokenizer, ds, label_words, label_word_prefix)
    cue = template[max(template.rfind("{text}") + 6, template.rfind("{pair}") + 6):]
    cue_len = len(tokenizer(cue, add_special_tokens=False)["input_ids"]) if cue else 0
    budget = max_length - max(len(w) for w in word_ids)
    if budget <= cue_len:
        raise ValueError(f"max_length {max_length} leaves no room for text beside the cue {cue!r} "
                         f"and the longest label word")
    trailing = trailing_special_tokens(tokenizer)
    input_ids, answer_start = [], []
    for row, text in enumerate(ds.texts):
        values = {"text": text} if ds.pairs is None else {"text": text, "pair": ds.pairs[row]}
        prompt = _prompt_ids(tokenizer, _render(template, values, row), trailing)
        if len(prompt) > budget:  # cut the end of the text, keep the cue
            prompt = prompt[:budget - cue_len] + prompt[len(prompt) - cue_len:]
        input_ids.append(prompt + word_ids[int(ds.labels[row])])
        answer_start.append(len(prompt))
    return Encoded("generation-classification", input_ids, pad_id_of(tokenizer), labels=ds.labels.copy(),
                   answer_start=answer_start, label_word_ids=word_ids)


def _chat_prompt(tokenizer, instruction: str, extra: str) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("chat_template=True, but this tokenizer has no chat template; use the Alpaca prompt")
    content = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                         add_generation_prompt=True)


def encode_instruction(tokenizer, ds: InstructionDataset, max_length: int, prompt: str = ALPACA_PROMPT,
                       prompt_no_input: str = ALPACA_PROMPT_NO_INPUT, add_eos: bool = True,
                       chat_template: bool = False) -> Encoded:
    """``chat_template=True``: the tokenizer's own chat format (instruction, then the input after a blank
    line, as the user turn; the template's special tokens, no others) instead of the Alpaca prompt."""
    eos = [tokenizer.eos_token_id] if add_eos and tokenizer.eos_token_id is not None else []
    trailing = trailing_special_tokens(tokenizer)
    input_ids, answer_start = [], []
    for row, (instruction, extra, output) in enumerate(zip(ds.instructions, ds.inputs, ds.outputs)):
        if chat_template:
            prompt_ids = tokenizer(_chat_prompt(tokenizer, instruction, extra), add_special_tokens=False)["input_ids"]
        else:
            template = prompt if extra.strip() else prompt_no_input
            prompt_ids = _prompt_ids(tokenizer, _render(template, {"instruction": instruction, "input": extra}, row),
                                     trailing)
        response = tokenizer(output, add_special_tokens=False)["input_ids"] + eos
        if not response:
            raise ValueError(f"{ds.name}: row {row} has an empty response and no EOS token to learn")
        if len(prompt_ids) + len(response) > max_length:
            response = response[:max(max_length - len(prompt_ids), min(len(response), max_length // 2))]
            prompt_ids = prompt_ids[len(prompt_ids) - (max_length - len(response)):]
        input_ids.append(prompt_ids + response)
        answer_start.append(len(prompt_ids))
    return Encoded("instruction", input_ids, pad_id_of(tokenizer), answer_start=answer_start)
