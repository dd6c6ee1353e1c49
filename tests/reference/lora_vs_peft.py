#!/usr/bin/env python3
"""Reference test: CAN's LoRA adapters against PEFT 0.21, in both directions.

The base model is a tiny transformers LlamaForCausalLM (grouped-query attention,
weights ~N(0, 0.2) and random RMSNorm weights, so logits are of order 1 and the
adapters move them visibly), saved with save_pretrained. Every forward pass runs
on a right-padded and a left-padded batch; only real positions are compared, and
transformers gets position_ids = cumsum(mask) - 1, CAN's rule.

CAN -> PEFT, for (r 8, alpha 16, q/k/v/o) and (r 4, alpha 12, all seven
projections; a different alpha/r, so a scaling mistake cannot hide):
  * can_reference_probe lora-save writes the adapter directory;
  * its adapter_config.json loads as PEFT's LoraConfig with CAN's r, lora_alpha and
    target_modules, and holds no key LoraConfig does not know;
  * adapter_model.safetensors holds exactly the tensor names and shapes PEFT
    itself writes for that config, and PeftModel.from_pretrained loads every one
    of them bit for bit; lora_B is not zero;
  * PeftModel logits (unmerged) = CAN forward --adapter, = CAN forward --adapter
    --merge, and PEFT's merge_and_unload() logits = CAN's merged ones;
  * not vacuous: the adapter moves the logits away from the base model's, and
    PEFT with a wrong scale (alpha/sqrt(r), rsLoRA's) is far from CAN.
PEFT -> CAN, for LoraConfig(r 8, alpha 16, q/k/v/o, init_lora_weights False so
lora_B is random) and (r 4, alpha 8, all seven projections, lora_dropout 0.05,
which must not act at inference):
  * PEFT's files have the layout CAN reads (names, config keys);
  * CAN forward --adapter and --adapter --merge = PEFT's logits.
Refusals: PEFT adapters CAN cannot compute (use_rslora, alpha_pattern,
rank_pattern, use_dora, lora_bias, bias "all", modules_to_save,
layers_to_transform, target_modules as a regular expression) must make CAN exit 1
with a message naming the adapter_config.json field, and write nothing. Accepting
one silently computes something else than PEFT (the difference is shown then).

Exit 0: all pass; 1: a failure (each named); 77: a library missing (outside CI).
The build folder comes from CAN_BINARY_DIR (CTest sets it), default build/.
"""
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "support"))
import can_reference as cr  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every model is a local folder; never reach for the Hub

torch, transformers, peft, safetensors_torch = cr.require("torch", "transformers", "peft", "safetensors.torch")

# --- TOLERANCES -----------------------------------------------------------------
# Logits, float32 everywhere, |logit| up to ~8. CAN (LibTorch) and transformers/PEFT
# (PyTorch, same version) run the same kernels on the same weights; where they
# group the work differently (attention, RMSNorm, rotary; s·B(Ax) added in either
# order) each of the ~20 sequential operations of a 2-layer model rounds at ~1e-7
# relative, ~1e-6 on the logits. Merging rounds every W + s·BA once more (6e-8
# relative per weight), which attention and the 64-wide sums amplify: PEFT's own
# merged and unmerged logits differ by up to 1.6e-5 here, and so do CAN's merged
# ones from PEFT's unmerged ones (unmerged, CAN matches PEFT bit for bit today).
# 1e-4 (1e-5 relative to the largest logit) leaves a factor of ~6 over that, and
# is 100x below MIN_EFFECT and ~10^4 below what a wrong scale or a missing
# adapter does (both printed).
LOGIT_ATOL = 1e-4
# Every comparison must be able to fail: the adapter has to move the logits by at
# least this from the base model's, and so must a wrong scale (alpha/sqrt(r)
# instead of alpha/r) from PEFT's; measured values are printed (5 to 9 here).
MIN_EFFECT = 1e-2
WHY = "float32, different operation order; see TOLERANCES"

# --- The base model ---------------------------------------------------------------
BASE = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.2, tie_word_embeddings=False)
ALL_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ATTENTION = ALL_TARGETS[:4]

# CAN -> PEFT: (rank, alpha, targets, seed). 16/8 = 2 and 12/4 = 3 differ, and neither is alpha/sqrt(r).
CAN_ADAPTERS = [(8, 16, ATTENTION, 1), (4, 12, ALL_TARGETS, 2)]
# PEFT -> CAN: LoraConfig arguments beyond task_type / bias / init_lora_weights.
PEFT_ADAPTERS = [
    dict(r=8, lora_alpha=16, target_modules=ATTENTION, lora_dropout=0.0),
    dict(r=4, lora_alpha=8, target_modules=ALL_TARGETS, lora_dropout=0.05),
]
# Adapters PEFT computes differently from plain alpha/r·BA on the targets: (field, LoraConfig arguments).
UNSUPPORTED = [
    ("use_rslora", dict(use_rslora=True)),  # scale alpha/sqrt(r)
    ("alpha_pattern", dict(alpha_pattern={"q_proj": 40})),  # another alpha on q_proj
    ("rank_pattern", dict(rank_pattern={"v_proj": 4})),  # another rank on v_proj
    ("use_dora", dict(use_dora=True)),  # weight-decomposed: magnitude vectors
    ("lora_bias", dict(lora_bias=True)),  # a bias on lora_B
    ("bias", dict(bias="all")),  # trains the base biases too
    ("modules_to_save", dict(modules_to_save=["lm_head"])),  # a full copy of lm_head
    ("layers_to_transform", dict(layers_to_transform=[0])),  # adapters on layer 0 only
    ("target_modules", dict(target_modules=r".*\.(q_proj|v_proj)$")),  # a regular expression, not a list
]


def quiet_libraries():
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore")  # PEFT's advice on lora_bias, DoRA, ...; the checks are explicit


def make_base(folder):
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**BASE))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):  # random gains, so no RMSNorm is the identity
                parameter.uniform_(0.5, 1.5)
    path = os.path.join(folder, "base")
    model.save_pretrained(path)
    return path


def load_base(path):
    return transformers.LlamaForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def make_batches():
    """Right- and left-padded [3, 10] batches of lengths 10, 7, 4 (padding holds token 0)."""
    generator = torch.Generator().manual_seed(3)
    lengths, width = [10, 7, 4], 10
    batches = {}
    for side in ("right", "left"):
        ids = torch.zeros(len(lengths), width, dtype=torch.int64)
        mask = torch.zeros(len(lengths), width, dtype=torch.int64)
        for row, length in enumerate(lengths):
            span = slice(0, length) if side == "right" else slice(width - length, width)
            ids[row, span] = torch.randint(3, BASE["vocab_size"], (length,), generator=generator)
            mask[row, span] = 1
        batches[side] = (ids, mask)
    return batches


def python_logits(model, batch):
    ids, mask = batch
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()


def can_forward_command(folder, base, adapter, merge, batch):
    ids, mask = batch
    source = os.path.join(folder, "input.safetensors")
    safetensors_torch.save_file({"input_ids": ids, "attention_mask": mask}, source)
    output = os.path.join(folder, "can_logits.safetensors")
    if os.path.exists(output):
        os.remove(output)
    command = [cr.program("can_reference_probe"), "forward", "--model", base, "--input", source, "--output", output]
    if adapter:
        command += ["--adapter", adapter] + (["--merge"] if merge else [])
    return command, output


def can_logits(folder, base, adapter, merge, batch):
    command, output = can_forward_command(folder, base, adapter, merge, batch)
    cr.run(command)
    return safetensors_torch.load_file(output)["logits"]


def real(logits, batch):
    """The logits at real positions, [tokens, V]."""
    return logits[batch[1].bool()]


def largest_difference(a, b, batch):
    return float((real(a, batch) - real(b, batch)).abs().max())


def set_peft_scale(model, scale_of):
    """Overrides every LoRA layer's scale by scale_of(r, alpha); returns the old scales to restore."""
    old = {}
    for name, module in model.named_modules():
        if isinstance(module, peft.tuners.lora.LoraLayer):
            old[name] = dict(module.scaling)
            module.scaling["default"] = scale_of(module.r["default"], module.lora_alpha["default"])
    return old


def restore_peft_scale(model, old):
    for name, module in model.named_modules():
        if name in old:
            module.scaling.update(old[name])


def enum_value(field):
    """PEFT's PeftType / TaskType members, or plain strings, as strings."""
    return getattr(field, "value", field)


def peft_names_and_shapes(base, config):
    """The tensors PEFT itself writes for `config` on the base model: {name: shape}."""
    model = peft.get_peft_model(load_base(base), config)
    return {name: tuple(t.shape) for name, t in peft.get_peft_model_state_dict(model).items()}


def check_can_adapter(checks, folder, base, batches, rank, alpha, targets, seed):
    label = f"CAN r{rank} a{alpha} {'+'.join(t.split('_')[0] for t in targets)}"
    adapter = os.path.join(folder, f"can_r{rank}")
    cr.probe("lora-save", "--model", base, "--output", adapter, "--rank", rank, "--alpha", alpha,
             "--targets", ",".join(targets), "--seed", seed)

    with open(os.path.join(adapter, "adapter_config.json")) as source:
        written = json.load(source)
    known = {field.name for field in dataclasses.fields(peft.LoraConfig)}
    checks.equal(f"{label}: adapter_config.json keys are LoraConfig fields", sorted(set(written) - known), [])
    config = peft.LoraConfig.from_pretrained(adapter)
    checks.equal(f"{label}: LoraConfig r, lora_alpha, targets, peft_type, task_type, bias, use_rslora",
                 (config.r, float(config.lora_alpha), sorted(config.target_modules), enum_value(config.peft_type),
                  enum_value(config.task_type), config.bias, config.use_rslora),
                 (rank, float(alpha), sorted(targets), "LORA", "CAUSAL_LM", "none", False))

    weights = safetensors_torch.load_file(os.path.join(adapter, "adapter_model.safetensors"))
    checks.equal(f"{label}: tensor names and shapes = PEFT's for this config",
                 {name: tuple(t.shape) for name, t in weights.items()}, peft_names_and_shapes(base, config))
    lora_b = [t for name, t in weights.items() if ".lora_B." in name]
    checks.check(f"{label}: lora_B filled", all(bool(t.abs().max() > 0) for t in lora_b), "a lora_B is zero")

    model = peft.PeftModel.from_pretrained(load_base(base), adapter).eval()
    loaded = peft.get_peft_model_state_dict(model)
    checks.check(f"{label}: PeftModel.from_pretrained loads every tensor bit for bit",
                 loaded.keys() == weights.keys() and all(torch.equal(loaded[n], weights[n]) for n in weights),
                 "PEFT's adapter tensors after loading differ from the file's")

    base_model = load_base(base)
    unmerged = {side: python_logits(model, batch) for side, batch in batches.items()}
    for side, batch in batches.items():
        effect = largest_difference(unmerged[side], python_logits(base_model, batch), batch)
        old = set_peft_scale(model, lambda r, a: a / math.sqrt(r))
        wrong_scale = python_logits(model, batch)
        restore_peft_scale(model, old)
        can_unmerged = can_logits(folder, base, adapter, False, batch)
        margin = largest_difference(can_unmerged, wrong_scale, batch)
        print(f"  {label} {side}: adapter moves logits by {effect:.3g}; CAN vs PEFT at scale alpha/sqrt(r): "
              f"{margin:.3g}; |logits| <= {float(real(unmerged[side], batch).abs().max()):.3g}")
        checks.check(f"{label} {side}: the adapter changes the logits", effect >= MIN_EFFECT,
                     f"max |adapter - base| = {effect:.3g} < {MIN_EFFECT}")
        checks.check(f"{label} {side}: a wrong scale would be caught", margin >= MIN_EFFECT,
                     f"CAN is within {margin:.3g} of PEFT at scale alpha/sqrt(r)")
        checks.close(f"{label} {side}: CAN --adapter = PeftModel", real(can_unmerged, batch),
                     real(unmerged[side], batch), LOGIT_ATOL, why=WHY)
        checks.close(f"{label} {side}: CAN --adapter --merge = PeftModel",
                     real(can_logits(folder, base, adapter, True, batch), batch), real(unmerged[side], batch),
                     LOGIT_ATOL, why=WHY)
    merged = model.merge_and_unload().eval()
    for side, batch in batches.items():
        checks.close(f"{label} {side}: CAN --adapter --merge = PEFT merge_and_unload",
                     real(can_logits(folder, base, adapter, True, batch), batch),
                     real(python_logits(merged, batch), batch), LOGIT_ATOL, why=WHY)


def save_peft_adapter(base, path, arguments, seed):
    torch.manual_seed(seed)
    arguments = {"bias": "none", "lora_dropout": 0.0, "r": 8, "lora_alpha": 16, "target_modules": ATTENTION,
                 **arguments}
    # init_lora_weights False draws lora_B at random too, so the adapter changes the output.
    config = peft.LoraConfig(task_type="CAUSAL_LM", init_lora_weights=False, **arguments)
    model = peft.get_peft_model(load_base(base), config).eval()
    model.save_pretrained(path)
    return model


def check_peft_adapter(checks, folder, base, batches, arguments, seed):
    rank, alpha, targets = arguments["r"], arguments["lora_alpha"], arguments["target_modules"]
    label = f"PEFT r{rank} a{alpha} {'+'.join(t.split('_')[0] for t in targets)}"
    adapter = os.path.join(folder, f"peft_r{rank}")
    model = save_peft_adapter(base, adapter, arguments, seed)

    # The layout CAN reads: base_model.model.<module>.lora_{A,B}.weight for every target of every layer.
    with open(os.path.join(adapter, "adapter_config.json")) as source:
        written = json.load(source)
    checks.equal(f"{label}: adapter_config.json fields CAN reads",
                 (written["peft_type"], written["r"], written["lora_alpha"], sorted(written["target_modules"]),
                  written["bias"], written["use_rslora"], written["rank_pattern"], written["alpha_pattern"]),
                 ("LORA", rank, alpha, sorted(targets), "none", False, {}, {}))
    weights = safetensors_torch.load_file(os.path.join(adapter, "adapter_model.safetensors"))
    expected = {f"base_model.model.model.layers.{layer}.{'self_attn' if t in ATTENTION else 'mlp'}.{t}.lora_{m}.weight"
                for layer in range(BASE["num_hidden_layers"]) for t in targets for m in "AB"}
    checks.equal(f"{label}: adapter_model.safetensors tensor names", sorted(weights), sorted(expected))

    for side, batch in batches.items():
        reference = python_logits(model, batch)
        effect = largest_difference(reference, python_logits(load_base(base), batch), batch)
        print(f"  {label} {side}: adapter moves logits by {effect:.3g}")
        checks.check(f"{label} {side}: the adapter changes the logits", effect >= MIN_EFFECT,
                     f"max |adapter - base| = {effect:.3g} < {MIN_EFFECT}")
        for merge in (False, True):
            checks.close(f"{label} {side}: CAN --adapter{' --merge' if merge else ''} = PeftModel",
                         real(can_logits(folder, base, adapter, merge, batch), batch), real(reference, batch),
                         LOGIT_ATOL, why=WHY)


def check_refusal(checks, folder, base, batch, field, arguments):
    label = f"refuse {field}"
    adapter = os.path.join(folder, f"unsupported_{field}")
    model = save_peft_adapter(base, adapter, arguments, seed=5)
    command, output = can_forward_command(folder, base, adapter, False, batch)
    result = subprocess.run(command, capture_output=True, text=True)
    message = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
    if result.returncode == 0:
        # Accepted: show what it computed instead of PEFT's function.
        difference = largest_difference(safetensors_torch.load_file(output)["logits"], python_logits(model, batch),
                                        batch)
        checks.check(f"{label}: exit 1", False,
                     f"CAN accepted an adapter with {field} = {json.dumps(arguments[field])} and its logits differ "
                     f"from PEFT's by {difference:.3g}; it must refuse, naming the field")
        return
    print(f"  {label}: exit {result.returncode}: {message[:200]}")
    checks.equal(f"{label}: exit 1", result.returncode, 1)
    checks.check(f"{label}: the message names the field", re.search(rf"\b{field}\b", result.stderr) is not None,
                 f"stderr does not name '{field}': {message[:300]}")
    checks.check(f"{label}: no output written", not os.path.exists(output), f"{output} exists")


def main():
    start = time.monotonic()
    quiet_libraries()
    checks = cr.Checks("lora_vs_peft")
    with cr.temporary_folder("lora_vs_peft") as folder:
        base = make_base(folder)
        batches = make_batches()
        try:
            for rank, alpha, targets, seed in CAN_ADAPTERS:
                check_can_adapter(checks, folder, base, batches, rank, alpha, targets, seed)
            for seed, arguments in enumerate(PEFT_ADAPTERS, start=10):
                check_peft_adapter(checks, folder, base, batches, arguments, seed)
            for field, arguments in UNSUPPORTED:
                check_refusal(checks, folder, base, batches["right"], field, arguments)
        except cr.CheckFailure as failure:
            checks.check("can_reference_probe", False, str(failure))
    print(f"({time.monotonic() - start:.1f} s)")
    return checks.report()


if __name__ == "__main__":
    sys.exit(main())
