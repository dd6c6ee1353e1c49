"""Merges the outputs of one scripts/bench-gpu.sh run into bench/results/gpu-<date>.json and
prints a table. Standard library only.

The run folder holds, per case, <name>.json (the one JSON object the benchmark printed) or,
when it failed, <name>.err (its stderr): can_dpo, pytorch_dpo, can_sampling,
transformers_sampling, can_lora; and system.json (nvidia-smi's name, driver and memory, the
Python packages' versions), lora_nvidia_smi.txt (memory.used in MiB, sampled during can_lora).

    python3 bench/gpu/merge_results.py RUN_DIR --output FILE [--date YYYY-MM-DD]
"""
import argparse
import datetime
import json
import pathlib

from common import FLOPS_FORMULA, peak_bf16_flops


def read_case(run_dir, name, errors, notes):
    """The case's JSON object, or None with the reason recorded in `errors` (it failed) or
    `notes` (it was not run: the smoke mode runs no Python benchmark)."""
    output = run_dir / f"{name}.json"
    if output.exists():
        lines = [line for line in output.read_text().splitlines() if line.strip()]
        try:
            return json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError) as error:
            errors[name] = f"{output}: no JSON object on its last line ({error})"
            return None
    stderr = run_dir / f"{name}.err"
    if stderr.exists():
        errors[name] = stderr.read_text()  # the exit status, then the end of its stderr
    else:
        notes.append(f"{name}: not run")
    return None


def ratio(numerator, denominator):
    return numerator / denominator if numerator and denominator else None


def tokens_per_second(case):
    return case["tokens_per_second"] if case else None


def nvidia_smi_peak_gb(run_dir):
    """The largest memory.used sample (MiB) during can_lora, in GB, or None without samples."""
    samples = run_dir / "lora_nvidia_smi.txt"
    if not samples.exists():
        return None
    values = [float(line) for line in samples.read_text().split() if line.replace(".", "", 1).isdigit()]
    return max(values) * 2**20 / 1e9 if values else None


def merge(run_dir, date):
    errors, notes = {}, []
    system = json.loads((run_dir / "system.json").read_text()) if (run_dir / "system.json").exists() else {}
    can_dpo = read_case(run_dir, "can_dpo", errors, notes)
    pytorch_dpo = read_case(run_dir, "pytorch_dpo", errors, notes)
    can_sampling = read_case(run_dir, "can_sampling", errors, notes)
    transformers_sampling = read_case(run_dir, "transformers_sampling", errors, notes)
    can_lora = read_case(run_dir, "can_lora", errors, notes)

    device = system.get("device_name") or next(
        (case["device_name"] for case in (pytorch_dpo, transformers_sampling) if case and "device_name" in case),
        None) or "cpu"
    peak = peak_bf16_flops(device)
    if peak is None:
        notes.append(f"no peak bf16 FLOP/s known for device '{device}' (bench/gpu/common.py): mfu is null")

    def mfu(case):
        if case is None or peak is None or case.get("dtype") != "bf16":
            return None
        return case["tokens_per_second"] * case["model_flops_per_token"] / peak

    for can_case, python_case, what in ((can_dpo, pytorch_dpo, "dpo_step"),
                                        (can_sampling, transformers_sampling, "sampling")):
        if can_case and python_case and can_case["shape"]["parameters"] != python_case["shape"]["parameters"]:
            notes.append(f"{what}: CAN's model has {can_case['shape']['parameters']} parameters, "
                         f"the Python one {python_case['shape']['parameters']}: the shapes differ")

    reference = can_dpo or pytorch_dpo or {}
    dpo_step = {
        "can_tokens_per_second": tokens_per_second(can_dpo),
        "pytorch_tokens_per_second": tokens_per_second(pytorch_dpo),
        "ratio": ratio(tokens_per_second(can_dpo), tokens_per_second(pytorch_dpo)),
        "mfu": mfu(can_dpo),
        "pytorch_mfu": mfu(pytorch_dpo),
        "peak_bf16_flops": peak,
        "model_flops_per_token": reference.get("model_flops_per_token"),
        "flops_formula": FLOPS_FORMULA,
        **{key: reference.get(key) for key in ("shape", "dtype", "batch", "rows", "seq", "steps", "warmup_steps")},
        "can": can_dpo,
        "pytorch": pytorch_dpo,
    }
    reference = can_sampling or transformers_sampling or {}
    sampling = {
        "can_tokens_per_second": tokens_per_second(can_sampling),
        "transformers_tokens_per_second": tokens_per_second(transformers_sampling),
        "ratio": ratio(tokens_per_second(can_sampling), tokens_per_second(transformers_sampling)),
        **{key: reference.get(key) for key in ("shape", "dtype", "batch", "prompt_length", "new_tokens",
                                               "temperature", "top_p", "top_k", "runs")},
        "can": can_sampling,
        "transformers": transformers_sampling,
    }
    smi_peak = nvidia_smi_peak_gb(run_dir)
    allocator_peak = can_lora.get("peak_allocated_gb") if can_lora else None
    lora = can_lora or {}
    lora_7b = {
        "tokens_per_second": tokens_per_second(can_lora),
        "peak_gb": allocator_peak if allocator_peak is not None else smi_peak,
        "peak_gb_source": ("LibTorch's CUDA caching allocator, peak allocated bytes (torch.cuda.max_memory_allocated)"
                           if allocator_peak is not None else
                           "nvidia-smi memory.used, largest sample (includes the CUDA context and cached blocks)"
                           if smi_peak is not None else None),
        "nvidia_smi_peak_used_gb": smi_peak,
        **{key: lora.get(key) for key in ("shape", "dtype", "precision", "lora", "batch", "rows", "seq", "steps",
                                          "warmup_steps", "trained_parameters")},
        "can": can_lora,
    }
    result = {
        "device": device,
        "date": date,
        "driver": system.get("driver"),
        "gpu_memory_total": system.get("memory_total"),
        "torch": system.get("torch"),
        "cuda": system.get("cuda"),
        "transformers": system.get("transformers"),
        "can_libtorch": next((case["libtorch"] for case in (can_dpo, can_sampling, can_lora) if case), None),
        "dpo_step": dpo_step,
        "sampling": sampling,
        "lora_7b": lora_7b,
        "notes": notes + ["GB = 1e9 bytes; tokens/s count every position of every row forward and backward "
                          "(DPO) or every new token (sampling); ratio = CAN / Python"],
    }
    if errors:
        result["errors"] = errors
    return result


def table(result):
    def number(value, digits=0):
        return "-" if value is None else f"{value:,.{digits}f}"

    def percent(fraction):
        return number(fraction and 100 * fraction, 1)

    dpo, sampling, lora = result["dpo_step"], result["sampling"], result["lora_7b"]
    return "\n".join([
        f"{result['device']}  {result['date']}",
        f"{'case':<34}{'CAN tok/s':>14}{'Python tok/s':>14}{'ratio':>8}  other",
        f"{'dpo_step ' + str((dpo['shape'] or {}).get('name')):<34}{number(dpo['can_tokens_per_second']):>14}"
        f"{number(dpo['pytorch_tokens_per_second']):>14}{number(dpo['ratio'], 2):>8}  "
        f"MFU {percent(dpo['mfu'])}% (PyTorch {percent(dpo['pytorch_mfu'])}%)",
        f"{'sampling ' + str((sampling['shape'] or {}).get('name')):<34}{number(sampling['can_tokens_per_second']):>14}"
        f"{number(sampling['transformers_tokens_per_second']):>14}{number(sampling['ratio'], 2):>8}",
        f"{'lora dpo_step ' + str((lora['shape'] or {}).get('name')):<34}{number(lora['tokens_per_second']):>14}"
        f"{'':>14}{'':>8}  peak {number(lora['peak_gb'], 1)} GB",
    ] + [f"error in {name}: {message.strip().splitlines()[-1] if message.strip() else '?'}"
         for name, message in result.get("errors", {}).items()])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=pathlib.Path)
    parser.add_argument("--output", type=pathlib.Path, required=True)
    parser.add_argument("--date", default=datetime.date.today().isoformat())
    args = parser.parse_args()
    result = merge(args.run_dir, args.date)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"written: {args.output}")


if __name__ == "__main__":
    main()
