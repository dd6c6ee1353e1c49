#!/usr/bin/env python3
"""Reference test: CAN's tokenizer (can::Tokenizer encode/decode) against sentencepiece and transformers.

A BPE tokenizer.model is trained here by the sentencepiece package with the
settings of Llama's tokenizer.model: identity normalization, a dummy prefix,
spaces kept as they are (remove_extra_whitespaces false), byte fallback, digits
split, whitespace-only pieces allowed; unk 0, bos 1, eos 2, pad 3. Over 200
strings, a fixed list of edge cases (empty, leading/trailing/double spaces, tabs,
newlines, digits, punctuation, accents, CJK, emoji, combining marks, control
characters, the literal texts of special pieces, a very long string) and seeded
random mixtures of them, go through `can_reference_probe tokenize`
(can::Tokenizer::encode with BOS, then decode) and are compared with:
  * sentencepiece: CAN's ids equal [bos] + sp.encode(text), exactly;
  * transformers 5's LlamaTokenizer (AutoTokenizer on a folder holding the same
    tokenizer.model; transformers 5 has no slow tokenizer, it converts the model
    to a `tokenizers` BPE with a Metaspace pre-tokenizer): equal ids for every
    text except those that begin with a space (or "▁"), where Metaspace adds no
    prefix of its own and so holds one "▁" fewer than sentencepiece: its ids are
    then exactly sentencepiece's for the text without that first character;
  * the same vocabulary and merges in the pipeline of Llama's tokenizer.json
    (normalizer Prepend("▁") + Replace(" ", "▁"), no pre-tokenizer), loaded by
    transformers' generic TokenizersBackend: equal ids for every text.
  Both transformers tokenizers run with split_special_tokens=True: by default
  transformers turns the literal texts "<s>", "</s>", "<unk>", "<pad>" inside a
  string into those special ids, while sentencepiece and CAN encode them as
  ordinary characters.
Decoding: CAN's decoded text equals sp.decode and transformers'
decode(skip_special_tokens=True) of the same ids, and equals the input text for
every string but those containing "▁" (U+2581), which every one of them decodes
as a space. transformers' LlamaTokenizer round trip (its own ids) loses one
leading space, also checked.

TOLERANCES: none; ids and texts are compared exactly.
Exit 0: all pass; 1: a failure (each named); 77: a library missing (outside CI).
The build folder comes from CAN_BINARY_DIR (CTest sets it), default build/.
"""
import io
import os
import random
import shutil
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "support"))
from can_reference import Checks, probe, read_json, require, temporary_folder, write_json  # noqa: E402

# transformers reads a tokenizer.model through protobuf (SentencePieceExtractor); without it AutoTokenizer
# falls back to tiktoken and fails with a misleading error.
spm, transformers, tokenizers, _ = require("sentencepiece", "transformers", "tokenizers", "google.protobuf")
from tokenizers import normalizers  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

UNK, BOS, EOS, PAD = 0, 1, 2, 3
VOCAB = 512  # 4 specials, 256 byte pieces, ~250 characters and merges
METASPACE = "\u2581"  # "▁", sentencepiece's escaped space
SHOWN = 5  # mismatching strings printed per check

WORDS = ("the of and to in is that for it with as was on be at by this had not are but from or have an they which "
         "one you were her all she there would their we him been has when who will more no if out so said what up "
         "its about into than them can only other new some could time these two may then do first any my now such "
         "like our over man me even most made after also did many before must through back years where much your "
         "way well down should because each just those people how too little state good very make world still own "
         "see men work long get here between both life being under never day same another know while last might "
         "café naïve façade résumé über Straße").split()
PUNCTUATION = list(".,;:!?'\"()[]{}<>-_/\\|@#$%^&*+=~`")
UNICODE = list("éèêëàâäçñöüßøåæœ") + ["日本語", "中文", "한국어", "русский", "ελληνικά", "עברית", "العربية", "🙂", "🚀",
                                      "👍🏽", "👨‍👩‍👧", "e\u0301", "\u00a0", "\u200b", "ｆｕｌｌ", "ﬁ", "€", "™", "\u2581"]
WHITESPACE = [" ", "  ", "   ", "\t", "\n", "\n\n", " \n", "\r\n"]


def corpus_lines(rng):
    """English-like training lines with digits, punctuation, accents and runs of spaces and tabs."""
    lines = []
    for _ in range(3000):
        parts = []
        for _ in range(rng.randint(4, 16)):
            kind = rng.random()
            if kind < 0.75:
                parts.append(rng.choice(WORDS))
            elif kind < 0.87:
                parts.append(str(rng.randint(0, 10 ** rng.randint(1, 6))))
            else:
                parts.append(rng.choice(PUNCTUATION))
            parts.append(rng.choice([" "] * 12 + ["  ", "\t", ", ", ". "]))
        lines.append("".join(parts).strip())
    return lines


def train_tokenizer(path):
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus_lines(random.Random(7))), model_writer=model, model_type="bpe",
        vocab_size=VOCAB, unk_id=UNK, bos_id=BOS, eos_id=EOS, pad_id=PAD, byte_fallback=True,
        character_coverage=1.0, normalization_rule_name="identity", add_dummy_prefix=True,
        remove_extra_whitespaces=False, split_digits=True, allow_whitespace_only_pieces=True, num_threads=1,
        minloglevel=2)
    with open(path, "wb") as out:
        out.write(model.getvalue())
    return spm.SentencePieceProcessor(model_file=path)


def edge_cases():
    return [
        "", " ", "  ", "   ", "\n", "\n\n", "\t", "\r\n", " \n ", "\t\tindented",
        "hello", " hello", "hello ", "  hello", "hello  world", "hello   world  ", "Hello, World!",
        "line one\nline two\n", "\n\nleading newlines", "trailing newline\n", "tab\tseparated\tvalues",
        "mixed \t \n whitespace", "word\u3000ideographic space",
        "0", "7", "42", "2024", "3.14159", "-17", "1,000,000", "+1e-10", "2024-01-01 12:34:56", "x1y2z3", "007",
        "".join(PUNCTUATION), "\"quoted\" and 'single'", "(parentheses) [brackets] {braces}", "a/b\\c|d",
        "#hashtag @mention $5 100%", "...", "?!", "--", "e.g. i.e. etc.",
        "café", "naïve façade", "Ünïcödé", "Straße", "ελληνικά", "русский текст", "日本語のテキスト", "中文字符",
        "한국어", "עברית", "العربية", "🙂", "🚀 rocket", "👍🏽", "👨‍👩‍👧", "e\u0301", "\u00a0non-breaking",
        "zero\u200bwidth", "ｆｕｌｌｗｉｄｔｈ", "ﬁ ligature", "€100 ™",
        "\u2581", "\u2581literal metaspace", "two\u2581\u2581metaspaces",
        "<s>", "</s>", "<unk>", "<pad>", "<s> after bos", "text </s> more", "<0x41>", "<s><s>",
        "a\x00b", "\x7f delete", "\x0b\x0c", "bell\x07",
    ]


def random_strings(count, rng):
    """Seeded mixtures of words, numbers, punctuation, unicode and whitespace runs, any of them at the ends."""
    strings = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(1, 14)):
            kind = rng.random()
            if kind < 0.45:
                parts.append(rng.choice(WORDS))
            elif kind < 0.55:
                parts.append(str(rng.randint(0, 10 ** rng.randint(1, 9))))
            elif kind < 0.65:
                parts.append(rng.choice(PUNCTUATION))
            elif kind < 0.78:
                parts.append(rng.choice(UNICODE))
            else:
                parts.append(rng.choice(WHITESPACE))
        strings.append("".join(parts))
    return strings


def long_string(rng):
    return "".join(rng.choice(WORDS + UNICODE + PUNCTUATION + WHITESPACE) + rng.choice([" ", ""])
                   for _ in range(3000))


def transformers_tokenizers(folder, model_path):
    """transformers 5's LlamaTokenizer from tokenizer.model, and Llama's tokenizer.json pipeline over its vocab."""
    llama_dir = os.path.join(folder, "llama_tokenizer")
    os.makedirs(llama_dir)
    shutil.copy(model_path, os.path.join(llama_dir, "tokenizer.model"))
    write_json(os.path.join(llama_dir, "tokenizer_config.json"),
               {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
                "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"})
    llama = AutoTokenizer.from_pretrained(llama_dir)

    # LlamaTokenizer's vocabulary, merges, decoder and BOS post-processor, copied (backend_tokenizer is no copy).
    backend = tokenizers.Tokenizer.from_str(llama.backend_tokenizer.to_str())
    backend.normalizer = normalizers.Sequence([normalizers.Prepend(METASPACE), normalizers.Replace(" ", METASPACE)])
    backend.pre_tokenizer = None
    json_dir = os.path.join(folder, "tokenizer_json")
    os.makedirs(json_dir)
    backend.save(os.path.join(json_dir, "tokenizer.json"))
    write_json(os.path.join(json_dir, "tokenizer_config.json"),
               {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
                "unk_token": "<unk>", "pad_token": "<pad>"})
    return llama, AutoTokenizer.from_pretrained(json_dir)


def compare_all(checks, name, texts, actual, expected):
    """One check over every string; prints how many differ and the first few."""
    wrong = [i for i in range(len(texts)) if actual[i] != expected[i]]
    print(f"  {'FAIL' if wrong else 'ok  '} {name}: {len(texts) - len(wrong)} of {len(texts)} strings equal")
    for i in wrong[:SHOWN]:
        print(f"    {texts[i][:60]!r}: {str(actual[i])[:120]} != {str(expected[i])[:120]}")
    return checks.check(f"{name} ({len(texts) - len(wrong)}/{len(texts)} equal)", not wrong,
                        f"{len(wrong)} strings differ, first {texts[wrong[0]][:60]!r}" if wrong else "")


def main():
    start = time.monotonic()
    transformers.utils.logging.set_verbosity_error()
    checks = Checks("tokenizer_vs_sentencepiece")
    rng = random.Random(11)
    texts = edge_cases() + random_strings(180, rng) + [long_string(rng)]
    with temporary_folder("tokenizer") as folder:
        model_path = os.path.join(folder, "tokenizer.model")
        sp = train_tokenizer(model_path)
        checks.equal("tokenizer: piece count, bos, eos, pad, unk",
                     (sp.get_piece_size(), sp.bos_id(), sp.eos_id(), sp.pad_id(), sp.unk_id()),
                     (VOCAB, BOS, EOS, PAD, UNK))
        request, response = os.path.join(folder, "texts.json"), os.path.join(folder, "tokens.json")
        write_json(request, {"texts": texts})
        probe("tokenize", "--tokenizer", model_path, "--input", request, "--output", response)
        can = read_json(response)
        llama, llama_json = transformers_tokenizers(folder, model_path)
        checks.equal("AutoTokenizer on tokenizer.model gives transformers' LlamaTokenizer", type(llama).__name__,
                     "LlamaTokenizer")

        expected = [[BOS] + sp.encode(text) for text in texts]
        byte_pieces = sum(any(sp.is_byte(i) for i in ids) for ids in expected)
        leading = [text[:1] in (" ", METASPACE) for text in texts]
        print(f"{len(texts)} strings ({sum(leading)} begin with a space or ▁, {byte_pieces} use byte fallback, "
              f"the longest {max(map(len, texts))} characters, {sum(map(len, expected))} ids in all)")
        checks.check("the strings exercise byte fallback and leading spaces", byte_pieces >= 50 and sum(leading) >= 20,
                     f"{byte_pieces} with byte pieces, {sum(leading)} with a leading space")

        compare_all(checks, "CAN ids == [bos] + sp.encode(text)", texts, can["ids"], expected)

        def metaspace_rule(text, ids):
            """LlamaTokenizer's ids: sentencepiece's, but a leading space or ▁ is the only prefix."""
            if text[:1] not in (" ", METASPACE):
                return ids
            rest = text[1:]
            return [BOS] + (sp.encode(rest) if rest else [sp.piece_to_id(METASPACE)])

        llama_ids = [llama(text, split_special_tokens=True)["input_ids"] for text in texts]
        compare_all(checks, "transformers LlamaTokenizer ids == sentencepiece's, leading space aside", texts,
                    llama_ids, [metaspace_rule(text, ids) for text, ids in zip(texts, expected)])
        differing = [i for i in range(len(texts)) if llama_ids[i] != expected[i]]
        print(f"    LlamaTokenizer differs from sentencepiece on {len(differing)} strings, all with a leading space"
              f" or ▁{', e.g.' if differing else ''}")
        for i in differing[:2]:
            print(f"      {texts[i]!r}: LlamaTokenizer {sp.id_to_piece(llama_ids[i])}, "
                  f"sentencepiece {sp.id_to_piece(expected[i])}")
        compare_all(checks, "transformers with Llama's tokenizer.json pipeline ids == sentencepiece's", texts,
                    [llama_json(text, split_special_tokens=True)["input_ids"] for text in texts], expected)

        compare_all(checks, "CAN decode == sp.decode of the same ids", texts, can["decoded"],
                    [sp.decode(ids) for ids in can["ids"]])
        compare_all(checks, "CAN decode == transformers decode(skip_special_tokens=True) of the same ids", texts,
                    can["decoded"], [llama.decode(ids, skip_special_tokens=True) for ids in can["ids"]])
        unchanged = [text.replace(METASPACE, " ") for text in texts]
        compare_all(checks, "CAN round trip == text (▁ decodes as a space)", texts, can["decoded"], unchanged)
        print(f"    {sum(d == t for d, t in zip(can['decoded'], texts))} of {len(texts)} strings round-trip "
              "exactly; the others contain ▁")
        compare_all(checks, "transformers LlamaTokenizer round trip == text less one leading space", texts,
                    [llama.decode(ids, skip_special_tokens=True) for ids in llama_ids],
                    [text[1:] if text[:1] == " " else text for text in unchanged])
    status = checks.report()
    print(f"({time.monotonic() - start:.1f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
