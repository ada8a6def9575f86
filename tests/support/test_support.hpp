#pragma once
// Helpers shared by the tests: scratch directories, files, and running mq-pipeline
// as a user would.

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace mq::test {

namespace fs = std::filesystem;

// A fresh directory under the build tree, removed when the test passes.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& name)
      : path_(fs::path(MQ_BINARY_DIR) / "scratch" / (name + "-" + std::to_string(getpid()))) {
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

inline void write_file(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

inline std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs mq-pipeline with `args` (already shell-quoted where needed).
inline CommandResult run_pipeline(const std::string& args, const fs::path& workdir = fs::path()) {
  static int counter = 0;
  const fs::path base = fs::path(MQ_BINARY_DIR) / "scratch" /
                        ("cmd-" + std::to_string(getpid()) + "-" + std::to_string(counter++));
  fs::create_directories(base.parent_path());
  const std::string command = (workdir.empty() ? "" : "cd '" + workdir.string() + "' && ") +
                              "MQ_PLUGIN_PATH= '" MQ_PIPELINE_EXE "' " + args + " >'" +
                              base.string() + ".out' 2>'" + base.string() + ".err' </dev/null";
  const int status = std::system(command.c_str());
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_file(base.string() + ".out");
  r.err = read_file(base.string() + ".err");
  fs::remove(base.string() + ".out");
  fs::remove(base.string() + ".err");
  return r;
}

inline int count_lines(const std::string& text) {
  int n = 0;
  for (char c : text) n += c == '\n';
  return n;
}

}  // namespace mq::test

#include <memory>

#include "mq/plugin.hpp"

extern "C" const mq::PluginDescriptor* mq_plugin_descriptor() noexcept;

namespace mq::test {

// An instance of the plugin linked into this test, from options checked and completed
// with defaults as the runner does.
template <class T>
std::unique_ptr<T> make_plugin(std::vector<MapEntry> options = {}) {
  const PluginDescriptor* d = mq_plugin_descriptor();
  std::unique_ptr<Plugin> p = d->factory->create(resolve_options(*d, Value::map(std::move(options))));
  return std::unique_ptr<T>(dynamic_cast<T*>(p.release()));
}

inline MapEntry opt(std::string key, Value value) { return {std::move(key), std::move(value), {}}; }

}  // namespace mq::test
