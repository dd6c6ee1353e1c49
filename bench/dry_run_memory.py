#!/usr/bin/env python3
"""can-train --dry-run's memory estimate against the peaks a real run records.

For each config: `can-train --dry-run` prints the estimated peak of every stage;
the run itself (into a fresh folder) records each stage's peak resident memory in
stages.json (peak_rss_bytes: Linux's VmHWM, reset at the stage's start after freed
heap is returned). Prints a Markdown table per config and the worst ratio.

    .venv/bin/python3 bench/dry_run_memory.py configs/tiny-mocan.yaml [configs/... ...] [--set key=value ...]
The build folder comes from CAN_BINARY_DIR, default build/.
"""
import json
import os
import re
import subprocess
import sys
import tempfile


def main():
    arguments = sys.argv[1:]
    configs = [a for a in arguments if a.endswith(".yaml")]
    sets = [a for a in arguments if not a.endswith(".yaml")]
    can_train = os.path.join(os.environ.get("CAN_BINARY_DIR", "build"), "can-train")
    worst = 1.0
    for config in configs:
        with tempfile.TemporaryDirectory(prefix="can_dry_run_memory_") as folder:
            run_dir = os.path.join(folder, "run")
            command = [can_train, "--config", config, "--set", f"run.dir={run_dir}", *sets]
            plan = subprocess.run(command + ["--dry-run"], capture_output=True, text=True, check=True).stdout
            estimates = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\S+)\s+([\d.]+) GiB", plan, re.M)}
            subprocess.run(command, capture_output=True, text=True, check=True)
            with open(os.path.join(run_dir, "stages.json")) as source:
                stages = json.load(source)["stages"]
        print(f"\n{config} {' '.join(sets)}\n\n| stage | measured peak | estimate | estimate / measured |\n|---|---:|---:|---:|")
        for stage in stages:
            if stage["peak_rss_bytes"] is None:
                raise SystemExit(f"{config}: stage {stage['name']} has no peak (the kernel refused to reset it)")
            measured = stage["peak_rss_bytes"] / 2**30
            ratio = estimates[stage["name"]] / measured
            worst = max(worst, ratio, 1 / ratio)
            print(f"| {stage['name']} | {measured:.3f} GiB | {estimates[stage['name']]:.3f} GiB | {ratio:.2f} |")
    print(f"\nworst ratio (either way): {worst:.2f}")


if __name__ == "__main__":
    main()
