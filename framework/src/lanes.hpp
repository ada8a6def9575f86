#pragma once
// Min and max in sixteen-lane GCC/clang vectors, for the cloned kernels (hot.hpp).

#include <c10/util/BFloat16.h>

#include <cstdint>
#include <cstring>
#include <limits>

namespace mq {

// Min and max of a span in sixteen lanes of a GCC/clang vector (the loop vectorizer
// leaves float min/max reductions alone; min and max are exact, so the lane order does
// not change the result, and NaN never replaces a bound).
typedef float Lanes __attribute__((vector_size(64)));

typedef float Lanes8 __attribute__((vector_size(32)));
typedef float Lanes4 __attribute__((vector_size(16)));
typedef uint16_t Bits16 __attribute__((vector_size(32)));  // sixteen bfloat16
typedef uint32_t Bits32 __attribute__((vector_size(64)));

// Sixteen elements from `in` as float lanes, bfloat16 widened exactly in registers (its
// bits are a float's upper half), so that bfloat16 input is read as it is, not through a
// widened copy.
// (An out parameter: a returned 64-byte vector draws GCC's ABI note where AVX-512 is off.)
inline __attribute__((always_inline)) void load16(const float* in, Lanes& v) { std::memcpy(&v, in, sizeof v); }

inline __attribute__((always_inline)) void load16(const c10::BFloat16* in, Lanes& v) {
  Bits16 h;
  std::memcpy(&h, in, sizeof h);
  const Bits32 w = __builtin_convertvector(h, Bits32) << 16;
  std::memcpy(&v, &w, sizeof v);
}

// One element as float (the loop vectorizer widens these itself).
inline __attribute__((always_inline)) float to_float(float x) { return x; }
inline __attribute__((always_inline)) float to_float(c10::BFloat16 x) {
  const uint32_t bits = uint32_t{x.x} << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// The lowest and highest of a vector's lanes by halving it in registers: a handful of
// shuffles instead of sixteen scalar steps, or of the stack round trips that stall
// store forwarding; it counts for short spans (int4 groups).
inline __attribute__((always_inline)) void fold(const Lanes& mn, const Lanes& mx, float* lo, float* hi) {
  Lanes8 l8 = __builtin_shufflevector(mn, mn, 0, 1, 2, 3, 4, 5, 6, 7);
  Lanes8 h8 = __builtin_shufflevector(mx, mx, 0, 1, 2, 3, 4, 5, 6, 7);
  const Lanes8 l8b = __builtin_shufflevector(mn, mn, 8, 9, 10, 11, 12, 13, 14, 15);
  const Lanes8 h8b = __builtin_shufflevector(mx, mx, 8, 9, 10, 11, 12, 13, 14, 15);
  l8 = l8b < l8 ? l8b : l8;
  h8 = h8b > h8 ? h8b : h8;
  Lanes4 l4 = __builtin_shufflevector(l8, l8, 0, 1, 2, 3);
  Lanes4 h4 = __builtin_shufflevector(h8, h8, 0, 1, 2, 3);
  const Lanes4 l4b = __builtin_shufflevector(l8, l8, 4, 5, 6, 7);
  const Lanes4 h4b = __builtin_shufflevector(h8, h8, 4, 5, 6, 7);
  l4 = l4b < l4 ? l4b : l4;
  h4 = h4b > h4 ? h4b : h4;
  float l = l4[0], h = h4[0];
  for (int j = 1; j < 4; ++j) {
    l = l4[j] < l ? l4[j] : l;
    h = h4[j] > h ? h4[j] : h;
  }
  *lo = l;
  *hi = h;
}

// Two pairs of accumulators over 32 elements a step, so that each min/max waits on the
// one two steps back, not the one before (their latency, not the loads, bounded the loop).
template <class T>
inline __attribute__((always_inline)) void min_max_body(const T* in, int64_t n, float* lo, float* hi) {
  Lanes mn, mx;
  for (int j = 0; j < 16; ++j) {
    mn[j] = *lo;
    mx[j] = *hi;
  }
  Lanes mn2 = mn, mx2 = mx;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    Lanes v, w;
    load16(in + i, v);
    load16(in + i + 16, w);
    mn = v < mn ? v : mn;
    mx = v > mx ? v : mx;
    mn2 = w < mn2 ? w : mn2;
    mx2 = w > mx2 ? w : mx2;
  }
  mn = mn2 < mn ? mn2 : mn;
  mx = mx2 > mx ? mx2 : mx;
  for (; i + 16 <= n; i += 16) {
    Lanes v;
    load16(in + i, v);
    mn = v < mn ? v : mn;
    mx = v > mx ? v : mx;
  }
  float l, h;
  fold(mn, mx, &l, &h);
  for (; i < n; ++i) {
    const float v = to_float(in[i]);
    l = v < l ? v : l;
    h = v > h ? v : h;
  }
  *lo = l;
  *hi = h;
}

// a = the lower (or higher) of a and b, lane by lane.
inline __attribute__((always_inline)) void pick(Lanes& a, const Lanes& b, bool lowest) {
  a = lowest ? (b < a ? b : a) : (b > a ? b : a);
}

// Sixteen lane vectors into the sixteen lowest (highest) values, one per vector.
inline __attribute__((always_inline)) void fold16(Lanes* v, bool lowest, float* out) {
  for (int j = 0; j < 8; ++j) {
    Lanes a = __builtin_shufflevector(v[2 * j], v[2 * j + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
    pick(a, __builtin_shufflevector(v[2 * j], v[2 * j + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31),
         lowest);
    v[j] = a;
  }
  for (int j = 0; j < 4; ++j) {
    Lanes a = __builtin_shufflevector(v[2 * j], v[2 * j + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
    pick(a, __builtin_shufflevector(v[2 * j], v[2 * j + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31),
         lowest);
    v[j] = a;
  }
  for (int j = 0; j < 2; ++j) {
    Lanes a = __builtin_shufflevector(v[2 * j], v[2 * j + 1], 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29);
    pick(a, __builtin_shufflevector(v[2 * j], v[2 * j + 1], 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31),
         lowest);
    v[j] = a;
  }
  Lanes a = __builtin_shufflevector(v[0], v[1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  pick(a, __builtin_shufflevector(v[0], v[1], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31), lowest);
  std::memcpy(out, &a, sizeof a);
}

// The min and max of sixteen consecutive spans of `span` elements (a multiple of 16),
// into lo[0..15] and hi[0..15]: each span in one pair of lanes, then the sixteen lane
// vectors folded together in four halving steps (15 shuffle pairs for all sixteen,
// where fold() takes about as many for each one).
template <class T>
inline __attribute__((always_inline)) void min_max_16_spans(const T* in, int64_t span, float* lo, float* hi) {
  Lanes mins[16], maxs[16];
  for (int s = 0; s < 16; ++s) {
    const T* p = in + s * span;
    Lanes mn = Lanes{} + std::numeric_limits<float>::infinity(), mx = -mn;  // NaN never enters
    for (int64_t i = 0; i < span; i += 16) {
      Lanes v;
      load16(p + i, v);
      mn = v < mn ? v : mn;
      mx = v > mx ? v : mx;
    }
    mins[s] = mn;
    maxs[s] = mx;
  }
  fold16(mins, true, lo);
  fold16(maxs, false, hi);
}

}  // namespace mq
