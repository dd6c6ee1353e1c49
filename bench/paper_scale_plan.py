#!/usr/bin/env python3
"""can-train --dry-run on a shipped config at its models' true scale, without the downloads.

configs/paper-mocan.yaml (the default) at the paper's scale:

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
configs/qwen2.5-0.5b-mocan.yaml (--qwen): qwen2.5-0.5b-instruct with Qwen2.5-0.5B's
config.json (hidden 896, intermediate 4864, 24 layers, 14 query and 2 key/value heads,
q/k/v biases, vocabulary 151,936, tied embeddings), sparse likewise, with the same
trained tokenizer.model and a tokenizer_config.json holding Qwen 2.5's chat template
(from TRL's package when installed, else a ChatML stand-in of the same shape); the
reward and cost models are trained in that run, from this backbone.
Then prints the plan. Used for bench/results/paper-mocan-plan.md and
bench/results/qwen2.5-0.5b-plan.md.

    .venv/bin/python3 bench/paper_scale_plan.py [--qwen] [--set key=value ...]   (--set: passed to can-train)
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


QWEN25_05B = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu", "vocab_size": 151936,
    "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
    "num_key_value_heads": 2, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
    "tie_word_embeddings": True, "use_sliding_window": False, "sliding_window": 32768, "max_window_layers": 21,
    "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151645,
}
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def shapes(config, score):
    h, i, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    kv = h // heads * kv_heads
    result = {"model.embed_tokens.weight": [v, h], "model.norm.weight": [h]}
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        for name, rows in (("q_proj", h), ("k_proj", kv), ("v_proj", kv), ("o_proj", h)):
            result[p + f"self_attn.{name}.weight"] = [rows, h]
            if config["model_type"] == "qwen2" and name != "o_proj":
                result[p + f"self_attn.{name}.bias"] = [rows]
        result[p + "mlp.gate_proj.weight"] = [i, h]
        result[p + "mlp.up_proj.weight"] = [i, h]
        result[p + "mlp.down_proj.weight"] = [h, i]
        result[p + "input_layernorm.weight"] = [h]
        result[p + "post_attention_layernorm.weight"] = [h]
    if score:
        result["score_head.weight"] = [1, h]
    elif not config["tie_word_embeddings"]:
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


def qwen_chat_template():
    try:
        from trl import chat_template_utils
        return chat_template_utils.qwen2_5_chat_template
    except ImportError:
        return CHATML


def main():
    qwen = "--qwen" in sys.argv[1:]
    passed = [a for a in sys.argv[1:] if a != "--qwen"]
    policy = "models/qwen2.5-0.5b-instruct" if qwen else "models/alpaca-7b-reproduced"
    config_file = "configs/qwen2.5-0.5b-mocan.yaml" if qwen else "configs/paper-mocan.yaml"
    with tempfile.TemporaryDirectory(prefix="can_paper_scale_") as root:
        world = os.path.join(root, "world")
        subprocess.run([os.path.join(BUILD, "can-data"), "synth", "--out", world], check=True, capture_output=True)
        model(os.path.join(root, policy), QWEN25_05B if qwen else LLAMA_7B, score=False)
        if qwen:
            with open(os.path.join(root, policy, "tokenizer_config.json"), "w") as out:
                json.dump({"chat_template": qwen_chat_template(), "eos_token": "<|im_end|>"}, out)
        else:
            for kind in ("reward", "cost"):
                config = dict(LLAMA_7B, architectures=["LlamaModelForScore"], score_dim=1, score_type=kind,
                              bias=False, do_normalize=False)
                model(os.path.join(root, f"models/beaver-7b-v1.0-{kind}"), config, score=True)
        # A tokenizer as the run would train one, copied where the policy's belongs.
        tokenizer_run = os.path.join(root, "tokenizer-run")
        subprocess.run([os.path.join(BUILD, "can-train"), "--config", os.path.join(SOURCE, "configs/mocan.yaml"),
                        "--set", f"run.dir={tokenizer_run}", "--stages", "data,tokenizer"], check=True,
                       capture_output=True)
        shutil.copy(os.path.join(tokenizer_run, "tokenizer/tokenizer.model"), os.path.join(root, policy, "tokenizer.model"))
        data = os.path.join(root, "data/pku-saferlhf-30k-hub")
        os.makedirs(data)
        with open(os.path.join(world, "pairs_train.jsonl")) as source:
            lines = source.readlines()
        for split, part in (("train", lines[:-200]), ("test", lines[-200:])):
            with lzma.open(os.path.join(data, f"{split}.jsonl.xz"), "wt") as out:
                out.writelines(part)
        plan = subprocess.run([os.path.abspath(os.path.join(BUILD, "can-train")), "--config",
                               os.path.join(SOURCE, config_file), "--dry-run", *passed],
                              cwd=root, capture_output=True, text=True)
        print(plan.stdout.replace(root, "."), plan.stderr)
        print(f"exit status {plan.returncode}")


if __name__ == "__main__":
    main()
