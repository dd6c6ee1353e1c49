"""transformers twin of `bench_gpu sampling`: batched sampling with generate(), timed the same way.

A LlamaForCausalLM (random init from a LlamaConfig, sdpa attention, weights in --dtype) continues
--batch random prompts of --prompt-length tokens (BOS first, no padding) by exactly --new-tokens
tokens each: do_sample with temperature 1, top_p 0.9, top_k 0 (off), min_new_tokens =
max_new_tokens so that EOS never ends a row, generate's default KV cache. One untimed warm-up
call of 16 tokens, then --steps timed calls. Prints one JSON object.

    python3 bench/gpu/sampling.py [--shape 1b] [--batch 64] [--prompt-length 64] [--new-tokens 256] [--steps 2]
"""
import argparse
import json
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

from common import SHAPES, llama_config_kwargs


def parse_arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="1b", choices=sorted(SHAPES))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--prompt-length", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2, help="timed generate() calls")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "float32"], help="weights' dtype")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main():
    args = parse_arguments()
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True  # as CAN's select_device does on CUDA
    config = LlamaConfig(**llama_config_kwargs(args.shape), attn_implementation="sdpa")
    with device:
        model = LlamaForCausalLM(config)
    model.to({"bf16": torch.bfloat16, "float32": torch.float32}[args.dtype]).eval()
    parameters = sum(p.numel() for p in model.parameters())
    input_ids = torch.randint(3, config.vocab_size, (args.batch, args.prompt_length), device=device)
    input_ids[:, 0] = 1
    attention_mask = torch.ones_like(input_ids)

    def generate(new_tokens):
        output = model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=True,
                                temperature=1.0, top_p=0.9, top_k=0, max_new_tokens=new_tokens,
                                min_new_tokens=new_tokens, pad_token_id=0)
        generated = output.shape[1] - args.prompt_length
        assert generated == new_tokens, f"generate() made {generated} tokens per row, expected {new_tokens}"
        return output.shape[0] * generated

    generate(min(16, args.new_tokens))  # warm-up: kernels, allocator, cuBLAS handles
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    tokens = sum(generate(args.new_tokens) for _ in range(args.steps))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    print(json.dumps({
        "case": "sampling",
        "shape": dict(SHAPES[args.shape], name=args.shape, parameters=parameters),
        "dtype": args.dtype,
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "batch": args.batch,
        "prompt_length": args.prompt_length,
        "new_tokens": args.new_tokens,
        "temperature": 1.0,
        "top_p": 0.9,
        "top_k": 0,
        "runs": args.steps,
        "seconds": seconds,
        "tokens_per_second": tokens / seconds,
        "peak_allocated_gb": torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
    }))


if __name__ == "__main__":
    main()
