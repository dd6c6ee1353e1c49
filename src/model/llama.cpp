// The Llama causal LM: RMSNorm, rotary embeddings (Hugging Face's rotate-half
// convention), grouped-query attention with an optional KV cache, SwiGLU MLP.
// Shapes as in llama.h: B batch, T new positions, S key positions, H hidden,
// Q query heads, K key/value heads, D head dim, V vocabulary.
#include "can/llama.h"

#include <torch/torch.h>

#include <cmath>

#include "can/compute_counts.h"
#include "can/error.h"
#include "model/activation_checkpointing.h"

namespace can {

namespace {

// [..., D] -> [..., D]: (x1, x2) -> (-x2, x1) on the two halves.
torch::Tensor rotate_half(const torch::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return torch::cat({-x.slice(-1, half), x.slice(-1, 0, half)}, -1);
}

// x [B, heads, T, D]; cos, sin [B, T, D] -> [B, heads, T, D].
torch::Tensor apply_rotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  return x * cos.unsqueeze(1) + rotate_half(x) * sin.unsqueeze(1);
}

// query [B, Q, T, D]; key, value [B, K, S, D]; allowed [B, 1, T, S] bool or
// undefined (causal, T == S) -> [B, Q, T, D].
torch::Tensor fused_attention(const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
                              const torch::Tensor& allowed) {
  const bool grouped = query.size(1) != key.size(1);  // the memory-efficient kernel takes no GQA: ask only when needed
  // No mask: on a GPU the flash kernel qualifies (bf16/fp16; GQA included), or the
  // memory-efficient one when there is no GQA; float32 takes the math kernel. SDPA's causal mask
  // is aligned to the top-left corner, right only when queries and keys start
  // at the same slot, which LlamaModel guarantees for this case.
  const auto mask = allowed.defined() ? std::optional<torch::Tensor>(allowed) : std::nullopt;
  return at::scaled_dot_product_attention(query, key, value, mask, /*dropout_p=*/0.0,
                                          /*is_causal=*/!allowed.defined(), /*scale=*/std::nullopt, grouped);
}

// The reference: same contract as fused_attention, written out. Scores and
// softmax in float32; a masked score is the lowest finite float, not -inf.
torch::Tensor reference_attention(const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
                                  const torch::Tensor& allowed) {
  const int64_t group = query.size(1) / key.size(1);  // query heads sharing one key/value head
  const torch::Tensor keys = key.repeat_interleave(group, /*dim=*/1);      // [B, Q, S, D]
  const torch::Tensor values = value.repeat_interleave(group, /*dim=*/1);  // [B, Q, S, D]
  const int64_t steps = query.size(2), key_count = key.size(2);
  torch::Tensor mask = allowed;
  if (!mask.defined()) {
    mask = torch::ones({steps, key_count}, torch::TensorOptions(query.device()).dtype(torch::kBool)).tril();  // [T, S]
  }
  torch::Tensor scores = torch::matmul(query.to(torch::kFloat32), keys.to(torch::kFloat32).transpose(-2, -1)) /
                         std::sqrt(static_cast<double>(query.size(-1)));  // [B, Q, T, S]
  scores = scores.masked_fill(mask.logical_not(), std::numeric_limits<float>::lowest());
  const torch::Tensor weights = torch::softmax(scores, -1).to(values.scalar_type());
  return torch::matmul(weights, values);  // [B, Q, T, D]
}

// Rows of x [B, T, X] at slots [B, N] int64 -> [B, N, X].
torch::Tensor at_slots(const torch::Tensor& x, const torch::Tensor& slots) {
  return torch::take_along_dim(x, slots.unsqueeze(-1), /*dim=*/1);
}

// Which keys each query may see: query slot q sees key slot j when j <= q and key j is
// real, and always its own slot, so that a padding query (which no real token ever
// reads) sees one key instead of none: a query with no allowed key gets NaN from some
// kernels, and NaN at a padding slot leaks into real tokens through 0 * NaN in later
// layers. query_slots [B or 1, N], key_mask [B, S] bool -> [B, 1, N, S].
torch::Tensor visible_keys(const torch::Tensor& query_slots, const torch::Tensor& key_mask) {
  const torch::Tensor key_slots = torch::arange(key_mask.size(1), query_slots.options()).view({1, 1, -1});  // [1, 1, S]
  const torch::Tensor query = query_slots.unsqueeze(-1);                                                     // [B, N, 1]
  return (((key_slots <= query) & key_mask.unsqueeze(1)) | (key_slots == query)).unsqueeze(1);
}

}  // namespace

bool padding_before_real_token(const torch::Tensor& attention_mask) {
  if (attention_mask.size(1) < 2) return false;
  const torch::Tensor real = attention_mask.to(torch::kBool);                      // [B, S]
  return (real.slice(1, 1) & real.slice(1, 0, -1).logical_not()).any().item<bool>();  // a 0 then a 1
}

// ----------------------------------------------------------------------------- KV cache

KVCache::KVCache(const LlamaConfig& config, int64_t batch, int64_t capacity, torch::TensorOptions options) {
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    keys.push_back(torch::zeros({batch, config.num_key_value_heads, capacity, config.head_dim()}, options));
    values.push_back(torch::zeros({batch, config.num_key_value_heads, capacity, config.head_dim()}, options));
  }
}

int64_t KVCache::capacity() const { return keys.empty() ? 0 : keys.front().size(2); }

void KVCache::select_rows(const torch::Tensor& rows) {
  for (auto& key : keys) key = key.index_select(0, rows);
  for (auto& value : values) value = value.index_select(0, rows);
}

// ----------------------------------------------------------------------------- modules

RMSNormImpl::RMSNormImpl(int64_t dim, double eps_) : eps(eps_) {
  weight = register_parameter("weight", torch::ones({dim}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  // Normalised in float32 whatever the compute dtype, as Hugging Face does.
  const torch::Tensor x32 = x.to(torch::kFloat32);
  const torch::Tensor normed = x32 * torch::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * normed.to(x.scalar_type());
}

torch::Tensor rotary_inverse_frequencies(const LlamaConfig& config) {
  // Hugging Face: inv_freq = 1 / theta^(2i/D), computed in float32.
  const int64_t dim = config.head_dim();
  const torch::Tensor inv_freq =
      1.0 / torch::pow(config.rope_theta, torch::arange(0, dim, 2, torch::kInt64).to(torch::kFloat32) / dim);
  if (!config.rope_scaling) return inv_freq;  // [D/2]
  // Llama 3: long wavelengths (low frequencies) divided by `factor`, short ones kept, the band between
  // interpolated linearly in original_max_position_embeddings / wavelength.
  const Llama3RopeScaling& scaling = *config.rope_scaling;
  const double context = static_cast<double>(scaling.original_max_position_embeddings);
  const double low_freq_wavelength = context / scaling.low_freq_factor;
  const double high_freq_wavelength = context / scaling.high_freq_factor;
  const torch::Tensor wavelength = 2 * M_PI / inv_freq;
  const torch::Tensor stretched = torch::where(wavelength > low_freq_wavelength, inv_freq / scaling.factor, inv_freq);
  const torch::Tensor smooth =
      (context / wavelength - scaling.low_freq_factor) / (scaling.high_freq_factor - scaling.low_freq_factor);
  const torch::Tensor interpolated = (1 - smooth) * stretched / scaling.factor + smooth * stretched;
  const torch::Tensor medium = (wavelength >= high_freq_wavelength) & (wavelength <= low_freq_wavelength);
  return torch::where(medium, interpolated, stretched);  // [D/2] float32
}

LlamaAttentionImpl::LlamaAttentionImpl(const LlamaConfig& config)
    : num_heads(config.num_attention_heads),
      num_key_value_heads(config.num_key_value_heads),
      head_dim(config.head_dim()) {
  const int64_t hidden = config.hidden_size;
  q_proj = register_module("q_proj", Linear(hidden, num_heads * head_dim, config.qkv_bias));
  k_proj = register_module("k_proj", Linear(hidden, num_key_value_heads * head_dim, config.qkv_bias));
  v_proj = register_module("v_proj", Linear(hidden, num_key_value_heads * head_dim, config.qkv_bias));
  o_proj = register_module("o_proj", Linear(num_heads * head_dim, hidden, config.o_bias));
}

torch::Tensor LlamaAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                                          const torch::Tensor& allowed, KVCache* cache, int64_t layer,
                                          const torch::Tensor& query_slots) {
  const int64_t batch = x.size(0), steps = x.size(1);
  const int64_t queries = query_slots.defined() ? query_slots.size(1) : steps;
  auto heads = [&](const torch::Tensor& projected, int64_t count) {  // [B, N, count*D] -> [B, count, N, D]
    return projected.view({batch, projected.size(1), count, head_dim}).transpose(1, 2);
  };
  torch::Tensor query;  // [B, Q, N, D]
  if (query_slots.defined()) {
    query = apply_rotary(heads(q_proj(at_slots(x, query_slots)), num_heads), at_slots(cos, query_slots),
                         at_slots(sin, query_slots));
  } else {
    query = apply_rotary(heads(q_proj(x), num_heads), cos, sin);
  }
  torch::Tensor key = apply_rotary(heads(k_proj(x), num_key_value_heads), cos, sin);  // [B, K, T, D]
  torch::Tensor value = heads(v_proj(x), num_key_value_heads);                        // [B, K, T, D]
  if (cache != nullptr) {
    const int64_t begin = cache->length, end = cache->length + steps;
    check(end <= cache->capacity(), "KV cache overflow: {} positions needed, capacity {}", end, cache->capacity());
    cache->keys[layer].slice(2, begin, end).copy_(key);
    cache->values[layer].slice(2, begin, end).copy_(value);
    key = cache->keys[layer].slice(2, 0, end);      // [B, K, S, D]
    value = cache->values[layer].slice(2, 0, end);  // [B, K, S, D]
  }
  check(allowed.defined() || (key.size(2) == steps && !query_slots.defined()),
        "attention without a mask must be plain causal over its own {} positions, but sees {} keys", steps,
        key.size(2));
  const torch::Tensor attended = kernel == AttentionKernel::Fused ? fused_attention(query, key, value, allowed)
                                                                  : reference_attention(query, key, value, allowed);
  return o_proj(attended.transpose(1, 2).reshape({batch, queries, num_heads * head_dim}));  // [B, N, H]
}

LlamaMLPImpl::LlamaMLPImpl(const LlamaConfig& config) {
  gate_proj = register_module("gate_proj", Linear(config.hidden_size, config.intermediate_size));
  up_proj = register_module("up_proj", Linear(config.hidden_size, config.intermediate_size));
  down_proj = register_module("down_proj", Linear(config.intermediate_size, config.hidden_size));
}

torch::Tensor LlamaMLPImpl::forward(const torch::Tensor& x) {
  return down_proj(torch::silu(gate_proj(x)) * up_proj(x));
}

LlamaDecoderLayerImpl::LlamaDecoderLayerImpl(const LlamaConfig& config) {
  input_layernorm = register_module("input_layernorm", RMSNorm(config.hidden_size, config.rms_norm_eps));
  self_attn = register_module("self_attn", LlamaAttention(config));
  post_attention_layernorm =
      register_module("post_attention_layernorm", RMSNorm(config.hidden_size, config.rms_norm_eps));
  mlp = register_module("mlp", LlamaMLP(config));
}

torch::Tensor LlamaDecoderLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                             const torch::Tensor& sin, const torch::Tensor& allowed, KVCache* cache,
                                             int64_t layer, const torch::Tensor& query_slots) {
  const torch::Tensor residual = query_slots.defined() ? at_slots(x, query_slots) : x;  // [B, N, H]
  const torch::Tensor h = residual + self_attn(input_layernorm(x), cos, sin, allowed, cache, layer, query_slots);
  return h + mlp(post_attention_layernorm(h));
}

LlamaModelImpl::LlamaModelImpl(const LlamaConfig& config_) : config(config_) {
  embed_tokens = register_module("embed_tokens", torch::nn::Embedding(config.vocab_size, config.hidden_size));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) layers->push_back(LlamaDecoderLayer(config));
  norm = register_module("norm", RMSNorm(config.hidden_size, config.rms_norm_eps));
  inv_freq = rotary_inverse_frequencies(config);
}

torch::Tensor LlamaModelImpl::forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                      KVCache* cache) {
  return run(input_ids, attention_mask, cache, /*slots=*/{});
}

torch::Tensor LlamaModelImpl::forward_at(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                         const torch::Tensor& slots) {
  check(slots.dim() == 2 && slots.size(0) == input_ids.size(0) && slots.scalar_type() == torch::kInt64,
        "slots must be [batch {}, N] int64, got {} {}", input_ids.size(0), c10::str(slots.sizes()),
        c10::toString(slots.scalar_type()));
  check(!((slots < 0) | (slots >= input_ids.size(1))).any().item<bool>(), "slots must lie in [0, {}), got {}",
        input_ids.size(1), c10::str(slots));
  return run(input_ids, attention_mask, /*cache=*/nullptr, slots);
}

torch::Tensor LlamaModelImpl::run(const torch::Tensor& input_ids, const torch::Tensor& attention_mask, KVCache* cache,
                                  const torch::Tensor& slots) {
  const int64_t steps = input_ids.size(1);
  count_forward_tokens(input_ids.numel(), torch::GradMode::is_enabled());
  const int64_t past = cache != nullptr ? cache->length : 0;
  const int64_t keys = past + steps;
  check(attention_mask.dim() == 2 && attention_mask.size(0) == input_ids.size(0) && attention_mask.size(1) == keys,
        "attention_mask has shape {} but [batch {}, past {} + new {}] was expected", c10::str(attention_mask.sizes()),
        input_ids.size(0), past, steps);
  // RoPE computes any position, but the model never saw one past its limit: refuse
  // rather than score or continue such text with made-up positions.
  check(keys <= config.max_position_embeddings,
        "{} tokens (past {} + new {}) exceed the model's max_position_embeddings {}; shorten the input", keys, past,
        steps, config.max_position_embeddings);
  const torch::Device device = input_ids.device();
  const torch::Tensor key_mask = attention_mask.to(device, torch::kBool);  // [B, S]

  // Positions count the real tokens before each slot (Hugging Face's cumsum - 1).
  const torch::Tensor positions =
      (key_mask.to(torch::kInt64).cumsum(1) - 1).clamp_min(0).slice(1, past, keys);  // [B, T]
  const torch::Tensor angles = positions.unsqueeze(-1).to(torch::kFloat32) * inv_freq.to(device);  // [B, T, D/2]
  const torch::Tensor embedded_angles = torch::cat({angles, angles}, -1);                         // [B, T, D]
  torch::Tensor hidden_in = embed_tokens(input_ids);                                              // [B, T, H]
  if (compute_dtype != c10::ScalarType::Undefined) hidden_in = hidden_in.to(compute_dtype);
  const torch::Tensor cos = embedded_angles.cos().to(hidden_in.scalar_type());
  const torch::Tensor sin = embedded_angles.sin().to(hidden_in.scalar_type());

  // Query at slot past+i may see key slot j when j <= past+i and key j is real.
  // Without a cache, and with every row's real tokens before its padding (right
  // padding or none), that is plain causal attention for every real token, and
  // attention gets no mask (undefined `allowed`): the fast kernels qualify.
  // Deciding reads one boolean from the mask's device: a host sync per forward when
  // the mask lives on a GPU (the trainers move it there first), none for a CPU mask.
  const auto slot_options = torch::TensorOptions(device).dtype(torch::kInt64);
  torch::Tensor allowed;  // [B, 1, T, S]
  if (cache != nullptr || padding_before_real_token(attention_mask)) {
    allowed = visible_keys(torch::arange(past, keys, slot_options).unsqueeze(0), key_mask);
  }

  torch::Tensor hidden = hidden_in;
  const bool checkpointed = activation_checkpointing && is_training() && torch::GradMode::is_enabled();
  const int64_t layer_count = config.num_hidden_layers;
  for (int64_t i = 0; i < layer_count; ++i) {
    auto& layer = layers->at<LlamaDecoderLayerImpl>(i);
    if (slots.defined() && i + 1 == layer_count) {  // the last layer's queries at the slots only: [B, N, H]
      hidden = layer.forward(hidden, cos, sin, visible_keys(slots, key_mask), /*cache=*/nullptr, i, slots);
    } else {
      hidden = checkpointed && cache == nullptr ? checkpointed_decoder_layer(layer, hidden, cos, sin, allowed)
                                                : layer.forward(hidden, cos, sin, allowed, cache, i);
    }
  }
  if (cache != nullptr) cache->length = keys;
  return norm(hidden);
}

LlamaForCausalLMImpl::LlamaForCausalLMImpl(const LlamaConfig& config_) : config(config_) {
  model = register_module("model", LlamaModel(config));
  if (!config.tie_word_embeddings) {
    lm_head = register_module("lm_head", Linear(config.hidden_size, config.vocab_size));
  }
  // Hugging Face's initialisation (initializer_range 0.02) for models built from scratch.
  torch::NoGradGuard no_grad;
  for (auto& parameter : named_parameters()) {
    if (parameter.key().find("norm") == std::string::npos) parameter.value().normal_(0.0, 0.02);
  }
}

torch::Tensor LlamaForCausalLMImpl::forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                            KVCache* cache) {
  return logits(model(input_ids, attention_mask, cache));  // [B, T, V]
}

torch::Tensor LlamaForCausalLMImpl::logits(const torch::Tensor& hidden) {
  const c10::ScalarType dtype = model->compute_dtype;
  if (dtype == c10::ScalarType::Undefined) {
    if (config.tie_word_embeddings) return torch::matmul(hidden, model->embed_tokens->weight.t());
    return lm_head(hidden);  // [..., V]
  }
  const torch::Tensor result = config.tie_word_embeddings
                                   ? torch::matmul(hidden.to(dtype), model->embed_tokens->weight.to(dtype).t())
                                   : lm_head(hidden);
  return result.to(torch::kFloat32);  // [..., V]
}

void set_attention_kernel(torch::nn::Module& model, AttentionKernel kernel) {
  for (const auto& module : model.modules(/*include_self=*/true)) {
    if (auto* attention = dynamic_cast<LlamaAttentionImpl*>(module.get())) attention->kernel = kernel;
  }
}

void set_compute_dtype(torch::nn::Module& model, c10::ScalarType dtype) {
  for (const auto& module : model.modules(/*include_self=*/true)) {
    if (auto* linear = dynamic_cast<LinearImpl*>(module.get())) linear->compute_dtype = dtype;
    if (auto* backbone = dynamic_cast<LlamaModelImpl*>(module.get())) backbone->compute_dtype = dtype;
  }
}

}  // namespace can
