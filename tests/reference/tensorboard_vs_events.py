#!/usr/bin/env python3
"""Reference test: CAN's TensorBoard event files read by TensorBoard itself (2.21).

A tiny can-train run (configs/tiny-mocan.yaml, the stages up to the reward model, then
the rest of the pipeline through the evaluation) writes events.out.tfevents.can beside
every trainer's metrics.jsonl and into the evaluation's folder. TensorBoard's
EventAccumulator reads each file (it checks the TFRecord framing and CRCs while
reading) and must find:
  * per trainer, the same scalars as metrics.jsonl: every finite number of every line,
    under transformers' tags ("loss" -> "train/loss", "eval_loss" -> "eval/loss"), at the
    line's step, with its "time" as the wall time;
  * for the evaluation, the headline numbers of report.json under "eval/" at step 0.
Tolerances: values are stored as float32 (TensorBoard's simple_value), so each is
compared with the float32 rounding of the JSON double (relative 2^-24, about 6e-8);
wall times are doubles, compared exactly with the JSON's.

Exit 0: all pass; 1: a failure (each named); 77: tensorboard missing (outside CI).
"""
import json
import math
import os
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "support"))
import can_reference as cr  # noqa: E402

event_accumulator = cr.require("tensorboard.backend.event_processing.event_accumulator")

FLOAT32_RTOL = 2.0 ** -24  # simple_value is a float32: the rounding of the JSON double


def as_float32(value):
    return struct.unpack("<f", struct.pack("<f", value))[0]


def scalars_of(path):
    """{tag: [(step, wall_time, value)]} as TensorBoard reads the file."""
    accumulator = event_accumulator.EventAccumulator(path, size_guidance={event_accumulator.SCALARS: 0})
    accumulator.Reload()
    return {tag: [(e.step, e.wall_time, e.value) for e in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}


def tag_of(metric):
    return "eval/" + metric[len("eval_"):] if metric.startswith("eval_") else "train/" + metric


def check_trainer(checks, stage_dir):
    name = os.path.basename(stage_dir)
    expected = {}
    with open(os.path.join(stage_dir, "metrics.jsonl")) as lines:
        for line in lines:
            row = json.loads(line)
            for key, value in row.items():
                if key in ("stage", "step", "time") or not isinstance(value, (int, float)) or not math.isfinite(value):
                    continue
                expected.setdefault(tag_of(key), []).append((row["step"], row["time"], value))
    read = scalars_of(os.path.join(stage_dir, "events.out.tfevents.can"))
    checks.equal(f"{name}: the same tags as metrics.jsonl", sorted(read), sorted(expected))
    worst = 0.0
    for tag, points in expected.items():
        got = read.get(tag, [])
        if not checks.check(f"{name} {tag}: one point per metrics line", len(got) == len(points),
                            f"{len(got)} points, {len(points)} lines"):
            continue
        for (step, wall, value), (read_step, read_wall, read_value) in zip(points, got):
            checks.check(f"{name} {tag} step {step}", read_step == step and read_wall == wall,
                         f"step {read_step} wall {read_wall!r} vs step {step} wall {wall!r}")
            worst = max(worst, abs(read_value - as_float32(value)))
            if abs(read_value - value) > FLOAT32_RTOL * abs(value):
                checks.check(f"{name} {tag} step {step} value", False, f"{read_value!r} vs {value!r}")
    print(f"  {name}: {sum(len(p) for p in expected.values())} scalars, largest |TensorBoard − float32(JSON)| {worst:g}")


def check_evaluation(checks, eval_dir):
    with open(os.path.join(eval_dir, "report.json")) as file:
        report = json.load(file)
    read = scalars_of(os.path.join(eval_dir, "events.out.tfevents.can"))
    expected = {
        "eval/reward_improvement": report["achieved"]["reward_improvement"],
        "eval/safety_improvement_0": report["achieved"]["safety_improvement"][0],
        "eval/predicted_safety_improvement_0": report["predicted"]["safety_improvement"][0],
        "eval/judge_helpfulness": report["policy"]["judge_helpfulness"],
        "eval/win_rate_safety": report["win_rate"]["safety"],
    }
    for tag, value in expected.items():
        points = read.get(tag, [])
        checks.check(f"evaluation {tag} at step 0",
                     len(points) == 1 and points[0][0] == 0 and abs(points[0][2] - value) <= FLOAT32_RTOL * abs(value),
                     f"{points} vs {value!r}")


def main():
    start = time.monotonic()
    checks = cr.Checks("tensorboard_vs_events")
    with cr.temporary_folder("tensorboard") as folder:
        run_dir = os.path.join(folder, "run")
        config = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "configs", "tiny-mocan.yaml")
        try:
            cr.run([cr.program("can-train"), "--config", config, "--set", f"run.dir={run_dir}"])
            for stage in ("reference", "reward_model", "cost_model", "dpo"):
                check_trainer(checks, os.path.join(run_dir, stage))
            check_evaluation(checks, os.path.join(run_dir, "eval"))
        except cr.CheckFailure as failure:
            checks.check("can-train", False, str(failure))
    print(f"({time.monotonic() - start:.1f} s)")
    return checks.report()


if __name__ == "__main__":
    sys.exit(main())
