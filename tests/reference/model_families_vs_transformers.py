#!/usr/bin/env python3
"""Reference test: CAN's Llama-family model configured as Llama 3, Qwen2 and Mistral, against transformers.

Tiny random checkpoints that transformers itself builds and saves (save_pretrained,
safetensors) in a temporary folder:
  L3  LlamaForCausalLM as Llama 3.2 is shaped: rope_parameters of rope_type "llama3"
      (factor 8, low/high frequency factors 1 and 4, original context 64, so the
      head's 16 frequencies fall in all three bands), rope_theta 5e5, an explicit
      head_dim (32) that is not hidden_size / heads (16), tied embeddings;
  Q2  Qwen2ForCausalLM as Qwen2.5-0.5B is shaped: biases on q/k/v (drawn at random;
      transformers initialises them to zero, which would hide a missing bias),
      rope_theta 1e6, tied embeddings, the sliding-window fields present and off,
      saved sharded with an index;
  M   MistralForCausalLM with sliding_window null (current releases), untied.
Weights are scaled up as in support/tiny_causal_lm.py, so logits are of order 1.

Checked, in float32 on CPU, through can_reference_probe:
  * logits at every real token of left- and right-padded batches and the summed
    response log-probs, both attention kernels (tolerances as causal_lm_vs_transformers.py);
  * that the wrong variant each family adds is caught: L3 without its rope scaling,
    Q2 without its biases;
  * greedy decoding for 20 new tokens, token for token, against generate(do_sample=False);
  * one AdamW step saved by CAN (--save) loads in AutoModelForCausalLM.from_pretrained with
    nothing missing or unexpected, as the same family, with CAN's logits (L3 and Q2);
  * sequence classifiers (score models) on the L3 and Q2 shapes: transformers'
    LlamaForSequenceClassification and Qwen2ForSequenceClassification (head `score`, one
    label, read at the last non-padding token) and the same weights in Safe-RLHF's
    LlamaForScore layout (head `score_head`) on those backbones, scored by
    `can_reference_probe score` on left- and right-padded batches as transformers scores them;
  * settings CAN does not implement are refused naming the field: Qwen2's
    use_sliding_window, Mistral's sliding_window, rope_type "yarn", mlp_bias.

Exit 0: all pass; 1: a failure (each named); 77: a library missing (outside CI).
"""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "support"))
from can_reference import CheckFailure, Checks, probe, program, read_json, require, temporary_folder, write_json  # noqa: E402

torch, transformers, safetensors = require("torch", "transformers", "safetensors")
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import (AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM,  # noqa: E402
                          LlamaForSequenceClassification, MistralConfig, MistralForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM, Qwen2ForSequenceClassification)

import tiny_causal_lm as tiny  # noqa: E402

# --- TOLERANCES -----------------------------------------------------------------
# As causal_lm_vs_transformers.py: float32 on both sides, sums in other orders through
# 3 layers (~1e-5 measured), 1e-4 allowed; a wrong variant must miss by 100 times that.
LOGITS_ATOL = 1e-4
LOGPROBS_ATOL = 1e-4
DISCRIMINATION = 100
# Greedy tokens: exactly equal; a near-tie (top-1/top-2 gap below MIN_GAP) would make
# that unsound, so the paths must have none (as greedy_vs_transformers_generate.py).
MIN_GAP = 1e-3
MAX_NEW_TOKENS = 20
LEARNING_RATE = 1e-2

SEQUENCES = [
    ([1, 17, 45, 99], [130, 7, 2]),
    ([1, 250, 3, 64, 81, 12, 200], [9, 33, 2]),
    ([1, 5], [77, 78, 79, 80, 81, 82, 2]),
    ([1, 140, 141, 60, 61], [201, 2]),
]
PROMPTS = [[1], [1, 17, 45, 99], [1, 250, 3, 64, 81, 12, 200], [1, 140, 141, 60, 61, 9, 33, 210, 11, 4]]
PAIRS = [([1, 17, 45], [130, 7, 2], [131, 8, 9, 2]), ([1, 250, 3, 64], [9, 33, 2], [10, 2])]

COMMON = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=3, max_position_embeddings=128,
              rms_norm_eps=1e-5, initializer_range=0.2, bos_token_id=tiny.BOS, eos_token_id=tiny.EOS,
              pad_token_id=tiny.PAD, hidden_act="silu", attn_implementation="eager")


def llama3_config(scaled=True):
    rope = {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    if not scaled:
        rope = {"rope_type": "default", "rope_theta": 5e5}
    return LlamaConfig(**COMMON, num_attention_heads=4, num_key_value_heads=2, head_dim=32, tie_word_embeddings=True,
                       attention_bias=False, mlp_bias=False, rope_parameters=rope)


def qwen2_config():
    return Qwen2Config(**COMMON, num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=True,
                       use_sliding_window=False, sliding_window=4096, max_window_layers=3,
                       rope_parameters={"rope_type": "default", "rope_theta": 1e6})


def mistral_config():
    return MistralConfig(**COMMON, num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=False,
                         sliding_window=None, rope_parameters={"rope_type": "default", "rope_theta": 1e6})


def randomised(model, seed):
    """transformers' initialisation under `seed`, then norms from U(0.5, 1.5) and biases from U(-0.5, 0.5)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.uniform_(0.5, 1.5)
            elif name.endswith(".bias"):
                parameter.uniform_(-0.5, 0.5)
    return model.eval()


def build(model_class, config, seed):
    torch.manual_seed(seed)
    return randomised(model_class(config), seed)


def padded(side):
    """SEQUENCES padded on `side` (tiny.padded)."""
    return tiny.padded(SEQUENCES, side)


def can_forward(folder, model_dir, ids, mask, response, attention="fused"):
    batch, out = os.path.join(folder, "batch.safetensors"), os.path.join(folder, "forward.safetensors")
    save_file({"input_ids": ids, "attention_mask": mask, "response_mask": response}, batch)
    probe("forward", "--model", model_dir, "--input", batch, "--output", out, "--attention", attention)
    result = load_file(out)
    return result["logits"], result["response_logprobs"]


def compare_forward(checks, folder, label, model_dir, model, attentions=("fused", "reference")):
    can_logits = {}
    for side in ("left", "right"):
        ids, mask, response = padded(side)
        expected = tiny.logits_of(model, ids, mask)
        for attention in attentions:
            logits, logprobs = can_forward(folder, model_dir, ids, mask, response, attention)
            checks.close(f"{label} {side}-padded logits ({attention})", logits[mask.bool()], expected[mask.bool()],
                         LOGITS_ATOL, why="float32 rounding")
            checks.close(f"{label} {side}-padded response log-probs ({attention})", logprobs,
                         tiny.response_logprobs(expected, ids, response), LOGPROBS_ATOL, why="sum of log-softmax terms")
            can_logits[side] = logits
    return can_logits


def check_discriminates(checks, name, can_logits, wrong_model):
    ids, mask, _ = padded("left")
    wrong = tiny.logits_of(wrong_model, ids, mask)
    distance = float((can_logits[mask.bool()] - wrong[mask.bool()]).abs().max())
    print(f"  {name}: max |diff| {distance:.3g} (must exceed {DISCRIMINATION * LOGITS_ATOL:g})")
    checks.check(name, distance > DISCRIMINATION * LOGITS_ATOL,
                 f"a wrong variant is only {distance:.3g} from CAN's logits: the comparison cannot tell")


def check_greedy(checks, folder, label, model_dir, model):
    request, result = os.path.join(folder, "prompts.json"), os.path.join(folder, "generations.json")
    write_json(request, {"prompts": PROMPTS})
    probe("generate", "--model", model_dir, "--input", request, "--output", result, "--max-new-tokens",
          MAX_NEW_TOKENS, "--batch-size", len(PROMPTS))
    generations = read_json(result)["generations"]
    smallest_gap = float("inf")
    for index, prompt in enumerate(PROMPTS):
        ids = torch.tensor([prompt])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=1,
                             max_new_tokens=MAX_NEW_TOKENS, eos_token_id=tiny.EOS, pad_token_id=tiny.PAD,
                             output_logits=True, return_dict_in_generate=True)
        tokens = out.sequences[0, len(prompt):].tolist()
        top2 = torch.stack([step[0].float() for step in out.logits]).topk(2, dim=-1).values
        smallest_gap = min(smallest_gap, float((top2[:, 0] - top2[:, 1]).min()))
        checks.equal(f"{label} greedy prompt {index}: tokens", generations[index]["tokens"], tokens)
    print(f"  {label} greedy: {MAX_NEW_TOKENS} new tokens a prompt, smallest top-1/top-2 gap {smallest_gap:.4f}")
    checks.check(f"{label} greedy: no near-tie on the paths", smallest_gap >= MIN_GAP, f"gap {smallest_gap:.3g}")


def check_train_and_save(checks, folder, label, model_dir, model_type):
    pairs, step, saved = (os.path.join(folder, f"{label}_{name}") for name in ("pairs.json", "dpo.safetensors",
                                                                               "trained"))
    write_json(pairs, {"pairs": [{"prompt_ids": p, "chosen_ids": c, "rejected_ids": r} for p, c, r in PAIRS],
                       "max_length": 16, "pad_id": tiny.PAD})
    probe("dpo", "--policy", model_dir, "--reference", model_dir, "--input", pairs, "--output", step, "--loss",
          "sigmoid", "--beta", "0.1", "--label-smoothing", "0", "--learning-rate", LEARNING_RATE, "--weight-decay",
          "0", "--save", saved)
    updated = {name[len("updated."):]: value for name, value in load_file(step).items() if name.startswith("updated.")}
    loaded, info = AutoModelForCausalLM.from_pretrained(saved, dtype=torch.float32, attn_implementation="eager",
                                                        output_loading_info=True)
    loaded.eval()
    checks.equal(f"{label} trained: from_pretrained's missing, unexpected, mismatched tensors and errors",
                 {key: value for key, value in info.items() if value}, {})
    checks.equal(f"{label} trained: the family transformers reads", loaded.config.model_type, model_type)
    parameters = dict(loaded.named_parameters())
    checks.equal(f"{label} trained: tensors where transformers' weights differ from updated.* (bitwise)",
                 [n for n, v in updated.items() if n not in parameters or not torch.equal(parameters[n].detach(), v)],
                 [])
    compare_forward(checks, folder, f"{label} trained", saved, loaded, attentions=("fused",))


def check_refused(checks, folder, label, model, edit, expected):
    """A checkpoint whose config.json `edit` changes must be refused, the message naming `expected`."""
    model_dir = os.path.join(folder, f"refused_{label}")
    model.save_pretrained(model_dir)
    config = read_json(os.path.join(model_dir, "config.json"))
    edit(config)
    write_json(os.path.join(model_dir, "config.json"), config)
    ids, mask, response = padded("right")
    batch = os.path.join(folder, "batch.safetensors")
    save_file({"input_ids": ids, "attention_mask": mask, "response_mask": response}, batch)
    result = subprocess.run([program("can_reference_probe"), "forward", "--model", model_dir, "--input", batch,
                             "--output", os.path.join(folder, "unused.safetensors")], capture_output=True, text=True)
    checks.check(f"refused: {label}", result.returncode != 0 and expected in result.stderr,
                 f"exit {result.returncode}, stderr: {result.stderr.strip()[-400:]}")


def check_sequence_classifier(checks, folder, label, model):
    """transformers' <Family>ForSequenceClassification (head `score`, one label) scored by CAN as transformers
    scores it, and the same weights in Safe-RLHF's layout (LlamaForScore: head `score_head`) on this backbone."""
    model_dir = os.path.join(folder, f"{label}_classifier")
    model.save_pretrained(model_dir)
    safe_rlhf_dir = os.path.join(folder, f"{label}_score_head")
    model.save_pretrained(safe_rlhf_dir)
    config = read_json(os.path.join(safe_rlhf_dir, "config.json"))
    config.update(architectures=["LlamaForScore"], score_dim=1, score_bias=False, score_type="reward")
    for key in ("id2label", "label2id"):
        config.pop(key, None)
    write_json(os.path.join(safe_rlhf_dir, "config.json"), config)
    weights = load_file(os.path.join(safe_rlhf_dir, "model.safetensors"))
    weights["score_head.weight"] = weights.pop("score.weight")
    save_file(weights, os.path.join(safe_rlhf_dir, "model.safetensors"), metadata={"format": "pt"})
    for side in ("left", "right"):
        ids, mask, _ = padded(side)
        with torch.no_grad():
            expected = model(input_ids=ids, attention_mask=mask, position_ids=tiny.position_ids(mask)).logits.float()
        batch, out = os.path.join(folder, "batch.safetensors"), os.path.join(folder, "scores.safetensors")
        save_file({"input_ids": ids, "attention_mask": mask}, batch)
        for layout, directory in (("ForSequenceClassification", model_dir), ("LlamaForScore head", safe_rlhf_dir)):
            probe("score", "--model", directory, "--input", batch, "--output", out)
            checks.close(f"{label} {layout} {side}-padded scores", load_file(out)["scores"], expected, LOGITS_ATOL,
                         why="float32 rounding")


def main():
    start = time.monotonic()
    tiny.quiet()
    checks = Checks("model_families_vs_transformers")
    with temporary_folder("families") as folder:
        families = {
            "L3": (build(LlamaForCausalLM, llama3_config(), 31), "llama", {}),
            "Q2": (build(Qwen2ForCausalLM, qwen2_config(), 32), "qwen2", {"max_shard_size": "100KB"}),
            "M": (build(MistralForCausalLM, mistral_config(), 34), "mistral", {}),
        }
        for label, (model, model_type, save_options) in families.items():
            model_dir = os.path.join(folder, label)
            model.save_pretrained(model_dir, **save_options)
            try:
                logits = compare_forward(checks, folder, label, model_dir, model)
                if label == "L3":
                    unscaled = LlamaForCausalLM(llama3_config(scaled=False)).eval()
                    unscaled.load_state_dict(model.state_dict())
                    check_discriminates(checks, "L3 without its llama3 rope scaling is caught", logits["left"],
                                        unscaled)
                if label == "Q2":
                    unbiased = Qwen2ForCausalLM(qwen2_config()).eval()
                    unbiased.load_state_dict(model.state_dict())
                    with torch.no_grad():
                        for name, parameter in unbiased.named_parameters():
                            if name.endswith(".bias"):
                                parameter.zero_()
                    check_discriminates(checks, "Q2 without its q/k/v biases is caught", logits["left"], unbiased)
                check_greedy(checks, folder, label, model_dir, model)
                if label in ("L3", "Q2"):
                    check_train_and_save(checks, folder, label, model_dir, model_type)
            except CheckFailure as failure:
                checks.check(f"{label}: the probe runs", False, str(failure))
        classifiers = {"L3": (LlamaForSequenceClassification, llama3_config(), 41),
                       "Q2": (Qwen2ForSequenceClassification, qwen2_config(), 42)}
        for label, (model_class, config, seed) in classifiers.items():
            config.num_labels = 1
            try:
                check_sequence_classifier(checks, folder, label, build(model_class, config, seed))
            except CheckFailure as failure:
                checks.check(f"{label} sequence classifier: the probe runs", False, str(failure))
        qwen2, mistral, llama3 = families["Q2"][0], families["M"][0], families["L3"][0]
        check_refused(checks, folder, "Qwen2 use_sliding_window true", qwen2,
                      lambda c: c.update(use_sliding_window=True), "use_sliding_window true")
        check_refused(checks, folder, "Mistral sliding_window 4096", mistral,
                      lambda c: c.update(sliding_window=4096), "sliding_window 4096")
        check_refused(checks, folder, "rope_type yarn", llama3,
                      lambda c: c.update(rope_parameters={"rope_type": "yarn", "rope_theta": 5e5, "factor": 4.0}),
                      "rope_type 'yarn' is not supported")
        check_refused(checks, folder, "mlp_bias true", llama3, lambda c: c.update(mlp_bias=True), "mlp_bias true")
    status = checks.report()
    print(f"({time.monotonic() - start:.1f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
