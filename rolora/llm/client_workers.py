"""Client workers: a round's client groups trained at the same time on a CPU, one thread each.

A client-batched pass on a CPU spends a fifth to a quarter of its time outside the big matmuls
(elementwise ops, masks, Python), and with two OpenMP threads every one of the tens of thousands of
small ops is a parallel region: the threads wait for each other, and the matmuls themselves split
less well. Measured on a 2-core EPYC, AVX2, fp32 (BENCHMARKS.md "llm/ speed", issue 34): one thread
runs the bench round's matmuls at ~75 % of one core's peak, two OpenMP threads at ~58 % of two. The
clients of a round are independent until the server aggregates, so here the round's participants are
split into ``train.client_workers`` groups, each trained by its own Python thread with
``threads // workers`` intra-op threads on its own replica of the model (with one intra-op thread,
as in a sweep's parallel cells, the groups run one after another instead) (the frozen weights shared,
the modules that hold a pass's state not): torch's kernels release the GIL, so the workers' matmuls
overlap and no thread waits at a barrier.

What the numbers depend on: the grouping (which clients share a pass, hence the per-pass dropout
masks' bits and the sums' rounding) follows ``train.client_workers``, a config value; not the number
of cores, and not which worker finishes first (the intra-op thread count can change the last bits of
some reductions, as in any torch run: the same for one worker). Each worker's passes hold at most
``train.batch_tokens / workers`` padded tokens, so the activations in flight stay within
``train.batch_tokens``, as with one worker.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

AUTO_CPU_WORKERS = 2
"""``train.client_workers = 0`` (auto) on a CPU: two groups at a time (1 on CUDA: one device stream)."""

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class WorkersChoice:
    """How many client workers a run uses, and why."""

    count: int
    reason: str


def choose_workers(train, device: torch.device) -> WorkersChoice:
    """``train.client_workers`` resolved for ``device`` (the config check refuses what cannot run)."""
    asked = train.client_workers
    if asked:
        return WorkersChoice(asked, "train.client_workers")
    if train.client_batching == "off":
        return WorkersChoice(1, "auto: clients one by one")
    if device.type != "cpu":
        return WorkersChoice(1, f"auto: {device.type} device (one stream)")
    if train.compile != "off":
        return WorkersChoice(1, "auto: the compiled step runs on one model")
    if train.frozen_prefix == "cache":
        return WorkersChoice(1, "auto: the frozen-prefix cache is installed on one model")
    return WorkersChoice(AUTO_CPU_WORKERS, "auto: CPU")


def split(items: Sequence[T], parts: int) -> list[list[T]]:
    """``items`` in ``parts`` contiguous runs whose sizes differ by at most one (the first ones longer)."""
    base, extra = divmod(len(items), parts)
    out, start = [], 0
    for w in range(parts):
        end = start + base + (w < extra)
        out.append(list(items[start:end]))
        start = end
    return out


def replicate(setup):
    """``setup`` with its own copy of the model's modules; every frozen tensor (no gradient) and buffer
    is shared with the original, not copied."""
    model = setup.model
    shared = [p for p in model.parameters() if not p.requires_grad] + list(model.buffers())
    replica = copy.deepcopy(model, {id(x): x for x in shared})
    path = {id(m): name for name, m in model.named_modules()}
    modules = dict(replica.named_modules())
    adapters = {name: modules[path[id(m)]] for name, m in setup.adapters.items()}
    return dataclasses.replace(setup, model=replica, adapters=adapters)


class Workers:
    """``count`` model replicas (the first the run's own) and a way to run one job per replica at once."""

    def __init__(self, setup, count: int) -> None:
        if count < 1:
            raise ValueError(f"client workers must be at least 1, got {count}")
        self.count = count
        self.setups = [setup]  # replicas made when first needed (a one-client round needs none)

    def run(self, job: Callable[[object, T], list], parts: Sequence[T]) -> list[list]:
        """``[job(setup, parts[w]) for w]``: at once on as many threads as torch has intra-op threads
        (at most one per part; thread i takes parts i, i + n, ...), each thread with ``threads // n``
        intra-op threads and its own replica; one thread (``torch.set_num_threads(1)``, a sweep's
        cell): the parts one after another in the caller, so cores are not oversubscribed. The
        numbers are the same either way. The first error is raised after every thread ends."""
        if len(parts) > self.count:
            raise ValueError(f"{len(parts)} parts for {self.count} workers")
        total = torch.get_num_threads()
        n = min(len(parts), total)
        if n <= 1:
            return [job(self.setups[0], part) for part in parts]
        while len(self.setups) < n:
            self.setups.append(replicate(self.setups[0]))
        each = max(1, total // n)
        out: list = [None] * len(parts)
        errors: list[BaseException | None] = [None] * n

        def work(i: int) -> None:
            torch.set_num_threads(each)  # this thread's OpenMP team; torch's setting is per thread
            try:
                for w in range(i, len(parts), n):
                    out[w] = job(self.setups[i], parts[w])
            except BaseException as err:  # noqa: BLE001 (re-raised in the calling thread)
                errors[i] = err

        threads = [threading.Thread(target=work, args=(i,), name=f"rolora-client-worker-{i}", daemon=True)
                   for i in range(n)]
        try:
            for th in threads:
                th.start()
            for th in threads:
                th.join()
        finally:
            torch.set_num_threads(total)  # the default that threads started later take: the caller's
        for err in errors:
            if err is not None:
                raise err
        return out
