"""One row of ``rolora bench llm``: federated rounds in this process, timed, with its peak RSS.

Every row plays the same round: the same clients' samples (``prepare_data``), the same batches
per local step (``batch_order`` with the run's seeds), the same initial adapter (``method.init``:
PEFT's Kaiming A, B = 0) and head, AdamW with the config's ``train.weight_decay`` (the bench sets
0.01, torch's AdamW default, in every row), then FedAvg of A, B and the head by
``rolora.federated`` (fedavg-lora), and the test loss and accuracy of the result. Rows:

- ``peft-fp32`` / ``peft-bf16``: the loop users write: one ``get_peft_model`` model; per client
  ``set_peft_model_state_dict``, ``DataCollatorWithPadding`` over its (tokenised) sentences, a
  fresh AdamW, the steps (``peft-bf16``: under ``torch.autocast(bfloat16)``),
  ``get_peft_model_state_dict``;
- ``ours-seq``, ``ours-batched`` (fp32) and ``ours-fast`` (client-batched, ``model.dtype = "auto"``:
  bf16 base only on hardware with native bf16, each pass drawing its own dropout masks, the blocks on
  real tokens only, the top block at the first token only):
  ``rolora.llm``; ``ours-compiled``: ``ours-fast`` with ``train.compile = "inductor"`` (round 1
  includes the compile; the later rounds show the compiled step's speed).

Timed: each round (local training of every client and the aggregation); not timed, in every row:
loading, tokenising (ours tokenises in ``build``, the PEFT rows every client's sentences before the
clock starts), the evaluation. ``--rounds N`` plays N rounds (the later ones from the aggregate, as a
run does) and reports each one's time (warm-up: the first against the later ones). Prints one JSON
line; ``wall_s`` is round 1's time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

OPENMP_DEFAULT = "ROLORA_BENCH_OPENMP_DEFAULT"
"""Set to 1 by ``rolora bench llm`` for a row that runs under OpenMP's own default wait policy."""
if os.environ.get(OPENMP_DEFAULT) == "1":  # a PEFT user's loop: torch loads before rolora.llm, which then
    import torch  # noqa: F401   leaves OpenMP's default waits alone (libgomp: spin a while, then sleep)

import rolora.llm  # noqa: E402  (otherwise rolora's policy, PASSIVE unless OMP_WAIT_POLICY is set)

import torch  # noqa: E402

from rolora.federated import ClientUpdate, LayerSpec, method_from_spec
from rolora.federated.round import run_round
from rolora.federated.seeding import derive_seed
from rolora.llm.config import load_config
from rolora.llm.local_training import batch_order, learning_rate
from rolora.llm.prepare import build, prepare_data, quiet_transformers
from rolora.llm.tasks import encode, evaluate

ROWS = {
    "peft-fp32": "PEFT loop, fp32",
    "peft-bf16": "PEFT loop, bf16 autocast",
    "ours-seq": "rolora, clients one by one, fp32",
    "ours-batched": "rolora, client-batched, fp32",
    "ours-fast": "rolora, client-batched, dtype auto, per-pass dropout masks",
    "ours-compiled": "rolora, as ours-fast, the step compiled (train.compile = inductor)",
}
OURS = {"ours-seq": ["train.client_batching=off", "model.dtype=float32"],
        "ours-batched": ["train.client_batching=auto", "model.dtype=float32"],
        "ours-fast": ["train.client_batching=auto", "model.dtype=auto", "train.dropout_masks=fast"],
        "ours-compiled": ["train.client_batching=auto", "model.dtype=auto", "train.dropout_masks=fast"]}
COMPILE_DEFAULT = "train.compile=inductor"
"""The ``ours-compiled`` row's mode unless the bench's ``--compile`` (in ``size``) names another."""


def config_for(size: list[str], row: str, rounds: int = 1):
    extra = OURS.get(row, [])
    if row == "ours-compiled" and not any(s.startswith("train.compile=") for s in size):
        extra = extra + [COMPILE_DEFAULT]
    return load_config("minilm-rotten-tomatoes", ["federated.method=fedavg-lora", f"federated.rounds={rounds}"]
                       + size + extra)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_ours(config, rounds: int = 1) -> dict:
    setup = build(config)
    state = setup.initial_state()
    clients = list(range(config.federated.clients))
    from rolora.llm.evaluation import evaluate_round
    from rolora.llm.training import local_training

    walls, first = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        # diagnose=False: the PEFT rows aggregate only, so ours does the same work
        result = run_round(setup.method, state, clients, local_training(setup), {}, seed=config.run.seed,
                           diagnose=False)
        walls.append(time.perf_counter() - start)
        state, first = result.state, first or result
    done = list(first.results.values())
    scores = evaluate_round(setup, first.state, first.kept, clients)
    return {"wall_s": walls[0], "round_s": walls, "dtype": setup.base_dtype.name,
            "tokens": sum(r.metrics["tokens"] for r in done),
            "computed_tokens": sum(r.metrics["computed_tokens"] for r in done), **_test(scores)}


def _test(scores: dict) -> dict:
    return {"test_loss": scores["loss"], "test_accuracy": scores["accuracy"]}


def run_peft(config, autocast: bool, rounds: int = 1) -> dict:
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
    from transformers import DataCollatorWithPadding

    from rolora.llm.models import load_model

    c = config
    train_ds, test_ds, parts, labels = prepare_data(c)
    with quiet_transformers():
        model, tokenizer = load_model(c.model.name, "classification", num_labels=len(labels), seed=c.run.seed)
    targets = tuple(c.lora.targets)
    specs = {n: LayerSpec(m.out_features, m.in_features) for n, m in model.named_modules()
             if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in targets}
    head = {k: v.detach().clone() for k, v in model.classifier.state_dict().items()}
    method = method_from_spec("fedavg-lora", total_rounds=1)
    state = method.init(specs, c.lora.rank, alpha=c.lora.alpha, seed=c.run.seed,
                        dense={f"classifier.{k}": v for k, v in head.items()})
    model = get_peft_model(model, LoraConfig(r=c.lora.rank, lora_alpha=c.lora.alpha, lora_dropout=c.lora.dropout,
                                             target_modules=list(targets), modules_to_save=["classifier"]))
    collator = DataCollatorWithPadding(tokenizer)
    test = encode("classification", tokenizer, test_ds, c.model.max_length)
    tr = c.train
    # Tokenised before the clock starts, as rolora's rows tokenise in build (not timed in any row).
    encoded = [tokenizer([train_ds.texts[i] for i in samples], truncation=True, max_length=c.model.max_length)
               for samples in parts]
    tokens = computed = 0
    walls, first = [], None
    for t in range(1, rounds + 1):
        start = time.perf_counter()
        updates = []
        for k, samples in enumerate(parts):
            set_peft_model_state_dict(model, to_peft(state.layers, state.dense))
            enc, label = encoded[k], train_ds.labels[samples]
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate(c, t),
                                          weight_decay=tr.weight_decay)
            model.train()
            for positions in batch_order(len(samples), tr.batch_size, tr.local_steps, tr.local_epochs,
                                         derive_seed(c.run.seed, "batches", t, k)):
                features = [{key: enc[key][i] for key in enc} for i in positions]
                batch = collator(features)
                batch["labels"] = torch.as_tensor(label[positions])
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                    out = model(**batch)
                out.loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                if t == 1:
                    tokens += int(batch["attention_mask"].sum())
                    computed += batch["attention_mask"].numel()
            layers, dense = from_peft(get_peft_model_state_dict(model), specs)
            updates.append(ClientUpdate(k, float(len(samples)), layers, dense=dense))
        state = method.aggregate(state, updates, t)
        walls.append(time.perf_counter() - start)
        first = first or state

    set_peft_model_state_dict(model, to_peft(first.layers, first.dense))
    scores = evaluate(model, test, c.run.eval_batch_size)
    return {"wall_s": walls[0], "round_s": walls, "dtype": "bfloat16 autocast" if autocast else "float32",
            "tokens": tokens, "computed_tokens": computed, **_test(scores)}


def to_peft(layers: dict, dense: dict) -> dict:
    out = {f"base_model.model.{name}.lora_{f}.weight": x for name, t in layers.items() for f, x in t.items()}
    out.update({f"base_model.model.{k}": v for k, v in dense.items()})
    return out


def from_peft(sd: dict, specs: dict) -> tuple[dict, dict]:
    layers = {name: {f: sd[f"base_model.model.{name}.lora_{f}.weight"].detach().clone() for f in ("A", "B")}
              for name in specs}
    dense = {k.removeprefix("base_model.model."): v.detach().clone() for k, v in sd.items() if ".lora_" not in k}
    return layers, dense


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rolora.lab.bench.llm_row")
    p.add_argument("row", choices=sorted(ROWS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=1, help="rounds to play and time (test scores: round 1's)")
    p.add_argument("--set", nargs="*", default=[], help="config overrides (section.key=value)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = config_for(args.set, args.row, args.rounds)
    if args.row.startswith("peft"):
        out = run_peft(config, args.row == "peft-bf16", args.rounds)
    else:
        out = run_ours(config, args.rounds)
    waits = os.environ.get("OMP_WAIT_POLICY", "OpenMP default")  # libgomp read it when torch loaded
    print(json.dumps({"row": args.row, **out, "peak_rss_mib": peak_rss_mib(), "openmp_waits": waits}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
