#pragma once
// Mixed precision: a spec for each unit (a Linear, or the Linears an engine loads as
// one) chosen among candidates for the least summed error within a byte budget. The
// recipe's `target:` drives it (docs/mixed-precision.md); this is its allocator.

#include <cstdint>
#include <string>
#include <vector>

#include "mq/export.hpp"

namespace mq {

// One way to store a unit: its bytes and its estimated error.
struct Choice {
  int64_t bytes = 0;
  double error = 0;
};

// The index of one choice per unit, minimizing the summed error with the summed bytes at
// most `budget`: each unit's choices that no cheaper one beats, upgraded greedily along
// their lower convex hulls by error saved per byte (the order Lagrangian relaxation
// gives), then, while bytes remain, the upgrade saving the most error that still fits.
// What is left unspent is less than any unit's next step. Empty when even every unit's
// smallest choice exceeds the budget. Deterministic: ties go to the earlier unit.
MQ_API std::vector<size_t> allocate(const std::vector<std::vector<Choice>>& units, int64_t budget);

// The layer engines load `layer` as: vLLM packs q_proj, k_proj and v_proj (BERT's
// query, key, value) into one qkv_proj and gate_proj, up_proj into gate_up_proj, and all
// the experts of a MoE layer (`PREFIX.experts.N.*`) into one `PREFIX.experts`, each with
// one quantization scheme; any other layer is itself. Mixed precision gives the
// layers of one such unit the same spec.
MQ_API std::string fused_unit(const std::string& layer);

}  // namespace mq
