#!/usr/bin/env python3
"""Reference test: checkpoints in the older layouts published on the hub, read by CAN, against torch and transformers.

Older revisions of PKU-Alignment's models, and many other checkpoints, hold
pytorch_model.bin, or shards pytorch_model-0000k-of-0000n.bin listed by
pytorch_model.bin.index.json, all written by torch.save. transformers 5 no
longer writes them, so this test writes them as transformers 4's save_pretrained
did: torch.save of each shard's state dict (zip format), and an index
{"metadata": {"total_size": bytes}, "weight_map": {tensor name: shard file}};
config.json comes from transformers' save_pretrained.

Layouts, from tiny random Llamas made by transformers (support/tiny_causal_lm.py):
  bin          A (grouped-query, untied): one pytorch_model.bin
  bin-sharded  A: three .bin shards and the index
  bin-bf16     A in bfloat16: one .bin
  bin-tied     B (tied): one .bin whose lm_head.weight and model.embed_tokens.weight
               share one storage, as torch.save writes a tied model's state dict
  score-bin    a Safe-RLHF cost model as its first releases were published:
               "architectures": ["LlamaModelForScore"], score_type "cost", "bias": false,
               no score_head.bias, two .bin shards and the index
Checked:
  * every tensor CAN reads (can_reference_probe safetensors-copy of the folder)
    equals torch.load's, bit for bit, in dtype and shape, none more or fewer;
  * CAN's logits on bin, bin-sharded and bin-tied against transformers' (the
    model in memory, and from_pretrained of the same .bin folder), float32,
    within 1e-4 (see TOLERANCES); on bin-bf16 against transformers' model with
    the same bfloat16-rounded weights;
  * CAN's end scores on score-bin against Safe-RLHF's computation in torch
    (LlamaModel, score_head at the last real token), within 1e-4;
  * a folder holding both model.safetensors and a pytorch_model.bin with other
    weights: CAN reads the safetensors (transformers' order).
Refused with an error naming the file, and nothing in the file executed:
  * a state dict with a Python object among the tensors (a class instance);
  * a pickle whose object calls os.system (it would create a marker file);
  * a list of tensors instead of a dict;
  * torch.save's legacy format (_use_new_zipfile_serialization=False);
  * an index listing a tensor its shard does not hold.

Exit 0: all pass; 1: a failure (each named); 77: a library missing (outside CI).
The build folder comes from CAN_BINARY_DIR (CTest sets it), default build/.
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "support"))
from can_reference import (  # noqa: E402
    CheckFailure, Checks, probe, program, read_json, require, run, temporary_folder, write_json)

torch, transformers, safetensors = require("torch", "transformers", "safetensors")
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import LlamaForCausalLM, LlamaModel  # noqa: E402

import tiny_causal_lm as tiny  # noqa: E402
from hub_layouts import beaver_config, save_bin_shards  # noqa: E402

# --- TOLERANCES -----------------------------------------------------------------
# Logits and scores, float32 on both sides from the same weights: only the order
# of float32 sums differs (CAN's attention kernel and matmul blocking against
# transformers' eager path), ~1e-6 on values of order 1; 1e-4 is the oracle
# issue's bound. The tensors themselves must match exactly: loading is a copy.
OUTPUT_ATOL = 1e-4

IDS = torch.tensor([[1, 17, 45, 99, 3, 64, 81, 12], [1, 250, 3, 64, 81, 12, 200, 7]])
MASK = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]])


def bin_folder(root, label, model, shards, dtype=torch.float32):
    """config.json by save_pretrained, weights only as .bin; returns the folder and the state dict saved."""
    folder = os.path.join(root, label)
    model.save_pretrained(folder)
    os.remove(os.path.join(folder, "model.safetensors"))
    state = {name: tensor.to(dtype) for name, tensor in model.state_dict().items()}
    save_bin_shards(state, folder, shards)
    return folder, state


def check_tensors(checks, root, label, folder):
    """CAN's tensors of `folder` against torch.load of its .bin files, bit for bit."""
    expected = {}
    for file in sorted(os.listdir(folder)):
        if file.endswith(".bin"):
            expected.update(torch.load(os.path.join(folder, file), weights_only=True))
    copy = os.path.join(root, f"{label}_tensors.safetensors")
    probe("safetensors-copy", "--input", folder, "--output", copy)
    got = load_file(copy)
    checks.equal(f"{label}: the tensor names", sorted(got), sorted(expected))
    mismatched = [name for name in expected if name in got and not (
        got[name].dtype == expected[name].dtype and got[name].shape == expected[name].shape
        and torch.equal(got[name], expected[name]))]
    checks.equal(f"{label}: every tensor bit for bit, in dtype and shape", mismatched, [])


def can_logits(root, label, folder):
    request, result = os.path.join(root, f"{label}_in.safetensors"), os.path.join(root, f"{label}_out.safetensors")
    save_file({"input_ids": IDS, "attention_mask": MASK}, request)
    probe("forward", "--model", folder, "--input", request, "--output", result)
    return load_file(result)["logits"]


def check_causal_lm(checks, root, label, model, shards, dtype=torch.float32, from_pretrained=True):
    folder, _ = bin_folder(root, label, model, shards, dtype)
    check_tensors(checks, root, label, folder)
    reference = model
    if dtype != torch.float32:  # transformers' model with the weights CAN reads, rounded to bfloat16
        reference = LlamaForCausalLM(model.config).eval()
        reference.load_state_dict({name: t.to(dtype).float() for name, t in model.state_dict().items()})
    logits = can_logits(root, label, folder)
    real = MASK.bool()
    checks.close(f"{label}: logits against the model in memory", logits[real],
                 tiny.logits_of(reference, IDS, MASK)[real], OUTPUT_ATOL, why="float32 sum order")
    if from_pretrained:
        loaded = LlamaForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
        checks.close(f"{label}: logits against transformers' from_pretrained of the .bin folder", logits[real],
                     tiny.logits_of(loaded, IDS, MASK)[real], OUTPUT_ATOL, why="float32 sum order")


def check_score_model(checks, root):
    label = "score-bin"
    config = tiny.llama_config(heads=4, kv_heads=2, tied=False, rope_theta=1e4)
    torch.manual_seed(31)
    backbone = LlamaModel(config).eval()
    head = torch.nn.Linear(config.hidden_size, 1, bias=False)
    with torch.no_grad():
        for name, parameter in backbone.named_parameters():
            if "norm" in name:
                parameter.uniform_(0.5, 1.5)
    folder = os.path.join(root, label)
    backbone.save_pretrained(folder)
    os.remove(os.path.join(folder, "model.safetensors"))
    beaver_config(folder, "cost")
    state = {f"model.{name}": tensor for name, tensor in backbone.state_dict().items()}
    state["score_head.weight"] = head.weight.detach().clone()
    save_bin_shards(state, folder, 2)
    check_tensors(checks, root, label, folder)

    request, result = os.path.join(root, "score_in.safetensors"), os.path.join(root, "score_out.safetensors")
    save_file({"input_ids": IDS, "attention_mask": MASK}, request)
    probe("score", "--model", folder, "--input", request, "--output", result)
    with torch.no_grad():
        hidden = backbone(input_ids=IDS, attention_mask=MASK, position_ids=tiny.position_ids(MASK)).last_hidden_state
        last = MASK.cumsum(1).argmax(1)
        expected = head(hidden[torch.arange(len(IDS)), last])
    checks.close(f"{label}: end scores against Safe-RLHF's computation", load_file(result)["scores"], expected,
                 OUTPUT_ATOL, why="float32 sum order")


def check_safetensors_first(checks, root, model):
    label = "both-layouts"
    folder = os.path.join(root, label)
    model.save_pretrained(folder)
    torch.save({name: t + 1 for name, t in model.state_dict().items()}, os.path.join(folder, "pytorch_model.bin"))
    copy = os.path.join(root, f"{label}_tensors.safetensors")
    probe("safetensors-copy", "--input", folder, "--output", copy)
    expected = load_file(os.path.join(folder, "model.safetensors"))
    got = load_file(copy)
    checks.equal(f"{label}: model.safetensors is read, not pytorch_model.bin",
                 all(torch.equal(got[name], expected[name]) for name in expected) and sorted(got) == sorted(expected),
                 True)


class Marker:
    """An object whose unpickling calls os.system (a classic malicious pickle)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class Settings:
    pass


def check_refused(checks, root, label, write, expected_words, marker=None):
    folder = os.path.join(root, label)
    os.makedirs(folder)
    write_json(os.path.join(folder, "config.json"), {"model_type": "llama"})
    write(folder)
    try:
        failed = run([program("can_reference_probe"), "safetensors-copy", "--input", folder, "--output",
                      os.path.join(root, f"{label}.safetensors")], expect_status=1)
    except CheckFailure as failure:
        checks.check(f"{label}: refused with exit status 1", False, str(failure))
        return
    message = failed.stderr
    missing = [word for word in expected_words if word not in message]
    checks.equal(f"{label}: the error names {expected_words}", missing, [])
    if marker is not None:
        checks.check(f"{label}: nothing in the file was executed", not os.path.exists(marker), f"{marker} exists")


def main():
    start = time.monotonic()
    tiny.quiet()
    checks = Checks("hub_checkpoints_vs_torch")
    model_a = tiny.random_llama(tiny.llama_config(heads=8, kv_heads=2, tied=False, rope_theta=5e5), seed=41)
    model_b = tiny.random_llama(tiny.llama_config(heads=4, kv_heads=4, tied=True, rope_theta=1e4), seed=42)
    with temporary_folder("hub") as root:
        try:
            check_causal_lm(checks, root, "bin", model_a, shards=1)
            check_causal_lm(checks, root, "bin-sharded", model_a, shards=3)
            check_causal_lm(checks, root, "bin-bf16", model_a, shards=1, dtype=torch.bfloat16, from_pretrained=False)
            state_b = model_b.state_dict()
            checks.check("bin-tied: torch.save's state dict shares one storage for the tied head",
                         state_b["lm_head.weight"].data_ptr() == state_b["model.embed_tokens.weight"].data_ptr())
            check_causal_lm(checks, root, "bin-tied", model_b, shards=1)
            check_score_model(checks, root)
            check_safetensors_first(checks, root, model_b)

            tensor = torch.ones(2, 3)
            marker = os.path.join(root, "executed")
            check_refused(checks, root, "refused-object",
                          lambda f: torch.save({"w": tensor, "settings": Settings()},
                                               os.path.join(f, "pytorch_model.bin")),
                          ["pytorch_model.bin", "refused"])
            check_refused(checks, root, "refused-os-system",
                          lambda f: torch.save({"w": tensor, "payload": Marker(marker)},
                                               os.path.join(f, "pytorch_model.bin")),
                          ["pytorch_model.bin", "refused"], marker=marker)
            check_refused(checks, root, "refused-list",
                          lambda f: torch.save([tensor, tensor], os.path.join(f, "pytorch_model.bin")),
                          ["pytorch_model.bin", "not a state dict"])
            check_refused(checks, root, "refused-legacy-format",
                          lambda f: torch.save({"w": tensor}, os.path.join(f, "pytorch_model.bin"),
                                               _use_new_zipfile_serialization=False),
                          ["pytorch_model.bin", "zip format"])

            def index_with_a_missing_tensor(folder):
                save_bin_shards({"a": tensor, "b": tensor.clone()}, folder, 2)
                index = read_json(os.path.join(folder, "pytorch_model.bin.index.json"))
                index["weight_map"]["c"] = "pytorch_model-00001-of-00002.bin"
                write_json(os.path.join(folder, "pytorch_model.bin.index.json"), index)

            check_refused(checks, root, "refused-index", index_with_a_missing_tensor,
                          ["pytorch_model.bin.index.json", "'c'", "pytorch_model-00001-of-00002.bin"])
        except CheckFailure as failure:
            checks.check("the probe runs", False, str(failure))
    status = checks.report()
    print(f"({time.monotonic() - start:.1f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
