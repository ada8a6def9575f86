#include "plugin_registry.hpp"

#define BOOST_DLL_USE_STD_FS
#include <boost/dll/shared_library.hpp>
#include <dlfcn.h>

#include <algorithm>
#include <map>
#include <mutex>

#include "mq/error.hpp"

namespace fs = std::filesystem;

namespace mq::detail {
namespace {

// Process-wide and deliberately leaked: libraries stay loaded until exit.
struct LoadedLibraries {
  std::mutex mutex;
  std::map<fs::path, LoadedPlugin> by_file;
  std::vector<boost::dll::shared_library>* libraries = new std::vector<boost::dll::shared_library>;
};

LoadedLibraries& loaded() {
  static LoadedLibraries* instance = new LoadedLibraries;
  return *instance;
}

// Boost.DLL reports a failed dlopen as a bare error code; dlerror() says why.
std::string dlopen_reason(const fs::path& file) {
  void* handle = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle) return "unknown reason";
  const char* reason = dlerror();
  return reason ? reason : "unknown reason";
}

[[noreturn]] void refuse(const fs::path& file, const std::string& why) {
  throw PluginError("plugin " + file.string() + ": " + why);
}

bool is_plugin_file(const fs::path& p) {
  const std::string name = p.filename().string();
  return name.rfind("mq_", 0) == 0 && p.extension() == ".so";
}

}  // namespace

LoadedPlugin load_plugin_library(const fs::path& path) {
  std::error_code ec;
  const fs::path file = fs::canonical(path, ec);
  if (ec) refuse(path, "cannot be found (" + ec.message() + ")");

  LoadedLibraries& libs = loaded();
  std::lock_guard<std::mutex> lock(libs.mutex);
  if (auto it = libs.by_file.find(file); it != libs.by_file.end()) return it->second;

  boost::dll::shared_library lib;
  boost::dll::fs::error_code load_error;
  lib.load(file, boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local, load_error);
  if (load_error) refuse(file, "cannot be loaded: " + dlopen_reason(file));
  libs.libraries->push_back(lib);  // keeps the library loaded for the life of the process

  if (!lib.has(MQ_PLUGIN_ENTRY_POINT_NAME))
    refuse(file, "has no entry point '" MQ_PLUGIN_ENTRY_POINT_NAME "' (not an mq plugin?)");
  auto& entry = lib.get<const PluginDescriptor*()>(MQ_PLUGIN_ENTRY_POINT_NAME);

  const PluginDescriptor* d = nullptr;
  try {
    d = entry();
  } catch (const std::exception& e) {
    refuse(file, std::string("entry point threw: ") + e.what());
  } catch (...) {
    refuse(file, "entry point threw an unknown exception");
  }
  if (!d) refuse(file, "entry point returned no descriptor (it failed while registering)");
  if (d->api_version != MQ_API_VERSION)
    refuse(file, "plugin API version " + std::to_string(d->api_version) +
                     ", but this mq supports version " + std::to_string(MQ_API_VERSION) +
                     "; rebuild the plugin against this SDK");
  const std::string tag = d->abi_tag ? d->abi_tag : "";
  if (tag != abi_tag())
    refuse(file, "ABI tag '" + tag + "' does not match this mq's '" + abi_tag() +
                     "'; rebuild the plugin against this SDK");
  const int kind = static_cast<int>(d->kind);
  if (kind < static_cast<int>(PluginKind::kObserver) || kind > static_cast<int>(PluginKind::kArchitecture))
    refuse(file, "unknown plugin kind " + std::to_string(kind));
  if (!d->name || !*d->name) refuse(file, "descriptor has no name");
  if (!d->factory) refuse(file, "descriptor has no factory");
  if (d->option_count > 0 && !d->options) refuse(file, "descriptor declares options but has none");

  LoadedPlugin plugin{d, file};
  libs.by_file.emplace(file, plugin);
  return plugin;
}

void PluginRegistry::add_path(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_directory(path, ec)) {
    add_library(path);
    return;
  }
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(path, ec))
    if (is_plugin_file(entry.path())) files.push_back(entry.path());
  if (ec) throw PluginError("plugin directory " + path.string() + ": " + ec.message());
  std::sort(files.begin(), files.end());
  for (const fs::path& f : files) add_library(f);
}

void PluginRegistry::add_library(const fs::path& file) {
  const LoadedPlugin plugin = load_plugin_library(file);
  for (const LoadedPlugin& existing : plugins_) {
    if (existing.file == plugin.file) return;  // the same library reached twice
    if (existing.descriptor->kind == plugin.descriptor->kind &&
        std::string(existing.descriptor->name) == plugin.descriptor->name)
      throw PluginError("duplicate " + std::string(to_string(plugin.descriptor->kind)) +
                        " plugin '" + plugin.descriptor->name + "': " + existing.file.string() +
                        " and " + plugin.file.string());
  }
  plugins_.push_back(plugin);
}

const LoadedPlugin* PluginRegistry::find(PluginKind kind, const std::string& name) const {
  for (const LoadedPlugin& p : plugins_)
    if (p.descriptor->kind == kind && name == p.descriptor->name) return &p;
  return nullptr;
}

std::vector<std::string> PluginRegistry::names(PluginKind kind) const {
  std::vector<std::string> out;
  for (const LoadedPlugin& p : plugins_)
    if (p.descriptor->kind == kind) out.push_back(p.descriptor->name);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace mq::detail
