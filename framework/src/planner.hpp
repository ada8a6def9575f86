#pragma once
// The recipe's `target:` applied to a quantizer's plan (docs/mixed-precision.md).

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "mq/model.hpp"
#include "mq/quantized_model.hpp"
#include "mq/quantizer.hpp"
#include "mq/recipe.hpp"

namespace mq::detail {

// Gives each Linear weight that `plan` quantizes by its type (not by an override, an
// exclude or a skip, which stay as they are) the candidate of `target` that allocate()
// chooses. Linears an engine fuses (q/k/v, gate/up: fused_unit) are one unit with one
// spec. A unit's cost for a candidate: its layers' Σ_j d_j ‖W[:, j] − Ŵ[:, j]‖² / Σ_j d_j
// ‖W[:, j]‖², d_j the mean square of input j over the calibration batches (1 without
// calibration), or, with sensitivity output, the model's mean per-token output KL with
// only that unit quantized.
// The costs are read from and written to `cache` (when `write`) when it is not empty: a
// JSON file keyed by the model's files, the calibration, the candidates and the
// sensitivity. Returns the one-line summary the report shows; throws RecipeError when
// the target cannot be met or nothing is left to choose for.
std::string plan_to_target(const Model& model, std::vector<PlanRow>& plan, const Target& target,
                           const QuantizeContext& context, const std::filesystem::path& cache, bool write);

// Where a run keeps the estimates for `output`: beside it, named after it.
std::filesystem::path sensitivity_cache(const std::filesystem::path& output);

}  // namespace mq::detail
