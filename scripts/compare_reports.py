"""Compares the tiny runs' numbers with the nightly baseline (used by scripts/nightly.sh).

The baseline maps "<pipeline>:<json path>" to the value seen when it was written;
`tolerance` gives the absolute tolerance of every number (a run is deterministic
on one machine kind with one thread, so it only absorbs last-digit noise).
"""
import json
import math
import sys
from pathlib import Path

# The numbers that say whether the pipeline still computes what it did; "j" stands for
# every constraint of the run (one per entry of dual.json's margins).
TRACKED = [
    ("dual/dual.json", ["lambda", "j"]),
    ("dual/dual.json", ["predicted", "safety_improvement", "j"]),
    ("dual/dual.json", ["predicted", "reward_improvement"]),
    ("dual/dual.json", ["predicted", "kl"]),
    ("dual/dual.json", ["max_safety_improvement", "j"]),
    ("eval/report.json", ["reference", "reward"]),
    ("eval/report.json", ["reference", "costs", "j"]),
    ("eval/report.json", ["policy", "reward"]),
    ("eval/report.json", ["policy", "costs", "j"]),
    ("eval/report.json", ["policy", "judge_helpfulness"]),
    ("eval/report.json", ["policy", "judge_safety"]),
    ("eval/report.json", ["achieved", "safety_improvement", "j"]),
    ("eval/report.json", ["achieved", "reward_improvement"]),
    ("eval/report.json", ["win_rate", "helpfulness"]),
    ("eval/report.json", ["win_rate", "safety"]),
]


def collect(run_dirs):
    values = {}
    for run_dir in run_dirs:
        pipeline = Path(run_dir).name.replace("nightly-", "")
        constraints = len(json.loads((Path(run_dir) / "dual/dual.json").read_text())["margins"])
        for file, pattern in TRACKED:
            for j in range(constraints if "j" in pattern else 1):
                path = [j if key == "j" else key for key in pattern]
                # One constraint: the first cost is report.json's "cost", the key the baseline has always had.
                if constraints == 1 and path[1:] == ["costs", 0]:
                    path = [path[0], "cost"]
                node = json.loads((Path(run_dir) / file).read_text())
                for key in path:
                    node = node[key]
                values[f"{pipeline}:{file}:{'.'.join(map(str, path))}"] = node
    return values


def main():
    baseline_path, *run_dirs = sys.argv[1:]
    update = "--update-baseline" in run_dirs
    run_dirs = [d for d in run_dirs if d != "--update-baseline"]
    values = collect(run_dirs)
    if update:
        Path(baseline_path).write_text(json.dumps({"tolerance": 1e-4, "values": values}, indent=2) + "\n")
        print(f"nightly: baseline written to {baseline_path} ({len(values)} numbers)")
        return 0
    baseline = json.loads(Path(baseline_path).read_text())
    tolerance = baseline["tolerance"]
    failures = []
    for key, expected in baseline["values"].items():
        actual = values.get(key)
        if actual is None or not math.isfinite(actual) or abs(actual - expected) > tolerance:
            failures.append(f"  {key}: baseline {expected}, now {actual}")
    print(f"nightly: {len(baseline['values']) - len(failures)} passed, {len(failures)} failed")
    if failures:
        print("regressions (tolerance %g):\n%s" % (tolerance, "\n".join(failures)))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
