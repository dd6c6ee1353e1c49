"""Tiny random Llama causal LMs made by transformers itself, for the reference tests.

The models are LlamaForCausalLM instances built from a LlamaConfig and saved by
the caller with save_pretrained, so every file CAN reads is written by
transformers. Their weights are scaled up from transformers' default
initialisation (initializer_range 0.2 instead of 0.02, RMSNorm weights drawn
from U(0.5, 1.5) instead of ones): logits are then of order 1 (standard
deviation ~1.6), so a tolerance of 1e-4 on them is meaningful, greedy choices are
not near-ties, and a norm weight that is not applied changes the outputs.

Callers import torch and transformers through can_reference.require() first.
"""
import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

BOS, EOS, PAD = 1, 2, 0


def quiet():
    """No progress bars or advisory warnings from transformers in the test's output."""
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def llama_config(*, heads, kv_heads, tied, rope_theta, vocab=256, hidden=64, intermediate=96, layers=3,
                 eos=EOS):
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tied,
        initializer_range=0.2,
        bos_token_id=BOS,
        eos_token_id=eos,
        pad_token_id=PAD,
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
        # transformers 5 takes rope_theta inside rope_parameters.
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
        # The plain softmax(QKᵀ)V of transformers, not a fused kernel: the reference side.
        attn_implementation="eager",
    )
    assert config.rope_parameters["rope_theta"] == rope_theta, config.rope_parameters
    return config


def random_llama(config, seed):
    """LlamaForCausalLM with transformers' own initialisation under `seed`, norms randomised, in eval mode."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.uniform_(0.5, 1.5)
    return model


def position_ids(mask):
    """Positions over real tokens only (cumsum(mask) - 1): generate()'s rule, and CAN's for either padding side."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def logits_of(model, ids, mask):
    """transformers' float32 logits [B, T, V] for a padded batch (either side)."""
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).logits.float()


def response_logprobs(logits, ids, response_mask):
    """[B]: sum over t of response_mask[b, t] · log_softmax(logits[b, t-1])[ids[b, t]], in nats."""
    logp = torch.log_softmax(logits.double(), dim=-1)[:, :-1]  # position t-1 predicts token t
    picked = logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return (picked * response_mask[:, 1:]).sum(-1)


def padded(sequences, side):
    """input_ids, attention_mask, response_mask [B, T] of (prompt, response) id lists padded with PAD on `side`."""
    width = max(len(p) + len(r) for p, r in sequences)
    ids = torch.full((len(sequences), width), PAD, dtype=torch.int64)
    mask = torch.zeros_like(ids)
    response = torch.zeros_like(ids)
    for row, (prompt, reply) in enumerate(sequences):
        tokens = prompt + reply
        start = width - len(tokens) if side == "left" else 0
        ids[row, start:start + len(tokens)] = torch.tensor(tokens)
        mask[row, start:start + len(tokens)] = 1
        response[row, start + len(prompt):start + len(tokens)] = 1
    return ids, mask, response
