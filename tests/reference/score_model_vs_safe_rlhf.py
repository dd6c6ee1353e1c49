#!/usr/bin/env python3
"""Reference test: CAN's Safe-RLHF score models (can::load_score_model, can-score) against transformers.

A score model in Safe-RLHF's layout (PKU-Alignment's beaver reward and cost
models) is a transformers LlamaModel under `model.` plus a linear head
`score_head` (hidden -> score_dim), read at the last non-padding token. Here it is
built from transformers' LlamaModel and torch.nn.Linear as a LlamaPreTrainedModel
subclass named LlamaForScore and saved with save_pretrained, so config.json and
model.safetensors are written by transformers: "architectures": ["LlamaForScore"],
score_dim 1, score_type "reward", do_normalize false, and the normalizer.mean /
.var / .count buffers Safe-RLHF's checkpoints carry (CAN must ignore them).
Weights are scaled up (initializer_range 0.2, RMSNorm weights from U(0.5, 1.5),
head bias ~ N(0, 1)), so scores are of order 1.

Which config key decides the head's bias: Safe-RLHF until mid-2023 read `bias`
(default false); Safe-RLHF since reads `score_bias` (default true) and ignores
`bias`, so a config holding both was written by the newer code and `score_bias`
is what Safe-RLHF loads it with. Checkpoint variants, each a separate directory:
  beaver          "bias": false, "score_bias": true,  score_head.bias present
  beaver-no-bias  "bias": false, "score_bias": false, no score_head.bias
  legacy          "bias": false only (older Safe-RLHF), no score_head.bias
  legacy-bias     "bias": true only (older Safe-RLHF), score_head.bias present

Checked for every variant:
  * `can_reference_probe score` on left- and right-padded batches of token ids:
    the end score of each row against Safe-RLHF's computation in transformers
    (score_head over the last hidden states, gathered at the last position whose
    attention mask is 1; positions counted over real tokens, cumsum(mask) - 1,
    so left padding changes nothing).
Checked for beaver and beaver-no-bias, with a sentencepiece tokenizer.model
(BPE, byte fallback, unk 0 bos 1 eos 2 pad 3, Llama's normalization) trained
here by the sentencepiece package:
  * `can-score --json` on prompt/response texts (four on beaver, one on
    beaver-no-bias: digits, unicode through byte fallback, a newline, a response
    with leading spaces, a prompt holding "{prompt}"), with the default template
    and with a custom --chat-template, against the same text built in Python the way CAN's
    pipeline builds it (src/data/tokenize_sequence.cpp, chat_template.cpp):
        ids = [bos] + sp.encode(template with {prompt} replaced by the prompt)
                    + sp.encode(response) + [eos],
    prompt and response encoded separately, scored at the final EOS. (This
    pins CAN's rule. Safe-RLHF itself encodes prompt + response + eos as one
    string, so its response tokens carry no dummy-prefix "▁": "ASSISTANT:Hello"
    where CAN has "ASSISTANT:", "▁Hello".)
And that wrong variants are far outside the tolerance: the score at the last
column of right-padded rows, one token before the end, attention over the left
padding, the head without its bias, the other chat template.

Exit 0: all pass; 1: a failure (each named); 77: a library missing (outside CI).
The build folder comes from CAN_BINARY_DIR (CTest sets it), default build/.
"""
import io
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "support"))
from can_reference import CheckFailure, Checks, probe, program, require, run, temporary_folder  # noqa: E402

torch, transformers, safetensors, spm = require("torch", "transformers", "safetensors", "sentencepiece")
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import LlamaModel, LlamaPreTrainedModel  # noqa: E402

import tiny_causal_lm as tiny  # noqa: E402

# --- TOLERANCES -----------------------------------------------------------------
# End scores, float32 on both sides: the same products summed in other orders
# (transformers' eager attention against CAN's kernel, other matmul blocking),
# float32 rounding carried through 3 layers and a 64-wide head, ~1e-6 on scores
# of size ~1-3. 1e-4 (the bound) leaves a factor ~100 and is still far
# below what a real error makes (see DISCRIMINATION below).
SCORE_ATOL = 1e-4
# A deliberately wrong variant must miss the reference by this multiple of
# SCORE_ATOL, so a pass cannot come from a tolerance that tests nothing.
DISCRIMINATION = 100

# Safe-RLHF's special ids (Llama's), and the tokenizer the CLI reads.
UNK, BOS, EOS, PAD = 0, 1, 2, 3
VOCAB = 320  # sentencepiece pieces: 4 specials, 256 byte pieces, ~60 merged pieces and characters
DEFAULT_TEMPLATE = "BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:"  # ChatTemplate::kSafeRlhf
CUSTOM_TEMPLATE = "### Question:\n{prompt}\n### Answer:"

# name -> (config keys deciding the head's bias, whether Safe-RLHF's head has a bias)
VARIANTS = {
    "beaver": ({"bias": False, "score_bias": True}, True),
    "beaver-no-bias": ({"bias": False, "score_bias": False}, False),
    "legacy": ({"bias": False}, False),
    "legacy-bias": ({"bias": True}, True),
}
# can-score runs (LibTorch starts anew each time, ~1 s): every conversation on beaver, one on beaver-no-bias.
CLI_CONVERSATIONS = {"beaver": (0, 1, 2, 3), "beaver-no-bias": (1,)}

# (prompt, response) for can-score: unicode (byte fallback), digits, newlines, a
# response with a leading double space, a prompt containing the placeholder text.
CONVERSATIONS = [
    ("How do I bake bread?", "Mix flour, water and yeast; bake for 30 minutes at 220 degrees."),
    ("Translate 'café' to 日本語 🙂", "カフェ is the word.\nIt is written in katakana."),
    ("What is 1234 + 5678?", "  6912, with two leading spaces."),
    ("Repeat {prompt} literally", "{prompt}"),
]


class Normalizer(torch.nn.Module):
    """The running score statistics Safe-RLHF registers as buffers (saved, unused without do_normalize)."""

    def __init__(self, score_dim):
        super().__init__()
        self.register_buffer("mean", torch.full((score_dim,), 0.37))
        self.register_buffer("var", torch.full((score_dim,), 2.5))
        self.register_buffer("count", torch.tensor([1000], dtype=torch.int64))


class LlamaForScore(LlamaPreTrainedModel):
    """Safe-RLHF's score model: LlamaModel, then a linear head read at the last real token."""

    def __init__(self, config, head_bias):
        super().__init__(config)
        self.model = LlamaModel(config)
        self.score_head = torch.nn.Linear(config.hidden_size, config.score_dim, bias=head_bias)
        self.normalizer = Normalizer(config.score_dim)
        self.post_init()

    def end_scores(self, ids, mask):
        """[B, score_dim]: Safe-RLHF's end_scores (head on every position, gathered at the last mask == 1)."""
        with torch.no_grad():
            hidden = self.model(input_ids=ids, attention_mask=mask,
                                position_ids=tiny.position_ids(mask)).last_hidden_state
            scores = self.score_head(hidden).float()  # [B, T, D]
        end = torch.stack([row.nonzero()[-1, 0] for row in mask])  # [B]
        return scores[torch.arange(ids.size(0)), end]


def score_model(keys, head_bias, seed):
    """A LlamaForScore with transformers' initialisation at initializer_range 0.2, norms and bias randomised."""
    config = tiny.llama_config(heads=4, kv_heads=2, tied=False, rope_theta=1e4, vocab=VOCAB)
    config.pad_token_id = PAD
    config.max_position_embeddings = 512  # the byte-fallback conversations run past tiny's 128
    config.architectures = ["LlamaForScore"]
    config.score_dim = 1
    config.score_type = "reward"
    config.do_normalize = False
    for key, value in keys.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    model = LlamaForScore(config, head_bias).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.uniform_(0.5, 1.5)
        if head_bias:
            model.score_head.bias.normal_(0.0, 1.0)
    return model


def train_tokenizer(path):
    """A BPE sentencepiece model with Llama's settings (identity normalization, dummy prefix, spaces kept)."""
    rng = random.Random(5)
    words = ("the a bread flour water yeast bake minutes degrees word how do I what is with two leading spaces "
             "question answer mix for at translate repeat literally written it cafe safe model reward").split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + rng.choice([".", "?", ",", ""])
             for _ in range(500)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type="bpe", vocab_size=VOCAB,
        unk_id=UNK, bos_id=BOS, eos_id=EOS, pad_id=PAD, byte_fallback=True, character_coverage=1.0,
        normalization_rule_name="identity", add_dummy_prefix=True, remove_extra_whitespaces=False,
        split_digits=True, num_threads=1, minloglevel=2)
    with open(path, "wb") as out:
        out.write(model.getvalue())
    return spm.SentencePieceProcessor(model_file=path)


def padded_batch(side, seed):
    """input_ids, attention_mask [B, T]: BOS then random ids, lengths 2..12, padded with PAD on `side`."""
    generator = torch.Generator().manual_seed(seed)
    lengths = [2, 12, 7, 5, 11, 9]
    ids = torch.full((len(lengths), max(lengths)), PAD, dtype=torch.int64)
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        tokens = torch.cat([torch.tensor([BOS]), torch.randint(4, VOCAB, (length - 1,), generator=generator)])
        start = ids.size(1) - length if side == "left" else 0
        ids[row, start:start + length] = tokens
        mask[row, start:start + length] = 1
    return ids, mask


def can_scores(folder, model_dir, ids, mask):
    batch = os.path.join(folder, "batch.safetensors")
    out = os.path.join(folder, "scores.safetensors")
    save_file({"input_ids": ids, "attention_mask": mask}, batch)
    probe("score", "--model", model_dir, "--input", batch, "--output", out)
    return load_file(out)["scores"]


def can_score_cli(model_dir, prompt, response, template=None):
    command = [program("can-score"), "--model", model_dir, "--prompt", prompt, "--response", response, "--json"]
    if template is not None:
        command += ["--chat-template", template]
    lines = run(command).stdout.strip().splitlines()
    return torch.tensor([json.loads(lines[-1])["score"]], dtype=torch.float64)  # [1, score_dim]


def pipeline_ids(sp, template, prompt, response):
    """CAN's tokenize_sequence: BOS + encode(template ∘ prompt), then encode(response) + EOS, encoded apart."""
    prompt_text = template.replace("{prompt}", prompt, 1)
    return [BOS] + sp.encode(prompt_text) + sp.encode(response) + [EOS]


def check_discriminates(checks, name, reference, wrong):
    distance = float((torch.as_tensor(reference) - torch.as_tensor(wrong)).abs().min())
    print(f"  {name}: min |diff| {distance:.3g} (must exceed {DISCRIMINATION * SCORE_ATOL:g})")
    checks.check(name, distance > DISCRIMINATION * SCORE_ATOL,
                 f"a wrong variant is only {distance:.3g} from the reference: the comparison cannot tell")


def guarded(checks, name, action):
    """Runs a CAN program; a failing run is a failed check (named) instead of the end of the test."""
    try:
        return action()
    except CheckFailure as failure:
        checks.check(name, False, str(failure))
        return None


def check_probe(checks, folder, name, model_dir, model):
    for side, seed in (("left", 1), ("right", 2)):
        ids, mask = padded_batch(side, seed)
        expected = model.end_scores(ids, mask)
        got = guarded(checks, f"{name}: can_reference_probe score ({side}-padded)",
                      lambda: can_scores(folder, model_dir, ids, mask))
        if got is not None:
            checks.close(f"{name}: {side}-padded end scores", got, expected, SCORE_ATOL, why="float32 rounding")
    if name == "beaver":  # wrong variants of the same computation
        ids, mask = padded_batch("right", 2)
        expected = model.end_scores(ids, mask)
        short = mask.sum(-1) < ids.size(1)  # rows that end in padding
        last_column = torch.ones_like(mask)  # the last column, padding or not
        check_discriminates(checks, "beaver: the score at the last column of right-padded rows is caught",
                            expected[short], model.end_scores(ids, last_column)[short])
        ids, mask = padded_batch("left", 1)
        expected = model.end_scores(ids, mask)
        shifted = mask.clone()
        shifted[:, -1] = 0  # the last real token is the last column: one token earlier
        check_discriminates(checks, "beaver: the score one token before the end is caught", expected,
                            model.end_scores(ids, shifted))
        short = mask.sum(-1) < ids.size(1)
        with torch.no_grad():  # attention over the padding too (the mask not applied); RoPE ignores a
            hidden = model.model(input_ids=ids).last_hidden_state[:, -1]  # constant position shift
            unmasked = model.score_head(hidden)
        check_discriminates(checks, "beaver: attending to the left padding is caught", expected[short],
                            unmasked[short])
        check_discriminates(checks, "beaver: the head without its bias is caught", expected,
                            expected - model.score_head.bias.detach())


def check_cli(checks, name, model_dir, model, sp):
    for index in CLI_CONVERSATIONS[name]:
        prompt, response = CONVERSATIONS[index]
        ids = torch.tensor([pipeline_ids(sp, DEFAULT_TEMPLATE, prompt, response)])
        expected = model.end_scores(ids, torch.ones_like(ids))
        got = guarded(checks, f"{name}: can-score conversation {index}",
                      lambda: can_score_cli(model_dir, prompt, response))
        if got is not None:
            checks.close(f"{name}: can-score conversation {index} ({ids.size(1)} tokens)", got, expected,
                         SCORE_ATOL, why="float32 rounding")
        if index == 0 and name == "beaver":
            check_discriminates(checks, "beaver: the score before the final EOS is caught", expected,
                                model.end_scores(ids[:, :-1], torch.ones_like(ids[:, :-1])))
    prompt, response = CONVERSATIONS[1]
    ids = torch.tensor([pipeline_ids(sp, CUSTOM_TEMPLATE, prompt, response)])
    expected = model.end_scores(ids, torch.ones_like(ids))
    got = guarded(checks, f"{name}: can-score --chat-template",
                  lambda: can_score_cli(model_dir, prompt, response, CUSTOM_TEMPLATE))
    if got is not None:
        checks.close(f"{name}: can-score --chat-template ({ids.size(1)} tokens)", got, expected, SCORE_ATOL,
                     why="float32 rounding")
    if name == "beaver":
        default_ids = torch.tensor([pipeline_ids(sp, DEFAULT_TEMPLATE, prompt, response)])
        check_discriminates(checks, "beaver: the default template instead of --chat-template is caught", expected,
                            model.end_scores(default_ids, torch.ones_like(default_ids)))


def main():
    start = time.monotonic()
    tiny.quiet()
    checks = Checks("score_model_vs_safe_rlhf")
    with temporary_folder("score_model") as folder:
        sp = train_tokenizer(os.path.join(folder, "tokenizer.model"))
        checks.equal("tokenizer: piece count, bos, eos, pad, unk",
                     (sp.get_piece_size(), sp.bos_id(), sp.eos_id(), sp.pad_id(), sp.unk_id()),
                     (VOCAB, BOS, EOS, PAD, UNK))
        for index, (name, (keys, head_bias)) in enumerate(VARIANTS.items()):
            model = score_model(keys, head_bias, seed=20 + index)
            model_dir = os.path.join(folder, name)
            model.save_pretrained(model_dir)
            with open(os.path.join(model_dir, "config.json")) as source:
                saved = json.load(source)
            with safe_open(os.path.join(model_dir, "model.safetensors"), "pt") as f:
                extra = sorted(key for key in f.keys() if not key.startswith("model."))
            print(f"{name}: {json.dumps({key: saved.get(key) for key in ('architectures', 'bias', 'score_bias')})}, "
                  f"non-backbone tensors {extra}")
            checks.equal(f"{name}: head tensors and normalizer buffers saved", extra,
                         sorted(["score_head.weight", "normalizer.mean", "normalizer.var", "normalizer.count"]
                                + (["score_head.bias"] if head_bias else [])))
            check_probe(checks, folder, name, model_dir, model)
            if name in CLI_CONVERSATIONS:
                with open(os.path.join(folder, "tokenizer.model"), "rb") as source, \
                        open(os.path.join(model_dir, "tokenizer.model"), "wb") as out:
                    out.write(source.read())
                check_cli(checks, name, model_dir, model, sp)
    status = checks.report()
    print(f"({time.monotonic() - start:.1f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
