"""What bench_gpu.cpp and its PyTorch twins share: the model shapes, the model-FLOPs
formula and the peak bf16 throughput of known GPUs. Standard library only, so the
merge step (merge_results.py) runs without torch."""

SHAPES = {
    # Every shape: rope_theta 1e4, rms_norm_eps 1e-6, untied lm_head (CAN's LlamaConfig defaults).
    "tiny": dict(hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512),
    # 1.10B parameters: Llama-3.2-1B's body with Llama-2's vocabulary.
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=32000),
    # Llama-2-7B, 6.74B parameters.
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32, vocab_size=32000),
}

FLOPS_FORMULA = ("model FLOPs per trained token = 6*N + 12*layers*hidden*seq (PaLM, appendix B): N counts "
                 "every parameter but the input embedding table (a lookup; lm_head counts), the second term "
                 "is attention's scores and weighted values, causal masking not discounted; "
                 "MFU = tokens/s * that / the device's peak dense bf16 FLOP/s")


def llama_config_kwargs(shape):
    """transformers.LlamaConfig arguments for a SHAPES entry, matching CAN's defaults (rope_theta
    1e4, SiLU and no biases are LlamaConfig's defaults too; rope_theta is left out because
    transformers 5 moved it into rope_parameters)."""
    return dict(SHAPES[shape], max_position_embeddings=2048, rms_norm_eps=1e-6, tie_word_embeddings=False,
                bos_token_id=1, eos_token_id=2)


def model_flops_per_token(shape, parameters, seq):
    config = SHAPES[shape]
    matmul_parameters = parameters - config["vocab_size"] * config["hidden_size"]
    return 6.0 * matmul_parameters + 12.0 * config["num_hidden_layers"] * config["hidden_size"] * seq


# Peak dense (no sparsity) bf16 tensor-core FLOP/s from NVIDIA's datasheets (half
# the "with sparsity" figure), matched against the name nvidia-smi and
# torch.cuda.get_device_name report; the first entry whose every word occurs wins.
PEAK_BF16_FLOPS = [
    (("H100", "PCIe"), 756e12),
    (("H100", "NVL"), 835e12),
    (("H100",), 989e12),  # SXM5: "NVIDIA H100 80GB HBM3"
    (("H200", "NVL"), 835e12),
    (("H200",), 989e12),  # SXM ("NVIDIA H200"); GH200 has the same figure
    (("A100",), 312e12),
]


def peak_bf16_flops(device_name):
    """Peak dense bf16 FLOP/s of the named GPU, or None when it is not in the table."""
    for words, flops in PEAK_BF16_FLOPS:
        if all(word in device_name for word in words):
            return flops
    return None
