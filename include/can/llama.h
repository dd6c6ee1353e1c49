// The Llama-family causal language model, read top to bottom in one file
// (src/model/llama.cpp). Modules nest exactly as Hugging Face names them
// (`model.layers.0.self_attn.q_proj.weight`, `lm_head.weight`), so
// named_parameters() is the checkpoint's key set and loading is a name-checked
// copy (model_weights.h).
//
// Shapes: B batch, T new positions, S = past + T key positions, H hidden size,
// Q query heads, K key/value heads, D head dim, V vocabulary, F MLP width.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "can/linear.h"

namespace can {

// Llama 3's RoPE frequency scaling (rope_type "llama3"): wavelengths longer than
// original_max_position_embeddings / low_freq_factor are stretched by `factor`, those
// shorter than original_max_position_embeddings / high_freq_factor kept, those between
// interpolated.
struct Llama3RopeScaling {
  double factor = 8.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

// One model, several families: config.json's model_type "llama" (Llama 1, 2, 3.x),
// "qwen2" (Qwen2, Qwen2.5: biases on the q, k and v projections) or "mistral", each
// a setting of the fields below. A field CAN does not implement (another rope_type,
// an enabled sliding window, MLP biases, attention dropout) is refused when read.
struct LlamaConfig {
  std::string model_type = "llama";
  int64_t vocab_size = 32000;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 11008;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  int64_t num_key_value_heads = 32;
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  std::optional<Llama3RopeScaling> rope_scaling = std::nullopt;  // none: plain rotary embeddings
  int64_t explicit_head_dim = 0;  // config.json's head_dim when given; 0: hidden_size / num_attention_heads
  bool qkv_bias = false;          // q_proj, k_proj and v_proj carry biases (Qwen2; Llama's attention_bias)
  bool o_bias = false;            // o_proj carries one (Llama's attention_bias)
  bool tie_word_embeddings = false;
  int64_t bos_token_id = 1;
  int64_t eos_token_id = 2;
  int64_t pad_token_id = -1;  // -1: none
  // Score models only: Safe-RLHF's LlamaForScore (head `score_head`, score_dim outputs, a bias
  // when score_bias), or with sequence_classification transformers' <Family>ForSequenceClassification
  // (head `score`, num_labels outputs, no bias), as config.json's architectures names it.
  int64_t score_dim = 1;
  bool score_bias = true;
  bool sequence_classification = false;
  std::string score_head_name() const { return sequence_classification ? "score" : "score_head"; }

  int64_t head_dim() const { return explicit_head_dim > 0 ? explicit_head_dim : hidden_size / num_attention_heads; }
  // The first inconsistency, naming the field it is reported on: a size that is
  // not positive, a width the heads do not divide, an odd head dimension (rotary
  // embeddings rotate halves), query heads that are not a multiple of the
  // key/value heads, a special token outside the vocabulary. None when consistent.
  struct Problem {
    std::string key;  // "num_attention_heads"
    std::string message;
  };
  std::optional<Problem> problem() const;
  // Parses Hugging Face's config.json fields; `source` names the file in errors.
  static LlamaConfig from_json(const nlohmann::json& json, const std::string& source);
  // generation_config.json: its bos/eos/pad ids, where present, replace config.json's
  // (transformers' generate() reads them from there); `source` names the file.
  void apply_generation_config(const nlohmann::json& json, const std::string& source);
  // `architecture` is written as the "architectures" entry: LlamaForScore, or
  // LlamaForCausalLM, which is the family's own (Qwen2ForCausalLM, MistralForCausalLM).
  nlohmann::json to_json(const std::string& architecture) const;
};

// RoPE's inverse frequencies [D/2] float32, as Hugging Face computes them: 1 / θ^(2i/D),
// then rescaled by rope_scaling when the config has one.
torch::Tensor rotary_inverse_frequencies(const LlamaConfig& config);

// Preallocated keys and values for incremental decoding.
struct KVCache {
  // One [B, K, capacity, D] tensor each per layer.
  std::vector<torch::Tensor> keys;
  std::vector<torch::Tensor> values;
  int64_t length = 0;  // key positions filled so far

  KVCache(const LlamaConfig& config, int64_t batch, int64_t capacity, torch::TensorOptions options);
  int64_t capacity() const;
  // Keeps only the batch rows in `rows` ([B'] int64), e.g. when sequences finish.
  void select_rows(const torch::Tensor& rows);
};

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  torch::Tensor forward(const torch::Tensor& x);  // [..., H] -> [..., H]
  torch::Tensor weight;                           // [H]
  double eps;
};
TORCH_MODULE(RMSNorm);

// How attention is computed; both are always built (set_attention_kernel).
enum class AttentionKernel {
  // at::scaled_dot_product_attention with grouped-query heads (enable_gqa): on a
  // GPU the flash and memory-efficient kernels when the batch allows them.
  Fused,
  // The slow, obviously correct one: K/V heads repeated, float32 scores, masked
  // softmax, matmul. What the fused one is tested against.
  Reference,
};

class LlamaAttentionImpl : public torch::nn::Module {
 public:
  explicit LlamaAttentionImpl(const LlamaConfig& config);
  // x [B, T, H]; cos, sin [B, T, D]; returns [B, T, H].
  // allowed [B, 1, T, S] bool (true: the query may see the key), or undefined for
  // plain causal attention of T queries over the same T keys (no cache, no
  // padding before a real token: LlamaModel::forward decides).
  // query_slots [B, N] int64, when given: queries at those slots only (keys and values
  // still at every slot), allowed [B, 1, N, S], and the result [B, N, H].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& allowed, KVCache* cache, int64_t layer,
                        const torch::Tensor& query_slots = {});
  Linear q_proj{nullptr};  // [Q*D, H]
  Linear k_proj{nullptr};  // [K*D, H]
  Linear v_proj{nullptr};  // [K*D, H]
  Linear o_proj{nullptr};  // [H, Q*D]
  int64_t num_heads, num_key_value_heads, head_dim;
  AttentionKernel kernel = AttentionKernel::Fused;
};
TORCH_MODULE(LlamaAttention);

class LlamaMLPImpl : public torch::nn::Module {
 public:
  explicit LlamaMLPImpl(const LlamaConfig& config);
  torch::Tensor forward(const torch::Tensor& x);  // SwiGLU: down(silu(gate(x)) * up(x))
  Linear gate_proj{nullptr};                      // [F, H]
  Linear up_proj{nullptr};                        // [F, H]
  Linear down_proj{nullptr};                      // [H, F]
};
TORCH_MODULE(LlamaMLP);

class LlamaDecoderLayerImpl : public torch::nn::Module {
 public:
  explicit LlamaDecoderLayerImpl(const LlamaConfig& config);
  // As LlamaAttention::forward: query_slots [B, N], when given, makes the result [B, N, H].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& allowed, KVCache* cache, int64_t layer,
                        const torch::Tensor& query_slots = {});
  RMSNorm input_layernorm{nullptr};
  LlamaAttention self_attn{nullptr};
  RMSNorm post_attention_layernorm{nullptr};
  LlamaMLP mlp{nullptr};
};
TORCH_MODULE(LlamaDecoderLayer);

// The backbone, registered as `model.` in both the causal LM and the score model.
class LlamaModelImpl : public torch::nn::Module {
 public:
  explicit LlamaModelImpl(const LlamaConfig& config);
  // input_ids [B, T] int64. attention_mask [B, S] (1 real token, 0 padding) over
  // every key position: the cached ones and these T. Padding may be on either
  // side; positions count real tokens only (Hugging Face's cumsum rule), so a
  // left-padded and a right-padded batch give the same hidden states for real
  // tokens. With a cache, keys and values are appended to it. Returns [B, T, H].
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask, KVCache* cache = nullptr);
  // forward(input_ids, attention_mask)'s rows at slots [B, N] int64 only -> [B, N, H]
  // (a score model's last real token): the last decoder layer computes queries, MLP
  // and the final norm at those slots alone (keys and values at every slot). Its
  // reference is that gather of forward's output.
  torch::Tensor forward_at(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                           const torch::Tensor& slots);

  LlamaConfig config;
  torch::nn::Embedding embed_tokens{nullptr};  // [V, H]
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
  torch::Tensor inv_freq;  // [D/2] float32, not a parameter (not in checkpoints)
  // Embeddings are cast to it after the lookup (set_compute_dtype); Undefined: no cast.
  c10::ScalarType compute_dtype = c10::ScalarType::Undefined;
  // In training mode with gradients, each decoder layer keeps only its input and
  // recomputes its activations during backward (less memory, one more forward).
  // Parameter gradients then reach .grad through loss.backward(), not through
  // torch::autograd::grad. Never used with a KV cache.
  bool activation_checkpointing = false;

 private:
  // forward and forward_at: slots undefined for every slot.
  torch::Tensor run(const torch::Tensor& input_ids, const torch::Tensor& attention_mask, KVCache* cache,
                    const torch::Tensor& slots);
};
TORCH_MODULE(LlamaModel);

class LlamaForCausalLMImpl : public torch::nn::Module {
 public:
  explicit LlamaForCausalLMImpl(const LlamaConfig& config);
  // As LlamaModel::forward; returns logits [B, T, V] in the parameters' dtype, or
  // in float32 when a compute dtype is set (set_compute_dtype).
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask, KVCache* cache = nullptr);
  // The LM head alone: hidden [..., H] from `model` -> logits [..., V], in the same
  // dtype as forward's. forward(ids, mask) = logits(model(ids, mask)).
  torch::Tensor logits(const torch::Tensor& hidden);

  LlamaConfig config;
  LlamaModel model{nullptr};
  Linear lm_head{nullptr};  // [V, H]; absent when tie_word_embeddings
};
TORCH_MODULE(LlamaForCausalLM);

// Sets the dtype of every product of `model` (a LlamaForCausalLM or LlamaForScore):
// each can::Linear casts its input and weight to `dtype`, embeddings are cast
// after the lookup, RMSNorm and the attention softmax stay in float32, and the
// causal LM returns float32 logits. The parameters keep their dtype (float32
// master weights) and receive their gradients in it. Undefined: compute in the
// parameters' dtype with no casts (the default).
void set_compute_dtype(torch::nn::Module& model, c10::ScalarType dtype);

// attention_mask [B, S] (1 real token, 0 padding) -> whether some row has a
// padding slot before a real token (left padding, or a hole). Without a KV cache
// and without such padding, attention is plain causal and takes no mask.
bool padding_before_real_token(const torch::Tensor& attention_mask);

// Chooses the attention of every layer of `model` (Fused unless set).
void set_attention_kernel(torch::nn::Module& model, AttentionKernel kernel);

// Loads config.json (with generation_config.json's special ids, when present) and
// the weights of a Hugging Face directory. The model is
// built in float32 on CPU, weights are copied by name (every missing,
// unexpected and mis-shaped tensor is named), then it is moved to `device` and
// `dtype` (float32 unless asked: a BF16 checkpoint loads as float32 on CPU).
LlamaForCausalLM load_causal_lm(const std::string& directory, torch::Device device = torch::kCPU,
                                torch::ScalarType dtype = torch::kFloat32);
// Writes config.json and model.safetensors (parameters in their current dtype).
// LoRA adapter tensors are never written: with enabled adapters the file holds
// the merged weights W + (alpha / rank)·B A (the model is not changed), with
// disabled ones the base weights, so loading it gives the function the model computes.
void save_causal_lm(const LlamaForCausalLM& model, const std::string& directory);

}  // namespace can
