// mq-pipeline: the command line over the mq::Pipeline API.

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>

#include "console_progress.hpp"
#include "mq/error.hpp"
#include "mq/interrupt.hpp"
#include "mq/pipeline.hpp"
#include "mq/version.hpp"

namespace fs = std::filesystem;

namespace {

std::string one_line(std::string text) {
  for (char& c : text)
    if (c == '\n' || c == '\r') c = ' ';
  return text;
}

int fail(mq::ExitCode code, const std::string& message) {
  fmt::print(stderr, "mq-pipeline: error: {}\n", one_line(message));
  return static_cast<int>(code);
}

std::string option_default(const mq::OptionDecl& o) {
  return o.default_value ? o.default_value : "(required)";
}

int list_plugins(const std::vector<fs::path>& paths, bool json) {
  const std::vector<mq::PluginInfo> plugins = mq::discover_plugins(paths);
  if (json) {
    auto out = nlohmann::ordered_json::array();
    for (const mq::PluginInfo& p : plugins) {
      auto options = nlohmann::ordered_json::array();
      for (const mq::OptionDecl& o : p.options)
        options.push_back({{"name", o.name},
                           {"type", mq::to_string(o.type)},
                           {"default", o.default_value ? nlohmann::ordered_json(o.default_value)
                                                       : nlohmann::ordered_json(nullptr)},
                           {"help", o.help ? o.help : ""}});
      out.push_back({{"kind", mq::to_string(p.kind)},
                     {"name", p.name},
                     {"version", p.version},
                     {"description", p.description},
                     {"file", p.file.string()},
                     {"options", options}});
    }
    fmt::print("{}\n", out.dump(2));
    return 0;
  }
  fmt::print("search path:\n");
  for (const fs::path& p : mq::plugin_search_path(paths)) fmt::print("  {}\n", p.string());
  for (const mq::PluginInfo& p : plugins) {
    fmt::print("\n{:<10} {:<16} {:<8} {}\n", mq::to_string(p.kind), p.name, p.version, p.description);
    fmt::print("           from {}\n", p.file.string());
    for (const mq::OptionDecl& o : p.options)
      fmt::print("           {}: {} = {}  {}\n", o.name, mq::to_string(o.type), option_default(o),
                 o.help ? o.help : "");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  mq::install_interrupt_cleanup();
  CLI::App app{"mq-pipeline: post-training quantization of PyTorch models from a YAML recipe"};
  app.require_subcommand(0, 1);
  bool version = false;
  app.add_flag("--version", version, "Print the version and exit");

  std::string recipe_path;
  std::vector<std::string> overrides;
  std::vector<std::string> plugin_paths;
  bool json = false, quiet = false, dry_run = false;
  int threads = 0;

  CLI::App* run = app.add_subcommand("run", "Run a recipe: quantize, write, validate, report");
  CLI::App* check = app.add_subcommand("check", "Check a recipe and resolve its plugins; no work");
  CLI::App* plugins = app.add_subcommand("plugins", "List the plugins found on the search path");
  for (CLI::App* sub : {run, check}) {
    sub->add_option("recipe", recipe_path, "Recipe file (YAML)")->required();
    sub->add_option("--set", overrides, "Override a recipe key: --set quantizer.options.dtype=int8");
  }
  for (CLI::App* sub : {run, check, plugins})
    sub->add_option("--plugin-path", plugin_paths, "Directory or library searched first for plugins");
  run->add_flag("--json", json, "Print the JSON report on stdout");
  run->add_flag("--dry-run", dry_run,
                "Print, per tensor, the rule that matched, its spec and predicted bytes; write nothing");
  run->add_flag("--quiet,-q", quiet, "No progress and no summary");
  run->add_option("--threads", threads, "Worker threads (default: all cores)")->check(CLI::Range(1, 1024));
  plugins->add_flag("--json", json, "Machine-readable list");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return fail(mq::ExitCode::kUsage, std::string(e.what()) + " (see mq-pipeline --help)");
  }

  if (version) {
    fmt::print("mq-pipeline {} (plugin API {}, ABI {})\n", MQ_VERSION_STRING, MQ_API_VERSION,
               mq::abi_tag());
    return 0;
  }

  std::vector<fs::path> paths(plugin_paths.begin(), plugin_paths.end());
  try {
    if (plugins->parsed()) return list_plugins(paths, json);
    if (!run->parsed() && !check->parsed()) {
      std::cout << app.help();
      return static_cast<int>(mq::ExitCode::kUsage);
    }
    mq::cli::ConsoleProgress progress(stderr);
    mq::RunOptions options;
    options.plugin_paths = paths;
    options.threads = threads;
    options.progress = quiet || check->parsed() ? nullptr : &progress;
    options.warn = [](const std::string& m) { fmt::print(stderr, "mq-pipeline: warning: {}\n", one_line(m)); };
    mq::Pipeline pipeline(mq::load_recipe(recipe_path, overrides), options);
    if (check->parsed()) {
      pipeline.check();
      fmt::print("{}: ok (recipe hash {})\n", recipe_path, pipeline.recipe().hash());
      return 0;
    }
    if (dry_run) {
      const mq::Report plan = pipeline.plan();
      fmt::print("{}", json ? plan.to_json() : plan.plan_table());
      return 0;
    }
    const mq::Report report = pipeline.run();
    if (json)
      fmt::print("{}", report.to_json());
    else if (!quiet)
      fmt::print("{}", report.summary());
    if (report.status != mq::ExitCode::kOk) return fail(report.status, report.message);
    return 0;
  } catch (const mq::Error& e) {
    return fail(e.code(), e.what());
  } catch (const std::exception& e) {
    return fail(mq::ExitCode::kInternal, std::string("internal error: ") + e.what());
  }
}
