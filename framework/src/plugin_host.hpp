#pragma once
// Plugin hosting, shared by the runner, `validate` and the C++ API: the search path and
// the libraries on it, a recipe step resolved to a plugin with its options checked,
// instances made, and every call into a plugin guarded so that a failure names the
// plugin and the stage.

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mq/error.hpp"
#include "mq/model.hpp"
#include "mq/recipe.hpp"
#include "plugin_registry.hpp"

namespace mq::detail {

// The first non-empty line (LibTorch messages start with a newline and carry backtraces).
std::string first_line(const std::string& text);

// Runs one stage of a plugin, so that every failure names the plugin and the stage. An
// mq::Error keeps its type (callers catch it by type); anything else is a PluginError.
template <class F>
auto guarded(const std::string& who, const std::string& stage, F&& fn) -> decltype(fn()) {
  const std::string prefix = who + ", " + stage + ": ";
  try {
    return fn();
  } catch (const RecipeError& e) {
    throw RecipeError(prefix + e.what());
  } catch (const InputError& e) {
    throw InputError(prefix + e.what());
  } catch (const PluginError& e) {
    throw PluginError(prefix + e.what());
  } catch (const OutputError& e) {
    throw OutputError(prefix + e.what());
  } catch (const Error& e) {
    throw Error(e.code(), prefix + e.what());
  } catch (const std::exception& e) {
    throw PluginError(who + " failed while " + stage + ": " + first_line(e.what()));
  } catch (...) {
    throw PluginError(who + " failed while " + stage + ": unknown exception");
  }
}

// A plugin chosen for a step, with the step's options checked against its declarations.
struct Resolved {
  const LoadedPlugin* plugin = nullptr;
  Options options;

  const PluginDescriptor& descriptor() const { return *plugin->descriptor; }
  // "format 'safetensors'": how messages name it.
  std::string label() const;
  // "format/safetensors@1.3.0": how provenance names it.
  std::string tag() const;
};

// What runs a Hugging Face model directory: the plugin and "architecture 'llama'
// (LlamaForCausalLM, 2 blocks)"; or no plugin, and a summary naming what
// config.json says and the families the plugins run; or no config.json (config empty).
struct ArchitectureMatch {
  std::filesystem::path config_file;
  std::string config;  // its text
  std::optional<Resolved> plugin;
  std::string summary;
};

class PluginHost {
 public:
  // Loads every plugin on plugin_search_path(first, extra). Throws PluginError on a
  // refused library or a duplicate (kind, name), RecipeError on a missing path.
  explicit PluginHost(const std::vector<std::filesystem::path>& first = {},
                      const std::vector<std::filesystem::path>& extra = {});

  // Throws RecipeError naming the step's place for an unknown plugin or bad options.
  Resolved resolve(PluginKind kind, const PluginStep& step) const;

  // A new instance, made by the plugin's factory (guarded).
  template <class T>
  std::unique_ptr<T> make(const Resolved& r) const {
    std::unique_ptr<Plugin> p = guarded(r.label(), "creating it", [&] { return r.descriptor().factory->create(r.options); });
    T* typed = dynamic_cast<T*>(p.get());
    if (!typed) throw PluginError(r.label() + " from " + r.plugin->file.string() + " created an object of the wrong kind");
    p.release();
    return std::unique_ptr<T>(typed);
  }

  // The format plugin named `format`, or else the first (by name) whose can_read()
  // takes `path`; `options` checked against the one chosen. Throws InputError when
  // none reads it.
  Resolved reader_for(const std::filesystem::path& path, const std::string& format = "",
                      const Value& options = Value::map()) const;

  const PluginRegistry& registry() const { return registry_; }

  // The first architecture plugin (by name) that runs `directory`'s config.json.
  ArchitectureMatch match_architecture(const std::filesystem::path& directory) const;

  // Makes `model`, read from a Hugging Face model directory, runnable with the plugin
  // match_architecture() finds: its summary, or "" when none does (the model stays a
  // checkpoint; model.changes says why) or the model is no such directory. One that runs
  // it but cannot build it (the config and the tensors disagree) leaves it a checkpoint
  // too, and `warn` gets why: a recipe that must run it is refused later. `must_run`
  // (the recipe calibrates or evaluates): that build error is thrown instead, and a
  // config no plugin runs is an InputError with the summary.
  std::string attach_architecture(Model& model, const std::function<void(const std::string&)>& warn,
                                  bool must_run = false) const;

 private:
  PluginRegistry registry_;
};

}  // namespace mq::detail
