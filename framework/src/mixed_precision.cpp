#include "mq/mixed_precision.hpp"

#include <algorithm>
#include <map>
#include <numeric>
#include <tuple>

namespace mq {
namespace {

// The choices of one unit that no cheaper (or equally cheap, listed earlier) choice
// beats, by bytes.
std::vector<size_t> frontier(const std::vector<Choice>& choices) {
  std::vector<size_t> order(choices.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return std::tie(choices[a].bytes, choices[a].error) < std::tie(choices[b].bytes, choices[b].error);
  });
  std::vector<size_t> front;
  for (size_t i : order)
    if (front.empty() || choices[i].error < choices[front.back()].error) front.push_back(i);
  return front;
}

// Its lower convex hull: each step saves less error per byte than the one before.
std::vector<size_t> hull(const std::vector<Choice>& c, const std::vector<size_t>& front) {
  std::vector<size_t> h;
  for (size_t i : front) {
    while (h.size() >= 2) {
      const Choice &a = c[h[h.size() - 2]], &b = c[h.back()];
      // b is on or above the segment a -> i: saving per byte a -> b <= b -> i.
      const double ab = (a.error - b.error) / static_cast<double>(b.bytes - a.bytes);
      const double bi = (b.error - c[i].error) / static_cast<double>(c[i].bytes - b.bytes);
      if (ab > bi) break;
      h.pop_back();
    }
    h.push_back(i);
  }
  return h;
}

}  // namespace

std::string fused_unit(const std::string& layer) {
  static const std::map<std::string, std::string> kFused = {
      {"q_proj", "qkv_proj"}, {"k_proj", "qkv_proj"}, {"v_proj", "qkv_proj"}, {"gate_proj", "gate_up_proj"},
      {"up_proj", "gate_up_proj"}, {"query", "qkv_proj"}, {"key", "qkv_proj"}, {"value", "qkv_proj"}};
  // A MoE layer's experts: vLLM's FusedMoE holds all of them with one scheme.
  if (const size_t experts = layer.rfind(".experts."); experts != std::string::npos) {
    const std::string rest = layer.substr(experts + 9);
    const size_t dot = rest.find('.');
    if (dot != std::string::npos && rest.find_first_not_of("0123456789") == dot && dot > 0)
      return layer.substr(0, experts + 8);
  }
  const size_t dot = layer.rfind('.');
  const size_t leaf = dot == std::string::npos ? 0 : dot + 1;
  const auto fused = kFused.find(layer.substr(leaf));
  return fused == kFused.end() ? layer : layer.substr(0, leaf) + fused->second;
}

std::vector<size_t> allocate(const std::vector<std::vector<Choice>>& units, int64_t budget) {
  std::vector<size_t> chosen(units.size());
  std::vector<std::vector<size_t>> fronts(units.size()), hulls(units.size());
  int64_t total = 0;
  for (size_t u = 0; u < units.size(); ++u) {
    if (units[u].empty()) return {};
    fronts[u] = frontier(units[u]);
    hulls[u] = hull(units[u], fronts[u]);
    chosen[u] = hulls[u].front();
    total += units[u][chosen[u]].bytes;
  }
  if (total > budget) return {};

  struct Step {
    double saving;  // error per byte
    size_t unit, to;
  };
  std::vector<Step> steps;
  for (size_t u = 0; u < units.size(); ++u)
    for (size_t k = 1; k < hulls[u].size(); ++k) {
      const Choice &a = units[u][hulls[u][k - 1]], &b = units[u][hulls[u][k]];
      steps.push_back({(a.error - b.error) / static_cast<double>(b.bytes - a.bytes), u, k});
    }
  // Within a unit savings fall step by step, so this order keeps each unit's steps in turn.
  std::stable_sort(steps.begin(), steps.end(), [](const Step& a, const Step& b) { return a.saving > b.saving; });
  std::vector<bool> blocked(units.size(), false);
  for (const Step& s : steps) {
    if (blocked[s.unit]) continue;
    const int64_t more = units[s.unit][hulls[s.unit][s.to]].bytes - units[s.unit][chosen[s.unit]].bytes;
    if (total + more > budget) {
      blocked[s.unit] = true;  // its later steps need this one
      continue;
    }
    chosen[s.unit] = hulls[s.unit][s.to];
    total += more;
  }

  // What the hull skipped: any upgrade that still fits, the largest saving first.
  for (;;) {
    double best_saving = 0;
    size_t best_unit = units.size(), best_choice = 0;
    for (size_t u = 0; u < units.size(); ++u)
      for (size_t i : fronts[u]) {
        const Choice &now = units[u][chosen[u]], &c = units[u][i];
        if (c.error < now.error && total + (c.bytes - now.bytes) <= budget && now.error - c.error > best_saving) {
          best_saving = now.error - c.error;
          best_unit = u;
          best_choice = i;
        }
      }
    if (best_unit == units.size()) break;
    total += units[best_unit][best_choice].bytes - units[best_unit][chosen[best_unit]].bytes;
    chosen[best_unit] = best_choice;
  }
  return chosen;
}

}  // namespace mq
