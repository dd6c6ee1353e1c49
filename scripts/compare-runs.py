#!/usr/bin/env python3
"""Compares two can-train run directories file by file, for a change that must not
change what a run produces (a refactor): every artifact byte for byte, except what
records when and where the run happened:

  can-train.log, can-train.lock          the log (times, paths), the writer's process id
  stages.json                            stage timings
  config.resolved.yaml                   run.dir may differ; every other line must not
  */metrics.jsonl                        the fields "time" and "tokens_per_second" may differ
  */events.out.tfevents.can              TensorBoard's copy of them: wall times and the
                                         tokens_per_second scalars may differ
  --ignore-field F                       one more JSON field allowed to differ in *.json files
                                         (e.g. format_version when a change adds it)

Prints each difference and exits 1 when there is one, 0 when the runs match.

  python3 scripts/compare-runs.py runs/before runs/after [--ignore-field format_version]

With --finished-stages, `after` is a run that stopped part-way: only the stage folders
it holds (the stages it finished, by the stage names in before's stages.json) are
compared, and the last line says how many: "N finished stage(s) equal".
"""
import argparse
import json
import os
import sys

TIMING_FIELDS = {"time", "tokens_per_second"}
SKIPPED = {"can-train.log", "can-train.lock", "stages.json"}


def files_under(root):
    found = set()
    for folder, _, names in os.walk(root):
        for name in names:
            found.add(os.path.relpath(os.path.join(folder, name), root))
    return found


def without(value, fields):
    if isinstance(value, dict):
        return {key: without(item, fields) for key, item in value.items() if key not in fields}
    if isinstance(value, list):
        return [without(item, fields) for item in value]
    return value


def varint(data, at):
    value, shift = 0, 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if byte < 0x80:
            return value, at


def fields(message):
    """(field number, value) of a protocol-buffer message: ints, or bytes for fixed and
    length-delimited fields."""
    at, found = 0, []
    while at < len(message):
        key, at = varint(message, at)
        number, kind = key >> 3, key & 7
        if kind == 0:
            value, at = varint(message, at)
        elif kind == 1:
            value, at = message[at:at + 8], at + 8
        elif kind == 5:
            value, at = message[at:at + 4], at + 4
        else:
            length, at = varint(message, at)
            value, at = message[at:at + length], at + length
        found.append((number, value))
    return found


def scalar_events(data):
    """The (step, tag, value bytes) of a TFRecord events file, without wall times and timing."""
    at, scalars = 0, []
    while at < len(data):
        length = int.from_bytes(data[at:at + 8], "little")
        event = data[at + 12:at + 12 + length]
        at += 16 + length
        step = next((value for number, value in fields(event) if number == 2), 0)
        for number, summary in fields(event):
            if number != 5:
                continue
            for _, entry in fields(summary):
                tag = dict(fields(entry)).get(1, b"").decode()
                if not tag.endswith("/tokens_per_second"):
                    scalars.append((step, tag, dict(fields(entry)).get(2)))
    return scalars


def same(relative, before, after, ignored_fields):
    with open(before, "rb") as a, open(after, "rb") as b:
        first, second = a.read(), b.read()
    if first == second:
        return True
    name = os.path.basename(relative)
    if name == "config.resolved.yaml":
        strip = lambda text: [line for line in text.decode().splitlines() if not line.strip().startswith("dir:")]
        return strip(first) == strip(second)
    if name == "metrics.jsonl":
        lines = lambda text: [without(json.loads(line), TIMING_FIELDS) for line in text.decode().splitlines()]
        return lines(first) == lines(second)
    if name == "events.out.tfevents.can":
        return scalar_events(first) == scalar_events(second)
    if name.endswith(".json") and ignored_fields:
        return without(json.loads(first), ignored_fields) == without(json.loads(second), ignored_fields)
    return False


def compare(before_root, after_root, ignored_fields):
    """The differences between two folders, as lines, and how many files both hold."""
    before, after = files_under(before_root), files_under(after_root)
    differences = [f"only in {before_root}: {path}" for path in sorted(before - after)]
    differences += [f"only in {after_root}: {path}" for path in sorted(after - before)]
    for relative in sorted(before & after):
        if os.path.basename(relative) in SKIPPED:
            continue
        if not same(relative, os.path.join(before_root, relative), os.path.join(after_root, relative), ignored_fields):
            differences.append(f"differs: {relative}")
    return differences, len(before & after)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--ignore-field", action="append", default=[], help="a JSON field allowed to differ")
    parser.add_argument("--finished-stages", action="store_true", help="compare only the stages `after` finished")
    arguments = parser.parse_args()
    ignored = set(arguments.ignore_field)
    if arguments.finished_stages:
        with open(os.path.join(arguments.before, "stages.json")) as manifest:
            stages = [stage["name"] for stage in json.load(manifest)["stages"]]
        finished = [stage for stage in stages if os.path.isdir(os.path.join(arguments.after, stage))]
        differences = []
        for stage in finished:
            found, _ = compare(os.path.join(arguments.before, stage), os.path.join(arguments.after, stage), ignored)
            differences += [f"{stage}: {line}" for line in found]
        for line in differences:
            print(line)
        print(f"{len(finished)} finished stage(s) " + ("differ" if differences else "equal"))
        return 1 if differences else 0
    differences, both = compare(arguments.before, arguments.after, ignored)
    for line in differences:
        print(line)
    print(f"{both} files in both; {len(differences)} difference(s)")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
