"""The README's methods table and commands stay in sync with the code."""

import re
from pathlib import Path

from rolora.cli import BENCHMARKS, COMMANDS
from rolora.federated import METHODS
from rolora.federated.registry import mixed_ranks_cell

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_method_has_a_row_in_the_methods_table():
    rows = set(re.findall(r"^\| `([a-z-]+)` \|", README, flags=re.M))
    assert rows == set(METHODS), f"README rows {sorted(rows)} != methods {sorted(METHODS)}"


def test_methods_table_exact_and_mixed_ranks_columns_match_the_classes():
    header = next(line for line in README.splitlines() if line.startswith("| name | method |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    exact_col, mixed_col = columns.index("exact"), columns.index("mixed ranks")
    for name, cls in METHODS.items():
        row = next(line for line in README.splitlines() if line.startswith(f"| `{name}` |"))
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        # the exact cell may explain itself after a colon ("approximate: server sum exact, ...")
        assert cells[exact_col].split(":")[0] == cls.exact.value, name
        assert cells[mixed_col] == mixed_ranks_cell(cls), name


def test_every_command_is_documented():
    for name in COMMANDS:
        assert f"`rolora {name}" in README, f"rolora {name} is not in the README"
    for name in BENCHMARKS:
        assert f"`rolora bench {name}" in README, f"rolora bench {name} is not in the README"


def test_quickstart_commands_are_the_ci_commands():
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "./dev.sh test" in README and "./dev.sh main" in README
    assert ci.strip().splitlines()[-1] == "./dev.sh test", "CI must run exactly the README's test command"


def test_additions_table_is_the_code_s():
    from rolora.federated.additions import additions_table

    assert additions_table() in README, "README's additions table differs from additions_table(): paste it again"
