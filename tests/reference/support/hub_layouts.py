"""Checkpoint layouts as published on the hub, for the reference tests.

transformers 5 writes only safetensors; older hub revisions (PKU-Alignment's among
them) hold pytorch_model.bin, or shards pytorch_model-0000k-of-0000n.bin with
pytorch_model.bin.index.json, which transformers 4's save_pretrained wrote with
torch.save. save_bin_shards writes them that way. beaver_config turns a
LlamaModel's saved config.json into the one Safe-RLHF first published with its
beaver score models.

Callers import torch through can_reference.require() first.
"""
import json
import os

import torch


def save_bin_shards(state, folder, shards):
    """The state dict as torch.save files named and indexed as transformers 4 wrote them."""
    names = list(state)
    if shards == 1:
        torch.save(state, os.path.join(folder, "pytorch_model.bin"))
        return
    weight_map, total = {}, 0
    for k in range(shards):
        part = names[k * len(names) // shards:(k + 1) * len(names) // shards]
        file = f"pytorch_model-{k + 1:05d}-of-{shards:05d}.bin"
        torch.save({name: state[name] for name in part}, os.path.join(folder, file))
        for name in part:
            weight_map[name] = file
            total += state[name].numel() * state[name].element_size()
    with open(os.path.join(folder, "pytorch_model.bin.index.json"), "w") as out:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, out, indent=2)


def beaver_config(folder, score_type):
    """config.json as beaver-7b-v1.0-reward/-cost were first published: LlamaModelForScore, `bias` only."""
    path = os.path.join(folder, "config.json")
    with open(path) as source:
        config = json.load(source)
    config.update({"architectures": ["LlamaModelForScore"], "score_dim": 1, "score_type": score_type, "bias": False,
                   "do_normalize": False})
    with open(path, "w") as out:
        json.dump(config, out, indent=2)
