#include "tools/common/storage_opts.h"

#include "absl/strings/str_cat.h"
#include "tools/common/cli.h"

namespace cli {

absl::StatusOr<std::map<std::string, std::string>> ParseStorageOptions(
    const std::vector<std::string>& storage_opts) {
  std::map<std::string, std::string> options;
  for (const std::string& kv : storage_opts) {
    size_t eq = kv.find('=');
    if (eq == std::string::npos) {
      return UsageError(absl::StrCat("--storage-opt wants KEY=VALUE (e.g. dm.basesize=20G), got '", kv, "'"));
    }
    std::string key = kv.substr(0, eq);
    if (key.empty()) return UsageError(absl::StrCat("--storage-opt '", kv, "' has an empty key"));
    auto [it, added] = options.emplace(key, kv.substr(eq + 1));
    if (!added) {
      return UsageError(absl::StrCat("--storage-opt ", key, " given twice ('", key, "=", it->second, "' and '",
                                     kv, "')"));
    }
  }
  return options;
}

}  // namespace cli
