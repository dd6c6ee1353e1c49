#!/usr/bin/env python3
"""Reference test: a whole MoCAN run from inputs shaped as the hub publishes them.

The paper's inputs, in miniature and in their published layouts, all written here
by the Python stack:
  * pairs: PKU-SafeRLHF's train.jsonl.xz and test.jsonl.xz (lzma), with fields CAN
    does not read (prompt_source, harm categories, severity), no prompt files; the
    pairs are those of CAN's synthetic world (can-data synth), so the models have
    something to learn;
  * tokenizer.model: sentencepiece with Llama's conventions (BPE, byte fallback,
    unk 0, bos 1, eos 2) and no pad piece;
  * policy: a transformers LlamaForCausalLM whose vocabulary is the tokenizer's plus
    one <pad> row, pad_token_id the last id (Alpaca-7B-reproduced's 32,001 over
    32,000), weights in pytorch_model-0000k-of-00003.bin shards with their index;
  * reward and cost models: transformers' LlamaModel plus a score head without bias,
    configs as beaver-7b-v1.0 first published them (LlamaModelForScore, score_type,
    `bias` only); the reward in safetensors, the cost in one pytorch_model.bin.
Checked: `can-train --dry-run` finds no problem and plans the stages; the run
(world.enabled: false) finishes with exactly the stages that use given models; the
report's prompts are the test split's; the DPO policy CAN saves loads with
transformers' from_pretrained and has the policy's vocabulary and pad id.

Exit 0: all pass; 1: a failure (each named); 77: a library missing (outside CI).
The build folder comes from CAN_BINARY_DIR (CTest sets it), default build/.
"""
import json
import lzma
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "support"))
from can_reference import CheckFailure, Checks, program, read_json, require, run, temporary_folder  # noqa: E402

torch, transformers, spm = require("torch", "transformers", "sentencepiece")
from transformers import AutoModelForCausalLM, LlamaForCausalLM, LlamaModel  # noqa: E402

import tiny_causal_lm as tiny  # noqa: E402
from hub_layouts import beaver_config, save_bin_shards  # noqa: E402

VOCAB = 400  # sentencepiece pieces; the policy has one more row, <pad>


def write_pairs(world, root):
    """The world's pairs as the hub's train/test.jsonl.xz, with extra fields; returns the test prompts."""
    with open(os.path.join(world, "pairs_train.jsonl")) as source:
        pairs = [json.loads(line) for line in source]
    test = pairs[-20:]
    for name, split in (("train", pairs[:-20]), ("test", test)):
        with lzma.open(os.path.join(root, f"{name}.jsonl.xz"), "wt") as out:
            for pair in split:
                pair = dict(pair, prompt_source="Alpaca", severity_level=1,
                            response_0_harm_category={"Privacy Violation": False, "Cybercrime": False})
                out.write(json.dumps(pair) + "\n")
    return {pair["prompt"] for pair in test}


def train_tokenizer(world, path):
    with open(os.path.join(world, "corpus.txt")) as source:
        lines = [line.rstrip("\n") for line in source]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=path[:-len(".model")], model_type="bpe", vocab_size=VOCAB,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, byte_fallback=True, character_coverage=1.0, num_threads=1,
        minloglevel=2)


def score_model(folder, seed, score_type, weights):
    config = tiny.llama_config(heads=4, kv_heads=2, tied=False, rope_theta=1e4, vocab=VOCAB + 1)
    config.pad_token_id = VOCAB
    torch.manual_seed(seed)
    backbone = LlamaModel(config)
    backbone.save_pretrained(folder)
    beaver_config(folder, score_type)
    state = {f"model.{name}": tensor for name, tensor in backbone.state_dict().items()}
    state["score_head.weight"] = torch.randn(1, config.hidden_size) * 0.1
    if weights == "bin":
        os.remove(os.path.join(folder, "model.safetensors"))
        save_bin_shards(state, folder, 1)
    else:
        from safetensors.torch import save_file
        save_file({name: t.contiguous() for name, t in state.items()}, os.path.join(folder, "model.safetensors"),
                  metadata={"format": "pt"})


def main():
    start = time.monotonic()
    tiny.quiet()
    checks = Checks("hub_inputs_end_to_end")
    with temporary_folder("hub_inputs") as root:
        try:
            world = os.path.join(root, "world")
            run([program("can-data"), "synth", "--out", world, "--train-prompts", "120", "--test-prompts", "8"])
            test_prompts = write_pairs(world, root)

            policy = os.path.join(root, "alpaca-7b-reproduced")
            config = tiny.llama_config(heads=4, kv_heads=2, tied=False, rope_theta=1e4, vocab=VOCAB + 1)
            config.pad_token_id = VOCAB
            model = tiny.random_llama(config, seed=51)
            model.save_pretrained(policy)
            os.remove(os.path.join(policy, "model.safetensors"))
            save_bin_shards(model.state_dict(), policy, 3)
            train_tokenizer(world, os.path.join(policy, "tokenizer.model"))
            score_model(os.path.join(root, "beaver-reward"), 52, "reward", "safetensors")
            score_model(os.path.join(root, "beaver-cost"), 53, "cost", "bin")

            run_dir = os.path.join(root, "run")
            command = [program("can-train"), "--config", os.path.join(os.environ.get("CAN_SOURCE_DIR", "."),
                                                                      "configs", "tiny-mocan.yaml"),
                       "--set", f"run.dir={run_dir}", "--set", "world.enabled=false",
                       "--set", f"data.pairs_train={os.path.join(root, 'train.jsonl.xz')}",
                       "--set", f"data.pairs_test={os.path.join(root, 'test.jsonl.xz')}",
                       "--set", f"models.policy={policy}",
                       "--set", f"models.reward={os.path.join(root, 'beaver-reward')}",
                       "--set", f"models.cost={os.path.join(root, 'beaver-cost')}"]
            plan = run(command + ["--dry-run"]).stdout
            checks.check("--dry-run finds no problem", "no problems found" in plan, plan[-2000:])
            checks.check("--dry-run reads the sharded .bin policy",
                         "pytorch_model" not in plan and "3 file(s)" in plan, plan[:2000])
            checks.check("--dry-run writes nothing", not os.path.exists(run_dir))

            run(command)
            stages = [stage["name"] for stage in read_json(os.path.join(run_dir, "stages.json"))["stages"]]
            checks.equal("the stages that use the given models",
                         stages, ["data", "tokenizer", "offline_scores", "dual", "relabel", "dpo", "eval"])
            evaluated = set()
            with open(os.path.join(run_dir, "eval", "responses.jsonl")) as source:
                for line in source:
                    evaluated.add(json.loads(line)["prompt"])
            checks.equal("the evaluation prompts are the test split's distinct prompts", evaluated, test_prompts)
            aligned = AutoModelForCausalLM.from_pretrained(os.path.join(run_dir, "dpo", "model"))
            checks.equal("the aligned policy loads in transformers with the policy's vocabulary and pad id",
                         (aligned.config.vocab_size, aligned.config.pad_token_id), (VOCAB + 1, VOCAB))
        except CheckFailure as failure:
            checks.check("the programs run", False, str(failure))
    status = checks.report()
    print(f"({time.monotonic() - start:.1f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
