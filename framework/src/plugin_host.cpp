#include "plugin_host.hpp"

#define BOOST_DLL_USE_STD_FS
#include <boost/dll/runtime_symbol_info.hpp>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>

#include <nlohmann/json.hpp>

#include "mq/architecture.hpp"
#include "mq/format.hpp"
#include "mq/pipeline.hpp"
#include "option_check.hpp"
#include "suggest.hpp"

namespace fs = std::filesystem;

namespace mq {
namespace {

fs::path builtin_plugin_dir() {
  // libmq's own location, so embedding programs find the plugins installed beside it.
  return boost::dll::this_line_location().parent_path() / "mono-quant" / "plugins";
}

}  // namespace

std::vector<fs::path> plugin_search_path(const std::vector<fs::path>& first, const std::vector<fs::path>& extra) {
  std::vector<fs::path> out;
  const auto add = [&](const fs::path& p, bool must_exist) {
    std::error_code ec;
    if (!fs::exists(p, ec)) {
      if (must_exist) throw RecipeError("plugin path '" + p.string() + "' does not exist");
      return;
    }
    const fs::path canonical = fs::canonical(p, ec);
    if (std::find(out.begin(), out.end(), canonical) == out.end()) out.push_back(canonical);
  };
  for (const fs::path& p : first) add(p, true);
  for (const fs::path& p : extra) add(p, true);
  if (const char* env = std::getenv("MQ_PLUGIN_PATH")) {
    std::stringstream ss(env);
    for (std::string p; std::getline(ss, p, ':');)
      if (!p.empty()) add(p, false);
  }
  add(builtin_plugin_dir(), false);
  return out;
}

std::vector<PluginInfo> discover_plugins(const std::vector<fs::path>& first, const std::vector<fs::path>& extra) {
  const detail::PluginHost host(first, extra);
  std::vector<PluginInfo> out;
  for (const detail::LoadedPlugin& p : host.registry().plugins()) {
    const PluginDescriptor& d = *p.descriptor;
    out.push_back({d.kind, d.name, d.version ? d.version : "", d.description ? d.description : "", p.file,
                   std::vector<OptionDecl>(d.options, d.options + d.option_count), &d});
  }
  return out;
}

namespace detail {

std::string first_line(const std::string& text) {
  const size_t begin = text.find_first_not_of(" \t\r\n");
  if (begin == std::string::npos) return "";
  return text.substr(begin, text.find('\n', begin) - begin);
}

std::string Resolved::label() const {
  return std::string(to_string(descriptor().kind)) + " '" + descriptor().name + "'";
}

std::string Resolved::tag() const {
  return std::string(to_string(descriptor().kind)) + "/" + descriptor().name + "@" +
         (descriptor().version ? descriptor().version : "");
}

PluginHost::PluginHost(const std::vector<fs::path>& first, const std::vector<fs::path>& extra) {
  for (const fs::path& p : plugin_search_path(first, extra)) registry_.add_path(p);
}

Resolved PluginHost::resolve(PluginKind kind, const PluginStep& step) const {
  const LoadedPlugin* p = registry_.find(kind, step.plugin);
  if (!p) {
    const std::string where = step.location.to_string();
    throw RecipeError((where.empty() ? "" : where + ": ") + "no " + to_string(kind) + " plugin named '" + step.plugin +
                      "'" + did_you_mean(step.plugin, registry_.names(kind)) +
                      "; available: " + quoted_list(registry_.names(kind)));
  }
  return {p, check_options(step, *p->descriptor)};
}

namespace {

// "LlamaForCausalLM (model_type 'llama')": what a config.json says the model is.
std::string named_in(const nlohmann::json& j) {
  std::string named;
  if (const auto a = j.find("architectures"); j.is_object() && a != j.end() && a->is_array())
    for (const auto& n : *a) named += (named.empty() ? "" : ", ") + (n.is_string() ? n.get<std::string>() : n.dump());
  if (const auto t = j.find("model_type"); j.is_object() && t != j.end() && t->is_string())
    named += named.empty() ? "model_type '" + t->get<std::string>() + "'" : " (model_type '" + t->get<std::string>() + "')";
  return named;
}

}  // namespace

ArchitectureMatch PluginHost::match_architecture(const fs::path& directory) const {
  ArchitectureMatch m;
  m.config_file = directory / "config.json";
  std::ifstream in(m.config_file, std::ios::binary);
  if (!in) return m;
  m.config = std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const nlohmann::json j = nlohmann::json::parse(m.config, nullptr, false);
  std::string families;
  for (const std::string& name : registry_.names(PluginKind::kArchitecture)) {
    const Resolved r = resolve(PluginKind::kArchitecture, {name, Value::map(), {}});
    if (guarded(r.label(), "reading " + m.config_file.string(), [&] { return make<Architecture>(r)->runs(m.config); })) {
      m.plugin = r;
      const auto layers = j.is_object() ? j.find("num_hidden_layers") : j.end();
      const std::string blocks = j.is_object() && layers != j.end() && layers->is_number_integer()
                                     ? std::to_string(layers->get<int64_t>()) + (layers->get<int64_t>() == 1 ? " block" : " blocks")
                                     : "";
      std::string what = named_in(j);
      what = what.substr(0, what.find(" (model_type"));  // the architectures, or the model_type alone
      if (!what.empty() && !blocks.empty()) what += ", ";
      m.summary = r.label() + (what.empty() && blocks.empty() ? "" : " (" + what + blocks + ")");
      return m;
    }
    families += (families.empty() ? "" : "; ") + name + ": " + r.plugin->descriptor->description;
  }
  const std::string named = named_in(j);
  m.summary = m.config_file.string() + ": " + (named.empty() ? "names no architecture or model_type" : named) +
              " is no family an architecture plugin runs (" +
              (families.empty() ? "none is installed" : families) + ")";
  return m;
}

std::string PluginHost::attach_architecture(Model& model, const std::function<void(const std::string&)>& warn,
                                            bool must_run) const {
  const auto dir = model.metadata.find(kHfDirectoryKey);
  if (model.runnable || dir == model.metadata.end()) return "";
  const ArchitectureMatch m = match_architecture(dir->second);
  if (m.config.empty()) return "";
  if (!m.plugin) {
    if (must_run) throw InputError(m.summary + "; the recipe's calibration or evaluation runs the model");
    model.changes.push_back("does not run: " + m.summary);
    return "";
  }
  try {
    model.runnable = guarded(m.plugin->label(), "building the model",
                             [&] { return make<Architecture>(*m.plugin)->build(model, m.config); });
  } catch (const Error& e) {
    if (must_run) throw;
    if (warn) warn(std::string(e.what()) + " (the model does not run)");
    return "";
  }
  return m.summary;
}

Resolved PluginHost::reader_for(const fs::path& path, const std::string& format, const Value& options) const {
  if (!format.empty()) return resolve(PluginKind::kFormat, {format, options, {}});
  std::vector<std::string> tried;
  for (const std::string& name : registry_.names(PluginKind::kFormat)) {
    const Resolved r = resolve(PluginKind::kFormat, {name, Value::map(), {}});
    if (guarded(r.label(), "probing " + path.string(), [&] { return make<Format>(r)->can_read(path); }))
      return resolve(PluginKind::kFormat, {name, options, {}});
    tried.push_back(name);
  }
  std::error_code ec;
  throw InputError(path.string() + ": no format plugin can read this " +
                   (fs::is_directory(path, ec) ? "directory" : "file") + " (tried " + quoted_list(tried) + ")");
}

}  // namespace detail
}  // namespace mq
