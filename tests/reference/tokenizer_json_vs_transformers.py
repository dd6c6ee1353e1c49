#!/usr/bin/env python3
"""Reference test: CAN's byte-level BPE tokenizer (tokenizer.json) against transformers and `tokenizers`.

Three tokenizer.json files are trained here by the `tokenizers` library on a
generated corpus (English, contractions, code, CJK, emoji, other scripts, digits,
whitespace runs; vocabulary 2000) and saved by transformers
(PreTrainedTokenizerFast(tokenizer_object=...).save_pretrained), so that
tokenizer.json and tokenizer_config.json are the files transformers writes; the
oracle is AutoTokenizer on the saved folder (transformers 5's TokenizersBackend):
  llama3  as Llama 3's: BPE with ignore_merges, no normalizer, pre-tokenizer
          Split(Llama 3's pattern, Isolated) then ByteLevel(use_regex=false),
          post-processor ByteLevel + TemplateProcessing "<|begin_of_text|> $A",
          Llama 3's special tokens added after the vocabulary; bos
          <|begin_of_text|>, eos <|eot_id|>. The vocabulary also holds the corpus's
          60 most frequent words it lacked, with no merges that reach them (as in
          files converted from tiktoken), so that ignore_merges decides ids. CAN is
          given the tokenizer.json file.
  qwen2   as Qwen 2.5's: normalizer NFC, Split(Qwen 2's pattern) then ByteLevel,
          BPE without ignore_merges, post-processor ByteLevel alone (no BOS);
          special <|endoftext|>, <|im_start|>, <|im_end|> and non-special added
          tokens (<tool_call>, </tool_call>, <|fim_prefix|>, ..., one of characters
          outside the byte alphabet); tokenizer_config as Qwen 2.5's (bos null, eos
          <|im_end|>, pad <|endoftext|>, unk null, errors, split_special_tokens
          false). transformers 5's Qwen2Tokenizer (tokenizer_class set in a copy of
          the folder) is a second oracle when it keeps the file's pipeline (it does
          in transformers 5; otherwise this part reports SKIPPED with the fields
          that differ). CAN is given the folder.
  gpt2    as GPT-2's: ByteLevel(use_regex=true) alone (its own regular expression),
          no BOS; special <|endoftext|>; non-special added tokens of 2 to 8 spaces
          and tab runs (as CodeGen adds them: overlapping, longest wins, decoded as
          their UTF-8); the merges rewritten in the legacy "left right" string form
          of tokenizers before 0.20. CAN is given the folder.
Strings: a fixed list of edge cases (empty; leading, trailing, double spaces;
whitespace runs of many lengths; tabs, \r\n, newline runs; NEL, NBSP, U+3000,
U+2028, \x1c and every other White_Space and near-space character between
letters; contractions in both cases and 'ſ; digit runs of 1 to 10 ASCII and other
digits; code; emoji with ZWJ sequences, skin tones, flags, keycaps; CJK, Arabic,
Hebrew, Devanagari, Thai; combining marks, NFC singletons and Hangul jamo; every
tokenizer's special and added tokens' texts inside text, adjacent to words,
repeated, partly written; a 10,000-character string) and seeded random mixtures,
over 1,800 per tokenizer, each through `can_reference_probe tokenize` (encode with
the BOS of the post-processor, then decode). Checked for each tokenizer:
  (a) CAN's ids == transformers' tok(text, add_special_tokens=True)["input_ids"]
      (and transformers' == the `tokenizers` Tokenizer's own encode);
  (b) CAN's decoded text == tok.decode(CAN's ids, skip_special_tokens=True,
      clean_up_tokenization_spaces=False);
  (c) the round trip: CAN's decoded text == the text (NFC-normalized for qwen2),
      for every string without a special token's text;
  and that the strings reach ignore_merges (llama3), NFC (qwen2) and the added
  tokens. Two groups of strings are compared apart under (a) and (b), as the
  libraries' Unicode tables differ; their ids under (a) are printed, not checked
  (a known difference, docs/design.md §10), their decoding is checked: "characters of Unicode > 14.0" (CJK extension
  H names the corpus holds often enough to be merged, Kawi, Nag Mundari, CJK
  extension I, Garay, Kirat Rai: letters and digits to the Oniguruma of
  `tokenizers`, unassigned to PCRE2 10.42, whose tables are Unicode 14.0 as
  Python 3.11's are), and under NFC "NFC tables" (strings whose NFC differs
  between `tokenizers`, whose tables are Unicode 9.0, and Python: a Unicode 13
  composition, combining classes of Unicode 10 to 14 marks).
  (d) decoding ids that split multi-byte characters (é without one of its bytes, a
      truncated emoji and €, a surrogate's and an overlong encoding, 0xFF, a code
      point above U+10FFFF, and halves that join up again): the gpt2 tokenizer with
      non-special added tokens whose texts are those bytes' characters, so that
      the text "Ã" encodes as the byte token 0xC3 (the probe decodes only what it
      encodes); CAN's ids == transformers', CAN's decoded text == transformers'
      decode == Python's bytes.decode("utf-8", "replace") (U+FFFD for each maximal
      ill-formed subpart).
  (e) refusals: tokenizer.json files that `tokenizers` loads but that hold what CAN
      does not implement make `can_reference_probe tokenize` exit 1 with a message
      naming the field or file: model type WordPiece, model type Unigram, a
      Metaspace pre-tokenizer, a byte_fallback BPE, no tokenizer_config.json beside
      tokenizer.json, an NFKC normalizer, ByteLevel add_prefix_space, an added
      token with lstrip, a Split with behavior Removed, a token after $A in the
      template, add_bos_token contradicting the post-processor, a normalized added
      token under NFC.

TOLERANCES: none; ids and texts are compared exactly.
Exit 0: all pass; 1: a failure (each named); 77: a library missing (outside CI).
The build folder comes from CAN_BINARY_DIR (CTest sets it), default build/.
"""
import json
import os
import random
import shutil
import sys
import time
import unicodedata

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "support"))
from can_reference import (CheckFailure, Checks, probe, program, read_json, require, run,  # noqa: E402
                           temporary_folder, write_json)

transformers, tokenizers = require("transformers", "tokenizers")
from tokenizers import (AddedToken, Regex, decoders, models, normalizers, pre_tokenizers,  # noqa: E402
                        processors, trainers)
from transformers import AutoTokenizer, PreTrainedTokenizerFast  # noqa: E402

VOCAB = 2000
SHOWN = 5  # mismatching strings printed per check
RANDOM_STRINGS = 1100

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")

LLAMA3_SPECIAL = (["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                   "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>",
                   "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
                  + [f"<|reserved_special_token_{i}|>" for i in range(3, 13)])
QWEN2_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN2_ADDED = ["<|object_ref_start|>", "<|box_start|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
               "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
               "<｜tool▁sep｜>"]  # the last one's characters are outside the byte alphabet: decoded as its UTF-8
GPT2_SPECIAL = ["<|endoftext|>"]
GPT2_ADDED = [" " * n for n in range(2, 9)] + ["\t\t", "\t\t\t"]
ALL_TOKEN_TEXTS = sorted(set(LLAMA3_SPECIAL + QWEN2_SPECIAL + QWEN2_ADDED + GPT2_SPECIAL))

# ------------------------------------------------------------------------ text pools

WORDS = ("the of and to in is that for it with as was on be at by this had not are but from or have an they which "
         "one you were her all she there would their we him been has when who will more no if out so said what up "
         "its about into than them can only other new some could time these two may then do first any my now such "
         "like our over man me even most made after also did many before must through back years where much your "
         "way well down should because each just those people how too little state good very make world still own "
         "see men work long get here between both life being under never day same another know while last might "
         "tokenizer model training gradient batch learning reward policy café naïve façade résumé über Straße "
         "Hello World The This THE OpenAI Llama Qwen GPT").split()
CONTRACTIONS = ["don't", "I'm", "they'll", "IT'S", "we've", "you'd", "she's", "WE'RE", "can't", "I'LL", "You'VE",
                "he'D", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'VE", "'M", "'LL", "'D",
                "o'clock", "rock'n'roll", "'ſ", "it'ſ"]
CODE = [
    "def f(x):\n    return x * 2\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}\n",
    "#include <vector>\n#include \"can/tokenizer.h\"\n",
    "if x == None: raise ValueError(f\"bad {x!r}\")",
    "std::vector<int64_t> ids = tokenizer.encode(text, /*add_bos=*/true);",
    "const auto [a, b] = pair; // structured binding",
    "    x = {\"key\": [1, 2, 3], 'other': None}\n",
    "SELECT id, name FROM users WHERE age >= 18;",
    "$ ls -la /tmp && echo $HOME | grep -v '^#'",
    "<div class=\"x\">&nbsp;</div>",
    "lambda x: x**2 + 3.14e-10",
    "a->b; c::d; e => f; g != h; i <= j; k >>= 2;",
    "\t\t\treturn nullptr;\n\t\t}\n\t}\n",
    "fn main() { println!(\"{}\", 42_u64); }",
    "    # comment with trailing spaces   \n",
    "x=1;y=2;z=x+y",
]
CJK = ["日本語のテキスト", "中文字符", "我们的模型", "函数返回值", "東京都", "한국어 문장입니다", "こんにちは世界", "人工智能",
       "機械学習", "テスト", "漢字", "中華人民共和國", "𠀀𠀁𪚥"]  # the last: CJK extension B, astral
SCRIPTS = ["مرحبا بالعالم", "العربية", "שלום עולם", "עברית", "नमस्ते दुनिया", "हिन्दी", "สวัสดีครับ", "русский текст",
           "ελληνικά", "Tiếng Việt", "ქართული", "Ünïcödé", "ǅǆǈ", "ﬁ ligature", "ｆｕｌｌｗｉｄｔｈ"]
EMOJI = ["🙂", "🚀", "👍🏽", "👍🏿", "👨‍👩‍👧‍👦", "👩🏽‍💻", "🏳️‍🌈", "🇺🇸", "🇯🇵", "❤️", "1️⃣", "#️⃣", "🤷‍♀️", "😀😃😄",
         "✨", "🧑‍🤝‍🧑"]
COMBINING = ["e\u0301", "A\u030a", "\u212b", "\u2126", "o\u0308\u0304", "\u0344", "e\u0301\u0301", "a\u0323\u0302",
             "a\u0302\u0323", "\u1100\u1161\u11a8", "\u1112\u1161\u11ab", "Tie\u0302\u0301ng Vie\u0323\u0302t",
             "\u0915\u093c", "n\u0303", "\u00c5", "q\u0307\u0323"]
DIGITS = ["0", "7", "42", "123", "2024", "31415", "271828", "1234567", "12345678", "123456789", "1234567890",
          "3.14159", "-17", "1,000,000", "+1e-10", "2024-01-01", "12:34:56", "v1.2.3", "007", "０１２", "١٢٣",
          "१२३", "²³", "½", "Ⅻ", "๓๔"]
PUNCTUATION = list(".,;:!?'\"()[]{}<>-_/\\|@#$%^&*+=~`") + ["...", "--", "—", "–", "…", "«»", "“”", "‘’", "¿¡"]
WHITESPACE = [" ", "  ", "   ", "    ", "\t", "\n", "\n\n", "\n\n\n", " \n", "\r\n", "\r\n\r\n", "\t\n", " \t ",
              "\u00a0", "\u3000", "\u2028", "\x85", "\x0b", "\x0c", "\r", "        ", " " * 16]
# Characters Unicode assigned in 15.0 (CJK extension H, Kawi, Nag Mundari), 15.1 (CJK extension I) and 16.0
# (Garay, Kirat Rai digits): letters and digits to Oniguruma, unassigned to PCRE2 10.42 (Unicode 14).
NEWER_UNICODE = ["\U00031350", "\U00031351\U00031352", "\U00011f04\U00011f05", "\U0001e4d0\U0001e4d1",
                 "\U0002ebf0", "\U00010d4a\U00010d4b", "\U00016d70\U00016d71"]
# Chinese names written with characters of CJK extension H (Unicode 15.0), frequent enough in the corpus that
# BPE merges them with the common character beside them.
NEWER_NAMES = ["王\U00031350", "李\U00031351华", "\U00031352明"]
# Differences between the `tokenizers` library's NFC (older Unicode tables) and Python's: a composition of
# Unicode 13 (Dives Akuru), combining classes of marks from Unicode 11 and 14.
NFC_NEWER = ["\U00011935\U00011930", "a\u08d3\u0300", "a\u1ac1\u0323"]
# White_Space characters and the near-spaces around them (control separators, zero-width, Mongolian vowel separator).
SPACE_LIKE = ["\t", "\n", "\x0b", "\x0c", "\r", " ", "\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\xa0", "\u1680",
              "\u180e", "\u2000", "\u2005", "\u200a", "\u200b", "\u2028", "\u2029", "\u202f", "\u205f", "\u2060",
              "\u3000", "\ufeff"]


def corpus_lines(rng):
    """Training text: every pool, with names in newer-Unicode characters."""
    lines = []
    for _ in range(6000):
        parts = []
        for _ in range(rng.randint(3, 14)):
            kind = rng.random()
            if kind < 0.50:
                parts.append(rng.choice(WORDS))
            elif kind < 0.56:
                parts.append(rng.choice(CONTRACTIONS))
            elif kind < 0.64:
                parts.append(rng.choice(CODE))
            elif kind < 0.70:
                parts.append(rng.choice(CJK))
            elif kind < 0.72:
                parts.append(rng.choice(NEWER_NAMES))
            elif kind < 0.77:
                parts.append(rng.choice(SCRIPTS))
            elif kind < 0.81:
                parts.append(rng.choice(EMOJI))
            elif kind < 0.90:
                parts.append(str(rng.randint(0, 10 ** rng.randint(1, 8))))
            else:
                parts.append(rng.choice(PUNCTUATION))
            parts.append(rng.choice([" "] * 10 + ["", "  ", "\t", "\n", ", ", ". ", "\n\n", "    "]))
        lines.append("".join(parts))
    return lines


def edge_cases(own_tokens):
    """The fixed strings; `own_tokens` are the tokenizer's added tokens' texts."""
    cases = [
        "", " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\t\tindented", "\r\n\r\n", "\n \n", " \r\n",
        "hello", " hello", "hello ", "  hello", "hello  world", "hello   world  ", "Hello, World!", "HELLO",
        "line one\nline two\n", "\n\nleading newlines", "trailing newline\n", "tab\tseparated\tvalues",
        "mixed \t \n whitespace", "word\u3000ideographic space", "x\x85y", "x\x85\x85 y", " \x85", "\x85",
        "x \x85", "a\u00a0b", "a \u00a0 b", "\u00a0\u00a0", "a\u2028b", "\u2028", "a\x1cb", "\x1c\x1d\x1e\x1f",
        "end\x1c ", "words   \n   more", "a\n\n\n\nb", "\n\n\n\n\n\n\n\n", "x\r\r\ry", "spaces before\n",
    ]
    cases += [" " * n for n in (5, 6, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64)]
    cases += [f"a{' ' * n}b" for n in range(1, 13)] + [f"a{' ' * n}" for n in range(1, 9)]
    cases += [f"{' ' * n}a" for n in range(1, 9)] + [f"a{chr(9) * n}b" for n in range(1, 6)]
    cases += [f"x{' ' * n}\ny" for n in range(0, 5)] + [f"x\n{' ' * n}y" for n in range(0, 6)]
    for c in SPACE_LIKE:
        cases += [f"x{c}y", f"x{c}{c}y", f"x {c}y", f"x{c} y", f"{c}", f"x{c}", f"{c}1", f"!{c}!"]
    cases += ["'s", "'S", "'t", "'LL", "'ll", "'Ll", "'re", "'RE", "'ve", "'VE", "'m", "'M", "'d", "'D", "'ſ",
              "it'ſ", "IT'S", "don't", "DON'T", "I'm", "I'M", "they'll", "THEY'LL", "we've", "you'd", "x's's",
              "'''", "' s", "'sx", "'llama", "O'Neil", "rock'n'roll", "'K", "'ﬆ"]
    cases += ["1", "12", "123", "1234", "12345", "123456", "1234567", "12345678", "123456789", "1234567890",
              "a1234567b", " 1234", "1 234", "3.14159", "-17", "1,000,000", "+1e-10", "2024-01-01 12:34:56",
              "x1y2z3", "007", "０１２３４", "١٢٣٤", "१२३४", "²³⁴", "½¾", "Ⅻ", "๑๒๓"]
    cases += CODE + CJK + SCRIPTS + EMOJI + COMBINING + DIGITS + PUNCTUATION + CONTRACTIONS
    cases += ["".join(PUNCTUATION), "\"quoted\" and 'single'", "(parentheses) [brackets] {braces}", "a/b\\c|d",
              "#hashtag @mention $5 100%", "?!", "e.g. i.e. etc.", "!!!\n", "...\n\n", " ...", " !\r\n",
              "café", "Straße", "👨‍👩‍👧 family", "🇺🇸🇯🇵", "👍🏽👍🏽", "Tiếng Việt có dấu", "e\u0301te\u0301",
              "a\x00b", "\x7f delete", "bell\x07", "\ufffd", "\U0010fffd", "\ue000 private"]
    for token in own_tokens + [t for t in ALL_TOKEN_TEXTS if t not in own_tokens][:4]:
        cases += [token, token + token, f"hello{token}world", f"hello {token} world", f"{token}\n", f" {token}",
                  token[:-1], token[:-2] + " " + token[-2:], token[1:], f"x{token[:-1]}{token}",
                  f"{token}{token[:len(token) // 2]}"]
    cases += [f"{own_tokens[0]}user{own_tokens[-1]}", "<|", "|>", "<||>", "<|im_start", "<|eot_id", "<|endoftext",
              "<|begin_of_text|", "<|reserved_special_token_1", "<|reserved_special_token_10|>x"]
    cases += NEWER_UNICODE + NFC_NEWER + NEWER_NAMES + [f"我叫{name}。" for name in NEWER_NAMES]
    cases += [" " + name for name in NEWER_NAMES]
    cases += ["中\U00031350文", "\U00031350中", "中文\U00031351\U00031352", " \U00031350\U00031351", "a\U00011f04b",
              "1\U00016d701", "word\U0001e4d0\U0001e4d1 word", "字\U0002ebf0字", "x \U00010d4a\U00010d4b"]
    return cases


def random_piece(rng, token_texts):
    kind = rng.random()
    if kind < 0.36:
        return rng.choice(WORDS)
    if kind < 0.42:
        return rng.choice(CONTRACTIONS)
    if kind < 0.48:
        return rng.choice(CODE)
    if kind < 0.55:
        return rng.choice(CJK)
    if kind < 0.60:
        return rng.choice(SCRIPTS)
    if kind < 0.65:
        return rng.choice(EMOJI)
    if kind < 0.68:
        return rng.choice(COMBINING)
    if kind < 0.74:
        return "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 10)))
    if kind < 0.76:
        return rng.choice(DIGITS)
    if kind < 0.82:
        return rng.choice(PUNCTUATION)
    if kind < 0.93:
        return rng.choice(WHITESPACE) if rng.random() < 0.8 else " " * rng.randint(1, 40)
    if kind < 0.97:
        return rng.choice(token_texts)
    token = rng.choice(token_texts)
    return token[:rng.randint(1, len(token) - 1)]  # partly written


def random_strings(count, rng, token_texts):
    """Seeded mixtures of every pool, the added tokens' texts among them, anything at either end."""
    strings = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(1, 14)):
            parts.append(random_piece(rng, token_texts))
            if rng.random() < 0.5:
                parts.append(rng.choice([" ", " ", " ", "", "\n", "  "]))
        strings.append("".join(parts))
    return strings


def long_string(rng, token_texts):
    parts = []
    while sum(map(len, parts)) < 10_000:
        parts.append(random_piece(rng, token_texts) + rng.choice([" ", ""]))
    return "".join(parts)[:10_000]


# --------------------------------------------------------------------------- fixtures

def byte_alphabet():
    """GPT-2's byte -> character map (bytes_to_unicode)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    characters, extra = {}, 0
    for b in range(256):
        if b in printable:
            characters[b] = chr(b)
        else:
            characters[b] = chr(256 + extra)
            extra += 1
    return characters


BYTE_CHARACTER = byte_alphabet()


def byte_characters(data):
    return "".join(BYTE_CHARACTER[b] for b in data)


def train(model, normalizer, pre_tokenizer, lines):
    tok = tokenizers.Tokenizer(model)
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(lines, trainer)
    return tok


def save(tok, folder, **special):
    """Saved by transformers: tokenizer.json and tokenizer_config.json as it writes them."""
    PreTrainedTokenizerFast(tokenizer_object=tok, **special).save_pretrained(folder)
    return folder


def edit_config(folder, **fields):
    path = os.path.join(folder, "tokenizer_config.json")
    config = read_json(path)
    config.update(fields)
    write_json(path, config)


def unreachable_words(tok, lines, count=60):
    """The vocabulary plus the most frequent words of the corpus that it lacks, and no merges for them: words
    that ignore_merges takes whole and merging would not reach, as tokenizer.json files converted from tiktoken
    (Llama 3's) hold."""
    document = json.loads(tok.to_str())
    vocab = document["model"]["vocab"]
    frequency = {}
    for line in lines[:2000]:
        for word, _ in tok.pre_tokenizer.pre_tokenize_str(line):
            if word not in vocab and 2 <= len(word) <= 12:
                frequency[word] = frequency.get(word, 0) + 1
    for word in sorted(frequency, key=lambda w: (-frequency[w], w))[:count]:
        vocab[word] = len(vocab)
    return tokenizers.Tokenizer.from_str(json.dumps(document))


def llama3_fixture(folder, lines):
    tok = train(models.BPE(ignore_merges=True), None, pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]), lines)
    tok = unreachable_words(tok, lines)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in LLAMA3_SPECIAL])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    save(tok, folder, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", clean_up_tokenization_spaces=True)
    edit_config(folder, tokenizer_class="PreTrainedTokenizerFast", model_input_names=["input_ids", "attention_mask"])
    return dict(name="llama3", folder=folder, path=os.path.join(folder, "tokenizer.json"), nfc=False,
                special=LLAMA3_SPECIAL, added=[], bos=bos)


def qwen2_fixture(folder, lines):
    tok = train(models.BPE(), normalizers.NFC(), pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]), lines)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN2_SPECIAL])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in QWEN2_ADDED])
    save(tok, folder, bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    edit_config(folder, errors="replace", split_special_tokens=False, unk_token=None, add_prefix_space=False,
                clean_up_tokenization_spaces=False)
    return dict(name="qwen2", folder=folder, path=folder, nfc=True, special=QWEN2_SPECIAL, added=QWEN2_ADDED,
                bos=None)


def gpt2_fixture(folder, lines):
    tok = train(models.BPE(), None, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True), lines)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in GPT2_SPECIAL])
    tok.add_tokens([AddedToken(t, special=False, normalized=True) for t in GPT2_ADDED])
    save(tok, folder, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    legacy_merges(os.path.join(folder, "tokenizer.json"))
    return dict(name="gpt2", folder=folder, path=folder, nfc=False, special=GPT2_SPECIAL, added=GPT2_ADDED,
                bos=None)


def legacy_merges(path):
    """The merges as "left right" strings (tokenizers < 0.20), which `tokenizers` 0.20+ still reads."""
    document = read_json(path)
    merges = document["model"]["merges"]
    if merges and not isinstance(merges[0], str):
        assert all(" " not in left and " " not in right for left, right in merges)
        document["model"]["merges"] = [f"{left} {right}" for left, right in merges]
    with open(path, "w", encoding="utf-8") as out:
        json.dump(document, out, ensure_ascii=False, indent=2)


# Byte sequences that are not UTF-8 (or halves of characters): each becomes a non-special added token of
# the gpt2 tokenizer whose text is its bytes' characters, so that text encodes as those byte tokens.
SPLIT_BYTES = {
    "é less its second byte": b"\xc3",
    "é less its first byte": b"\xa9",
    "🙂 less its last byte": b"\xf0\x9f\x99",
    "🙂's last byte": b"\x82",
    "€ less its last byte": b"\xe2\x82",
    "a surrogate's encoding": b"\xed\xa0\x80",
    "an overlong '/'": b"\xc0\xaf",
    "a byte no UTF-8 holds": b"\xff",
    "a code point above U+10FFFF": b"\xf4\x90\x80\x80",
}


def split_bytes_cases():
    """(pieces) where a piece is text (str) or one of SPLIT_BYTES (bytes)."""
    b = SPLIT_BYTES
    return [
        [b["é less its second byte"]], [b["é less its first byte"]], ["caf", b["é less its second byte"]],
        ["caf", b["é less its second byte"], "!"], ["caf", b["é less its second byte"], b["é less its first byte"]],
        [b["é less its first byte"], b["é less its second byte"]], [b["🙂 less its last byte"]],
        ["smile ", b["🙂 less its last byte"], b["🙂's last byte"], " done"], [b["🙂 less its last byte"], "x"],
        [b["€ less its last byte"], "€"], ["5", b["€ less its last byte"]], [b["a surrogate's encoding"]],
        ["x", b["a surrogate's encoding"], "y"], [b["an overlong '/'"]], [b["a byte no UTF-8 holds"], "ü"],
        [b["a code point above U+10FFFF"]], [b["🙂 less its last byte"], b["€ less its last byte"]],
        [b["é less its second byte"], " ", b["é less its first byte"]],
        ["<|endoftext|>", b["é less its second byte"], "<|endoftext|>"],
        [b["é less its second byte"]] * 3, [b["🙂's last byte"]] * 2 + ["🙂"],
    ]


# -------------------------------------------------------------------------- comparing

def compare_all(checks, name, texts, actual, expected, known=False):
    """One check over every string; prints how many differ and the first few. `known`: a difference of Unicode
    tables, documented in docs/design.md §10, printed and not checked."""
    wrong = [i for i in range(len(texts)) if actual[i] != expected[i]]
    status = ("info" if known else "FAIL") if wrong else "ok  "
    print(f"  {status} {name}: {len(texts) - len(wrong)} of {len(texts)} strings equal")
    if known:
        for i in wrong[:SHOWN]:
            print(f"    {texts[i][:80]!r}\n      CAN      {str(actual[i])[:200]}\n      expected {str(expected[i])[:200]}")
        return not wrong
    for i in wrong[:SHOWN]:
        print(f"    {texts[i][:80]!r}\n      CAN      {str(actual[i])[:200]}\n      expected {str(expected[i])[:200]}")
    return checks.check(f"{name} ({len(texts) - len(wrong)}/{len(texts)} equal)", not wrong,
                        f"{len(wrong)} strings differ, first {texts[wrong[0]][:60]!r}" if wrong else "")


def subset(indices, *lists):
    return [[values[i] for i in indices] for values in lists]


def partition(texts, nfc):
    """The strings' indices: ordinary ones, those holding characters unassigned in Python's Unicode tables (14.0
    on Python 3.11, as in PCRE2 10.42), and (under NFC) those whose NFC the `tokenizers` library computes
    otherwise than Python."""
    newer = [i for i, text in enumerate(texts) if any(unicodedata.category(c) == "Cn" for c in text)]
    nfc_tables = [i for i, text in enumerate(texts) if nfc and i not in set(newer)
                  and normalizers.NFC().normalize_str(text) != unicodedata.normalize("NFC", text)]
    apart = set(newer + nfc_tables)
    return [("", [i for i in range(len(texts)) if i not in apart]),
            (" [characters of Unicode > 14.0]", newer)] + ([(" [NFC tables]", nfc_tables)] if nfc else [])


def run_can(folder, path, texts, tag):
    request, response = os.path.join(folder, f"{tag}_texts.json"), os.path.join(folder, f"{tag}_tokens.json")
    write_json(request, {"texts": texts})
    probe("tokenize", "--tokenizer", path, "--input", request, "--output", response)
    return read_json(response)


def check_tokenizer(checks, folder, fixture, texts):
    name = fixture["name"]
    print(f"--- {name}: {fixture['path']}")
    hf = AutoTokenizer.from_pretrained(fixture["folder"])
    print(f"  transformers loads it as {type(hf).__name__}")
    library = tokenizers.Tokenizer.from_file(os.path.join(fixture["folder"], "tokenizer.json"))
    can = run_can(folder, fixture["path"], texts, name)
    expected = [hf(text, add_special_tokens=True)["input_ids"] for text in texts]
    compare_all(checks, f"{name}: transformers ids == tokenizers' Tokenizer.encode ids", texts, expected,
                [library.encode(text, add_special_tokens=True).ids for text in texts])
    if fixture["bos"] is not None:
        checks.check(f"{name}: transformers adds the BOS", all(ids[:1] == [fixture["bos"]] for ids in expected))

    groups = partition(texts, fixture["nfc"])
    print(f"  {len(texts)} strings ({', '.join(f'{len(g)}{label}' for label, g in groups[1:])}), the longest "
          f"{max(map(len, texts))} characters, {sum(map(len, expected))} ids in all")
    decoded = [hf.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False) for ids in can["ids"]]
    for label, indices in groups:
        t, a, e = subset(indices, texts, can["ids"], expected)
        compare_all(checks, f"{name}: (a) CAN ids == transformers ids{label}", t, a, e, known=bool(label))
        t, a, e = subset(indices, texts, can["decoded"], decoded)
        compare_all(checks, f"{name}: (b) CAN decode == transformers decode of CAN's ids{label}", t, a, e)
    plain = [i for i, text in enumerate(texts) if not any(token in text for token in fixture["special"])]
    t, a = subset(plain, texts, can["decoded"])
    unchanged = [unicodedata.normalize("NFC", text) if fixture["nfc"] else text for text in t]
    compare_all(checks, f"{name}: (c) CAN round trip == text{' (NFC)' if fixture['nfc'] else ''}, "
                        "special tokens' texts aside", t, a, unchanged)
    return library, can, expected


def check_exercised(checks, fixture, library, texts, expected):
    """That the strings reach what each pipeline has of its own."""
    name = fixture["name"]
    if name == "llama3":
        document = json.loads(library.to_str())
        document["model"]["ignore_merges"] = False
        merging = tokenizers.Tokenizer.from_str(json.dumps(document))
        differ = sum(merging.encode(text).ids != ids for text, ids in zip(texts, expected))
        print(f"  {differ} strings encode otherwise without ignore_merges")
        checks.check("llama3: the strings exercise ignore_merges", differ >= 5, f"only {differ} strings")
    if fixture["nfc"]:
        changed = sum(unicodedata.normalize("NFC", text) != text for text in texts)
        print(f"  {changed} strings change under NFC")
        checks.check(f"{name}: the strings exercise NFC", changed >= 20, f"only {changed} strings")
    tokens = fixture["special"] + fixture["added"]
    with_tokens = sum(any(token in text for token in tokens) for text in texts)
    print(f"  {with_tokens} strings hold the texts of its added tokens")
    checks.check(f"{name}: the strings hold added tokens' texts", with_tokens >= 100, f"only {with_tokens} strings")


def check_qwen2_tokenizer(checks, folder, fixture, texts, can):
    """transformers' Qwen2Tokenizer (tokenizer_class in a copy's config) as a second oracle if it keeps the pipeline."""
    print("--- qwen2 through transformers' Qwen2Tokenizer")
    if not hasattr(transformers, "Qwen2Tokenizer"):
        print("  SKIPPED: this transformers has no Qwen2Tokenizer")
        return
    qwen_folder = os.path.join(folder, "qwen2_tokenizer_class")
    shutil.copytree(fixture["folder"], qwen_folder)
    edit_config(qwen_folder, tokenizer_class="Qwen2Tokenizer")
    hf = AutoTokenizer.from_pretrained(qwen_folder)
    if type(hf).__name__ != "Qwen2Tokenizer":
        print(f"  SKIPPED: AutoTokenizer gave {type(hf).__name__}, not Qwen2Tokenizer")
        return
    saved = read_json(os.path.join(qwen_folder, "tokenizer.json"))
    built = json.loads(hf.backend_tokenizer.to_str())
    differ = [key for key in ("normalizer", "pre_tokenizer", "post_processor", "decoder", "added_tokens")
              if saved.get(key) != built.get(key)]
    for key in ("type", "vocab", "merges", "ignore_merges", "byte_fallback"):
        if saved["model"].get(key) != built["model"].get(key):
            differ.append(f"model.{key}")
    if differ:
        print(f"  SKIPPED: Qwen2Tokenizer rebuilds a different pipeline ({', '.join(differ)})")
        return
    print("  Qwen2Tokenizer keeps the file's pipeline")
    expected = [hf(text)["input_ids"] for text in texts]
    decoded = [hf.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False) for ids in can["ids"]]
    for label, indices in partition(texts, fixture["nfc"]):
        t, a, e = subset(indices, texts, can["ids"], expected)
        compare_all(checks, f"qwen2: (a) CAN ids == Qwen2Tokenizer ids{label}", t, a, e, known=bool(label))
        t, a, e = subset(indices, texts, can["decoded"], decoded)
        compare_all(checks, f"qwen2: (b) CAN decode == Qwen2Tokenizer decode of CAN's ids{label}", t, a, e)


def check_split_bytes(checks, folder, gpt2):
    """(d): decoding byte tokens that split characters, through non-special added tokens of byte characters."""
    print("--- gpt2 with byte-character added tokens: decoding split characters")
    library = tokenizers.Tokenizer.from_file(os.path.join(gpt2["folder"], "tokenizer.json"))
    contents = [byte_characters(data) for data in SPLIT_BYTES.values()]
    library.add_tokens([AddedToken(content, special=False, normalized=False) for content in contents])
    byte_folder = save(library, os.path.join(folder, "gpt2_split_bytes"), bos_token="<|endoftext|>",
                       eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    hf = AutoTokenizer.from_pretrained(byte_folder)
    vocab = library.get_vocab(with_added_tokens=False)
    cases = split_bytes_cases()
    texts = ["".join(byte_characters(p) if isinstance(p, bytes) else p for p in case) for case in cases]
    can = run_can(folder, byte_folder, texts, "split_bytes")
    single = [c for c in contents if len(c) == 1]
    checks.equal("(d) each one-byte added token is that byte token's id",
                 [library.token_to_id(c) for c in single], [vocab[c] for c in single])
    compare_all(checks, "(d) CAN ids == transformers ids", texts, can["ids"],
                [hf(text)["input_ids"] for text in texts])
    compare_all(checks, "(d) CAN decode == transformers decode", texts, can["decoded"],
                [hf.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False) for ids in can["ids"]])
    python = [b"".join(p if isinstance(p, bytes) else p.encode() for p in case if p != "<|endoftext|>")
              .decode("utf-8", "replace") for case in cases]
    compare_all(checks, "(d) CAN decode == Python's bytes.decode('utf-8', 'replace')", texts, can["decoded"], python)
    replaced = sum("\ufffd" in text for text in can["decoded"])
    checks.check("(d) the cases decode to U+FFFD", replaced >= len(cases) - 2, f"only {replaced} of {len(cases)}")


# --------------------------------------------------------------------------- refusals

def refusal_cases(folder, llama3, qwen2):
    """(name, tokenizer path, words the message must hold): files `tokenizers` loads, CAN refuses."""
    source = read_json(llama3["path"])
    cases = []

    def variant(tag, edit, config=True, base=source, config_from=llama3):
        path = os.path.join(folder, "refused", tag)
        os.makedirs(path)
        document = json.loads(json.dumps(base))
        edit(document)
        write_json(os.path.join(path, "tokenizer.json"), document)
        tokenizers.Tokenizer.from_file(os.path.join(path, "tokenizer.json"))  # a file the library reads
        if config:
            shutil.copy(os.path.join(config_from["folder"], "tokenizer_config.json"), path)
        return path

    wordpiece = tokenizers.Tokenizer(models.WordPiece({"[UNK]": 0, "hello": 1, "##s": 2}, unk_token="[UNK]"))
    wordpiece.pre_tokenizer = pre_tokenizers.Whitespace()
    cases.append(("model type WordPiece", variant("wordpiece", lambda d: d.update(json.loads(wordpiece.to_str()))),
                  ["model.type", "WordPiece"]))
    unigram = tokenizers.Tokenizer(models.Unigram([("<unk>", 0.0), ("▁hello", -1.0), ("s", -2.0)], 0, False))
    unigram.pre_tokenizer = pre_tokenizers.Metaspace()
    cases.append(("model type Unigram", variant("unigram", lambda d: d.update(json.loads(unigram.to_str()))),
                  ["model.type", "Unigram"]))
    cases.append(("a Metaspace pre-tokenizer",
                  variant("metaspace", lambda d: d.update(pre_tokenizer={"type": "Metaspace", "replacement": "▁",
                                                                         "prepend_scheme": "first", "split": False})),
                  ["pre_tokenizer"]))
    cases.append(("a byte_fallback BPE", variant("byte_fallback", lambda d: d["model"].update(byte_fallback=True)),
                  ["byte_fallback"]))
    cases.append(("no tokenizer_config.json", variant("no_config", lambda d: None, config=False),
                  ["tokenizer_config.json"]))
    cases.append(("an NFKC normalizer", variant("nfkc", lambda d: d.update(normalizer={"type": "NFKC"})),
                  ["normalizer", "NFKC"]))
    byte_level = lambda d: d["pre_tokenizer"]["pretokenizers"][1]  # noqa: E731
    cases.append(("ByteLevel add_prefix_space",
                  variant("prefix_space", lambda d: byte_level(d).update(add_prefix_space=True)),
                  ["add_prefix_space"]))
    cases.append(("an added token with lstrip", variant("lstrip", lambda d: d["added_tokens"][-1].update(lstrip=True)),
                  ["lstrip"]))
    cases.append(("a Split with behavior Removed",
                  variant("removed", lambda d: d["pre_tokenizer"]["pretokenizers"][0].update(behavior="Removed")),
                  ["behavior"]))

    def eos_template(document):
        template = document["post_processor"]["processors"][1]
        template["single"].append({"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}})
    cases.append(("a token after $A in the template", variant("eos_template", eos_template), ["single"]))
    contradicting = variant("add_bos_false", lambda d: None)
    edit_config(contradicting, add_bos_token=False)
    cases.append(("add_bos_token false with a BOS template", contradicting, ["add_bos_token"]))
    cases.append(("a normalized added token under NFC",
                  variant("normalized_nfc", lambda d: d["added_tokens"][-1].update(normalized=True),
                          base=read_json(os.path.join(qwen2["folder"], "tokenizer.json")), config_from=qwen2),
                  ["normalized"]))
    return cases


def check_refusals(checks, folder, cases):
    print("--- (e) refusals")
    request = os.path.join(folder, "refusal_texts.json")
    write_json(request, {"texts": ["hello world"]})
    for name, path, words in cases:
        try:
            result = run([program("can_reference_probe"), "tokenize", "--tokenizer", path, "--input", request,
                          "--output", os.path.join(folder, "refused.json")], expect_status=1)
        except CheckFailure as failure:
            checks.check(f"(e) refused: {name}", False, str(failure))
            continue
        message = result.stderr.strip()
        missing = [word for word in words if word not in message]
        print(f"  {'ok  ' if not missing else 'FAIL'} (e) {name}: {message.splitlines()[-1][:220] if message else ''}")
        checks.check(f"(e) refused naming {', '.join(words)}: {name}", not missing,
                     f"the message lacks {missing}: {message[-400:]}")


def main():
    start = time.monotonic()
    transformers.utils.logging.set_verbosity_error()
    checks = Checks("tokenizer_json_vs_transformers")
    checks.equal("GPT-2's byte alphabet == tokenizers' ByteLevel.alphabet()", sorted(BYTE_CHARACTER.values()),
                 sorted(pre_tokenizers.ByteLevel.alphabet()))
    with temporary_folder("tokenizer_json") as folder:
        lines = corpus_lines(random.Random(5))
        fixtures = [llama3_fixture(os.path.join(folder, "llama3"), lines),
                    qwen2_fixture(os.path.join(folder, "qwen2"), lines),
                    gpt2_fixture(os.path.join(folder, "gpt2"), lines)]
        print(f"3 tokenizers trained on {len(lines)} lines ({time.monotonic() - start:.1f} s)")
        gpt2_merges = read_json(os.path.join(fixtures[2]["folder"], "tokenizer.json"))["model"]["merges"]
        checks.check("gpt2: merges in the legacy \"left right\" form",
                     bool(gpt2_merges) and all(isinstance(m, str) for m in gpt2_merges))
        for index, fixture in enumerate(fixtures):
            own = fixture["special"] + fixture["added"]
            rng = random.Random(100 + index)
            texts = edge_cases(own) + random_strings(RANDOM_STRINGS, rng, own + ALL_TOKEN_TEXTS) + \
                [long_string(rng, own)]
            library, can, expected = check_tokenizer(checks, folder, fixture, texts)
            check_exercised(checks, fixture, library, texts, expected)
            if fixture["name"] == "qwen2":
                check_qwen2_tokenizer(checks, folder, fixture, texts, can)
        check_split_bytes(checks, folder, fixtures[2])
        check_refusals(checks, folder, refusal_cases(folder, fixtures[0], fixtures[1]))
    status = checks.report()
    print(f"({time.monotonic() - start:.1f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
