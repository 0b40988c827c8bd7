"""``rolora bench flower``: its tables and its memory probe (the measurement itself is too slow
for the suite; its numbers are in BENCHMARKS.md, "Flower")."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil

from rolora.lab.bench import flower as bench


def test_the_process_tree_rss_counts_children():
    child = subprocess.Popen([sys.executable, "-c", "import time; x = bytearray(64 << 20); time.sleep(30)"])
    try:
        for _ in range(100):
            if bench._tree_rss(child.pid) > 60 << 20:
                break
            __import__("time").sleep(0.1)
        assert bench._tree_rss(child.pid) > 60 << 20  # the child's 64 MiB
        own = psutil.Process(os.getpid()).memory_info().rss
        assert bench._tree_rss(os.getpid()) >= own + (60 << 20)  # counted in its parent's tree
    finally:
        child.kill()
        child.wait()
    assert bench._tree_rss(child.pid) == 0  # gone


def test_tables(monkeypatch, tmp_path):
    engine = {"result": {"round_wall_s": 2.0, "tokens": 1000, "test_loss": 0.5, "test_accuracy": 0.75},
              "run_wall_s": 10.0, "peak_rss_gib": 1.5}
    rows = [{"method": "fedsa-lora", "round": 1, "upload_bytes": 10, "download_bytes": 12,
             "flower_upload_bytes": 11, "flower_download_bytes": 1234, "flower_eval_download_bytes": 99}]
    monkeypatch.setattr(bench, "measure", lambda args: engine if args[0] == "engine" else {"result": rows})
    table = bench.engines_table([], tmp_path).splitlines()
    assert table[2] == "| embedded | 2.0 s | 10.0 s | 1.50 GiB | 500 | 0.50000 | 0.750 |"
    assert table[3].startswith("| flower |")
    assert bench.bytes_table(tmp_path).splitlines()[2] == "| fedsa-lora | 1 | 11 | 10 | 1,234 (+99) | 12 |"
