#!/usr/bin/env python3
"""Reference test: CAN's DPO step (can_reference_probe dpo) against TRL 1.13's DPOTrainer.

A tiny random LlamaForCausalLM policy and a frozen reference (the policy with
every weight perturbed, so log-ratios are of order 1) are made and saved by
transformers (save_pretrained, safetensors; weights scaled up from the default
init, see support/tiny_causal_lm.py). B = 4 preference pairs of token ids with
different prompt, chosen and rejected lengths, so rows are right-padded.

TRL's side is a real DPOTrainer (float32 on CPU: bf16 and gradient
checkpointing off, which DPOConfig turns on by default) with the policy, the
reference as ref_model and reference log-probs computed on the fly. Building it
needs a tokenizer and a train dataset: a word-level tokenizer over the same ids
and one placeholder example. The batch is then made from the pairs' ids by the
trainer's own data_collator (DataCollatorForPreference), as TRL does for every
batch once the dataset is tokenized, and trainer.compute_loss runs in train mode
as training_step runs it, followed by backward. CAN's side gets the same ids
(max_length, pad id) through `can_reference_probe dpo`. For every case:
  * the batch CAN builds: input_ids, attention_mask, and response_mask against
    TRL's completion_mask, exactly (right padding with the same pad id);
  * the loss, and TRL's metrics rewards/chosen, rewards/rejected,
    rewards/accuracies, rewards/margins, logps/chosen, logps/rejected as TRL
    logs them (trainer._metrics) against CAN's metric.*;
  * the gradient of every parameter;
  * one AdamW step (lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0.1):
    CAN's updated parameters against the torch.optim.AdamW that DPOTrainer
    builds (Trainer.create_optimizer: TRL's weight-decay grouping), stepped once
    with CAN's gradients (tight) and with TRL's gradients (bound derived below);
    TRL's decay group must equal CAN's rule (no decay on 1-d parameters, biases
    and norm weights).

Cases and how TRL computes each loss, h = (logπ_c − logπ_ref_c) − (logπ_r − logπ_ref_r):
  sigmoid, β 0.1:       TRL loss_type "sigmoid", −log σ(βh).
  sigmoid, β 0.3, ε 0.1: CAN's sigmoid with label smoothing ε is conservative DPO
      (Mitchell 2023), L_c = −(1−ε)·log σ(βh) − ε·log σ(−βh). TRL's "sigmoid"
      ignores label_smoothing (checked: with ε = 0.1 it gives −log σ(βh)); ε
      enters TRL's "robust" loss (Chowdhury et al. 2024),
      L_rob = ((1−ε)·S(h) − ε·S(−h)) / (1−2ε) with S(x) = −log σ(βx).
      Since S(−h) = S(h) + βh:  L_rob = S(h) − εβh/(1−2ε)  and  L_c = S(h) + εβh, so
          L_c = (2−2ε)·S(h) − (1−2ε)·L_rob,
      which TRL's trainer computes itself as loss_type ["sigmoid", "robust"] with
      loss_weights [2−2ε, −(1−2ε)] and label_smoothing ε. The test also checks
      this identity numerically: TRL's combined loss equals L_c evaluated in
      float64 on TRL's own log-probs.
  ipo, β 0.1 and β 0.5:  TRL's length-normalised IPO,
      ((h_c/n_c − h_r/n_r) − 1/(2β))², n = completion tokens of each row.
  sigmoid β 0.1 and ipo β 0.5 with max_length 10 (truncation): sequences longer
      than 10 tokens lose the end of their response. TRL's collator keeps the
      first max_length tokens (truncation_mode "keep_start"); can::truncate_sequence
      keeps the whole prompt and the first max_length − P response tokens when
      the prompt (P tokens) is shorter than max_length, the same sequences.
      (They differ only when P >= max_length, which TRL's dataset preparation
      drops and CAN keeps as BOS + prompt tail + first response token; that case
      is shown, not compared: CAN's rule on it is checked, and what TRL's
      collator makes of it printed.)
Every case also checks that TRL's loss equals its formula evaluated in float64
on TRL's per-token log-probs (so the test knows what TRL computes), that
deliberately wrong variants (no label smoothing, IPO without length
normalisation, the completion mask off by one) miss TRL's loss by far more than
the tolerance, that no pair is saturated (|βh| ≤ 4) nor a near-tie for
rewards/accuracies.

Tokenization (docs/design.md): TRL's dataset preparation (non-conversational
data) appends the EOS text to each completion, tokenizes prompt and prompt +
completion jointly and splits at the prompt's length; CAN encodes BOS +
chat_template(prompt) and the response apart (no BOS, then the EOS id). With a
Llama-style sentencepiece tokenizer trained here (transformers' LlamaTokenizer
for TRL, `can_reference_probe tokenize` for CAN), TRL's own DPOTrainer prepares
one example written three ways: with the prompt ending in "ASSISTANT:" and the
completion " " + response, TRL's ids equal CAN's (checked); the completion
without that space and the prompt ending in the space give other ids (shown).

Exit 0: all pass; 1: a failure (each named); 77: a library missing (outside CI).
The build folder comes from CAN_BINARY_DIR (CTest sets it), default build/.
"""
import io
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "support"))
from can_reference import Checks, probe, read_json, require, temporary_folder, write_json  # noqa: E402

# transformers reads a sentencepiece tokenizer.model through protobuf.
torch, transformers, trl, datasets, tokenizers, safetensors, spm, _ = require(
    "torch", "transformers", "trl", "datasets", "tokenizers", "safetensors", "sentencepiece", "google.protobuf")
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast  # noqa: E402
from trl import DPOConfig, DPOTrainer  # noqa: E402

import tiny_causal_lm as tiny  # noqa: E402

# --- TOLERANCES -----------------------------------------------------------------
# Both sides run the same float32 model on the same ids; they differ only in the
# order of float32 operations (CAN's attention and matmuls against transformers'
# eager attention), ~1e-7 relative each, carried through 3 layers. Each
# tolerance below is stated against two measurements on these fixtures: TRL in
# float32 against the same TRL computation in float64 (the rounding of one side),
# and CAN against TRL (printed by the test). Every one is far below what an
# error in the loss, the masks or the batch makes (see DISCRIMINATION).
#
# Sequence log-probs are sums of <= 15 token log-probs of size ~6 (values ~-60,
# ulp 3.8e-6); measured: 1e-6 from float64, CAN = TRL to the last bit. logps/*
# are their means.
LOGPS_ATOL = 1e-4
# rewards/* are β <= 0.5 times differences of policy and reference log-probs:
# measured 5e-7 from float64, <= 1.5e-6 between CAN and TRL.
REWARDS_ATOL = 1e-5
# rewards/accuracies is a fraction of 4 pairs: equal, given that no pair's reward
# gap β|h| is a near-tie (MIN_REWARD_GAP, 100 times REWARDS_ATOL).
MIN_REWARD_GAP = 1e-3
# The loss is a smooth function of the log-ratios (derivative <= 1 for sigmoid,
# 2·|Δ − 1/(2β)| <= ~12 for IPO): 1e-5 relative to max(1, |loss|); measured
# <= 1e-6 from float64, <= 2e-7 between CAN and TRL.
LOSS_RTOL = 1e-5
# Gradients: every entry is a sum over the 2B·T positions (a few hundred
# products through 3 layers and back). Their rounding scales with the tensor's
# largest entry, not with the entry itself (the loss's per-pair weights carry
# the log-probs' rounding into every entry alike), so the tolerance per tensor is
# GRAD_RTOL_OF_MAX times TRL's largest |entry|. Measured: float32 against float64
# up to 1e-5 of the max (k_proj, 2e-6..6e-6 elsewhere), CAN against TRL
# 2e-6..3.5e-6 (much of the rounding is common to both). 3e-5 is 3 times one
# side's worst rounding, and a real error (a mask off by one, a missing ε) moves
# gradients by 1e-2 or more of the max.
GRAD_RTOL_OF_MAX = 3e-5
# TRL's loss against its own formula in float64 on its per-token log-probs:
# float32 against float64 evaluation of the same expression.
FORMULA_RTOL = 1e-5
# A wrong variant must miss TRL's loss by this multiple of the loss tolerance.
DISCRIMINATION = 100
# Not saturated (sigmoid): |βh| <= 4 keeps σ'(βh) >= 0.018, so the gradients
# are not vanishing and a wrong β or sign shows.
MAX_ABS_BETA_H = 4.0
# AdamW with CAN's own gradients: the same float32 values in both optimizers, so
# the step differs by rounding only: p·(1 − lr·wd) and p − lr·m̂/(√v̂ + eps), each
# rounded to float32 (1 ulp of |p| each, ~6e-8·|p|), the update itself to a few
# ulp of lr. 4 ulp of |p| plus 1e-9 (an exempt tensor wrongly decayed moves by
# lr·wd·|p| >= 1e-4·|p|: checked to be caught).
UPDATE_RTOL = 4 * 2.0**-24
UPDATE_ATOL = 1e-9
# AdamW with TRL's gradients g against CAN's step from its own gradients g + d
# (d: the gradient difference found, entry by entry): Adam's first step is
# −lr·f(g), f(g) = g / (|g| + eps) (m̂ = g, √v̂ = |g|), and |f'(x)| = eps/(|x| + eps)²,
# so the steps differ by at most lr·min(2, |d|·eps/(max(|g| − |d|, 0) + eps)²):
# negligible where |g| >> |d| (nearly every entry), up to 2·lr (a flipped sign)
# only where |g| <= |d|, where no float32 computation fixes the sign. Plus the
# rounding above. (The decay term p·(1 − lr·wd) is the same on both sides.)
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 0.1
ADAM_EPS = 1e-8

VOCAB = 256
# The reference is the policy with every parameter p perturbed by
# PERTURBATION·std(p)·N(0, 1): log-ratios of order 1 per sequence.
PERTURBATION = 0.1
# (prompt, chosen, rejected) ids: BOS first, responses end with EOS; prompts of
# 3..9 tokens, responses of 2..8, so rows have 7..15 tokens and are right-padded.
PAIRS = [
    ([1, 17, 45, 99, 3], [130, 7, 88, 2], [131, 8, 9, 10, 11, 2]),
    ([1, 250, 3, 64, 81, 12, 200, 5, 6], [9, 33, 2], [10, 2]),
    ([1, 5, 6], [77, 78, 79, 80, 81, 82, 83, 2], [70, 71, 72, 2]),
    ([1, 140, 141, 60, 61, 62, 63], [201, 202, 203, 204, 2], [210, 211, 212, 213, 214, 215, 216, 2]),
]
NO_TRUNCATION = 64  # longer than every row
# Cuts rows of 11..15 tokens, never a prompt (the longest is 9): TRL's and CAN's
# truncation agree.
TRUNCATION = 10
# (label, CAN --loss, β, ε, max_length)
CASES = [
    ("sigmoid β=0.1", "sigmoid", 0.1, 0.0, NO_TRUNCATION),
    ("sigmoid β=0.3 ε=0.1 (cDPO)", "sigmoid", 0.3, 0.1, NO_TRUNCATION),
    ("ipo β=0.1", "ipo", 0.1, 0.0, NO_TRUNCATION),
    ("ipo β=0.5", "ipo", 0.5, 0.0, NO_TRUNCATION),
    ("sigmoid β=0.1 truncated", "sigmoid", 0.1, 0.0, TRUNCATION),
    ("ipo β=0.5 truncated", "ipo", 0.5, 0.0, TRUNCATION),
]
# Shown, not compared: a prompt longer than max_length (PAIRS[1] has 9 prompt tokens).
LONG_PROMPT_MAX_LENGTH = 8
# Tokenization (shown, one form checked): can::ChatTemplate's default, a prompt, a response.
CHAT_TEMPLATE = "BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:"
TEXT_PROMPT = "How do I bake bread?"
TEXT_RESPONSE = "Sure, here is a simple recipe."
METRICS = ["rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
           "logps/rejected"]


def trl_loss_config(loss, beta, epsilon):
    """DPOConfig's loss_type, loss_weights, label_smoothing for CAN's loss (see the docstring for cDPO)."""
    if loss == "ipo":
        return {"loss_type": ["ipo"], "loss_weights": None, "label_smoothing": 0.0}
    if epsilon == 0.0:
        return {"loss_type": ["sigmoid"], "loss_weights": None, "label_smoothing": 0.0}
    return {"loss_type": ["sigmoid", "robust"], "loss_weights": [2 - 2 * epsilon, -(1 - 2 * epsilon)],
            "label_smoothing": epsilon}


def placeholder_tokenizer():
    """A word-level tokenizer over ids 0..V-1 with pad 0, BOS 1, EOS 2: DPOTrainer needs one to be built."""
    vocab = {"<pad>": tiny.PAD, "<s>": tiny.BOS, "</s>": tiny.EOS}
    vocab.update({f"t{i}": i for i in range(3, VOCAB)})
    model = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="t3"))
    model.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=model, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="t3")


def load(model_dir):
    """A saved model as TRL gets it: float32, transformers' eager attention (the plain softmax(QKᵀ)V)."""
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")


def make_trainer(folder, policy_dir, reference_dir, loss_config, beta, max_length):
    """A DPOTrainer on the saved policy, with the saved reference as its frozen ref_model."""
    args = DPOConfig(
        output_dir=os.path.join(folder, "trl_output"), report_to="none", use_cpu=True,
        bf16=False, gradient_checkpointing=False,  # DPOConfig's defaults: float32, no recomputation
        beta=beta, max_length=max_length, precompute_ref_log_probs=False,
        learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY, adam_beta1=0.9, adam_beta2=0.999,
        adam_epsilon=ADAM_EPS, **loss_config)
    # The one placeholder example is tokenized at construction and never used: the batches come from PAIRS.
    placeholder = datasets.Dataset.from_list([{"prompt": "t5 t6", "chosen": " t7", "rejected": " t8"}])
    reference = load(reference_dir).eval()
    return DPOTrainer(model=load(policy_dir), ref_model=reference, args=args, train_dataset=placeholder,
                      processing_class=placeholder_tokenizer())


def examples():
    return [{"prompt_ids": p, "chosen_ids": c, "rejected_ids": r} for p, c, r in PAIRS]


def trl_step(trainer):
    """TRL's batch, loss, metrics and gradients for PAIRS, as training_step computes them."""
    batch = trainer.data_collator(examples())
    model = trainer.model
    model.train()
    model.zero_grad()
    trainer._metrics["train"].clear()
    with trainer.compute_loss_context_manager():
        loss = trainer.compute_loss(model, batch)
    trainer.accelerator.backward(loss)
    metrics = {name: trainer._metrics["train"][name][-1] for name in METRICS}
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters()}
    return batch, float(loss.detach()), metrics, grads


def per_token_logps(model, batch):
    """[2B, T-1] float64 log-probs of each next token, T-1 positions (position t-1 predicts token t)."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = torch.log_softmax(logits[:, :-1].double(), dim=-1)
    return logp.gather(-1, batch["input_ids"][:, 1:].unsqueeze(-1)).squeeze(-1)


def pair_quantities(policy, reference, mask):
    """Per-pair log-ratios (h_c, h_r) and counts (n_c, n_r) under a [2B, T-1] mask of scored positions."""
    ratios = ((policy - reference) * mask).sum(-1)
    counts = mask.sum(-1).double()
    pairs = len(PAIRS)
    return ratios[:pairs], ratios[pairs:], counts[:pairs], counts[pairs:]


def sigmoid_loss(h, beta, epsilon):
    return (-(1 - epsilon) * F.logsigmoid(beta * h) - epsilon * F.logsigmoid(-beta * h)).mean()


def ipo_loss(h_c, h_r, n_c, n_r, beta):
    n_c, n_r = n_c.clamp(min=1), n_r.clamp(min=1)  # as TRL does: a row without completion tokens counts 1
    return (((h_c / n_c - h_r / n_r) - 1 / (2 * beta)) ** 2).mean()


def can_formula(loss, beta, epsilon, h_c, h_r, n_c, n_r):
    """CAN's loss (probe spec), float64."""
    return ipo_loss(h_c, h_r, n_c, n_r, beta) if loss == "ipo" else sigmoid_loss(h_c - h_r, beta, epsilon)


def check_formula_and_fixture(checks, label, trainer, batch, trl_loss, loss, beta, epsilon):
    """TRL's loss is CAN's formula on TRL's log-probs; wrong variants are caught; pairs are neither saturated nor
    near-ties. Returns a summary for the case's line."""
    policy = per_token_logps(trainer.model, batch)
    reference = per_token_logps(trainer.ref_model, batch)
    mask = batch["completion_mask"][:, 1:].double()
    h_c, h_r, n_c, n_r = pair_quantities(policy, reference, mask)
    expected = float(can_formula(loss, beta, epsilon, h_c, h_r, n_c, n_r))
    scale = max(1.0, abs(expected))
    checks.close(f"{label}: TRL's loss = the formula in float64 on TRL's log-probs", trl_loss, expected,
                 FORMULA_RTOL * scale, why="float32 vs float64 evaluation")

    wrong = {}
    if loss == "ipo":
        wrong["IPO without length normalisation"] = ipo_loss(h_c, h_r, torch.ones_like(n_c), torch.ones_like(n_r),
                                                             beta)
    elif epsilon > 0:
        wrong["TRL's plain sigmoid (no label smoothing)"] = sigmoid_loss(h_c - h_r, beta, 0.0)
    else:
        wrong["label smoothing 0.1 applied"] = sigmoid_loss(h_c - h_r, beta, 0.1)
    # The response mask not shifted with the logits: the first response token out, the position after it in.
    shifted = pair_quantities(policy, reference, batch["completion_mask"][:, :-1].double())
    wrong["completion mask off by one"] = can_formula(loss, beta, epsilon, *shifted)
    for name, value in wrong.items():
        distance = abs(float(value) - trl_loss)
        print(f"  {label}: {name}: loss {float(value):.6g}, {distance / (LOSS_RTOL * scale):.3g} tolerances away")
        checks.check(f"{label}: {name} is caught", distance > DISCRIMINATION * LOSS_RTOL * scale,
                     f"only {distance:.3g} from TRL's loss {trl_loss:.6g}")

    beta_h = beta * (h_c - h_r)
    if loss == "sigmoid":  # IPO is a square: nothing saturates
        checks.check(f"{label}: no pair saturated (|βh| <= {MAX_ABS_BETA_H})",
                     bool((beta_h.abs() <= MAX_ABS_BETA_H).all()), f"βh = {beta_h.tolist()}")
    checks.check(f"{label}: no reward near-tie (min |β(h_c − h_r)| >= {MIN_REWARD_GAP})",
                 bool((beta_h.abs() >= MIN_REWARD_GAP).all()), f"βh = {beta_h.tolist()}")
    return (f"βh {[round(v, 3) for v in beta_h.tolist()]}, completion tokens chosen {n_c.int().tolist()} "
            f"rejected {n_r.int().tolist()}")


def run_can(folder, label, policy_dir, reference_dir, loss, beta, epsilon, max_length, pairs=PAIRS):
    tag = "".join(c if c.isalnum() else "_" for c in label)
    request = os.path.join(folder, f"{tag}.json")
    write_json(request, {"pairs": [{"prompt_ids": p, "chosen_ids": c, "rejected_ids": r} for p, c, r in pairs],
                         "max_length": max_length, "pad_id": tiny.PAD})
    output = os.path.join(folder, f"{tag}.safetensors")
    probe("dpo", "--policy", policy_dir, "--reference", reference_dir, "--input", request, "--output", output,
          "--loss", loss, "--beta", repr(beta), "--label-smoothing", repr(epsilon),
          "--learning-rate", repr(LEARNING_RATE), "--weight-decay", repr(WEIGHT_DECAY))
    return load_file(output)


def trl_adamw(trainer, model):
    """The optimizer DPOTrainer.train() builds for `model` (Trainer.create_optimizer: TRL's decay grouping)."""
    trainer.optimizer = None  # create_optimizer builds a new one only when none is set
    optimizer = trainer.create_optimizer(model)
    assert isinstance(optimizer, torch.optim.AdamW), type(optimizer)
    return optimizer


def adam_bound(trl_grad, can_grad):
    """Per entry: how far Adam's first step from TRL's gradient can be from the one from CAN's (see TOLERANCES)."""
    difference = (can_grad - trl_grad).abs()
    slack = (trl_grad.abs() - difference).clamp(min=0)
    return LEARNING_RATE * torch.clamp(difference * ADAM_EPS / (slack + ADAM_EPS) ** 2, max=2.0)


def compare_case(checks, folder, label, policy_dir, reference_dir, loss, beta, epsilon, max_length):
    trainer = make_trainer(folder, policy_dir, reference_dir, trl_loss_config(loss, beta, epsilon), beta, max_length)
    batch, trl_loss, trl_metrics, trl_grads = trl_step(trainer)
    summary = check_formula_and_fixture(checks, label, trainer, batch, trl_loss, loss, beta, epsilon)
    can = run_can(folder, label, policy_dir, reference_dir, loss, beta, epsilon, max_length)
    print(f"{label}: TRL loss {trl_loss:.6g}, CAN loss {float(can['loss']):.6g}; {summary}")

    checks.equal(f"{label}: input_ids", can["input_ids"].tolist(), batch["input_ids"].tolist())
    checks.equal(f"{label}: attention_mask", can["attention_mask"].tolist(), batch["attention_mask"].tolist())
    checks.equal(f"{label}: response_mask = TRL's completion_mask", can["response_mask"].tolist(),
                 batch["completion_mask"].tolist())
    checks.close(f"{label}: loss", can["loss"], trl_loss, LOSS_RTOL * max(1.0, abs(trl_loss)), why="float32")
    for name in METRICS:
        tolerance = LOGPS_ATOL if name.startswith("logps") else REWARDS_ATOL
        if name == "rewards/accuracies":
            tolerance = 0.0
        checks.close(f"{label}: {name}", can[f"metric.{name}"], trl_metrics[name], tolerance,
                     why=f"TRL logs {trl_metrics[name]:.6g}")

    worst = 0.0
    for name, expected in trl_grads.items():
        key = f"grad.{name}"
        if not checks.check(f"{label}: {key} present", key in can, "missing from CAN's output"):
            continue
        largest = float(expected.abs().max())
        worst = max(worst, float((can[key] - expected).abs().max()) / largest)
        checks.close(f"{label}: {key}", can[key], expected, GRAD_RTOL_OF_MAX * largest,
                     why=f"{GRAD_RTOL_OF_MAX:g}·max|g| = {GRAD_RTOL_OF_MAX * largest:.2g}")
    extra = sorted(k for k in can if k.startswith("grad.") and k[len("grad."):] not in trl_grads)
    checks.check(f"{label}: no gradients beyond the model's parameters", not extra, str(extra))
    print(f"  {label}: worst gradient difference {worst:.2g} of the tensor's max |g|")
    compare_adamw(checks, label, trainer, policy_dir, can, trl_grads)


def compare_adamw(checks, label, trainer, policy_dir, can, trl_grads):
    """CAN's updated.* against TRL's AdamW stepped with CAN's gradients, then with TRL's."""
    with_can_grads = load(policy_dir)
    for name, parameter in with_can_grads.named_parameters():
        parameter.grad = can[f"grad.{name}"].clone()
    trl_adamw(trainer, with_can_grads).step()
    loose = 0
    for name, parameter in with_can_grads.named_parameters():
        key = f"updated.{name}"
        if not checks.check(f"{label}: {key} present", key in can, "missing from CAN's output"):
            continue
        checks.close(f"{label}: {key} = torch AdamW on CAN's gradients", can[key], parameter.detach(),
                     UPDATE_ATOL, UPDATE_RTOL, why="rounding")
    trl_adamw(trainer, trainer.model).step()  # TRL's own gradients, still on its parameters
    for name, parameter in trainer.model.named_parameters():
        key = f"updated.{name}"
        if key not in can:
            continue
        bound = adam_bound(trl_grads[name], can[f"grad.{name}"])
        loose += int((bound > LEARNING_RATE * 1e-3).sum())
        tolerance = bound + UPDATE_ATOL + UPDATE_RTOL * parameter.detach().abs()
        excess = float(((can[key] - parameter.detach()).abs() - tolerance).max())
        checks.check(f"{label}: {key} = TRL's AdamW step on TRL's gradients", excess <= 0,
                     f"exceeds the bound by {excess:.3g}")
    print(f"  {label}: AdamW on TRL's gradients: {loose} entries with |g| near the gradient difference "
          f"(bound > 1e-3·lr)")


def check_decay_groups(checks, trainer):
    """TRL's weight-decay group equals CAN's rule; decaying an exempt tensor would move it past the tolerance."""
    model = trainer.model
    decayed = set(trainer.get_decay_parameter_names(model))

    def can_exempt(name, parameter):  # include/can/optimizer.h exempt_from_weight_decay
        module = name.rsplit(".", 2)[-2]  # "input_layernorm" in "model.layers.0.input_layernorm.weight"
        return parameter.dim() < 2 or name.endswith("bias") or "norm" in module

    can_decayed = {name for name, parameter in model.named_parameters() if not can_exempt(name, parameter)}
    checks.equal("TRL's weight-decay group = CAN's rule (1-d, bias, norm exempt)", sorted(decayed),
                 sorted(can_decayed))
    exempt = [(name, p) for name, p in model.named_parameters() if name not in decayed]
    checks.check("some parameters are exempt from decay (norm weights)", bool(exempt))
    # The optimizer DPOTrainer builds from that grouping, with the hyperparameters CAN is given.
    names = {id(p): name for name, p in model.named_parameters()}
    groups = [(sorted(names[id(p)] for p in group["params"]), group["weight_decay"], group["lr"], group["betas"],
               group["eps"]) for group in trl_adamw(trainer, model).param_groups]
    checks.equal("TRL's AdamW groups: (decayed, wd), (exempt, 0) with lr, betas, eps", groups, [
        (sorted(decayed), WEIGHT_DECAY, LEARNING_RATE, (0.9, 0.999), ADAM_EPS),
        (sorted(name for name, _ in exempt), 0.0, LEARNING_RATE, (0.9, 0.999), ADAM_EPS)])
    # Decaying an exempt tensor would shift it by lr·wd·|p|: must exceed the update tolerance.
    smallest = min(float((LEARNING_RATE * WEIGHT_DECAY * p.detach().abs()).max()) for _, p in exempt)
    rounding = max(UPDATE_ATOL + UPDATE_RTOL * float(p.detach().abs().max()) for _, p in exempt)
    print(f"  decay of an exempt tensor would move it by >= {smallest:.3g} (update tolerance <= {rounding:.3g})")
    checks.check("a wrongly decayed norm weight is caught", smallest > DISCRIMINATION * rounding,
                 f"{smallest:.3g} vs {rounding:.3g}")


def check_trl_sigmoid_ignores_label_smoothing(checks, folder, policy_dir, reference_dir):
    """TRL's "sigmoid" with label_smoothing 0.1 computes the same loss as with 0: why cDPO needs "robust".
    Returns one of the two trainers."""
    losses = {}
    for epsilon in (0.0, 0.1):
        config = {"loss_type": ["sigmoid"], "loss_weights": None, "label_smoothing": epsilon}
        trainer = make_trainer(folder, policy_dir, reference_dir, config, 0.3, NO_TRUNCATION)
        with torch.no_grad():
            losses[epsilon] = float(trainer.compute_loss(trainer.model, trainer.data_collator(examples())))
    print(f"TRL sigmoid β=0.3: loss {losses[0.0]:.6g} with label_smoothing 0, {losses[0.1]:.6g} with 0.1")
    checks.equal("TRL's sigmoid ignores label_smoothing", losses[0.1], losses[0.0])
    return trainer


def show_long_prompt(checks, folder, policy_dir, reference_dir):
    """A prompt longer than max_length: CAN keeps BOS + prompt tail + first response token (checked); TRL's
    collator keeps the prompt's first max_length tokens and no completion token (shown; TRL's dataset preparation
    drops such examples)."""
    prompt, chosen, rejected = PAIRS[1]
    max_length = LONG_PROMPT_MAX_LENGTH
    can = run_can(folder, "long prompt", policy_dir, reference_dir, "sigmoid", 0.1, 0.0, max_length,
                  pairs=[PAIRS[1]])
    expected = [[prompt[0]] + prompt[-(max_length - 2):] + [response[0]] for response in (chosen, rejected)]
    collator = trl.trainer.dpo_trainer.DataCollatorForPreference(pad_token_id=tiny.PAD, max_length=max_length)
    trl_batch = collator(examples()[1:2])
    print(f"long prompt ({len(prompt)} tokens, max_length {max_length}): CAN rows {can['input_ids'].tolist()} "
          f"response tokens {can['response_mask'].sum(-1).tolist()}; TRL's collator rows "
          f"{trl_batch['input_ids'].tolist()} completion tokens {trl_batch['completion_mask'].sum(-1).tolist()}")
    checks.equal("long prompt: CAN keeps BOS + prompt tail + first response token", can["input_ids"].tolist(),
                 expected)
    checks.equal("long prompt: CAN scores that one response token", can["response_mask"].sum(-1).tolist(), [1, 1])


def train_sentencepiece(folder):
    """A Llama-style BPE tokenizer.model (dummy prefix, byte fallback; unk 0, bos 1, eos 2, pad 3), trained on
    chat-templated lines, in a folder that transformers' AutoTokenizer loads as a LlamaTokenizer."""
    rng = random.Random(3)
    words = ("sure here is a simple recipe for bread you can bake it at home with flour water salt and yeast "
             "sorry i cannot help with that because it is not safe how do what why tell me please").split()
    lines = []
    for _ in range(2000):
        prompt = " ".join(rng.choice(words) for _ in range(rng.randint(3, 10))).capitalize() + "?"
        response = " ".join(rng.choice(words) for _ in range(rng.randint(3, 15))) + "."
        response = rng.choice(["Sure, ", "Sorry, ", "Yes. "]) + response
        lines.append(CHAT_TEMPLATE.format(prompt=prompt) + " " + response)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type="bpe", vocab_size=600, unk_id=0,
        bos_id=tiny.BOS, eos_id=tiny.EOS, pad_id=3, byte_fallback=True, character_coverage=1.0,
        normalization_rule_name="identity", add_dummy_prefix=True, remove_extra_whitespaces=False,
        num_threads=1, minloglevel=2)
    directory = os.path.join(folder, "llama_tokenizer")
    os.makedirs(directory)
    with open(os.path.join(directory, "tokenizer.model"), "wb") as out:
        out.write(model.getvalue())
    write_json(os.path.join(directory, "tokenizer_config.json"),
               {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
                "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"})
    return directory


def show_tokenization(checks, folder, policy_dir, reference_dir):
    """TRL tokenizes prompt and prompt + completion jointly and splits; CAN encodes the templated prompt (with BOS)
    and the response (no BOS, then EOS) apart. With the completion written as " " + response they agree (checked);
    the two other ways of writing the same text are shown."""
    tokenizer_dir = train_sentencepiece(folder)
    llama = AutoTokenizer.from_pretrained(tokenizer_dir)
    templated = CHAT_TEMPLATE.format(prompt=TEXT_PROMPT)
    forms = {"completion ' ' + response": (templated, " " + TEXT_RESPONSE),
             "completion without the space": (templated, TEXT_RESPONSE),
             "prompt ending in the space": (templated + " ", TEXT_RESPONSE)}
    # TRL's own dataset preparation (EOS text appended, joint tokenization, split) on the three forms.
    dataset = datasets.Dataset.from_list([{"prompt": p, "chosen": c, "rejected": c} for p, c in forms.values()])
    print("tokenization: TRL prepares three forms of one example (its 'Mismatch' warnings are for the third)")
    args = DPOConfig(output_dir=os.path.join(folder, "trl_tokenization"), report_to="none", use_cpu=True,
                     bf16=False, gradient_checkpointing=False)
    prepared = DPOTrainer(model=load(policy_dir), ref_model=load(reference_dir), args=args, train_dataset=dataset,
                          processing_class=llama).train_dataset

    request, response = os.path.join(folder, "texts.json"), os.path.join(folder, "tokens.json")
    write_json(request, {"texts": [templated, TEXT_RESPONSE]})
    probe("tokenize", "--tokenizer", os.path.join(tokenizer_dir, "tokenizer.model"), "--input", request,
          "--output", response)
    prompt_ids, response_ids = read_json(response)["ids"]  # each with BOS first
    can_prompt, can_response = prompt_ids, response_ids[1:] + [tiny.EOS]  # src/data/tokenize_sequence.cpp

    def pieces(ids):
        return [llama.convert_ids_to_tokens(i) for i in ids]

    print(f"tokenization: CAN: prompt ...{pieces(can_prompt[-2:])} | response {pieces(can_response[:3])}...")
    for (name, _), row in zip(forms.items(), prepared):
        same_sequence = row["prompt_ids"] + row["chosen_ids"] == can_prompt + can_response
        same_split = same_sequence and row["prompt_ids"] == can_prompt
        print(f"  TRL, {name}: prompt ...{pieces(row['prompt_ids'][-2:])} | completion "
              f"{pieces(row['chosen_ids'][:3])}... (CAN's sequence: {same_sequence}, CAN's split: {same_split})")
    first = prepared[0]
    checks.equal("tokenization: TRL with completion ' ' + response = CAN's prompt and response ids",
                 (first["prompt_ids"], first["chosen_ids"]), (can_prompt, can_response))


def save_models(folder):
    """Policy and reference (policy perturbed), saved by transformers; returns their directories."""
    config = tiny.llama_config(heads=4, kv_heads=2, tied=False, rope_theta=1e4, vocab=VOCAB)
    policy = tiny.random_llama(config, seed=21)
    policy_dir = os.path.join(folder, "policy")
    policy.save_pretrained(policy_dir)
    generator = torch.Generator().manual_seed(22)
    with torch.no_grad():
        for parameter in policy.parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            parameter.add_(PERTURBATION * parameter.std() * noise)
    reference_dir = os.path.join(folder, "reference")
    policy.save_pretrained(reference_dir)
    return policy_dir, reference_dir


def main():
    start = time.monotonic()
    tiny.quiet()
    datasets.disable_progress_bars()
    checks = Checks("dpo_vs_trl")
    with temporary_folder("dpo_vs_trl") as folder:
        policy_dir, reference_dir = save_models(folder)
        trainer = check_trl_sigmoid_ignores_label_smoothing(checks, folder, policy_dir, reference_dir)
        check_decay_groups(checks, trainer)
        for label, loss, beta, epsilon, max_length in CASES:
            compare_case(checks, folder, label, policy_dir, reference_dir, loss, beta, epsilon, max_length)
        show_long_prompt(checks, folder, policy_dir, reference_dir)
        show_tokenization(checks, folder, policy_dir, reference_dir)
    status = checks.report()
    print(f"({time.monotonic() - start:.1f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
