"""Evaluate a run's exported adapter with plain transformers + peft (no rolora), on the run's own test split.

    rolora llm export out/quickstart/rolora --out adapters/quickstart
    python docs/examples/evaluate_export.py out/quickstart/rolora adapters/quickstart

The run folder's test.jsonl holds the test examples (text, label) and data_split.json the label
names; the adapter's config names its base model (a local folder for the shipped MiniLM and SmolLM2).
Prints the test accuracy, which equals the run's last test_accuracy (same examples, same max length).
"""

import json
import sys
from pathlib import Path

import torch
from peft import PeftConfig, PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

run_dir, adapter = Path(sys.argv[1]), sys.argv[2]
labels = json.loads((run_dir / "data_split.json").read_text())["label_names"]
test = [json.loads(line) for line in (run_dir / "test.jsonl").read_text().splitlines()]
max_length = int(json.loads((run_dir / "config.json").read_text())["model"]["max_length"])

base_path = PeftConfig.from_pretrained(adapter).base_model_name_or_path
tokenizer = AutoTokenizer.from_pretrained(base_path)
base = AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=len(labels))
model = PeftModel.from_pretrained(base, adapter).eval()

correct = 0
for start in range(0, len(test), 100):
    rows = test[start:start + 100]
    pairs = [r["pair"] for r in rows] if "pair" in rows[0] else None
    batch = tokenizer([r["text"] for r in rows], pairs, padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt")
    with torch.no_grad():
        predicted = model(**batch).logits.argmax(-1).tolist()
    correct += sum(p == r["label"] for p, r in zip(predicted, rows))
print(f"test accuracy {correct / len(test):.4f} ({correct} of {len(test)} examples; base {base_path})")
