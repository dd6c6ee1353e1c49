#!/usr/bin/env python3
"""DPO training throughput of 1 and 2 processes: CAN's job against PyTorch DDP, side by side.

CAN: build/bench_dpo_job (the real training loop: each rank's part of the job's
micro-batch, the bucketed gradient all-reduce after backward, clipping, fused AdamW),
launched by torchrun for 2 processes. Python peer: the same ~25M-parameter Llama
shape in transformers (LlamaForCausalLM, random weights), wrapped in
torch.nn.parallel.DistributedDataParallel (Gloo, 25 MiB buckets, its all-reduce
overlapped with backward), the DPO sigmoid loss as TRL 1.13 computes it (chosen and
rejected concatenated in one forward, response log-probs summed, cached reference
log-probs), clip_grad_norm_(1.0) and torch AdamW (fused), launched by the same
torchrun. Both: the job's batch of --global-batch pairs of --length tokens whatever
the number of processes, 1 thread per process, the first 5 updates untimed.
tokens/s counts every sequence token of the job. The sides alternate, --rounds times,
and each reports its median. A third CAN variant runs 2 processes with
distributed.shard_optimizer (ZeRO stage 1); each CAN run also reports every rank's
peak resident memory (rank 0's includes the final checkpoint, for which a sharded run
gathers every moment onto it; rank 1's shows the saving). Writes
bench/results/dpo-job-<date>.json and .md.

    .venv/bin/python3 bench/dpo_job_vs_python.py [--rounds 3] [--updates 25]
"""
import argparse
import datetime
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = dict(vocab_size=8000, hidden_size=512, intermediate_size=1376, num_hidden_layers=6, num_attention_heads=8,
             num_key_value_heads=4)  # tests/tiny_model.h's small_llama_config, bench_dpo_job --config small
WARMUP = 5


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(processes, command):
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
                   "--master-port", str(free_port()), *command]
    result = subprocess.run(command, capture_output=True, text=True, env=environment)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return json.loads([line for line in result.stdout.splitlines() if line.startswith("{")][-1])


def run_can(processes, args, sharded=False):
    program = os.path.join(ROOT, "build", "bench_dpo_job")
    command = [program, "--config", "small", "--global-batch", str(args.global_batch), "--length", str(args.length),
               "--updates", str(args.updates), "--threads", "1", *(["--shard-optimizer"] if sharded else [])]
    if processes > 1:
        command.insert(0, "--no-python")
    return launch(processes, command)


def run_python(processes, args):
    script = [os.path.abspath(__file__), "--worker", "--global-batch", str(args.global_batch), "--length",
              str(args.length), "--updates", str(args.updates)]
    return launch(processes, script if processes > 1 else [sys.executable, *script])


def worker(args):
    """One rank of the Python peer (or the whole of it, alone)."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    import transformers

    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SHAPE, max_position_embeddings=args.length,
                                                                  tie_word_embeddings=False))
    model.train()
    trained = torch.nn.parallel.DistributedDataParallel(model, bucket_cap_mb=25) if world > 1 else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    per_rank = args.global_batch // world
    half = args.length // 2
    generator = torch.Generator().manual_seed(1 + rank)
    beta = 0.1

    def step():
        # [2B, T]: B chosen rows then B rejected rows, sharing the prompt half.
        prompt = torch.randint(3, SHAPE["vocab_size"], (per_rank, half), generator=generator)
        responses = torch.randint(3, SHAPE["vocab_size"], (2 * per_rank, args.length - half), generator=generator)
        input_ids = torch.cat([prompt.repeat(2, 1), responses], dim=1)
        logits = trained(input_ids=input_ids).logits[:, :-1]  # [2B, T-1, V]
        labels = input_ids[:, 1:]
        mask = torch.zeros_like(labels, dtype=torch.bool)
        mask[:, half - 1:] = True  # the response tokens
        per_token = torch.gather(logits.log_softmax(-1), 2, labels.unsqueeze(2)).squeeze(2)
        logps = (per_token * mask).sum(-1)  # [2B]
        reference = logps.detach() - 0.01  # cached reference log-probs
        chosen, rejected = (logps - reference).chunk(2)
        loss = -F.logsigmoid(beta * (chosen - rejected)).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    for _ in range(WARMUP):
        step()
    if world > 1:
        dist.barrier()
    start = time.perf_counter()
    timed = args.updates - WARMUP
    for _ in range(timed):
        step()
    if world > 1:
        dist.barrier()
    seconds = time.perf_counter() - start
    if rank == 0:
        print(json.dumps({"implementation": "PyTorch DDP + transformers", "processes": world,
                          "tokens_per_second": timed * 2 * args.global_batch * args.length / seconds}))
    if world > 1:
        dist.destroy_process_group()


def machine():
    with open("/proc/cpuinfo") as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "unknown")
    with open("/etc/debian_version") as version:
        debian = version.read().strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "os": f"Debian {debian}", "python": platform.python_version()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--global-batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--updates", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    import torch
    import transformers
    runs = {(side, processes): [] for side in ("CAN", "Python") for processes in (1, 2)}
    runs[("CAN sharded", 2)] = []
    peaks = {}  # CAN variant -> each rank's peak resident bytes, of the last round
    for round_index in range(args.rounds):
        for processes in (1, 2):
            result = run_can(processes, args)
            runs[("CAN", processes)].append(result["tokens_per_second"])
            peaks[f"CAN x{processes}"] = result["peak_rss_bytes_per_rank"]
            runs[("Python", processes)].append(run_python(processes, args)["tokens_per_second"])
        result = run_can(2, args, sharded=True)
        runs[("CAN sharded", 2)].append(result["tokens_per_second"])
        peaks["CAN sharded x2"] = result["peak_rss_bytes_per_rank"]
        print(f"round {round_index + 1}: " + ", ".join(f"{side} x{p}: {values[-1]:.0f}"
                                                        for (side, p), values in runs.items()), flush=True)
    median = {key: statistics.median(values) for key, values in runs.items()}
    today = datetime.date.today().isoformat()
    command = "OMP_NUM_THREADS=1 .venv/bin/python3 bench/dpo_job_vs_python.py " + " ".join(
        f"--{name.replace('_', '-')} {getattr(args, name)}" for name in ("global_batch", "length", "updates", "rounds"))
    result = {"date": today, "command": command, "machine": machine(), "torch": torch.__version__,
              "transformers": transformers.__version__, "shape": SHAPE, "global_batch_pairs": args.global_batch,
              "sequence_length": args.length, "timed_updates": args.updates - WARMUP,
              "tokens_per_second": {f"{side} x{p}": values for (side, p), values in runs.items()},
              "median_tokens_per_second": {f"{side} x{p}": value for (side, p), value in median.items()},
              "peak_rss_bytes_per_rank": peaks}
    stem = os.path.join(ROOT, "bench", "results", f"dpo-job-{today}")
    with open(stem + ".json", "w") as out:
        json.dump(result, out, indent=2)
    lines = [f"# DPO training throughput, 1 and 2 processes ({today})", "", f"Command: `{command}`", "",
             f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, {result['machine']['os']}; "
             f"torch {result['torch']}, transformers {result['transformers']}. Llama of ~25M parameters "
             f"({SHAPE}), the job's batch {args.global_batch} pairs of {args.length} tokens, 1 thread per process, "
             f"median of {args.rounds} alternating rounds.", "",
             "| | 1 process | 2 processes | 2 / 1 |", "|---|---|---|---|"]
    for side in ("CAN", "Python"):
        one, two = median[(side, 1)], median[(side, 2)]
        lines.append(f"| {side} tokens/s | {one:.0f} | {two:.0f} | {two / one:.2f} |")
    lines.append(f"| CAN / Python | {median[('CAN', 1)] / median[('Python', 1)]:.2f} | "
                 f"{median[('CAN', 2)] / median[('Python', 2)]:.2f} | |")
    sharded = median[("CAN sharded", 2)]
    lines.append(f"| CAN, sharded optimizer (ZeRO-1) tokens/s | | {sharded:.0f} | {sharded / median[('CAN', 1)]:.2f} |")
    lines += ["", "Peak resident memory per rank, MiB (last round; rank 0's includes the final checkpoint):", ""]
    for name, values in peaks.items():
        lines.append(f"- {name}: " + ", ".join(f"rank {r} {v / 2**20:.0f}" for r, v in enumerate(values)))
    with open(stem + ".md", "w") as out:
        out.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
