#include "mq/blocks.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "mq/error.hpp"

namespace mq::blocks {
namespace {

constexpr int kBlock = 32;

void put_half(uint8_t* out, float v) {
  const uint16_t bits = c10::Half(v).x;
  std::memcpy(out, &bits, 2);
}

float get_half(const uint8_t* in) {
  uint16_t bits;
  std::memcpy(&bits, in, 2);
  return static_cast<float>(c10::Half(bits, c10::Half::from_bits()));
}

// roundf (halves away from zero) for |v| < 2^31, inline: v - trunc(v) is exact in float.
inline int round_away(float v) {
  int i = static_cast<int>(v);
  const float rest = v - static_cast<float>(i);
  if (rest >= 0.5f) ++i;
  if (rest <= -0.5f) --i;
  return i;
}

// The value of largest magnitude, with its sign (the first, on ties).
float signed_max(const float* x) {
  float amax = 0, max = 0;
  for (int j = 0; j < kBlock; ++j)
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  return max;
}

void min_max(const float* x, float* min, float* max) {
  *min = FLT_MAX;
  *max = -FLT_MAX;
  for (int j = 0; j < kBlock; ++j) {
    *min = std::min(*min, x[j]);
    *max = std::max(*max, x[j]);
  }
}

// Low nibbles of values 0..15, high nibbles of 16..31; the fifth bits, if any, into qh.
void pack(const uint8_t* q, uint8_t* qs, uint8_t* qh) {
  uint32_t high = 0;
  for (int j = 0; j < kBlock / 2; ++j) {
    qs[j] = static_cast<uint8_t>((q[j] & 0x0F) | ((q[j + kBlock / 2] & 0x0F) << 4));
    high |= static_cast<uint32_t>((q[j] & 0x10) >> 4) << j;
    high |= static_cast<uint32_t>((q[j + kBlock / 2] & 0x10) >> 4) << (j + kBlock / 2);
  }
  if (qh) std::memcpy(qh, &high, 4);
}

void unpack(const uint8_t* qs, const uint8_t* qh, int* q) {
  uint32_t high = 0;
  if (qh) std::memcpy(&high, qh, 4);
  for (int j = 0; j < kBlock / 2; ++j) {
    q[j] = (qs[j] & 0x0F) | static_cast<int>(((high >> j) << 4) & 0x10);
    q[j + kBlock / 2] = (qs[j] >> 4) | static_cast<int>(((high >> (j + kBlock / 2)) << 4) & 0x10);
  }
}

// ---- k-quants: super-blocks of 256 (ggml-quants.c's quantize_row_q{4,5,6}_K_ref) ----

constexpr int kSuper = 256;

// ggml's nearest_int: round half to even through the float adder (|f| < 2^22).
inline int nearest_int(float f) {
  const float v = f + 12582912.f;
  int32_t i;
  std::memcpy(&i, &v, 4);
  return (i & 0x007fffff) - 0x00400000;
}

// Q6_K's 16-value sub-blocks: the scale (signed, of the value of largest magnitude) that
// minimizes the error weighted by qw (none: x^2) over 19 candidates around -nmax / max;
// L in [0, 2 nmax).
float make_qx_quants(int n, int nmax, const float* x, int8_t* L, const float* qw) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i)
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  if (amax < 1e-15f) {
    std::fill(L, L + n, 0);
    return 0.f;
  }
  float iscale = -nmax / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::max(-nmax, std::min(nmax - 1, nearest_int(iscale * x[i])));
    L[i] = static_cast<int8_t>(l + nmax);
    const float w = qw ? qw[i] : x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  float scale = suml2 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::max(-nmax, std::min(nmax - 1, nearest_int(iscale * x[i])));
      const float w = qw ? qw[i] : x[i] * x[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i)
        L[i] = static_cast<int8_t>(nmax + std::max(-nmax, std::min(nmax - 1, nearest_int(iscale * x[i]))));
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// Q4_K/Q5_K's 32-value sub-blocks: scale and minimum (x ~ scale * L - the_min) that
// minimize the weighted squared error over nstep + 1 candidate ranges; L in [0, nmax].
// llama.cpp's make_qkx3_quants, its importance-weighted twin, differs only in testing
// max <= min where this tests max == min: the same test, as min <= max always.
float make_qkx2_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min,
                       uint8_t* Laux, float rmin, float rdelta, int nstep) {
  float min = x[0], max = x[0];
  float sum_w = weights[0], sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    sum_w += weights[i];
    sum_x += weights[i] * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    std::fill(L, L + n, 0);
    *the_min = -min;
    return 0.f;
  }
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    L[i] = static_cast<uint8_t>(std::max(0, std::min(nmax, nearest_int(iscale * (x[i] - min)))));
    const float diff = scale * L[i] + min - x[i];
    best_error += weights[i] * (diff * diff);
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::max(0, std::min(nmax, nearest_int(iscale * (x[i] - min))));
      Laux[i] = static_cast<uint8_t>(l);
      sum_l += weights[i] * l;
      sum_l2 += weights[i] * l * l;
      sum_xl += weights[i] * l * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        const float diff = this_scale * Laux[i] + this_min - x[i];
        cur_error += weights[i] * (diff * diff);
      }
      if (cur_error < best_error) {
        std::copy(Laux, Laux + n, L);
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

// make_qkx2_quants of the eight 32-value sub-blocks of a super-block at once, sub-block j
// in lane j: each lane does the scalar function's float operations in its order (no
// sum is reassociated, nothing contracted), so the bytes are the same, eight times as
// fast. x, weights and L as eight sub-blocks one after another.
typedef float Floats8 __attribute__((vector_size(32)));
typedef int32_t Ints8 __attribute__((vector_size(32)));
// Vectors wider than the baseline's registers pass between these internal functions only:
// no ABI to keep.
#pragma GCC diagnostic ignored "-Wpsabi"

inline Ints8 nearest_ints(Floats8 f) {
  Ints8 i;
  f += 12582912.f;
  std::memcpy(&i, &f, sizeof(i));
  return (i & 0x007fffff) - 0x00400000;
}

inline Ints8 clamp_levels(Ints8 l, int nmax) {
  const Ints8 zero = {}, top = zero + nmax;
  l = l < zero ? zero : l;
  return l > top ? top : l;
}

__attribute__((target_clones("avx2", "default"))) void make_qkx2_quants_8(int nmax, const float* x, const float* weights, uint8_t* L, float* the_min, float* scales,
                        float rmin, float rdelta, int nstep) {
  Floats8 xs[32], ws[32];  // value i of every lane
  for (int i = 0; i < 32; ++i)
    for (int j = 0; j < 8; ++j) {
      xs[i][j] = x[32 * j + i];
      ws[i][j] = weights[32 * j + i];
    }
  Floats8 min = xs[0], max = xs[0];
  Floats8 sum_w = ws[0], sum_x = sum_w * xs[0];
  for (int i = 1; i < 32; ++i) {
    min = xs[i] < min ? xs[i] : min;
    max = xs[i] > max ? xs[i] : max;
    sum_w += ws[i];
    sum_x += ws[i] * xs[i];
  }
  const Floats8 zero = {};
  min = min > 0 ? zero : min;
  const Ints8 flat = max == min;
  Floats8 iscale = static_cast<float>(nmax) / (max - min);
  Floats8 scale = 1 / iscale;
  Floats8 best_error = {};
  Ints8 best[32], aux[32];
  for (int i = 0; i < 32; ++i) {
    best[i] = clamp_levels(nearest_ints(iscale * (xs[i] - min)), nmax);
    const Floats8 diff = scale * __builtin_convertvector(best[i], Floats8) + min - xs[i];
    best_error += ws[i] * (diff * diff);
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);  // min as the best candidate so far left it
    Floats8 sum_l = {}, sum_l2 = {}, sum_xl = {};
    for (int i = 0; i < 32; ++i) {
      aux[i] = clamp_levels(nearest_ints(iscale * (xs[i] - min)), nmax);
      const Floats8 l = __builtin_convertvector(aux[i], Floats8);
      sum_l += ws[i] * l;
      sum_l2 += ws[i] * l * l;
      sum_xl += ws[i] * l * xs[i];
    }
    const Floats8 D = sum_w * sum_l2 - sum_l * sum_l;
    const Ints8 positive = D > 0;
    if (!(positive[0] | positive[1] | positive[2] | positive[3] | positive[4] | positive[5] | positive[6] | positive[7]))
      continue;
    Floats8 this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
    Floats8 this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
    const Ints8 above = this_min > 0;
    this_scale = above ? sum_xl / sum_l2 : this_scale;
    this_min = above ? zero : this_min;
    Floats8 cur_error = {};
    for (int i = 0; i < 32; ++i) {
      const Floats8 diff = this_scale * __builtin_convertvector(aux[i], Floats8) + this_min - xs[i];
      cur_error += ws[i] * (diff * diff);
    }
    const Ints8 better = positive & (cur_error < best_error) & ~flat;  // a flat lane's arithmetic is of inf
    for (int i = 0; i < 32; ++i) best[i] = better ? aux[i] : best[i];
    best_error = better ? cur_error : best_error;
    scale = better ? this_scale : scale;
    min = better ? this_min : min;
  }
  for (int j = 0; j < 8; ++j) {
    the_min[j] = -min[j];
    scales[j] = flat[j] ? 0.f : scale[j];
    for (int i = 0; i < 32; ++i) L[32 * j + i] = flat[j] ? 0 : static_cast<uint8_t>(best[i][j]);
  }
}

// make_qx_quants of Q6_K's sixteen 16-value sub-blocks at once, sub-block j in lane j,
// each lane in the scalar function's order (the same bytes). qw: null, or sixteen
// sub-blocks of weights.
typedef float Floats16 __attribute__((vector_size(64)));
typedef int32_t Ints16 __attribute__((vector_size(64)));

__attribute__((target_clones("avx512f", "avx2", "default"))) void make_qx_quants_16(int nmax, const float* x, int8_t* L, const float* qw, float* scales) {
  Floats16 xs[16], ws[16];
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) {
      xs[i][j] = x[16 * j + i];
      ws[i][j] = qw ? qw[16 * j + i] : x[16 * j + i] * x[16 * j + i];
    }
  const Floats16 zero = {};
  Floats16 max = {}, amax = {};
  for (int i = 0; i < 16; ++i) {
    const Floats16 a = xs[i] < zero ? -xs[i] : xs[i];
    const Ints16 larger = a > amax;
    amax = larger ? a : amax;
    max = larger ? xs[i] : max;
  }
  const Ints16 low = -nmax + Ints16{}, high = nmax - 1 + Ints16{};
  const auto levels = [&](Floats16 iscale, int i) {
    Floats16 f = iscale * xs[i] + 12582912.f;
    Ints16 l;
    std::memcpy(&l, &f, sizeof(l));
    l = (l & 0x007fffff) - 0x00400000;
    l = l < low ? low : l;
    return l > high ? high : l;
  };
  Ints16 best[16], aux[16];
  Floats16 iscale = static_cast<float>(-nmax) / max;
  Floats16 sumlx = {}, suml2 = {};
  for (int i = 0; i < 16; ++i) {
    best[i] = levels(iscale, i);
    const Floats16 l = __builtin_convertvector(best[i], Floats16);
    sumlx += ws[i] * xs[i] * l;
    suml2 += ws[i] * l * l;
  }
  Floats16 scale = suml2 != 0 ? sumlx / suml2 : zero;
  Floats16 best_score = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = zero;
    for (int i = 0; i < 16; ++i) {
      aux[i] = levels(iscale, i);
      const Floats16 l = __builtin_convertvector(aux[i], Floats16);
      sumlx += ws[i] * xs[i] * l;
      suml2 += ws[i] * l * l;
    }
    const Ints16 better = (suml2 > 0) & (sumlx * sumlx > best_score * suml2);
    for (int i = 0; i < 16; ++i) best[i] = better ? aux[i] : best[i];
    scale = better ? sumlx / suml2 : scale;
    best_score = better ? scale * sumlx : best_score;
  }
  for (int j = 0; j < 16; ++j) {
    const bool tiny = amax[j] < 1e-15f;
    scales[j] = tiny ? 0.f : scale[j];
    for (int i = 0; i < 16; ++i) L[16 * j + i] = static_cast<int8_t>(tiny ? 0 : best[i][j] + nmax);
  }
}

// The super-block scale of n non-negative sub-block values x, each stored as L * scale
// with L in [0, nmax]: searched, then refined one L at a time, weighted by qw.
float make_qp_quants(int n, int nmax, const float* x, uint8_t* L, const float* qw) {
  float max = 0;
  for (int i = 0; i < n; ++i) max = std::max(max, x[i]);
  if (max < 1e-15f) {
    std::fill(L, L + n, 0);
    return 0.f;
  }
  float iscale = nmax / max;
  for (int i = 0; i < n; ++i) L[i] = static_cast<uint8_t>(nearest_int(iscale * x[i]));
  const float scale = 1 / iscale;
  float best_mse = 0;
  for (int i = 0; i < n; ++i) {
    const float diff = x[i] - scale * L[i];
    best_mse += qw[i] * diff * diff;
  }
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    const float iscale_is = (0.1f * is + nmax) / max;
    const float scale_is = 1 / iscale_is;
    float mse = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::min(nmax, nearest_int(iscale_is * x[i]));
      const float diff = x[i] - scale_is * l;
      mse += qw[i] * diff * diff;
    }
    if (mse < best_mse) {
      best_mse = mse;
      iscale = iscale_is;
    }
  }
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::min(nmax, nearest_int(iscale * x[i]));
    L[i] = static_cast<uint8_t>(l);
    sumlx += qw[i] * x[i] * l;
    suml2 += qw[i] * l * l;
  }
  for (int itry = 0; itry < 5; ++itry) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = qw[i];
      float slx = sumlx - w * x[i] * L[i];
      float sl2 = suml2 - w * L[i] * L[i];
      if (slx > 0 && sl2 > 0) {
        const int new_l = std::min(nmax, nearest_int(x[i] * sl2 / slx));
        if (new_l != L[i]) {
          slx += w * x[i] * new_l;
          sl2 += w * new_l * new_l;
          if (slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<uint8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++changed;
          }
        }
      }
    }
    if (!changed) break;
  }
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// The 6-bit scale and minimum of sub-block j in Q4_K/Q5_K's 12 packed bytes.
void scale_min(int j, const uint8_t* q, int* sc, int* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// Q4_K [d, dmin, scales 12, qs 128] and Q5_K [d, dmin, scales 12, qh 32, qs 128]: eight
// sub-blocks of 32, each with a 6-bit scale and minimum of the super-block's fp16 d, dmin.
// With importance weights qw (per value of the super-block), llama.cpp's weighted search.
// `fast`: the eight sub-blocks searched at once (make_qkx2_quants_8), else one at a time
// as llama.cpp does (the same bytes).
void quantize_q45_k(const float* x, uint8_t* out, bool five, const float* qw, bool fast) {
  const int nmax = five ? 31 : 15;
  uint8_t L[kSuper], Laux[32];
  float weights[kSuper], mins[8], scales[8];  // sub-block j's weights at 32 j
  const auto search = [&](float rmin, float rdelta, int nstep) {
    if (fast) return make_qkx2_quants_8(nmax, x, weights, L, mins, scales, rmin, rdelta, nstep);
    for (int j = 0; j < 8; ++j)
      scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, weights + 32 * j, L + 32 * j, &mins[j], Laux, rmin, rdelta, nstep);
  };
  uint8_t* packed = out + 4;
  std::memset(packed, 0, 12);
  const auto pack_scales = [&](int j, uint8_t ls, uint8_t lm) {
    if (j < 4) {
      packed[j] = ls;
      packed[j + 4] = lm;
    } else {
      packed[j + 4] = static_cast<uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
      packed[j - 4] |= static_cast<uint8_t>((ls >> 4) << 6);
      packed[j] |= static_cast<uint8_t>((lm >> 4) << 6);
    }
  };
  if (qw) {
    float sum_x2 = 0;
    for (int l = 0; l < kSuper; ++l) sum_x2 += x[l] * x[l];
    const float sigma2 = 2 * sum_x2 / kSuper;
    float sw[8];
    for (int j = 0; j < 8; ++j) {
      float* w = weights + 32 * j;
      for (int l = 0; l < 32; ++l) w[l] = qw[32 * j + l] * std::sqrt(sigma2 + x[32 * j + l] * x[32 * j + l]);
      float sumw = 0;
      for (int l = 0; l < 32; ++l) sumw += w[l];
      sw[j] = sumw;
    }
    search(-0.9f, 0.05f, 36);
    uint8_t Ls[8], Lm[8];
    const float d_block = make_qp_quants(8, 63, scales, Ls, sw);
    const float m_block = make_qp_quants(8, 63, mins, Lm, sw);
    for (int j = 0; j < 8; ++j)
      pack_scales(j, five ? std::min<uint8_t>(63, Ls[j]) : Ls[j], five ? std::min<uint8_t>(63, Lm[j]) : Lm[j]);
    put_half(out, d_block);
    put_half(out + 2, m_block);
  } else {
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; ++j) {
      float sum_x2 = 0;
      for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
      const float av_x = std::sqrt(sum_x2 / 32);
      for (int l = 0; l < 32; ++l) weights[32 * j + l] = av_x + std::fabs(x[32 * j + l]);
    }
    search(five ? -0.5f : -1.f, 0.1f, five ? 15 : 20);
    for (int j = 0; j < 8; ++j) {
      max_scale = std::max(max_scale, scales[j]);
      max_min = std::max(max_min, mins[j]);
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < 8; ++j)
      pack_scales(j, std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(inv_scale * scales[j]))),
                  std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(inv_min * mins[j]))));
    put_half(out, max_scale / 63.f);
    put_half(out + 2, max_min / 63.f);
  }
  for (int j = 0; j < 8; ++j) {
    int sc, m;
    scale_min(j, packed, &sc, &m);
    const float d = get_half(out) * static_cast<float>(sc);
    if (!d) continue;
    const float dm = get_half(out + 2) * static_cast<float>(m);
    for (int ii = 0; ii < 32; ++ii)
      L[32 * j + ii] = static_cast<uint8_t>(std::max(0, std::min(nmax, nearest_int((x[32 * j + ii] + dm) / d))));
  }
  uint8_t* qh = five ? out + 16 : nullptr;
  uint8_t* ql = out + (five ? 48 : 16);
  if (qh) std::memset(qh, 0, 32);
  for (int n = 0, shift = 0; n < kSuper; n += 64, shift += 2) {
    for (int j = 0; j < 32; ++j) {
      int l1 = L[n + j], l2 = L[n + j + 32];
      if (l1 > 15) {
        l1 -= 16;
        qh[j] |= static_cast<uint8_t>(1 << shift);
      }
      if (l2 > 15) {
        l2 -= 16;
        qh[j] |= static_cast<uint8_t>(2 << shift);
      }
      ql[j] = static_cast<uint8_t>(l1 | (l2 << 4));
    }
    ql += 32;
  }
}

void dequantize_q45_k(const uint8_t* in, float* y, bool five) {
  const float d = get_half(in), min = get_half(in + 2);
  const uint8_t* packed = in + 4;
  const uint8_t* qh = five ? in + 16 : nullptr;
  const uint8_t* ql = in + (five ? 48 : 16);
  for (int n = 0, is = 0; n < kSuper; n += 64, is += 2, ql += 32) {
    int sc, m;
    scale_min(is, packed, &sc, &m);
    const float d1 = d * static_cast<float>(sc), m1 = min * static_cast<float>(m);
    scale_min(is + 1, packed, &sc, &m);
    const float d2 = d * static_cast<float>(sc), m2 = min * static_cast<float>(m);
    for (int l = 0; l < 32; ++l) {
      const int high1 = qh && (qh[l] >> is & 1) ? 16 : 0, high2 = qh && (qh[l] >> (is + 1) & 1) ? 16 : 0;
      y[n + l] = d1 * static_cast<float>((ql[l] & 0xF) + high1) - m1;
      y[n + l + 32] = d2 * static_cast<float>((ql[l] >> 4) + high2) - m2;
    }
  }
}

// Q6_K [ql 128, qh 64, scales 16 (int8), d]: sixteen sub-blocks of 16 with an 8-bit
// scale of the super-block's fp16 d; values in [-32, 31].
// `fast`: the sixteen sub-blocks searched at once (make_qx_quants_16), else one at a time
// as llama.cpp does (the same bytes).
void quantize_q6_k(const float* x, uint8_t* out, const float* qw, bool fast) {
  int8_t L[kSuper];
  float scales[16];
  float max_scale = 0, max_abs_scale = 0;
  if (fast) make_qx_quants_16(32, x, L, qw, scales);
  for (int ib = 0; ib < 16; ++ib) {
    if (!fast) scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, qw ? qw + 16 * ib : nullptr);
    if (std::fabs(scales[ib]) > max_abs_scale) {
      max_abs_scale = std::fabs(scales[ib]);
      max_scale = scales[ib];
    }
  }
  std::memset(out, 0, 210);
  if (max_abs_scale < 1e-15f) return;  // all zero: d = 0
  int8_t* sc = reinterpret_cast<int8_t*>(out + 192);
  const float iscale = -128.f / max_scale;
  put_half(out + 208, 1 / iscale);
  for (int ib = 0; ib < 16; ++ib) sc[ib] = static_cast<int8_t>(std::min(127, nearest_int(iscale * scales[ib])));
  for (int j = 0; j < 16; ++j) {
    const float d = get_half(out + 208) * static_cast<float>(sc[j]);
    if (!d) continue;
    for (int ii = 0; ii < 16; ++ii)
      L[16 * j + ii] = static_cast<int8_t>(std::max(-32, std::min(31, nearest_int(x[16 * j + ii] / d))) + 32);
  }
  uint8_t* ql = out;
  uint8_t* qh = out + 128;
  for (int j = 0; j < kSuper; j += 128, ql += 64, qh += 32)
    for (int l = 0; l < 32; ++l) {
      const int q1 = L[j + l], q2 = L[j + l + 32], q3 = L[j + l + 64], q4 = L[j + l + 96];
      ql[l] = static_cast<uint8_t>((q1 & 0xF) | ((q3 & 0xF) << 4));
      ql[l + 32] = static_cast<uint8_t>((q2 & 0xF) | ((q4 & 0xF) << 4));
      qh[l] = static_cast<uint8_t>((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
    }
}

void dequantize_q6_k(const uint8_t* in, float* y) {
  const float d = get_half(in + 208);
  const int8_t* sc = reinterpret_cast<const int8_t*>(in + 192);
  const uint8_t* ql = in;
  const uint8_t* qh = in + 128;
  for (int n = 0; n < kSuper; n += 128, ql += 64, qh += 32, sc += 8)
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[n + l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
      y[n + l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
      y[n + l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
      y[n + l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
    }
}

// One block of q4_0, q4_1, q5_0 or q5_1 with importance weights qw, as llama.cpp's
// quantize_row_*_impl: each value weighted qw * sqrt(sigma2 + x^2), sigma2 its row's
// mean square; the symmetric types search the scale (make_qx_quants), the others scale
// and minimum (make_qkx3_quants: make_qkx2_quants here).
void quantize_weighted_block(const float* x, DType dtype, uint8_t* out, const float* qw, float sigma2) {
  float weight[kBlock];
  for (int j = 0; j < kBlock; ++j) weight[j] = qw[j] * std::sqrt(sigma2 + x[j] * x[j]);
  uint8_t q[kBlock];
  const bool five = dtype == DType::kQ5_0 || dtype == DType::kQ5_1;
  if (dtype == DType::kQ4_0 || dtype == DType::kQ5_0) {
    int8_t L[kBlock];
    put_half(out, make_qx_quants(kBlock, five ? 16 : 8, x, L, weight));
    for (int j = 0; j < kBlock; ++j) q[j] = static_cast<uint8_t>(L[j]);
    if (five)
      pack(q, out + 6, out + 2);
    else
      pack(q, out + 2, nullptr);
    return;
  }
  uint8_t Laux[kBlock];
  float min = 0;
  put_half(out, make_qkx2_quants(kBlock, five ? 31 : 15, x, weight, q, &min, Laux, -0.9f, 0.05f, 36));
  put_half(out + 2, -min);
  if (five)
    pack(q, out + 8, out + 4);
  else
    pack(q, out + 4, nullptr);
}

// One block of ggml-quants.c's quantize_row_*_ref (`Ref`: with libm's roundf, as it), or
// with importance weights qw its quantize_row_*_impl (sigma2: the row's mean square, for
// the 32-value types).
template <bool Ref>
void quantize_block(const float* x, DType dtype, uint8_t* out, const float* qw, float sigma2) {
  uint8_t q[kBlock];
  if (qw && traits(dtype).block == kBlock && dtype != DType::kQ8_0) return quantize_weighted_block(x, dtype, out, qw, sigma2);
  switch (dtype) {
    case DType::kQ8_0: {
      float amax = 0;
      for (int j = 0; j < kBlock; ++j) amax = std::max(amax, std::fabs(x[j]));
      const float d = amax / 127;
      const float id = d ? 1.0f / d : 0.0f;
      put_half(out, d);
      for (int j = 0; j < kBlock; ++j) out[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(Ref ? std::roundf(x[j] * id) : round_away(x[j] * id)));
      return;
    }
    case DType::kQ4_0:
    case DType::kQ5_0: {
      const int levels = dtype == DType::kQ4_0 ? 16 : 32;
      const float d = signed_max(x) / static_cast<float>(-levels / 2);
      const float id = d ? 1.0f / d : 0.0f;
      for (int j = 0; j < kBlock; ++j)
        q[j] = static_cast<uint8_t>(std::min<int>(levels - 1, static_cast<int8_t>(x[j] * id + (levels / 2 + 0.5f))));
      put_half(out, d);
      if (dtype == DType::kQ4_0)
        pack(q, out + 2, nullptr);
      else
        pack(q, out + 6, out + 2);
      return;
    }
    case DType::kQ4_1:
    case DType::kQ5_1: {
      float min, max;
      min_max(x, &min, &max);
      const bool five = dtype == DType::kQ5_1;
      const float d = (max - min) / (five ? 31 : 15);
      const float id = d ? 1.0f / d : 0.0f;
      for (int j = 0; j < kBlock; ++j) {
        const float v = (x[j] - min) * id + 0.5f;
        q[j] = five ? static_cast<uint8_t>(v) : static_cast<uint8_t>(std::min<int>(15, static_cast<int8_t>(v)));
      }
      put_half(out, d);
      put_half(out + 2, min);
      if (five)
        pack(q, out + 8, out + 4);
      else
        pack(q, out + 4, nullptr);
      return;
    }
    case DType::kQ4_K:
    case DType::kQ5_K:
      quantize_q45_k(x, out, dtype == DType::kQ5_K, qw, !Ref);
      return;
    case DType::kQ6_K:
      quantize_q6_k(x, out, qw, !Ref);
      return;
    default:
      throw std::invalid_argument("blocks: " + std::string(to_string(dtype)) + " is not a block type");
  }
}

void dequantize_block(const uint8_t* in, DType dtype, float* y) {
  int q[kBlock];
  const float d = get_half(in);
  switch (dtype) {
    case DType::kQ8_0:
      for (int j = 0; j < kBlock; ++j) y[j] = static_cast<float>(static_cast<int8_t>(in[2 + j])) * d;
      return;
    case DType::kQ4_0:
    case DType::kQ5_0: {
      const bool five = dtype == DType::kQ5_0;
      unpack(in + (five ? 6 : 2), five ? in + 2 : nullptr, q);
      for (int j = 0; j < kBlock; ++j) y[j] = static_cast<float>(q[j] - (five ? 16 : 8)) * d;
      return;
    }
    case DType::kQ4_1:
    case DType::kQ5_1: {
      const bool five = dtype == DType::kQ5_1;
      const float m = get_half(in + 2);
      unpack(in + (five ? 8 : 4), five ? in + 4 : nullptr, q);
      for (int j = 0; j < kBlock; ++j) y[j] = static_cast<float>(q[j]) * d + m;
      return;
    }
    case DType::kQ4_K:
    case DType::kQ5_K:
      dequantize_q45_k(in, y, dtype == DType::kQ5_K);
      return;
    case DType::kQ6_K:
      dequantize_q6_k(in, y);
      return;
    default:
      throw std::invalid_argument("blocks: " + std::string(to_string(dtype)) + " is not a block type");
  }
}

const DTypeTraits& block_traits(DType dtype) {
  const DTypeTraits& t = traits(dtype);
  if (!t.block) throw std::invalid_argument("blocks: " + std::string(t.name) + " is not a block type");
  return t;
}

// The importance weights as float32 values, one per column (null when undefined).
const float* checked_rows(const at::Tensor& x, DType dtype, at::Tensor& importance) {
  const DTypeTraits& t = block_traits(dtype);
  if (x.dim() != 2 || x.size(1) % t.block)
    throw InputError(std::string(t.name) + " needs rows of a multiple of " + std::to_string(t.block) +
                     " values, not shape " + c10::str(x.sizes()));
  if (!importance.defined()) return nullptr;
  if (dtype == DType::kQ8_0)
    throw std::invalid_argument("blocks: importance weights do not apply to q8_0 (llama.cpp ignores them)");
  if (importance.numel() != x.size(1))
    throw std::invalid_argument("blocks: " + std::to_string(importance.numel()) + " importance weights for " +
                                std::to_string(x.size(1)) + " columns");
  importance = importance.to(at::kFloat).contiguous();
  return importance.data_ptr<float>();
}

// Σ x² / n in float, summed in order, as llama.cpp's quantize_row_*_impl.
float row_mean_square(const float* x, int64_t n) {
  float sum = 0;
  for (int64_t j = 0; j < n; ++j) sum += x[j] * x[j];
  return sum / static_cast<float>(n);
}

// Rows [begin, end) of `x`, widened to float32 a chunk at a time, into `out`.
void quantize_rows(const at::Tensor& x, DType dtype, const float* qw, uint8_t* out, int64_t begin, int64_t end) {
  const int64_t cols = x.size(1), bytes = row_bytes(dtype, cols);
  const int block = traits(dtype).block, block_bytes = traits(dtype).block_bytes;
  const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 14) / cols);
  at::Tensor rows;
  for (int64_t first = begin; first < end; first += chunk) {
    const int64_t n = std::min(chunk, end - first);
    const at::Tensor part = x.narrow(0, first, n);
    rows = part.scalar_type() == at::kFloat && part.is_contiguous() ? part : part.to(at::kFloat).contiguous();
    const float* v = rows.data_ptr<float>();
    if (!std::all_of(v, v + n * cols, [](float f) { return std::isfinite(f); }))
      throw InputError("holds NaN or infinite values, which " + std::string(to_string(dtype)) + " cannot store");
    for (int64_t r = 0; r < n; ++r) {
      const float sigma2 = qw ? row_mean_square(v + r * cols, cols) : 0.f;
      for (int64_t b = 0; b < cols / block; ++b)
        quantize_block<false>(v + r * cols + b * block, dtype, out + (first + r) * bytes + b * block_bytes,
                              qw ? qw + b * block : nullptr, sigma2);
    }
  }
}

}  // namespace

int64_t row_bytes(DType dtype, int64_t cols) {
  const DTypeTraits& t = block_traits(dtype);
  return cols / t.block * t.block_bytes;
}

at::Tensor quantize_ref(const at::Tensor& x, DType dtype, at::Tensor importance) {
  const float* qw = checked_rows(x, dtype, importance);
  const at::Tensor values = x.to(at::kFloat).contiguous();
  if (!at::isfinite(values).all().item<bool>())
    throw InputError("holds NaN or infinite values, which " + std::string(to_string(dtype)) + " cannot store");
  at::Tensor out = at::empty({x.size(0), row_bytes(dtype, x.size(1))}, at::kByte);
  const int block = traits(dtype).block, per_row = static_cast<int>(x.size(1) / block);
  for (int64_t b = 0; b < values.numel() / block; ++b) {
    const float* row = values.data_ptr<float>() + b / per_row * x.size(1);
    quantize_block<true>(values.data_ptr<float>() + b * block, dtype, out.data_ptr<uint8_t>() + b * traits(dtype).block_bytes,
                         qw ? qw + b % per_row * block : nullptr, qw ? row_mean_square(row, x.size(1)) : 0.f);
  }
  return out;
}

at::Tensor quantize(const at::Tensor& x, DType dtype, at::Tensor importance) {
  const float* qw = checked_rows(x, dtype, importance);
  at::Tensor out = at::empty({x.size(0), row_bytes(dtype, x.size(1))}, at::kByte);
  uint8_t* bytes = out.data_ptr<uint8_t>();
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, x.size(1)));
  at::parallel_for(0, x.size(0), grain,
                   [&](int64_t begin, int64_t end) { quantize_rows(x, dtype, qw, bytes, begin, end); });
  return out;
}

void dequantize_row(const uint8_t* data, DType dtype, int64_t n, float* out) {
  const DTypeTraits& t = block_traits(dtype);
  for (int64_t b = 0; b < n / t.block; ++b) dequantize_block(data + b * t.block_bytes, dtype, out + b * t.block);
}

at::Tensor dequantize(const at::Tensor& data, DType dtype, int64_t cols) {
  const int64_t bytes = row_bytes(dtype, cols);
  const at::Tensor in = data.contiguous().view({-1, bytes});
  at::Tensor out = at::empty({in.size(0), cols}, at::kFloat);
  const uint8_t* src = in.data_ptr<uint8_t>();
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, in.size(0), 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) dequantize_row(src + r * bytes, dtype, cols, dst + r * cols);
  });
  return out;
}

}  // namespace mq::blocks
