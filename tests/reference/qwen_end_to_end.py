#!/usr/bin/env python3
"""Reference test: a whole MoCAN run on a Qwen 2.5-shaped model with its tokenizer.json and chat template.

configs/qwen2.5-0.5b-mocan.yaml in miniature, every input written by the Python stack:
  * the tokenizer: a byte-level BPE shaped like Qwen 2.5's (NFC, Qwen's split
    expression, ByteLevel, no BOS; <|endoftext|>, <|im_start|>, <|im_end|>) trained
    by `tokenizers` on the synthetic world's corpus, saved by transformers with
    eos_token <|im_end|>, pad_token <|endoftext|> and Qwen 2.5's chat template (read
    from TRL's package, which ships the hub's templates);
  * the policy: a tiny random transformers Qwen2ForCausalLM (q/k/v biases, tied
    embeddings, grouped-query attention) over that vocabulary, in the same folder;
  * the pairs: the synthetic world's (can-data synth), as train/test JSON Lines.
The run (configs/tiny-mocan.yaml with world.enabled false, models.policy the folder,
data.chat_template: model) trains the reward and cost models from the Qwen2
backbone, samples, solves the dual, re-labels, runs DPO and evaluates. Checked:
  * --dry-run finds no problem;
  * the run finishes with every MoCAN stage; the run's tokenizer folder and the
    aligned model's folder hold tokenizer.json, tokenizer_config.json and
    chat_template.jinja;
  * the aligned model loads with AutoModelForCausalLM (a Qwen2 model) and its folder
    with AutoTokenizer; on that folder CAN's rendered prompt and its ids equal
    apply_chat_template's; the responses CAN sampled from π_ref and decoded
    (offline_scores/responses.jsonl) encode with CAN as with transformers, and
    decode back to themselves.

Exit 0: all pass; 1: a failure (each named); 77: a library missing (outside CI).
The build folder comes from CAN_BINARY_DIR (CTest sets it), default build/.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "support"))
from can_reference import CheckFailure, Checks, probe, program, read_json, require, run, temporary_folder, write_json  # noqa: E402,E501

torch, transformers, tokenizers, trl = require("torch", "transformers", "tokenizers", "trl")
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast  # noqa: E402
from transformers import Qwen2Config, Qwen2ForCausalLM  # noqa: E402

import tiny_causal_lm as tiny  # noqa: E402

QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
STAGES = ["data", "tokenizer", "reward_model", "cost_model", "offline_scores", "dual", "relabel", "dpo", "eval"]


def write_pairs(world, root):
    with open(os.path.join(world, "pairs_train.jsonl")) as source:
        lines = source.readlines()
    for name, part in (("train", lines[:-20]), ("test", lines[-20:])):
        with open(os.path.join(root, f"{name}.jsonl"), "w") as out:
            out.writelines(part)


def qwen_tokenizer(world, folder):
    tok = tokenizers.Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    with open(os.path.join(world, "corpus.txt")) as source:
        corpus = [line.rstrip("\n") for line in source]
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    from trl import chat_template_utils
    fast.chat_template = chat_template_utils.qwen2_5_chat_template
    fast.save_pretrained(folder)
    return len(fast)


def qwen_policy(folder, vocab):
    config = Qwen2Config(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         rope_theta=1e6, tie_word_embeddings=True, use_sliding_window=False,
                         eos_token_id=vocab - 1, pad_token_id=vocab - 3)
    torch.manual_seed(61)
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(3.0)  # away from the near-uniform initial distribution, as tiny.random_llama does
    model.save_pretrained(folder)


def main():
    start = time.monotonic()
    tiny.quiet()
    checks = Checks("qwen_end_to_end")
    with temporary_folder("qwen_end_to_end") as root:
        try:
            world = os.path.join(root, "world")
            run([program("can-data"), "synth", "--out", world, "--train-prompts", "120", "--test-prompts", "8"])
            write_pairs(world, root)
            policy = os.path.join(root, "qwen2.5-tiny-instruct")
            vocab = qwen_tokenizer(world, policy)
            qwen_policy(policy, vocab)

            run_dir = os.path.join(root, "run")
            command = [program("can-train"), "--config", os.path.join(os.environ.get("CAN_SOURCE_DIR", "."),
                                                                      "configs", "tiny-mocan.yaml"),
                       "--set", f"run.dir={run_dir}", "--set", "world.enabled=false",
                       "--set", f"data.pairs_train={os.path.join(root, 'train.jsonl')}",
                       "--set", f"data.pairs_test={os.path.join(root, 'test.jsonl')}",
                       "--set", f"models.policy={policy}", "--set", "data.chat_template=model"]
            plan = run(command + ["--dry-run"]).stdout
            checks.check("--dry-run finds no problem", "no problems found" in plan, plan[-2000:])

            run(command)
            stages = [stage["name"] for stage in read_json(os.path.join(run_dir, "stages.json"))["stages"]]
            checks.equal("every MoCAN stage ran", stages, STAGES)
            aligned = os.path.join(run_dir, "dpo", "model")
            for folder in (os.path.join(run_dir, "tokenizer"), aligned):
                checks.equal(f"{os.path.relpath(folder, run_dir)} carries the tokenizer and its template",
                             all(os.path.exists(os.path.join(folder, name))
                                 for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")), True)
            model = AutoModelForCausalLM.from_pretrained(aligned)
            checks.equal("the aligned policy loads in transformers as a Qwen2 model",
                         (type(model).__name__, model.config.vocab_size), ("Qwen2ForCausalLM", vocab))
            hf = AutoTokenizer.from_pretrained(aligned)
            with open(os.path.join(run_dir, "eval", "responses.jsonl")) as source:
                records = [json.loads(line) for line in source]
            prompts = sorted({record["prompt"] for record in records})
            write_json(os.path.join(root, "prompts.json"), {"prompts": prompts})
            probe("chat", "--model", aligned, "--input", os.path.join(root, "prompts.json"),
                  "--output", os.path.join(root, "chat.json"))
            chat = read_json(os.path.join(root, "chat.json"))
            messages = [[{"role": "user", "content": prompt}] for prompt in prompts]
            want_texts = [hf.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in messages]
            want_ids = [hf.apply_chat_template(m, tokenize=True, add_generation_prompt=True) for m in messages]
            want_ids = [list(ids["input_ids"] if hasattr(ids, "keys") else ids) for ids in want_ids]
            checks.equal(f"the aligned folder's template renders the {len(prompts)} test prompts as transformers",
                         chat["texts"], want_texts)
            checks.equal("and encodes them as transformers", chat["ids"], want_ids)
            with open(os.path.join(run_dir, "offline_scores", "responses.jsonl")) as source:
                responses = [text for line in source for text in json.loads(line)["responses"]]
            write_json(os.path.join(root, "responses.json"), {"texts": responses})
            probe("tokenize", "--tokenizer", aligned, "--input", os.path.join(root, "responses.json"),
                  "--output", os.path.join(root, "tokens.json"))
            tokens = read_json(os.path.join(root, "tokens.json"))
            checks.equal(f"the {len(responses)} responses CAN sampled and decoded encode as transformers encodes them",
                         tokens["ids"], [hf(text, add_special_tokens=True)["input_ids"] for text in responses])
            checks.equal("and decode back to the same texts", tokens["decoded"], responses)
        except CheckFailure as failure:
            checks.check("the programs run", False, str(failure))
    status = checks.report()
    print(f"({time.monotonic() - start:.1f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
