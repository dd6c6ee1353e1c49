#!/usr/bin/env python3
"""can-train --dry-run on configs/paper-mocan.yaml at the paper's true scale, without the downloads.

Writes, in a temporary folder laid out as paper-mocan.yaml expects (models/, data/):
  * alpaca-7b-reproduced: Llama-7B's config.json (hidden 4096, intermediate 11008,
    32 layers and heads, vocabulary 32,001 with <pad> = 32000) and a model.safetensors
    whose header lists every tensor in bfloat16 and whose data is a sparse hole of the
    right size (the dry run reads headers only; nothing is allocated on disk);
  * beaver-7b-v1.0-reward and -cost: the same backbone under model. plus
    score_head.weight [1, 4096], beaver's config (LlamaModelForScore, score_type, bias
    false), likewise sparse;
  * a tokenizer.model trained by CAN on the synthetic world's corpus (1,000 pieces;
    the real Llama tokenizer has 32,000, so prompt lengths, and with them the KV
    cache, differ somewhat);
  * data/pku-saferlhf-30k-hub/{train,test}.jsonl.xz: the synthetic world's pairs
    (PKU-SafeRLHF-30K has 27,000 train pairs; the counts of the plan's work differ,
    not its memory).
Then prints the plan. Used for bench/results/paper-mocan-plan.md.

    .venv/bin/python3 bench/paper_scale_plan.py [--set key=value ...]   (passed to can-train)
The build folder comes from CAN_BINARY_DIR, default build/.
"""
import json
import lzma
import os
import shutil
import struct
import subprocess
import sys
import tempfile

BUILD = os.environ.get("CAN_BINARY_DIR", "build")
SOURCE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LLAMA_7B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu", "vocab_size": 32001,
    "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 32, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
    "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 32000,
}


def shapes(config, score):
    h, i, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    result = {"model.embed_tokens.weight": [v, h], "model.norm.weight": [h]}
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            result[p + f"self_attn.{name}.weight"] = [h, h]
        result[p + "mlp.gate_proj.weight"] = [i, h]
        result[p + "mlp.up_proj.weight"] = [i, h]
        result[p + "mlp.down_proj.weight"] = [h, i]
        result[p + "input_layernorm.weight"] = [h]
        result[p + "post_attention_layernorm.weight"] = [h]
    if score:
        result["score_head.weight"] = [1, h]
    else:
        result["lm_head.weight"] = [v, h]
    return result


def sparse_safetensors(path, tensors):
    """A valid safetensors header (bfloat16) followed by a hole of the data's size."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in tensors.items():
        size = 2
        for dim in shape:
            size *= dim
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(encoded)))
        out.write(encoded)
        out.truncate(8 + len(encoded) + offset)


def model(folder, config, score):
    os.makedirs(folder)
    with open(os.path.join(folder, "config.json"), "w") as out:
        json.dump(config, out, indent=2)
    sparse_safetensors(os.path.join(folder, "model.safetensors"), shapes(config, score))


def main():
    with tempfile.TemporaryDirectory(prefix="can_paper_scale_") as root:
        world = os.path.join(root, "world")
        subprocess.run([os.path.join(BUILD, "can-data"), "synth", "--out", world], check=True, capture_output=True)
        model(os.path.join(root, "models/alpaca-7b-reproduced"), LLAMA_7B, score=False)
        for kind in ("reward", "cost"):
            config = dict(LLAMA_7B, architectures=["LlamaModelForScore"], score_dim=1, score_type=kind, bias=False,
                          do_normalize=False)
            model(os.path.join(root, f"models/beaver-7b-v1.0-{kind}"), config, score=True)
        # A tokenizer as the run would train one, copied where the policy's belongs.
        tokenizer_run = os.path.join(root, "tokenizer-run")
        subprocess.run([os.path.join(BUILD, "can-train"), "--config", os.path.join(SOURCE, "configs/mocan.yaml"),
                        "--set", f"run.dir={tokenizer_run}", "--stages", "data,tokenizer"], check=True,
                       capture_output=True)
        shutil.copy(os.path.join(tokenizer_run, "tokenizer/tokenizer.model"),
                    os.path.join(root, "models/alpaca-7b-reproduced/tokenizer.model"))
        data = os.path.join(root, "data/pku-saferlhf-30k-hub")
        os.makedirs(data)
        with open(os.path.join(world, "pairs_train.jsonl")) as source:
            lines = source.readlines()
        for split, part in (("train", lines[:-200]), ("test", lines[-200:])):
            with lzma.open(os.path.join(data, f"{split}.jsonl.xz"), "wt") as out:
                out.writelines(part)
        plan = subprocess.run([os.path.abspath(os.path.join(BUILD, "can-train")), "--config",
                               os.path.join(SOURCE, "configs/paper-mocan.yaml"), "--dry-run", *sys.argv[1:]],
                              cwd=root, capture_output=True, text=True)
        print(plan.stdout.replace(root, "."), plan.stderr)
        print(f"exit status {plan.returncode}")


if __name__ == "__main__":
    main()
