#include "mq/text.hpp"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <random>
#include <sstream>

#include "mq/error.hpp"

namespace mq {

namespace fs = std::filesystem;

std::string read_text_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path.string() + ": cannot be read");
  std::stringstream bytes;
  bytes << in.rdbuf();
  std::string text = bytes.str();
  check_utf8(text, path.string());
  return text;
}

std::vector<std::string> read_documents(const TextSource& source) {
  const fs::path& path = source.path;
  std::error_code ec;
  if (!fs::exists(path, ec)) throw InputError(path.string() + ": no such file or directory");
  std::vector<std::string> documents;
  if (fs::is_directory(path, ec)) {
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(path, ec))
      if (e.path().extension() == ".txt" && e.is_regular_file(ec)) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    if (files.empty()) throw InputError(path.string() + ": a directory of text holds .txt files; this has none");
    for (const fs::path& f : files) documents.push_back(read_text_file(f));
  } else if (path.extension() == ".jsonl") {
    std::istringstream lines(read_text_file(path));
    std::string line;
    for (int64_t n = 1; std::getline(lines, line); ++n) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      const auto j = nlohmann::json::parse(line, nullptr, false);
      const std::string where = path.string() + ":" + std::to_string(n);
      if (j.is_discarded() || !j.is_object()) throw InputError(where + ": not a JSON object");
      const auto it = j.find(source.field);
      if (it == j.end()) throw InputError(where + ": no field '" + source.field + "'");
      if (!it->is_string()) throw InputError(where + ": field '" + source.field + "' is not a string");
      documents.push_back(it->get<std::string>());
    }
  } else {
    documents.push_back(read_text_file(path));
  }
  if (std::all_of(documents.begin(), documents.end(), [](const std::string& d) { return d.empty(); }))
    throw InputError(path.string() + ": holds no text");
  return documents;
}

namespace {

at::Tensor ids_tensor(const int32_t* ids, int64_t n) {
  at::Tensor t = at::empty({1, n}, at::kLong);
  std::copy(ids, ids + n, t.data_ptr<int64_t>());
  return t;
}

}  // namespace

std::string TokenSamples::summary() const {
  int64_t longest = 0;
  for (const at::Tensor& b : batches) longest = std::max(longest, b.size(1));
  const bool even = std::all_of(batches.begin(), batches.end(), [&](const at::Tensor& b) { return b.size(1) == longest; });
  return std::to_string(batches.size()) + " samples of " + (even ? "" : "up to ") + std::to_string(longest) +
         " tokens (" + std::to_string(tokens) + " of " + std::to_string(source_tokens) + " tokens) from " +
         path.string();
}

TokenSamples token_samples(const Tokenizer& tokenizer, const TextSamples& spec) {
  const std::vector<std::string> documents = read_documents(spec.source);
  TokenSamples out;
  out.path = spec.source.path;
  std::mt19937_64 rng(static_cast<uint64_t>(spec.seed));
  if (spec.cut == TextCut::kConcatenate) {
    std::string all;
    for (const std::string& d : documents) {
      if (d.empty()) continue;
      if (!all.empty()) all += "\n\n";
      all += d;
    }
    const std::vector<int32_t> ids = tokenizer.encode(all, true);
    if (ids.empty()) throw InputError(spec.source.path.string() + ": gives no tokens");
    const int64_t n = static_cast<int64_t>(ids.size()), len = std::min(spec.seq_len, n);
    out.source_tokens = n;
    const int64_t windows = n / len;
    for (int64_t s = 0; s < spec.samples && (spec.shuffle || s < windows); ++s) {
      const int64_t start = spec.shuffle ? static_cast<int64_t>(rng() % static_cast<uint64_t>(n - len + 1)) : s * len;
      out.batches.push_back(ids_tensor(ids.data() + start, len));
    }
  } else {
    std::vector<size_t> order(documents.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    if (spec.shuffle)
      for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng() % i]);  // Fisher-Yates
    for (size_t i : order) {
      if (documents[i].empty()) continue;
      const std::vector<int32_t> ids = tokenizer.encode(documents[i], true);
      out.source_tokens += static_cast<int64_t>(ids.size());
      if (static_cast<int64_t>(out.batches.size()) < spec.samples)
        out.batches.push_back(ids_tensor(ids.data(), std::min<int64_t>(spec.seq_len, static_cast<int64_t>(ids.size()))));
    }
  }
  for (const at::Tensor& b : out.batches) out.tokens += b.size(1);
  if (out.batches.empty() || out.tokens == 0) throw InputError(spec.source.path.string() + ": gives no tokens");
  return out;
}

}  // namespace mq
