"""The report's opening table: one line per claim (paper's number, ours, verdict), filled by the sections.

Each section appends a :class:`ClaimRow` for every claim it judges while it writes its own text, so
the table at the top and the verdicts in the body come from the same computation and cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from rolora.lab.report.markdown import table


@dataclass(frozen=True)
class ClaimRow:
    claim: str
    paper: str
    ours: str
    verdict: str
    sweep: str = ""
    """The LM sweep the verdict comes from ('' for the theory and toy claims)."""


def summary_table(rows: list[ClaimRow]) -> str:
    return table(["claim", "paper", "ours", "verdict"],
                 [[r.claim, r.paper, r.ours, f"**{r.verdict}**"] for r in rows])
