#!/usr/bin/env python3
"""Reference test: CAN's safetensors reader and writer against the safetensors library (0.8).

Every tensor goes through can_reference_probe safetensors-copy, which reads a file
(or a Hugging Face directory) with CAN and writes every tensor again with CAN.
  * Every dtype CAN supports (F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL),
    written by safetensors.torch.save_file with awkward values: every bit pattern
    of F16, BF16, I16, I8 and U8 (so ±0, subnormals, ±inf and every NaN payload),
    special and random bit patterns of F32 and F64, the limits of I64 and I32;
    shapes [] and empty ones ([0, 3], [3, 0, 2], [0]), up to 4 dimensions; values
    taken from non-contiguous views (transposes, strided slices: save_file stores
    them packed, so their element order is what is checked); unicode tensor names
    and __metadata__ with "format": "pt", unicode, an empty value and JSON escapes.
    CAN's file, read by the library (load_file, safe_open): the same names, dtype
    strings and shapes, bit-identical values (compared as integers, so NaN payloads
    and -0.0 count) and the same metadata.
  * CAN's raw bytes follow the format: an 8-byte little-endian header length, a
    UTF-8 JSON object starting with '{' and padded with spaces to a multiple of 8
    (what the library's writer does, so the data are 8-byte aligned; the library
    reads unpadded files as well, and so must CAN: checked too), no duplicate keys,
    entries {dtype, shape, data_offsets} whose ranges tile the data buffer exactly
    in order, each numel × itemsize bytes. The same validator passes the library's
    own file, so it checks the format, not CAN's habits.
  * Sharded checkpoints: transformers' save_pretrained(max_shard_size="50KB") of a
    tiny Llama (≥ 3 shards and model.safetensors.index.json), float32 and
    bfloat16; CAN's copy equals model.state_dict() bit for bit, in stored dtype.
  * Refusals, each exit 1 with a message naming the file (and the tensor where
    there is one), and no output file: dtypes the library writes but CAN does not
    support (F8_E4M3, F8_E5M2, U16, U32, U64); corrupt files the library refuses
    too (truncated data, header length beyond the file or 2^64-1, a header that is
    not JSON, trailing bytes, overlapping data_offsets).
Comparisons are exact (bits, names, shapes, strings): a copy has no rounding.

Exit 0: all pass; 1: a failure (each named); 77: a library missing (outside CI).
The build folder comes from CAN_BINARY_DIR (CTest sets it), default build/.
"""
import json
import os
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "support"))
import can_reference as cr  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every model is a local folder; never reach for the Hub

torch, numpy, safetensors, safetensors_torch, transformers = cr.require(
    "torch", "numpy", "safetensors", "safetensors.torch", "transformers")

# --- TOLERANCES -----------------------------------------------------------------
# None: a copy must be exact. Values are compared bit for bit (as integers of the
# same width), names, dtype strings, shapes and metadata with ==.

DTYPE_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
               torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
               torch.bool: "BOOL"}
ITEM_SIZE = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
             "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}
# Dtypes the library writes and CAN refuses (CAN's list is DTYPE_NAMES).
UNSUPPORTED = {"F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "U16": torch.uint16,
               "U32": torch.uint32, "U64": torch.uint64}
METADATA = {"format": "pt", "ключ ✓": "значение — 名前", "empty": "",
            "escapes": 'quote " backslash \\ newline \n tab \t', "json": '{"a": [1, 2]}'}
TINY_LLAMA = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, tie_word_embeddings=False)


def from_bits(bits, dtype):
    """Floats with the given unsigned bit patterns (Python ints)."""
    width = {torch.float32: numpy.uint32, torch.float64: numpy.uint64}[dtype]
    signed = {torch.float32: numpy.int32, torch.float64: numpy.int64}[dtype]
    return torch.from_numpy(numpy.array(bits, dtype=width).view(signed)).view(dtype)


def awkward_tensors():
    generator = torch.Generator().manual_seed(0)
    def every_16_bits():  # a fresh tensor each time: save_file refuses tensors that share memory
        return torch.arange(-2**15, 2**15, dtype=torch.int32).to(torch.int16)

    int64 = torch.iinfo(torch.int64)
    int32 = torch.iinfo(torch.int32)
    return {
        # F16 / BF16: all 65536 patterns: ±0, subnormals, ±inf, every NaN payload.
        "f16.every_bit_pattern": every_16_bits().view(torch.float16).reshape(256, 256),
        "bf16.every_bit_pattern": every_16_bits().view(torch.bfloat16),
        "f32.specials": from_bits([
            0x00000000, 0x80000000,  # +0, -0
            0x7F800000, 0xFF800000,  # ±inf
            0x7FC00000, 0xFFC00000, 0x7FA00001, 0x7FFFFFFF, 0xFF800001,  # quiet, signalling, payload NaNs
            0x00000001, 0x807FFFFF, 0x00800000,  # smallest subnormal, -largest subnormal, smallest normal
            0x7F7FFFFF, 0xFF7FFFFF, 0x3F800001,  # max, lowest, 1 + eps
        ], torch.float32),
        "f32.random_bits": torch.randint(-2**31, 2**31, (4, 5, 6), dtype=torch.int64, generator=generator)
        .to(torch.int32).view(torch.float32),
        "f64.specials": from_bits([
            0x0000000000000000, 0x8000000000000000, 0x7FF0000000000000, 0xFFF0000000000000,
            0x7FF8000000000000, 0xFFF8000000000001, 0x7FF0000000000001, 0x0000000000000001,
            0x800FFFFFFFFFFFFF, 0x0010000000000000, 0x7FEFFFFFFFFFFFFF, 0xFFEFFFFFFFFFFFFF,
        ], torch.float64),
        "f64.random_bits": torch.randint(int64.min, int64.max, (3, 7), dtype=torch.int64, generator=generator)
        .view(torch.float64),
        "i64.limits": torch.tensor([int64.min, int64.min + 1, -1, 0, 1, int64.max - 1, int64.max]),
        "i64.random": torch.randint(int64.min, int64.max, (2, 9), dtype=torch.int64, generator=generator),
        "i32.limits": torch.tensor([int32.min, -1, 0, 1, int32.max], dtype=torch.int32),
        "i16.every_value": every_16_bits().reshape(2, 128, 256),
        "i8.every_value": torch.arange(-128, 128, dtype=torch.int16).to(torch.int8).reshape(16, 16),
        "u8.every_value": torch.arange(0, 256, dtype=torch.int16).to(torch.uint8).reshape(4, 8, 8),
        "bool.pattern": torch.tensor([[True, False, True], [False, False, True]]),
        # Scalars and empty tensors.
        "scalar.f32.negative_zero": torch.tensor(-0.0),
        "scalar.f64.nan": torch.tensor(float("nan"), dtype=torch.float64),
        "scalar.bf16": torch.tensor(-3.140625, dtype=torch.bfloat16),
        "scalar.i64.min": torch.tensor(int64.min),
        "scalar.bool": torch.tensor(True),
        "empty.f32.0x3": torch.zeros(0, 3),
        "empty.i8.3x0x2": torch.zeros(3, 0, 2, dtype=torch.int8),
        "empty.bool": torch.zeros(0, dtype=torch.bool),
        "empty.f16": torch.zeros(0, dtype=torch.float16),
        "f16.4d": torch.randn(2, 3, 4, 5, generator=generator).to(torch.float16),
        # Non-contiguous views; save_file refuses them as they are, so they are packed first.
        "view.transposed": torch.randn(7, 5, generator=generator).t().contiguous(),
        "view.strided_slice": torch.arange(40, dtype=torch.int64)[::3].contiguous(),
        "view.column_slice": torch.randn(6, 8, generator=generator, dtype=torch.float64)[:, 1::2].contiguous(),
        # Names: unicode and punctuation.
        "ünïcödé.名前.weight": torch.tensor([1.5, -2.25], dtype=torch.float32),
        'name with "quotes", spaces and \\ backslash': torch.tensor([7], dtype=torch.int32),
    }


def as_bits(tensor):
    """The tensor's bytes as integers of the element's width (bool as uint8)."""
    if tensor.dtype == torch.bool:
        return tensor.view(torch.uint8)
    return tensor.view({1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[tensor.element_size()])


def read_with_library(path):
    """{name: (dtype string, shape, tensor)} and the metadata, through safe_open."""
    with safetensors.safe_open(path, framework="pt") as source:
        tensors = {name: (source.get_slice(name).get_dtype(), list(source.get_slice(name).get_shape()),
                          source.get_tensor(name)) for name in source.keys()}
        return tensors, source.metadata()


def layout_problems(path):
    """What is wrong with the raw bytes of a safetensors file (empty: nothing)."""
    with open(path, "rb") as source:
        data = source.read()
    if len(data) < 8:
        return [f"{len(data)} bytes, shorter than the header length"]
    (header_length,) = struct.unpack("<Q", data[:8])
    problems = []
    if header_length % 8:
        problems.append(f"header length {header_length} is not a multiple of 8 (data not 8-byte aligned)")
    if 8 + header_length > len(data):
        return problems + [f"header length {header_length} runs past the end of the file ({len(data)} bytes)"]
    raw = data[8:8 + header_length]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return problems + [f"header is not UTF-8: {error}"]
    if not text.startswith("{"):
        problems.append("header does not start with '{'")
    body = text.rstrip(" ")
    if len(text) - len(body) >= 8:
        problems.append(f"{len(text) - len(body)} bytes of padding, more than needed to reach a multiple of 8")

    def no_duplicates(pairs):
        keys = [key for key, _ in pairs]
        if len(keys) != len(set(keys)):
            problems.append(f"duplicate keys in a header object: {keys}")
        return dict(pairs)

    try:
        header = json.loads(body, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as error:
        return problems + [f"header is not JSON padded with spaces: {error}"]
    metadata = header.pop("__metadata__", {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        problems.append(f"__metadata__ is not a map of strings: {metadata}")
    buffer_length = len(data) - 8 - header_length
    end = 0
    for name, entry in sorted(header.items(), key=lambda item: tuple(item[1].get("data_offsets", [0, 0]))):
        if sorted(entry) != ["data_offsets", "dtype", "shape"]:
            problems.append(f"{name}: entry keys {sorted(entry)}")
            continue
        begin, stop = entry["data_offsets"]
        if begin != end:
            problems.append(f"{name}: data starts at {begin}, the previous tensor ends at {end}")
        size = ITEM_SIZE.get(entry["dtype"], 0)
        for extent in entry["shape"]:
            size *= extent
        if stop - begin != size:
            problems.append(f"{name}: {stop - begin} bytes for {entry['dtype']} {entry['shape']} ({size} expected)")
        end = stop
    if end != buffer_length:
        problems.append(f"the tensors end at byte {end} of a {buffer_length}-byte data buffer")
    return problems


def copy_with_can(source, output):
    cr.probe("safetensors-copy", "--input", source, "--output", output)


def compare_files(checks, label, can_file, expected, expected_metadata):
    """expected: {name: tensor}, expected_metadata: a dict or None (safe_open's answer for a file without it);
    checks names, dtype strings, shapes and bits of can_file as the library reads it."""
    tensors, metadata = read_with_library(can_file)
    checks.equal(f"{label}: tensor names", sorted(tensors), sorted(expected))
    checks.equal(f"{label}: __metadata__", metadata, expected_metadata)
    wrong = []
    for name, reference in expected.items():
        if name not in tensors:
            continue
        dtype, shape, tensor = tensors[name]
        if dtype != DTYPE_NAMES[reference.dtype] or shape != list(reference.shape):
            wrong.append(f"{name}: {dtype} {shape} instead of {DTYPE_NAMES[reference.dtype]} {list(reference.shape)}")
        elif tensor.dtype != reference.dtype or not torch.equal(as_bits(tensor), as_bits(reference)):
            wrong.append(f"{name}: values differ")
    checks.check(f"{label}: dtypes, shapes and bit-identical values of {len(expected)} tensors", not wrong,
                 "; ".join(wrong))
    if not wrong:
        print(f"  ok   {label}: dtypes, shapes and bit-identical values of {len(expected)} tensors")


def check_every_dtype(checks, folder):
    tensors = awkward_tensors()
    checks.equal("fixture: every dtype CAN supports is present",
                 sorted({DTYPE_NAMES[t.dtype] for t in tensors.values()}), sorted(DTYPE_NAMES.values()))
    source = os.path.join(folder, "library.safetensors")
    safetensors_torch.save_file(tensors, source, metadata=METADATA)
    checks.equal("fixture: the layout validator passes the library's own file", layout_problems(source), [])
    output = os.path.join(folder, "can.safetensors")
    copy_with_can(source, output)
    checks.equal("CAN's file: raw layout per the format", layout_problems(output), [])
    compare_files(checks, "CAN's file read by safe_open", output, tensors, METADATA)
    loaded = safetensors_torch.load_file(output)
    checks.check("CAN's file read by load_file: bit-identical",
                 loaded.keys() == tensors.keys() and all(
                     loaded[n].dtype == t.dtype and loaded[n].shape == t.shape and torch.equal(as_bits(loaded[n]),
                                                                                               as_bits(t))
                     for n, t in tensors.items()), "load_file sees different tensors")


def check_unpadded_header(checks, folder):
    """A header whose length is not a multiple of 8: the library reads it, so must CAN."""
    header = json.dumps({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}}, separators=(",", ":"))
    values = torch.tensor([1.0, -0.0, float("inf")])
    source = os.path.join(folder, "unpadded.safetensors")
    with open(source, "wb") as out:
        out.write(struct.pack("<Q", len(header)) + header.encode() + values.numpy().tobytes())
    checks.check("fixture: unpadded header length", len(header) % 8 != 0, f"{len(header)} is a multiple of 8")
    checks.check("fixture: the library reads the unpadded file",
                 torch.equal(as_bits(safetensors_torch.load_file(source)["x"]), as_bits(values)), "it does not")
    output = os.path.join(folder, "unpadded_copy.safetensors")
    copy_with_can(source, output)
    compare_files(checks, "unpadded header", output, {"x": values}, None)


def check_sharded(checks, folder):
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY_LLAMA))
    for dtype in (torch.float32, torch.bfloat16):
        model = model.to(dtype)
        directory = os.path.join(folder, f"sharded_{DTYPE_NAMES[dtype]}")
        model.save_pretrained(directory, max_shard_size="50KB")
        shards = [name for name in os.listdir(directory) if name.endswith(".safetensors")]
        checks.check(f"fixture: {DTYPE_NAMES[dtype]} checkpoint in >= 3 shards with an index",
                     len(shards) >= 3 and os.path.exists(os.path.join(directory, "model.safetensors.index.json")),
                     f"shards {shards}")
        output = os.path.join(folder, f"sharded_{DTYPE_NAMES[dtype]}_copy.safetensors")
        copy_with_can(directory, output)
        compare_files(checks, f"sharded {DTYPE_NAMES[dtype]} ({len(shards)} shards) = state_dict()", output,
                      dict(model.state_dict()), None)  # a directory's copy has no metadata


def expect_refusal(checks, label, source, names):
    """CAN exits 1 naming the file and every string of `names`, and writes nothing."""
    outputs = os.path.join(os.path.dirname(source), "refused_output")
    os.makedirs(outputs, exist_ok=True)
    command = [cr.program("can_reference_probe"), "safetensors-copy", "--input", source,
               "--output", os.path.join(outputs, "copy.safetensors")]
    result = subprocess.run(command, capture_output=True, text=True)
    message = result.stderr.strip()
    print(f"  {label}: exit {result.returncode}: {message.splitlines()[-1][:220] if message else ''}")
    checks.equal(f"{label}: exit 1", result.returncode, 1)
    missing = [name for name in [source, *names] if name not in message]
    checks.check(f"{label}: the message names the file{' and ' + ', '.join(names) if names else ''}", not missing,
                 f"stderr does not name {missing}: {message[-300:]}")
    checks.equal(f"{label}: no output written", os.listdir(outputs), [])


def check_unsupported_dtypes(checks, folder):
    for dtype_name, dtype in UNSUPPORTED.items():
        source = os.path.join(folder, f"unsupported_{dtype_name}.safetensors")
        tensor_name = f"layer.{dtype_name.lower()}_values"
        safetensors_torch.save_file({"fine.weight": torch.ones(2, 2),
                                     tensor_name: torch.zeros(3, dtype=torch.uint8).view(dtype)
                                     if dtype.itemsize == 1 else torch.arange(3).to(dtype)}, source)
        expect_refusal(checks, f"unsupported dtype {dtype_name}", source, [tensor_name, dtype_name])


def corrupt_variants(valid):
    """(label, bytes, names the message must hold) for corruptions of a valid file's bytes."""
    (header_length,) = struct.unpack("<Q", valid[:8])
    header = json.loads(valid[8:8 + header_length])
    last = max((n for n in header if n != "__metadata__"), key=lambda n: header[n]["data_offsets"][1])
    overlapping = dict(header)
    first, second = sorted((n for n in header if n != "__metadata__"), key=lambda n: header[n]["data_offsets"][0])[:2]
    shift = ITEM_SIZE[header[second]["dtype"]]
    begin, end = header[second]["data_offsets"]
    overlapping[second] = dict(header[second], data_offsets=[begin - shift, end - shift])
    overlap_text = json.dumps(overlapping).encode()
    overlap_text += b" " * (-len(overlap_text) % 8)
    return [
        ("truncated data", valid[:-4], [last]),
        ("header length beyond the file", struct.pack("<Q", len(valid)) + valid[8:], []),
        ("header length 2^64-1", struct.pack("<Q", 2**64 - 1) + valid[8:], []),
        ("header not JSON", valid[:8] + b"[" + valid[9:8 + header_length] + valid[8 + header_length:], []),
        ("trailing bytes", valid + b"\0" * 8, []),
        ("overlapping data_offsets",
         struct.pack("<Q", len(overlap_text)) + overlap_text + valid[8 + header_length:], [second]),
    ]


def library_refuses(path):
    try:
        safetensors_torch.load_file(path)
    except Exception:  # the library raises SafetensorError (and others) for every corrupt file
        return True
    return False


def check_corrupt_files(checks, folder):
    valid_path = os.path.join(folder, "valid.safetensors")
    # Every tensor holds >= 8 bytes, so cutting 4 bytes off the end cuts into the last tensor only.
    safetensors_torch.save_file({"a.weight": torch.randn(4, 4), "b.index": torch.arange(6, dtype=torch.int64),
                                 "c.flags": torch.arange(8) % 3 == 0}, valid_path, metadata={"format": "pt"})
    with open(valid_path, "rb") as source:
        valid = source.read()
    for index, (label, data, names) in enumerate(corrupt_variants(valid)):
        path = os.path.join(folder, f"corrupt_{index}.safetensors")
        with open(path, "wb") as out:
            out.write(data)
        checks.check(f"fixture: the library refuses '{label}'", library_refuses(path), "load_file reads it")
        expect_refusal(checks, f"corrupt: {label}", path, names)


def main():
    start = time.monotonic()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    checks = cr.Checks("safetensors_vs_library")
    with cr.temporary_folder("safetensors_vs_library") as folder:
        try:
            check_every_dtype(checks, folder)
            check_unpadded_header(checks, folder)
            check_sharded(checks, folder)
            check_unsupported_dtypes(checks, folder)
            check_corrupt_files(checks, folder)
        except cr.CheckFailure as failure:
            checks.check("can_reference_probe", False, str(failure))
    print(f"({time.monotonic() - start:.1f} s)")
    return checks.report()


if __name__ == "__main__":
    sys.exit(main())
