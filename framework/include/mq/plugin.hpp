#pragma once
// The plugin boundary: one extern "C" entry point per shared library returning a
// plain descriptor. Use MQ_PLUGIN to write it.
//
//   class MyValidator : public mq::Validator { ... explicit MyValidator(const mq::Options&); };
//   MQ_PLUGIN(MyValidator, mq::PluginKind::kValidator, "my_check", "1.0.0",
//             "Rejects models with NaNs",
//             {"max_abs", mq::OptionType::kFloat, "1e4", "largest magnitude allowed"})
//
// The loader checks api_version and abi_tag before anything else in the descriptor is
// used, and refuses a mismatch.

#include <torch/version.h>

#include <memory>
#include <type_traits>
#include <vector>

#include "mq/export.hpp"
#include "mq/options.hpp"
#include "mq/version.hpp"

namespace mq {

enum class PluginKind : int { kObserver = 1, kQuantizer = 2, kFormat = 3, kValidator = 4, kArchitecture = 5 };

MQ_API const char* to_string(PluginKind kind);

class Observer;
class Quantizer;
class Format;
class Validator;
class Architecture;

namespace detail {
// The interface a plugin of each kind implements, and the kind's name, for MQ_PLUGIN's
// compile-time checks.
template <PluginKind K> struct InterfaceOf;
template <> struct InterfaceOf<PluginKind::kObserver> { using type = Observer; static constexpr const char* name = "observer"; };
template <> struct InterfaceOf<PluginKind::kQuantizer> { using type = Quantizer; static constexpr const char* name = "quantizer"; };
template <> struct InterfaceOf<PluginKind::kFormat> { using type = Format; static constexpr const char* name = "format"; };
template <> struct InterfaceOf<PluginKind::kValidator> { using type = Validator; static constexpr const char* name = "validator"; };
template <> struct InterfaceOf<PluginKind::kArchitecture> { using type = Architecture; static constexpr const char* name = "architecture"; };

constexpr bool same_text(const char* a, const char* b) {
  while (*a && *a == *b) ++a, ++b;
  return *a == *b;
}
}  // namespace detail

// Base of every plugin instance.
class MQ_API Plugin {
 public:
  virtual ~Plugin();
};

// Creates instances from checked options. create() throws RecipeError for option
// values the declarations cannot express (e.g. group_size not a power of two).
class MQ_API PluginFactory {
 public:
  virtual ~PluginFactory();
  virtual std::unique_ptr<Plugin> create(const Options& options) const = 0;
};

template <class T>
class SimpleFactory final : public PluginFactory {
 public:
  std::unique_ptr<Plugin> create(const Options& options) const override {
    return std::make_unique<T>(options);
  }
};

struct PluginDescriptor {
  int api_version;
  const char* abi_tag;
  PluginKind kind;
  const char* name;
  const char* version;
  const char* description;
  const OptionDecl* options;
  std::size_t option_count;
  const PluginFactory* factory;
};

// The ABI tag of libmq itself; a plugin's must be equal.
MQ_API const char* abi_tag();

// `given` (a map) checked against the plugin's declared options, defaults filled in:
// what the runner hands a factory. Throws RecipeError; `where` names the step.
MQ_API Options resolve_options(const PluginDescriptor& descriptor, const Value& given,
                               const SourceLocation& where = {});

}  // namespace mq

#define MQ_STRINGIFY_(x) #x
#define MQ_STRINGIFY(x) MQ_STRINGIFY_(x)
#if defined(__clang__)
#define MQ_COMPILER_TAG "clang" MQ_STRINGIFY(__clang_major__)
#elif defined(__GNUC__)
#define MQ_COMPILER_TAG "gcc" MQ_STRINGIFY(__GNUC__)
#else
#define MQ_COMPILER_TAG "unknown"
#endif

// What makes C++ binaries incompatible whatever our interfaces say: the compiler and
// its major version, libstdc++'s string ABI, the LibTorch version (its types cross the
// boundary). Our interfaces are MQ_API_VERSION's business.
#define MQ_ABI_TAG                                                                         \
  MQ_COMPILER_TAG "/cxx11abi-" MQ_STRINGIFY(_GLIBCXX_USE_CXX11_ABI) "/torch-" MQ_STRINGIFY( \
      TORCH_VERSION_MAJOR) "." MQ_STRINGIFY(TORCH_VERSION_MINOR)

#define MQ_PLUGIN_ENTRY_POINT mq_plugin_descriptor
#define MQ_PLUGIN_ENTRY_POINT_NAME "mq_plugin_descriptor"

// mq_add_plugin(NAME n KIND k) defines these, and MQ_PLUGIN checks its own NAME and KIND
// against them at compile time: the two places that state them cannot disagree.
#ifndef MQ_PLUGIN_TARGET_NAME
#define MQ_PLUGIN_TARGET_NAME nullptr
#define MQ_PLUGIN_TARGET_KIND nullptr
#endif

// Defines the entry point. TYPE is constructed from `const mq::Options&` once per
// recipe step (per observed tensor for observers); it must implement KIND's interface.
// The trailing arguments are mq::OptionDecl initializers.
#define MQ_PLUGIN(TYPE, KIND, NAME, VERSION, DESCRIPTION, ...)                          \
  static_assert(std::is_base_of_v<::mq::detail::InterfaceOf<KIND>::type, TYPE>,        \
                "MQ_PLUGIN: TYPE does not implement the interface of KIND");           \
  static_assert(MQ_PLUGIN_TARGET_NAME == nullptr ||                                    \
                    ::mq::detail::same_text(NAME, MQ_PLUGIN_TARGET_NAME),              \
                "MQ_PLUGIN: NAME differs from mq_add_plugin's NAME");                  \
  static_assert(MQ_PLUGIN_TARGET_KIND == nullptr ||                                    \
                    ::mq::detail::same_text(::mq::detail::InterfaceOf<KIND>::name,     \
                                            MQ_PLUGIN_TARGET_KIND),                    \
                "MQ_PLUGIN: KIND differs from mq_add_plugin's KIND");                  \
  extern "C" __attribute__((visibility("default"))) const ::mq::PluginDescriptor*     \
  MQ_PLUGIN_ENTRY_POINT() noexcept {                                                 \
    try {                                                                             \
      static const ::mq::SimpleFactory<TYPE> factory;                                 \
      static const std::vector<::mq::OptionDecl> options{__VA_ARGS__};                \
      static const ::mq::PluginDescriptor descriptor{                                 \
          MQ_API_VERSION, MQ_ABI_TAG,     KIND,           NAME,    VERSION,            \
          DESCRIPTION,    options.data(), options.size(), &factory};                  \
      return &descriptor;                                                             \
    } catch (...) {                                                                   \
      return nullptr;                                                                 \
    }                                                                                 \
  }
