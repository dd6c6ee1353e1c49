"""PyTorch + transformers twin of `bench_gpu dpo`: the same DPO update, timed the same way.

One update: forward and backward of a LlamaForCausalLM (random init from a LlamaConfig, sdpa
attention) on chosen and rejected rows together, float32 master weights under
torch.autocast(bf16), sequence log-prob sums over response tokens in float32, sigmoid DPO loss
(beta 0.1) against reference log-probs computed once before the timed loop, global-norm
clipping at 1, AdamW (lr 1e-5, betas 0.9/0.999, eps 1e-8, no weight decay; fused=True on CUDA,
what a PyTorch user would pick). Prints one JSON object.

    python3 bench/gpu/dpo_step.py [--shape 1b] [--batch 8] [--seq 512] [--steps 20] [--warmup 5]
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

from common import SHAPES, llama_config_kwargs, model_flops_per_token


def parse_arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="1b", choices=sorted(SHAPES))
    parser.add_argument("--batch", type=int, default=8, help="pairs per step")
    parser.add_argument("--seq", type=int, default=512, help="tokens per sequence, half prompt, half response")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "float32"], help="autocast dtype")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def random_pair_batch(pairs, seq, vocab, device):
    """2*pairs rows (chosen, then rejected) of random ids, BOS first, no padding; positions
    from seq // 2 on are the response."""
    input_ids = torch.randint(3, vocab, (2 * pairs, seq), device=device)  # [2B, T]
    input_ids[:, 0] = 1
    attention_mask = torch.ones_like(input_ids)
    response_mask = (torch.arange(seq, device=device) >= seq // 2).long().expand(2 * pairs, seq)
    return input_ids, attention_mask, response_mask


def sequence_logps(logits, input_ids, response_mask):
    """[R] float32: sum over response positions t of log p(input_ids[:, t] | input_ids[:, :t])."""
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # [R, T-1, V], position t-1 predicts t
    token_logps = logps.gather(-1, input_ids[:, 1:, None]).squeeze(-1)  # [R, T-1]
    return (token_logps * response_mask[:, 1:]).sum(-1)


def main():
    args = parse_arguments()
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True  # as CAN's select_device does on CUDA
    config = LlamaConfig(**llama_config_kwargs(args.shape), attn_implementation="sdpa")
    with device:
        model = LlamaForCausalLM(config)  # float32 master weights
    parameters = sum(p.numel() for p in model.parameters())
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")
    batches = [random_pair_batch(args.batch, args.seq, config.vocab_size, device) for _ in range(2)]

    def policy_logps(batch):
        input_ids, attention_mask, response_mask = batch
        with autocast:
            logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        return sequence_logps(logits, input_ids, response_mask)

    model.eval()
    with torch.no_grad():
        reference = [policy_logps(batch) for batch in batches]
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                                  fused=device.type == "cuda")

    def step(index):
        batch, reference_logps = batches[index % 2], reference[index % 2]
        optimizer.zero_grad(set_to_none=True)
        chosen, rejected = policy_logps(batch).chunk(2)
        reference_chosen, reference_rejected = reference_logps.chunk(2)
        margin = (chosen - reference_chosen) - (rejected - reference_rejected)
        loss = -F.logsigmoid(0.1 * margin).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.detach()

    for i in range(args.warmup):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    loss = None
    for i in range(args.steps):
        loss = step(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    tokens_per_step = 2 * args.batch * args.seq
    print(json.dumps({
        "case": "dpo_step",
        "shape": dict(SHAPES[args.shape], name=args.shape, parameters=parameters),
        "dtype": args.dtype,
        "precision": ("float32 master weights, torch.autocast bf16" if args.dtype == "bf16"
                      else "float32 (TF32 matmuls on CUDA)"),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "optimizer": "torch.optim.AdamW fused" if device.type == "cuda" else "torch.optim.AdamW",
        "batch": args.batch,
        "rows": 2 * args.batch,
        "seq": args.seq,
        "tokens_per_step": tokens_per_step,
        "steps": args.steps,
        "warmup_steps": args.warmup,
        "seconds": seconds,
        "tokens_per_second": args.steps * tokens_per_step / seconds,
        "final_loss": None if loss is None else loss.item(),
        "model_flops_per_token": model_flops_per_token(args.shape, parameters, args.seq),
        "peak_allocated_gb": torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
    }))


if __name__ == "__main__":
    main()
