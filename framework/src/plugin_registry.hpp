#pragma once
// Loads plugin libraries and indexes them by (kind, name). Libraries are never
// unloaded: a plugin's vtables, exceptions and tensor deleters must outlive every use.

#include <filesystem>
#include <string>
#include <vector>

#include "mq/plugin.hpp"

namespace mq::detail {

struct LoadedPlugin {
  const PluginDescriptor* descriptor = nullptr;
  std::filesystem::path file;
};

class PluginRegistry {
 public:
  // Loads every mq_*.so in `dir` (or the file itself), in name order.
  void add_path(const std::filesystem::path& path);
  // Loads one library and registers its plugin. Throws PluginError when refused.
  void add_library(const std::filesystem::path& file);

  const LoadedPlugin* find(PluginKind kind, const std::string& name) const;
  std::vector<std::string> names(PluginKind kind) const;
  const std::vector<LoadedPlugin>& plugins() const { return plugins_; }

 private:
  std::vector<LoadedPlugin> plugins_;
};

// Reads and checks a library's descriptor without registering it.
LoadedPlugin load_plugin_library(const std::filesystem::path& file);

}  // namespace mq::detail
