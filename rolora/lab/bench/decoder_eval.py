"""``rolora bench eval``: scoring label words in one pass (one-token words) against one sequence per class.

A generation-classification evaluation scores every class's label word after each prompt. The
reference (:func:`rolora.llm.tasks.label_word_scores_by_sequence`) runs one sequence per (prompt,
class); when every word is one token, :func:`rolora.llm.tasks.label_word_scores` reads all of them from
one forward over the prompts. Both run here on the same model and prompts (SmolLM2-135M on TREC's
test prompts by default, with the run's LoRA adapters at their initial values), same threads, one
after the other; the table gives wall time, prompts/s, the largest score difference and the accuracy.

    rolora bench eval                        # SmolLM2-135M, 300 TREC prompts, bf16, 1 thread
    rolora bench eval --set model.name=tiny-llama --prompts 60    # smoke test (random tiny decoder)
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from rolora.llm.config import ConfigError, load_config
from rolora.llm.tasks import label_word_scores, label_word_scores_by_sequence, one_token_words

DEFAULTS = ["model.dtype=bfloat16", "lora.rank=4", "lora.alpha=8.0", "data.val_size=0", "run.eval_batch_size=50"]


def timed_scores(score, model, encoded, n: int, per_forward: int) -> tuple[torch.Tensor, float]:
    """All ``n`` prompts' [n, C] scores in chunks of ``per_forward`` prompts, and the wall seconds."""
    start = time.perf_counter()
    with torch.no_grad():
        parts = [score(model, encoded, range(i, min(i + per_forward, n))) for i in range(0, n, per_forward)]
    return torch.cat(parts), time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="rolora bench eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", default="smollm2-trec", help="a generation-classification run config")
    p.add_argument("--prompts", type=int, default=300, help="test prompts to score")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    args = p.parse_args(argv)
    for option in ("prompts", "threads"):
        if getattr(args, option) < 1:
            p.error(f"--{option} must be ≥ 1, got {getattr(args, option)}")
    try:
        config = load_config(args.config, DEFAULTS + [f"data.test_size={args.prompts}", f"run.threads={args.threads}",
                                                      *args.set])
    except ConfigError as err:
        print(f"rolora bench eval: error: {err}", file=sys.stderr)
        return 2
    if config.model.task != "generation-classification":
        print(f"rolora bench eval: error: {args.config} is a {config.model.task} config; this benchmark scores "
              "label words (model.task = \"generation-classification\")", file=sys.stderr)
        return 2
    from rolora.llm.prepare import build

    torch.set_num_threads(args.threads)
    try:
        setup = build(config)
    except ConfigError as err:  # the data or the model of the config
        print(f"rolora bench eval: error: {err}", file=sys.stderr)
        return 2
    enc, model, n = setup.test, setup.model.eval(), len(setup.test)
    classes, batch = len(enc.label_word_ids), config.run.eval_batch_size
    if not one_token_words(enc):
        print("rolora bench eval: error: a label word is several tokens here, so both paths are the reference",
              file=sys.stderr)
        return 2
    timed_scores(label_word_scores, model, enc, min(n, batch), batch)  # warm-up (first-call allocations)
    ref, ref_s = timed_scores(label_word_scores_by_sequence, model, enc, n, max(1, batch // classes))
    fast, fast_s = timed_scores(label_word_scores, model, enc, n, batch)
    truth = torch.as_tensor(enc.labels[:n])
    rows = [("one sequence per class (reference)", n * classes, ref_s, ref), ("one pass (one-token words)", n, fast_s, fast)]
    print(f"{config.model.name}, {n} prompts × {classes} classes, {config.model.dtype}, {args.threads} thread(s), "
          f"{batch} sequences a forward")
    print("| path | sequences | wall s | prompts/s | speed-up | accuracy | max abs Δ score |")
    print("|---|---|---|---|---|---|---|")
    for name, seqs, wall, scores in rows:
        acc = float((scores.argmax(dim=1) == truth).float().mean())
        print(f"| {name} | {seqs} | {wall:.2f} | {n / wall:.1f} | {ref_s / wall:.2f}× | {acc:.3f} | "
              f"{float((scores - ref).abs().max()):.2e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
