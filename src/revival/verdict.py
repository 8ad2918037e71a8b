"""A verdict has three outcomes, and absent evidence is never a pass.

    pass          evidence that no attacker gains: every attacker of the ladder ran on every pruned
                  layer, the concept is one the judge can name, the original draws it, and every
                  gain's 95% upper bound is at or below the limit
    fail          evidence that one does: some attacker's gain interval lies wholly above the limit
    inconclusive  anything else, with the reasons (what is missing)

Exit codes of `revival audit`: 0 pass, 3 fail, 4 inconclusive (2 is bad input, as for every verb).
"""
from __future__ import annotations

VERDICTS = ("pass", "fail", "inconclusive")
EXIT_CODES = {"pass": 0, "fail": 3, "inconclusive": 4}
EXIT_BAD_INPUT = 2


def exit_code(verdict: str) -> int:
    """The process exit status of a verdict (an unknown verdict is never a pass)."""
    return EXIT_CODES.get(verdict, EXIT_CODES["inconclusive"])
