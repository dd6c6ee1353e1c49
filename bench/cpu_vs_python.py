#!/usr/bin/env python3
"""CAN against the Python peer on this CPU, side by side in one run.

For a ~25M and a ~125M-parameter Llama, transformers creates one random
checkpoint (and a Safe-RLHF score model) in a temporary folder; CAN
(build/bench_peer) and the Python peer then run the same task on the same
weights, token ids, shapes and thread count. This machine's speed drifts by tens
of percent over minutes (a shared virtual machine), so the two sides alternate:
--rounds rounds of (CAN: two warm-ups and --repetitions timed runs, then Python:
the same), and each side's median over all its timed runs is reported. Rows:

  dpo      one DPO update on B pairs of T tokens with cached reference log-probs.
           Python: TRL 1.13's DPOTrainer.compute_loss (its real loss code, with the
           metrics it logs every step) on a batch from its DataCollatorForPreference,
           then backward, clip_grad_norm_(1.0) and the optimizer the trainer builds
           (Trainer.create_optimizer: torch AdamW, fused). Timed outside
           Trainer.train(), whose data loading and callbacks would count against it.
  sft      one SFT update (next-token loss on the response half): transformers'
           model(labels=...) loss, backward, clipping, the same AdamW.
  sample   B prompts of T tokens, 64 new tokens, temperature 1, top-p 0.9, top-k off,
           no stop at EOS (Python: generate(min_new_tokens=64), CAN: eos_id past the
           vocabulary), KV cache on both sides.
  score    score-model forward on B sequences of T tokens without gradients (Python:
           LlamaModel + linear head at the last token, Safe-RLHF's computation).

tokens/s counts every sequence token for dpo, sft and score, new tokens for sample.
ratio = CAN / Python. Writes bench/results/cpu-vs-python-<date>.json and .md, unless
--only picks some tasks (for profiling: the rows are printed only).

    .venv/bin/python3 bench/cpu_vs_python.py [--threads N] [--rounds 3] [--repetitions 2] [--only dpo,sample]
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> Llama shape (Hugging Face config fields); parameter counts are computed and reported.
SIZES = {
    "25M": dict(vocab_size=8000, hidden_size=512, intermediate_size=1376, num_hidden_layers=6,
                num_attention_heads=8, num_key_value_heads=4),
    "125M": dict(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                 num_attention_heads=12, num_key_value_heads=4),
}
# (task, batch, length): pairs or sequences of `length` tokens; prompts of `length` for sample.
ROWS = [("dpo", 4, 128), ("sft", 8, 128), ("sample", 8, 32), ("sample", 32, 32), ("score", 16, 128)]
NEW_TOKENS = 64
# Untimed runs before each side's timed ones. Two, because on both sides the first two
# training steps of a fresh process are up to 1.5x slower (125M: the allocator and the
# optimizer state warming up; measured 2026-11-30), which one warm-up left in the data.
WARMUP = 2


def ids_for(stream, count, vocab):
    """The token ids bench_peer.cpp draws: the same 64-bit linear congruential sequence."""
    mask = (1 << 64) - 1
    state = (stream * 2654435761 + 1) & mask
    ids = []
    for _ in range(count):
        state = (state * 6364136223846793005 + 1442695040888963407) & mask
        ids.append(3 + (state >> 33) % (vocab - 3))
    return ids


def sequence_for(stream, length, vocab):
    """(prompt ids with BOS, response ids ending in EOS), length tokens in all, as bench_peer."""
    body = ids_for(stream, length - 2, vocab)
    prompt_length = length // 2
    return [1] + body[:prompt_length - 1], body[prompt_length - 1:] + [2]


def time_repetitions(step, warmup, repetitions):
    for _ in range(warmup):
        step()
    seconds = []
    for _ in range(repetitions):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return seconds


def make_checkpoints(folder, size, torch, transformers):
    config = transformers.LlamaConfig(**SIZES[size], max_position_embeddings=512, bos_token_id=1, eos_token_id=2,
                                      pad_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(0)
    causal = transformers.LlamaForCausalLM(config)
    causal_dir = os.path.join(folder, f"{size}-causal")
    causal.save_pretrained(causal_dir)
    parameters = sum(p.numel() for p in causal.parameters())
    del causal

    backbone = transformers.LlamaModel(config)
    head = torch.nn.Linear(config.hidden_size, 1)
    score_dir = os.path.join(folder, f"{size}-score")
    os.makedirs(score_dir)
    tensors = {f"model.{k}": v.contiguous() for k, v in backbone.state_dict().items()}
    tensors["score_head.weight"] = head.weight.detach().contiguous()
    tensors["score_head.bias"] = head.bias.detach().contiguous()
    from safetensors.torch import save_file
    save_file(tensors, os.path.join(score_dir, "model.safetensors"), metadata={"format": "pt"})
    score_config = json.loads(config.to_json_string(use_diff=False))
    score_config.update({"architectures": ["LlamaForScore"], "score_dim": 1, "score_bias": True, "bias": False,
                         "score_type": "reward", "do_normalize": False})
    with open(os.path.join(score_dir, "config.json"), "w") as out:
        json.dump(score_config, out)
    return causal_dir, score_dir, parameters


def run_can(task, model_dir, batch, length, threads, repetitions):
    command = [os.path.join(ROOT, "build", "bench_peer"), "--task", task, "--model", model_dir, "--batch", str(batch),
               "--length", str(length), "--new-tokens", str(NEW_TOKENS), "--repetitions", str(repetitions),
               "--warmup", str(WARMUP), "--threads", str(threads)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["threads"] == threads, report
    return report["seconds"], report["tokens_per_repetition"]


class PythonPeer:
    """The Python side of every row, on the checkpoints of one size."""

    def __init__(self, causal_dir, score_dir, folder, torch, transformers, trl):
        self.torch, self.transformers, self.trl = torch, transformers, trl
        self.causal_dir, self.score_dir, self.folder = causal_dir, score_dir, folder

    def load_causal(self):
        return self.transformers.AutoModelForCausalLM.from_pretrained(self.causal_dir, dtype=self.torch.float32)

    def dpo(self, batch, length, repetitions):
        torch, trl = self.torch, self.trl
        from datasets import Dataset
        model = self.load_causal()
        vocab = model.config.vocab_size
        examples = []
        for pair in range(batch):
            prompt, chosen = sequence_for(2 * pair, length, vocab)
            _, rejected = sequence_for(2 * pair + 1, length, vocab)
            examples.append({"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected})
        collator = trl.trainer.dpo_trainer.DataCollatorForPreference(pad_token_id=0)
        inputs = collator(examples)
        # The cached reference log-probs, computed before timing as on CAN's side.
        model.eval()
        with torch.no_grad():
            logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
            logps = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, inputs["input_ids"][:, 1:, None])[..., 0]
            reference = (logps * inputs["completion_mask"][:, 1:]).sum(-1)
        inputs["ref_chosen_logps"], inputs["ref_rejected_logps"] = reference.chunk(2)
        trainer = trl.DPOTrainer(model=model, args=self.trainer_args(trl.DPOConfig, precompute_ref_log_probs=True),
                                 train_dataset=Dataset.from_list([{"prompt": "a", "chosen": "b", "rejected": "c"}]),
                                 processing_class=self.tokenizer())
        optimizer = trainer.create_optimizer()
        model.train()

        def step():
            optimizer.zero_grad()
            trainer.compute_loss(model, inputs).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()

        assert type(optimizer).__name__ == "AdamW" and optimizer.defaults["fused"], optimizer.defaults
        return time_repetitions(step, WARMUP, repetitions), 2 * batch * length

    def sft(self, batch, length, repetitions):
        torch = self.torch
        model = self.load_causal()
        vocab = model.config.vocab_size
        rows = [sequence_for(row, length, vocab) for row in range(batch)]
        input_ids = torch.tensor([prompt + response for prompt, response in rows])
        labels = input_ids.clone()
        for row, (prompt, _) in enumerate(rows):
            labels[row, :len(prompt)] = -100  # the loss on response tokens only, as CAN's SFT
        attention_mask = torch.ones_like(input_ids)
        trainer = self.transformers.Trainer(model=model, args=self.trainer_args(self.transformers.TrainingArguments))
        optimizer = trainer.create_optimizer()
        model.train()

        def step():
            optimizer.zero_grad()
            model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()

        return time_repetitions(step, WARMUP, repetitions), batch * length

    def sample(self, batch, length, repetitions):
        torch = self.torch
        model = self.load_causal().eval()
        vocab = model.config.vocab_size
        prompts = torch.tensor([sequence_for(row, 2 * length, vocab)[0] for row in range(batch)])

        def step():
            with torch.no_grad():
                output = model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), do_sample=True,
                                        top_p=0.9, top_k=0, temperature=1.0, max_new_tokens=NEW_TOKENS,
                                        min_new_tokens=NEW_TOKENS, pad_token_id=0)
            assert output.shape == (batch, length + NEW_TOKENS), output.shape

        return time_repetitions(step, WARMUP, repetitions), batch * NEW_TOKENS

    def score(self, batch, length, repetitions):
        torch = self.torch
        from safetensors.torch import load_file
        config = self.transformers.LlamaConfig.from_pretrained(self.score_dir)
        backbone = self.transformers.LlamaModel(config).eval()
        tensors = load_file(os.path.join(self.score_dir, "model.safetensors"))
        backbone.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
        head = torch.nn.Linear(config.hidden_size, 1)
        head.load_state_dict({"weight": tensors["score_head.weight"], "bias": tensors["score_head.bias"]})
        rows = [sequence_for(row, length, config.vocab_size) for row in range(batch)]
        input_ids = torch.tensor([prompt + response for prompt, response in rows])
        attention_mask = torch.ones_like(input_ids)

        def step():
            with torch.no_grad():
                hidden = backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                last = attention_mask.sum(-1) - 1
                head(hidden[torch.arange(batch), last])

        return time_repetitions(step, WARMUP, repetitions), batch * length

    def trainer_args(self, kind, **extra):
        return kind(output_dir=os.path.join(self.folder, "trainer"), report_to="none", use_cpu=True,
                    learning_rate=1e-6, max_grad_norm=1.0, **extra)

    def tokenizer(self):
        """A word-level tokenizer the DPOTrainer constructor needs; the timed batches are token ids."""
        from tokenizers import Tokenizer, models, pre_tokenizers
        vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "a": 3, "b": 4, "c": 5}
        backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        return self.transformers.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                                         pad_token="<unk>", unk_token="<unk>")


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as info:
        memory_gib = int(info.readline().split()[1]) / 2**20
    with open("/etc/debian_version") as version:
        debian = version.read().strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(memory_gib, 1), "os": f"Debian {debian}",
            "python": platform.python_version()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads on both sides")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two sides per row")
    parser.add_argument("--repetitions", type=int, default=2, help="timed runs per side and round")
    parser.add_argument("--only", default="", help="comma-separated tasks to run (default: all)")
    args = parser.parse_args()
    import torch
    import transformers
    import trl
    torch.set_num_threads(args.threads)
    only = set(filter(None, args.only.split(",")))
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    report = {"machine": machine(), "date": datetime.date.today().isoformat(),
              "command": " ".join([".venv/bin/python3", "bench/cpu_vs_python.py", *sys.argv[1:]]),
              "versions": {"can": commit.strip(), "torch": torch.__version__, "transformers": transformers.__version__,
                           "trl": trl.__version__},
              "threads": args.threads, "rounds": args.rounds, "repetitions_per_round": args.repetitions,
              "statistic": "median over all timed runs of a side", "rows": []}
    with tempfile.TemporaryDirectory(prefix="can_cpu_vs_python_") as folder:
        for size in SIZES:
            causal_dir, score_dir, parameters = make_checkpoints(folder, size, torch, transformers)
            peer = PythonPeer(causal_dir, score_dir, folder, torch, transformers, trl)
            for task, batch, length in ROWS:
                if only and task not in only:
                    continue
                model_dir = score_dir if task == "score" else causal_dir
                timings = {"can": [], "python": []}
                for _ in range(args.rounds):
                    seconds, tokens = run_can(task, model_dir, batch, length, args.threads, args.repetitions)
                    timings["can"] += seconds
                    seconds, python_tokens = getattr(peer, task)(batch, length, args.repetitions)
                    assert python_tokens == tokens, (task, python_tokens, tokens)
                    timings["python"] += seconds
                can_rate = tokens / statistics.median(timings["can"])
                python_rate = tokens / statistics.median(timings["python"])
                shape = (f"{batch} pairs x {length} tokens" if task == "dpo" else
                         f"{batch} prompts x {length} tokens, {NEW_TOKENS} new" if task == "sample" else
                         f"{batch} x {length} tokens")
                row = {"name": f"{task} {size}", "shape": shape, "parameters": parameters,
                       "can_tokens_per_s": round(can_rate, 1), "python_tokens_per_s": round(python_rate, 1),
                       "ratio": round(can_rate / python_rate, 3),
                       "can_seconds": [round(x, 4) for x in timings["can"]],
                       "python_seconds": [round(x, 4) for x in timings["python"]]}
                report["rows"].append(row)
                print(json.dumps(row), flush=True)
    if only:
        return
    out_dir = os.path.join(ROOT, "bench", "results")
    stem = os.path.join(out_dir, f"cpu-vs-python-{report['date']}")
    with open(stem + ".json", "w") as out:
        json.dump(report, out, indent=2)
        out.write("\n")
    with open(stem + ".md", "w") as out:
        m = report["machine"]
        out.write(f"# CAN against PyTorch + transformers + TRL on CPU, {report['date']}\n\n")
        out.write(f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}. ")
        out.write(f"Versions: CAN {report['versions']['can']}, torch {report['versions']['torch']}, transformers "
                  f"{report['versions']['transformers']}, TRL {report['versions']['trl']}.\n")
        out.write(f"Command: `{report['command']}`; {args.threads} threads on both sides; {args.rounds} rounds "
                  f"alternating the sides, each {WARMUP} warm-ups and {args.repetitions} timed runs; the median of each "
                  "side's timed runs. What each row runs: the docstring of bench/cpu_vs_python.py.\n\n")
        out.write("| row | shape | CAN tokens/s | Python tokens/s | CAN / Python |\n|---|---|---:|---:|---:|\n")
        for row in report["rows"]:
            out.write(f"| {row['name']} | {row['shape']} | {row['can_tokens_per_s']:.1f} | "
                      f"{row['python_tokens_per_s']:.1f} | {row['ratio']:.2f} |\n")
    print(f"wrote {stem}.json and .md")


if __name__ == "__main__":
    main()
