#!/usr/bin/env python3
"""Reference test: a model folder's own chat template (data.chat_template: model) against transformers.

CAN renders the Jinja chat template of a model folder (can::ChatTemplate::of_model,
with its own Jinja interpreter, src/data/jinja_template.cpp) for one user message
with add_generation_prompt=True, and encodes the result without the tokenizer's BOS
(the template writes its own special tokens). transformers' apply_chat_template is
the oracle, on the real templates: TRL ships the hub's chat templates verbatim (it
identifies models by comparing templates), so the Llama 3, 3.1 and 3.2 and Qwen 2.5
templates are read from TRL's package here, not copied into this repository.

A byte-level BPE tokenizer with the special tokens of both families is trained by
the `tokenizers` library and saved by transformers with each template, in both
layouts transformers reads: chat_template.jinja beside tokenizer_config.json (what
transformers 5 writes) and the older "chat_template" field inside
tokenizer_config.json. For 60 prompts (leading, trailing and inner whitespace, which
Llama 3's `| trim` removes; newlines; quotes and braces; Jinja's own delimiters;
unicode; the special tokens' text; the empty prompt) `can_reference_probe chat`
must give exactly:
  * the text of apply_chat_template(tokenize=False, add_generation_prompt=True);
  * the ids of apply_chat_template(tokenize=True, add_generation_prompt=True).
Llama 3.2's template writes today's date (strftime_now): both sides read the clock
within a second, so a run across midnight may differ once.
Every other template TRL ships is tried as well: CAN must render it exactly as
transformers does, or refuse it with an error that names the file and points to
data.chat_template; a template rendered differently is a failure. How many of them
are rendered and how many refused is printed.

TOLERANCES: none; texts and ids are compared exactly.
Exit 0: all pass; 1: a failure (each named); 77: a library missing (outside CI).
The build folder comes from CAN_BINARY_DIR (CTest sets it), default build/.
"""
import json
import os
import pathlib
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "support"))
from can_reference import Checks, program, read_json, require, temporary_folder, write_json  # noqa: E402

transformers, tokenizers, trl = require("transformers", "tokenizers", "trl")
import subprocess  # noqa: E402

from tokenizers import Regex, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import AutoTokenizer, PreTrainedTokenizerFast  # noqa: E402

PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
           r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
            "<|python_tag|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
REQUIRED = ["llama3", "llama3_1", "llama3_2", "qwen2_5"]  # the families: must render, not be refused
SHOWN = 3

PROMPTS = [
    "How do I bake bread?", "", " ", "  leading spaces", "trailing spaces  ", "\n\nnewlines around\n\n",
    "inner  double  spaces", "tab\tseparated", "line one\nline two\r\nline three", "quotes ' and \" inside",
    "braces {prompt} {{ x }} {% if %} {# c #}", "backslash \\n not a newline", "unicode: héllo wörld ñ ç",
    "日本語の質問です。", "emoji 😀👍🏽 and ZWJ 👨‍👩‍👧", "Ελληνικά και русский текст", "special <|eot_id|> text",
    "<|im_start|>user\nfake turn<|im_end|>", "digits 1234567890", "code:\n```python\ndef f(x):\n    return x\n```",
]
PROMPTS += [f"Question {i}: what is {i} times {i * 7}?{' ' * (i % 3)}" for i in range(40)]


def train_tokenizer():
    tok = tokenizers.Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    corpus = PROMPTS * 5 + ["You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
                            "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024", "system user assistant"]
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    return tok


def save_folder(tok, template, folder, inside_config):
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                   pad_token="<|endoftext|>")
    fast.chat_template = template
    fast.save_pretrained(folder)
    jinja = pathlib.Path(folder) / "chat_template.jinja"
    config_file = pathlib.Path(folder) / "tokenizer_config.json"
    if inside_config:  # the layout of transformers 4: the template inside tokenizer_config.json
        config = json.loads(config_file.read_text())
        config["chat_template"] = template
        config_file.write_text(json.dumps(config))
        if jinja.exists():
            jinja.unlink()
    else:
        assert jinja.exists() or "chat_template" in json.loads(config_file.read_text())
    return AutoTokenizer.from_pretrained(folder)


def expected(hf, prompt):
    messages = [{"role": "user", "content": prompt}]
    text = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return text, list(ids)


def can_chat(folder, prompts, root):
    request, result = os.path.join(root, "prompts.json"), os.path.join(root, "chat.json")
    write_json(request, {"prompts": prompts})
    completed = subprocess.run([program("can_reference_probe"), "chat", "--model", folder, "--input", request,
                                "--output", result], capture_output=True, text=True)
    if completed.returncode != 0:
        return None, completed.stderr.strip()
    return read_json(result), ""


def main():
    from trl import chat_template_utils
    templates_dir = pathlib.Path(chat_template_utils.__file__).parent / "chat_templates"
    names = sorted(p.stem for p in templates_dir.glob("*.jinja") if not p.stem.endswith("_training"))
    checks = Checks("a model's chat template: CAN against transformers' apply_chat_template")
    tok = train_tokenizer()
    rendered, refused = [], []
    with temporary_folder("chat") as root:
        for name in names:
            template = (templates_dir / f"{name}.jinja").read_text(encoding="utf-8")
            layouts = [False, True] if name in REQUIRED else [False]
            for inside_config in layouts:
                label = f"{name} ({'tokenizer_config.json' if inside_config else 'chat_template.jinja'})"
                folder = os.path.join(root, f"{name}-{int(inside_config)}")
                hf = save_folder(tok, template, folder, inside_config)
                try:
                    want = [expected(hf, p) for p in PROMPTS]
                except Exception as error:  # a template transformers itself cannot render for one user message
                    print(f"  {label}: transformers cannot render it ({type(error).__name__}); not compared")
                    continue
                got, error = can_chat(folder, PROMPTS, root)
                if got is None:
                    names_file = "chat_template" in error and "data.chat_template" in error
                    if name in REQUIRED:
                        checks.check(f"{label}: rendered", False, error[-600:])
                    else:
                        checks.check(f"{label}: refused with the file and the data.chat_template hint", names_file,
                                     error[-600:])
                        refused.append(name)
                    continue
                text_bad = [i for i, (text, _) in enumerate(want) if got["texts"][i] != text]
                ids_bad = [i for i, (_, ids) in enumerate(want) if got["ids"][i] != ids]
                detail = "".join(f"\n    prompt {PROMPTS[i]!r}:\n      CAN  {got['texts'][i]!r}\n      want {want[i][0]!r}"
                                 for i in text_bad[:SHOWN])
                checks.check(f"{label}: text of {len(PROMPTS)} prompts", not text_bad, detail)
                detail = "".join(f"\n    prompt {PROMPTS[i]!r}:\n      CAN  {got['ids'][i]}\n      want {want[i][1]}"
                                 for i in ids_bad[:SHOWN])
                checks.check(f"{label}: ids of {len(PROMPTS)} prompts", not ids_bad, detail)
                if not inside_config:
                    rendered.append(name)
    print(f"  rendered exactly: {len(rendered)} templates ({', '.join(rendered)})")
    print(f"  refused by name:  {len(refused)} templates ({', '.join(refused)})")
    return checks.report()


if __name__ == "__main__":
    sys.exit(main())
