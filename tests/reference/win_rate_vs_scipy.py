#!/usr/bin/env python3
"""Reference test: can-eval's win rates from an external judge's verdicts against scipy.

For n prompts with k won by the policy and the rest by the reference (no ties),
CAN's 95% interval is Wilson's score interval, as scipy computes it:
binomtest(k, n).proportion_ci(0.95, method="wilson"). The verdicts are written
here as a judge script would, in both of the documented forms (the preferred
side, or both sides' scores), to judge_requests.jsonl written here too; then
`can-eval --verdicts FILE --out DIR` writes judge_report.json. Checked for several
(k, n), including k = 0 and k = n, where a normal-approximation interval would
collapse to a point: win_rate = k / n exactly, the interval within 1e-12 of
scipy's (the same formula in double precision), and the counts.

Exit 0: all pass; 1: a failure (each named); 77: a library missing (outside CI).
The build folder comes from CAN_BINARY_DIR (CTest sets it), default build/.
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "support"))
from can_reference import CheckFailure, Checks, program, read_json, require, run, temporary_folder  # noqa: E402

scipy = require("scipy")
from scipy.stats import binomtest  # noqa: E402

# Same formula, both in double precision: only rounding differs.
INTERVAL_ATOL = 1e-12


def main():
    checks = Checks("win_rate_vs_scipy")
    with temporary_folder("win_rate") as root:
        for k, n in ((0, 7), (3, 10), (17, 20), (40, 40), (1, 1), (123, 500)):
            label = f"{k} of {n}"
            with open(os.path.join(root, "judge_requests.jsonl"), "w") as out:
                for i in range(n):
                    out.write(json.dumps({"prompt_id": f"p{i}", "prompt": "q", "reference_response": "a",
                                          "policy_response": "b"}) + "\n")
            verdicts = os.path.join(root, "verdicts.jsonl")
            with open(verdicts, "w") as out:
                for i in range(n):
                    won = i < k
                    # helpfulness as the preferred side, safety as both sides' scores
                    out.write(json.dumps({"prompt_id": f"p{i}", "helpfulness": "policy" if won else "reference",
                                          "safety": {"policy": 2 if won else 1, "reference": 1 if won else 2}}) + "\n")
            try:
                run([program("can-eval"), "--verdicts", verdicts, "--out", root])
            except CheckFailure as failure:
                checks.check(f"{label}: can-eval runs", False, str(failure))
                continue
            report = read_json(os.path.join(root, "judge_report.json"))
            expected = binomtest(k, n).proportion_ci(0.95, method="wilson")
            for question in ("helpfulness", "safety"):
                got = report[question]
                checks.equal(f"{label} {question}: wins, ties, losses", (got["wins"], got["ties"], got["losses"]),
                             (k, 0, n - k))
                checks.close(f"{label} {question}: win rate", got["win_rate"], k / n, 0.0)
                checks.close(f"{label} {question}: 95% interval against scipy's Wilson", got["ci95"],
                             [expected.low, expected.high], INTERVAL_ATOL, why="the same formula")
    return checks.report()


if __name__ == "__main__":
    sys.exit(main())
