// Rotary position embedding, transformers' rotate_half convention (the two halves of a head are
// the pairs, not interleaved elements):
//   out[i]       = x[i]       * cos(p·f_i) - x[i + d/2] * sin(p·f_i)
//   out[i + d/2] = x[i + d/2] * cos(p·f_i) + x[i]       * sin(p·f_i),   i < d/2
// with f_i = 1 / theta^(2i/d) computed in float32 from an integer arange, as transformers does.
#pragma once
#include <cstdint>
#include <vector>

namespace mixq {

// inv_freq [head_dim/2], float32 exactly as transformers' default rope init.
std::vector<float> rope_inv_freq(double theta, int head_dim);

// cos/sin [head_dim/2] for position `pos` (angle = float32(pos) * inv_freq[i] rounded to f32).
void rope_cos_sin(const std::vector<float>& inv_freq, int64_t pos, float* cos_out, float* sin_out);

// x: [heads, head_dim] f32 for one token, rotated in place with that token's cos/sin [head_dim/2].
void rope_apply(float* x, int heads, int head_dim, const float* cos, const float* sin);

// x: [n, heads*head_dim] f32 rotated in place, token t at positions[t], with inv_freq [head_dim/2].
// The plain reference, also the CPU implementation (same cos/sin and products as rope_apply).
void rope_rows(float* x, int64_t n, int heads, int head_dim, const int32_t* positions, const float* inv_freq);

}  // namespace mixq
