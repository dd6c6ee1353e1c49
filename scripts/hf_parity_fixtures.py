#!/usr/bin/env python3
"""Hugging Face parity fixtures for tests/hf_parity_test.cpp and tests/gpu_hf_parity_test.cpp.

Builds, from a fixed seed, a tiny random Llama causal LM (grouped-query attention,
untied lm_head, non-default rope_theta and rms_norm_eps) with transformers, and a
score model in Safe-RLHF's LlamaForScore layout (backbone under `model.`, a linear
`score_head`, config fields `score_dim` and `bias`, the normalizer buffers its
checkpoints carry). Saves both as Hugging Face directories (safetensors) and
writes what transformers computes for them, in float32:

  tests/fixtures/hf_parity/causal_lm/        config.json, model.safetensors
  tests/fixtures/hf_parity/score_model/      config.json, model.safetensors
  tests/fixtures/hf_parity/expected.safetensors, for SIDE in {left, right} padding:
    SIDE.input_ids        [B, T] int64   the same sequences, padded on SIDE
    SIDE.attention_mask   [B, T] int64   1 real token, 0 padding
    SIDE.response_mask    [B, T] int64   1 on response tokens (after the prompt)
    SIDE.logits           [B, T, V] f32  causal LM logits (compare at real tokens only)
    SIDE.response_logprobs [B] f32       sum over response tokens t of log p(x_t | x_<t), nats
    SIDE.end_scores       [B] f32        score head at the last real token (Safe-RLHF's end score)
  tests/fixtures/hf_parity/fixtures.json     versions, seed, sequences and prompt lengths, and
                                             transformers_bf16_cpu_error: the largest differences of
                                             the same three quantities when transformers itself runs
                                             the models in bfloat16 (CPU) instead of float32

Positions are counted over real tokens (position = cumsum(mask) - 1), the rule of
transformers' generate() and of CAN; for right padding it equals the plain
arange that Safe-RLHF's score model uses (checked below).

Runs on the GPU machine (torch + transformers installed) or any CPU with them:
    python3 scripts/hf_parity_fixtures.py [--out tests/fixtures/hf_parity]
Only run this script to create the fixtures: they must come from transformers.
"""
import argparse
import inspect
import json
import os
import shutil
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel

SEED = 1234
MAX_BYTES = 2 * 1024 * 1024
ROPE_THETA = 5000.0
RMS_NORM_EPS = 1e-5
# (prompt, response) token ids; BOS = 1, EOS = 2, PAD = 0; lengths differ on purpose.
SEQUENCES = [
    ([1, 17, 45, 99], [130, 7, 2]),
    ([1, 250, 3, 64, 81, 12, 200], [9, 33, 2]),
    ([1, 5], [77, 78, 79, 80, 81, 2]),
    ([1, 140, 141, 60, 61], [201, 2]),
]


def llama_config():
    kwargs = dict(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rms_norm_eps=RMS_NORM_EPS,
        tie_word_embeddings=False,
        initializer_range=0.2,  # larger than Llama's 0.02: logits of order 1, so 1e-4 means something
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
        attn_implementation="eager",
    )
    # transformers 5 takes rope_theta inside rope_parameters; older ones at the top level.
    if "rope_parameters" in inspect.signature(LlamaConfig.__init__).parameters:
        kwargs["rope_parameters"] = {"rope_type": "default", "rope_theta": ROPE_THETA}
    else:
        kwargs["rope_theta"] = ROPE_THETA
    config = LlamaConfig(**kwargs)
    parameters = getattr(config, "rope_parameters", None) or {}
    theta = parameters.get("rope_theta", getattr(config, "rope_theta", None))
    assert theta == ROPE_THETA, f"rope_theta did not reach the config: {theta}"
    return config


def randomize_norms(module):
    """RMSNorm weights are ones at initialisation; random ones prove they are applied."""
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if "norm" in name:
                parameter.uniform_(0.5, 1.5)


def padded(side):
    lengths = [len(p) + len(r) for p, r in SEQUENCES]
    width = max(lengths)
    ids = torch.zeros(len(SEQUENCES), width, dtype=torch.int64)
    mask = torch.zeros_like(ids)
    response = torch.zeros_like(ids)
    for row, (prompt, reply) in enumerate(SEQUENCES):
        tokens = prompt + reply
        start = width - len(tokens) if side == "left" else 0
        ids[row, start:start + len(tokens)] = torch.tensor(tokens)
        mask[row, start:start + len(tokens)] = 1
        response[row, start + len(prompt):start + len(tokens)] = 1
    return ids, mask, response


def positions(mask):
    return (mask.cumsum(-1) - 1).clamp(min=0)


def response_logprobs(logits, ids, response):
    logp = torch.log_softmax(logits.float(), dim=-1)[:, :-1]  # position t-1 predicts token t
    picked = logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return (picked * response[:, 1:]).sum(-1)


def end_scores(backbone, score_head, ids, mask, position_ids):
    hidden = backbone(input_ids=ids, attention_mask=mask, position_ids=position_ids).last_hidden_state
    scores = score_head(hidden).float()  # [B, T, score_dim]
    last = torch.tensor([int(row.nonzero()[-1]) for row in mask])  # Safe-RLHF: last non-padding token
    return scores[torch.arange(ids.size(0)), last, 0]


def directory_bytes(path):
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--out", default=os.path.join(root, "tests", "fixtures", "hf_parity"))
    out = parser.parse_args().out
    torch.manual_seed(SEED)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)

    config = llama_config()
    causal_lm = LlamaForCausalLM(config).eval()
    randomize_norms(causal_lm)
    causal_lm.save_pretrained(os.path.join(out, "causal_lm"))  # safetensors by default

    # Safe-RLHF's LlamaForScore: LlamaModel under `model.`, score_head (bias from
    # config.bias), normalizer buffers (unused when do_normalize is false).
    backbone = LlamaModel(config).eval()
    randomize_norms(backbone)
    score_head = torch.nn.Linear(config.hidden_size, 1, bias=True)
    with torch.no_grad():
        score_head.weight.normal_(0.0, 0.2)
        score_head.bias.normal_(0.0, 0.2)
    score_dir = os.path.join(out, "score_model")
    os.makedirs(score_dir)
    tensors = {f"model.{k}": v.contiguous() for k, v in backbone.state_dict().items() if "rotary_emb" not in k}
    tensors["score_head.weight"] = score_head.weight.detach().contiguous()
    tensors["score_head.bias"] = score_head.bias.detach().contiguous()
    tensors["normalizer.mean"] = torch.zeros(1)
    tensors["normalizer.var"] = torch.ones(1)
    tensors["normalizer.count"] = torch.zeros(1, dtype=torch.int64)
    save_file(tensors, os.path.join(score_dir, "model.safetensors"), metadata={"format": "pt"})
    score_config = json.loads(config.to_json_string(use_diff=False))
    score_config.update({"architectures": ["LlamaForScore"], "score_dim": 1, "bias": True, "score_type": "reward",
                         "do_normalize": False, "normalizer_type": None})
    with open(os.path.join(score_dir, "config.json"), "w") as f:
        json.dump(score_config, f, indent=2, sort_keys=True)

    expected = {}
    with torch.no_grad():
        for side in ("left", "right"):
            ids, mask, response = padded(side)
            logits = causal_lm(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits.float()
            scores = end_scores(backbone, score_head, ids, mask, positions(mask))
            if side == "right":  # Safe-RLHF passes no position_ids: the same for right padding
                plain = end_scores(backbone, score_head, ids, mask, None)
                assert torch.allclose(plain, scores, atol=1e-6), (plain, scores)
            expected[f"{side}.input_ids"] = ids
            expected[f"{side}.attention_mask"] = mask
            expected[f"{side}.response_mask"] = response
            expected[f"{side}.logits"] = logits.contiguous()
            expected[f"{side}.response_logprobs"] = response_logprobs(logits, ids, response)
            expected[f"{side}.end_scores"] = scores.contiguous()
    # transformers' own bfloat16 error against its float32 numbers (the same models
    # cast to bf16, on this CPU): the yardstick of gpu_hf_parity_test, where CAN in
    # bf16 must stay within a small multiple of it.
    bf16_drift = {"logits": 0.0, "response_logprobs": 0.0, "end_scores": 0.0}
    causal_lm.to(torch.bfloat16)
    backbone.to(torch.bfloat16)
    score_head.to(torch.bfloat16)
    with torch.no_grad():
        for side in ("left", "right"):
            ids, mask, response = padded(side)
            logits = causal_lm(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits.float()
            padding = ~mask.bool().unsqueeze(-1)
            drift = {"logits": (logits - expected[f"{side}.logits"]).abs().masked_fill(padding, 0).max(),
                     "response_logprobs": (response_logprobs(logits, ids, response)
                                           - expected[f"{side}.response_logprobs"]).abs().max(),
                     "end_scores": (end_scores(backbone, score_head, ids, mask, positions(mask))
                                    - expected[f"{side}.end_scores"]).abs().max()}
            for key, value in drift.items():
                bf16_drift[key] = max(bf16_drift[key], float(value))
    save_file(expected, os.path.join(out, "expected.safetensors"),
              metadata={"transformers": transformers.__version__, "torch": torch.__version__})
    with open(os.path.join(out, "fixtures.json"), "w") as f:
        json.dump({"generator": "scripts/hf_parity_fixtures.py", "seed": SEED,
                   "transformers": transformers.__version__, "torch": torch.__version__,
                   "transformers_bf16_cpu_error": bf16_drift,
                   "sequences": [{"prompt": p, "response": r} for p, r in SEQUENCES]}, f, indent=2)

    total = directory_bytes(out)
    print(f"fixtures in {out}: {total} bytes (limit {MAX_BYTES}); transformers {transformers.__version__}, "
          f"torch {torch.__version__}")
    if total >= MAX_BYTES:
        sys.exit(f"fixtures take {total} bytes, over the {MAX_BYTES}-byte limit: shrink the models")


if __name__ == "__main__":
    main()
