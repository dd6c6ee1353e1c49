#!/usr/bin/env python3
"""Reference test: CAN's greedy decoding (can::sample, can::sample_without_cache) against transformers' generate().

Two tiny random LlamaForCausalLM checkpoints made and saved by transformers
(save_pretrained, safetensors; weights scaled up from the default init, see
support/tiny_causal_lm.py):
  A  grouped-query attention (8 : 2 heads), untied lm_head, rope_theta 5e5;
  B  multi-head attention (4 : 4), tied embeddings.
The EOS id of each is chosen before saving, from the model's own greedy paths
(choose_eos): a token that some prompt first emits after a few and within 16 new
tokens (it stops at EOS, and in a batch finishes before CAN's first check for
finished rows) and some prompt never emits (it runs to the limit). The test
checks that both cases occur.

For prompts of different lengths (BOS first), `can_reference_probe generate`
(greedy, temperature 0, MAX_NEW_TOKENS new tokens) runs three ways: with the KV
cache one prompt at a time, with the KV cache on the whole batch (left-padded,
rows leaving the batch as they finish), and without the cache. Each is compared
with transformers' generate(do_sample=False, eos_token_id, pad_token_id) on the
prompt alone (batch 1, no padding):
  * the new tokens, token for token, ending with EOS exactly when transformers' do;
  * stopped_at_eos;
  * the log-prob of each new token, against log_softmax of generate()'s raw
    logits (output_logits, return_dict_in_generate).
A fourth run (KV cache, whole batch) reads the model from a copy whose
config.json keeps the default EOS 2 and whose generation_config.json (written by
save_pretrained) alone names the chosen EOS, as hub checkpoints often do: CAN
must stop where generate() does, so it reads the EOS from there.
The smallest top-1 / top-2 logit gap along transformers' greedy paths is printed
and must be well above the logits' float32 disagreement, so equal tokens are not
luck and a wrong token is a real error.

Exit 0: all pass; 1: a failure (each named); 77: a library missing (outside CI).
The build folder comes from CAN_BINARY_DIR (CTest sets it), default build/.
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "support"))
from can_reference import CheckFailure, Checks, probe, read_json, require, temporary_folder, write_json  # noqa: E402

torch, transformers = require("torch", "transformers")

import tiny_causal_lm as tiny  # noqa: E402

# --- TOLERANCES -----------------------------------------------------------------
# Tokens: exactly equal. That is sound only when no greedy choice is a near-tie.
# CAN's and transformers' float32 logits differ by ~1e-6 (at most 1e-4, checked in
# causal_lm_vs_transformers.py); a choice can flip only when the top-1 / top-2 gap
# is below twice the logits' difference, so every gap on the paths must be at
# least MIN_GAP: 5 times the worst allowed flip, ~500 times the typical one.
# (Logits have standard deviation ~1.6; the smallest gap over ~100 choices
# among 256 tokens is then a few 1e-3.)
MIN_GAP = 1e-3
# Per-token log-probs: log_softmax of float32 logits on both sides, the logits
# differing by float32 rounding (~1e-6, through the KV cache or the full prefix);
# a log-prob is a logit minus a log-sum-exp, so at most about twice that.
LOGPROB_ATOL = 1e-4
MAX_NEW_TOKENS = 24
# CAN looks at finished rows every 16 steps (kSamplingSyncInterval in sampling.h):
# a row stopping before then exercises the row removal of the batched KV cache.
EARLY_STOP = 16

PROMPTS = [
    [1],
    [1, 17, 45, 99],
    [1, 250, 3, 64, 81, 12, 200],
    [1, 5, 77],
    [1, 140, 141, 60, 61, 9, 33, 210, 11, 4],
    [1, 222, 31, 18, 19],
]


def free_greedy(model):
    """Each prompt's greedy continuation of MAX_NEW_TOKENS tokens with no EOS, full prefix every step."""
    paths = []
    with torch.no_grad():
        for prompt in PROMPTS:
            sequence = list(prompt)
            for _ in range(MAX_NEW_TOKENS):
                logits = model(input_ids=torch.tensor([sequence])).logits[0, -1]
                sequence.append(int(logits.argmax()))
            paths.append(sequence[len(prompt):])
    return paths


def choose_eos(paths):
    """The EOS id: a token that some path first emits after a few tokens and before EARLY_STOP, and that some
    path never emits; of those, the one that ends the most paths, then the smallest id."""
    used = {tiny.BOS, tiny.PAD} | {token for prompt in PROMPTS for token in prompt}
    candidates = []
    for token in sorted({t for path in paths for t in path} - used):
        firsts = [path.index(token) for path in paths if token in path]
        if len(firsts) < len(paths) and any(2 <= first < EARLY_STOP for first in firsts):
            candidates.append((-len(firsts), token))
    if not candidates:
        raise SystemExit(f"FAILED: no token stops some greedy paths and not others; paths {paths}")
    return min(candidates)[1]


def transformers_generate(model, eos):
    """Per prompt (batch 1): new tokens and log_softmax of generate()'s raw logits at each; smallest top-1/2 gap."""
    results, smallest_gap = [], float("inf")
    for prompt in PROMPTS:
        ids = torch.tensor([prompt])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=1,
                             max_new_tokens=MAX_NEW_TOKENS, eos_token_id=eos, pad_token_id=tiny.PAD,
                             output_logits=True, return_dict_in_generate=True)
        tokens = out.sequences[0, len(prompt):].tolist()
        logits = torch.stack([step[0].float() for step in out.logits])  # [N, V] raw, before any processor
        logprobs = torch.log_softmax(logits.double(), dim=-1).gather(-1, torch.tensor(tokens)[:, None])[:, 0]
        top2 = logits.topk(2, dim=-1).values
        smallest_gap = min(smallest_gap, float((top2[:, 0] - top2[:, 1]).min()))
        results.append({"tokens": tokens, "logprobs": logprobs.tolist(), "stopped_at_eos": tokens[-1] == eos})
    return results, smallest_gap


def compare(checks, label, generations, expected):
    for index, (got, want) in enumerate(zip(generations, expected)):
        name = f"{label} prompt {index} (length {len(PROMPTS[index])})"
        if not checks.equal(f"{name}: tokens", got["tokens"], want["tokens"]):
            continue  # log-probs of other tokens mean nothing
        checks.equal(f"{name}: stopped_at_eos", got["stopped_at_eos"], want["stopped_at_eos"])
        checks.close(f"{name}: per-token log-probs", got["logprobs"], want["logprobs"], LOGPROB_ATOL,
                     why="float32 log_softmax")
    checks.equal(f"{label}: one generation per prompt", len(generations), len(expected))


def check_model(checks, folder, label, model):
    eos = choose_eos(free_greedy(model))
    model.config.eos_token_id = eos
    model.generation_config.eos_token_id = eos
    model_dir = os.path.join(folder, label)
    model.save_pretrained(model_dir)

    expected, gap = transformers_generate(model, eos)
    lengths = [len(e["tokens"]) for e in expected]
    stops = [e["stopped_at_eos"] for e in expected]
    print(f"{label}: EOS id {eos}; new tokens per prompt {lengths}; stopped at EOS {stops}; "
          f"smallest top-1/top-2 logit gap {gap:.4f}")
    checks.check(f"{label}: some prompt stops at EOS before {EARLY_STOP} new tokens",
                 any(s and n < EARLY_STOP for s, n in zip(stops, lengths)), f"lengths {lengths}, stops {stops}")
    checks.check(f"{label}: some prompt runs to the limit without EOS",
                 any(not s and n == MAX_NEW_TOKENS for s, n in zip(stops, lengths)),
                 f"lengths {lengths}, stops {stops}")
    checks.check(f"{label}: no near-tie on the greedy paths", gap >= MIN_GAP, f"smallest gap {gap:.3g} < {MIN_GAP}")

    request = os.path.join(folder, f"{label}_prompts.json")
    write_json(request, {"prompts": PROMPTS})
    runs = {
        "KV cache, batch 1": (model_dir, ["--batch-size", "1"]),
        f"KV cache, batch {len(PROMPTS)}": (model_dir, ["--batch-size", str(len(PROMPTS))]),
        "no cache": (model_dir, ["--no-cache"]),
    }
    # The hub's layout for the same model: config.json keeps the default EOS, and only
    # generation_config.json names the one generate() stops at; CAN reads it from there too.
    hub_dir = os.path.join(folder, f"{label}-generation-config")
    model.save_pretrained(hub_dir)
    config = read_json(os.path.join(hub_dir, "config.json"))
    config["eos_token_id"] = tiny.EOS
    write_json(os.path.join(hub_dir, "config.json"), config)
    checks.equal(f"{label}: generation_config.json written by transformers names EOS {eos}",
                 read_json(os.path.join(hub_dir, "generation_config.json")).get("eos_token_id"), eos)
    runs[f"KV cache, batch {len(PROMPTS)}, EOS from generation_config.json"] = (
        hub_dir, ["--batch-size", str(len(PROMPTS))])
    for run_label, (run_model_dir, options) in runs.items():
        result = os.path.join(folder, f"{label}_generations.json")
        try:
            probe("generate", "--model", run_model_dir, "--input", request, "--output", result,
                  "--max-new-tokens", MAX_NEW_TOKENS, *options)
        except CheckFailure as failure:
            checks.check(f"{label} {run_label}: the probe runs", False, str(failure))
            continue
        compare(checks, f"{label} {run_label}", read_json(result)["generations"], expected)


def main():
    start = time.monotonic()
    tiny.quiet()
    checks = Checks("greedy_vs_transformers_generate")
    with temporary_folder("greedy") as folder:
        check_model(checks, folder, "A",
                    tiny.random_llama(tiny.llama_config(heads=8, kv_heads=2, tied=False, rope_theta=5e5), seed=21))
        check_model(checks, folder, "B",
                    tiny.random_llama(tiny.llama_config(heads=4, kv_heads=4, tied=True, rope_theta=1e4), seed=22))
    status = checks.report()
    print(f"({time.monotonic() - start:.1f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
