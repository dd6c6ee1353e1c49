// Offline scores: reward and safety scores of N_i responses sampled from π_ref
// for each of M prompts, the input of the dual (docs/design.md §2, §5).
//
// File format, JSON Lines, one line per prompt:
//   {"prompt_id": "p17", "reward": [N numbers], "safety": [N numbers]}           one constraint
//   {"prompt_id": 17, "reward": [N numbers], "safety": [[N numbers], [N numbers]]}  m constraints
// g = safety, higher is safer. N may differ between prompts; m may not. prompt_id
// is a string or an integer (kept as text) and must be unique. Other keys (e.g.
// "responses") are ignored. Every number must be finite.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace can {

class OfflineScores {
 public:
  // rewards[i]: [N_i] scores of prompt i; safety[i]: [m][N_i], one row per
  // constraint. Validated like a file; errors name the prompt by index and id.
  OfflineScores(std::vector<std::string> prompt_ids, const std::vector<std::vector<double>>& rewards,
                const std::vector<std::vector<std::vector<double>>>& safety);

  // Errors name the file and the 1-based line.
  static OfflineScores load(const std::filesystem::path& path);

  // Writes the format above atomically (one-constraint files use the flat form).
  void save(const std::filesystem::path& path) const;

  int64_t num_prompts() const { return static_cast<int64_t>(prompt_ids_.size()); }
  int num_constraints() const { return num_constraints_; }
  int64_t num_responses(int64_t prompt) const { return offsets_[prompt + 1] - offsets_[prompt]; }
  int64_t total_responses() const { return offsets_.back(); }
  const std::string& prompt_id(int64_t prompt) const { return prompt_ids_[prompt]; }

  // Flat storage: response k of prompt i is row offsets()[i] + k.
  const std::vector<int64_t>& offsets() const { return offsets_; }  // [M + 1]
  const std::vector<double>& rewards() const { return rewards_; }   // [total_responses]
  const std::vector<double>& safety() const { return safety_; }     // [total_responses, m], row-major

 private:
  OfflineScores() = default;
  // Appends one prompt after validating it; `where` prefixes error messages.
  void append(std::string prompt_id, const std::vector<double>& reward, const std::vector<std::vector<double>>& safety,
              const std::string& where);

  std::vector<std::string> prompt_ids_;
  std::vector<int64_t> offsets_{0};
  std::vector<double> rewards_;
  std::vector<double> safety_;
  int num_constraints_ = 0;
};

}  // namespace can
