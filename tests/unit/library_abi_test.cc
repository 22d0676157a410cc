// What the shared libraries export (nm -D): the C ABI's graph_* calls and
// the C++ API of the public headers (the namespaces base, dm, thinpool,
// graph, volume), nothing else — no absl or std code the libraries
// instantiate for themselves, nothing from an anonymous namespace or a
// library's own helpers. See base/export.h, exports.map and docs/graph.md
// (the soname policy).
#include <filesystem>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/support/process.h"

namespace {

namespace fs = std::filesystem;

// <build>/lib, from this binary's path (<build>/tests/unit/library_abi_test).
fs::path LibDir() { return fs::read_symlink("/proc/self/exe").parent_path().parent_path().parent_path() / "lib"; }

struct Symbol {
  std::string name;       // mangled
  std::string demangled;  // nm -C
};

std::vector<Symbol> Exported(const fs::path& so) {
  testsupport::RunResult raw = testsupport::Run({"nm", "-D", "--defined-only", "--format=posix", so.string()});
  testsupport::RunResult dem = testsupport::Run({"nm", "-D", "--defined-only", "--format=posix", "-C", so.string()});
  EXPECT_TRUE(raw.ok()) << raw.Describe();
  EXPECT_TRUE(dem.ok()) << dem.Describe();
  // posix format: "NAME TYPE VALUE SIZE"; demangled names hold spaces, so
  // the type is found from the end.
  auto names = [](const std::string& out, bool demangled) {
    std::vector<std::string> v;
    std::istringstream in(out);
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      static const std::regex tail(R"( [A-Za-z] [0-9a-f]*( [0-9a-f]+)?$)");
      std::smatch m;
      v.push_back(demangled && std::regex_search(line, m, tail) ? line.substr(0, m.position(0))
                                                                : line.substr(0, line.find(' ')));
    }
    return v;
  };
  std::vector<std::string> a = names(raw.out, false), b = names(dem.out, true);
  EXPECT_EQ(a.size(), b.size());
  std::vector<Symbol> out;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) out.push_back({a[i], b[i]});
  return out;
}

// Mangled prefix of a name in namespace `ns`: functions and members
// (_ZN), const members (_ZNK), typeinfo, its name and vtables (_ZT[ISV]N).
std::regex InNamespaces(const std::vector<std::string>& namespaces) {
  std::string alt;
  for (const std::string& ns : namespaces) alt += (alt.empty() ? "" : "|") + std::to_string(ns.size()) + ns;
  return std::regex("^_Z(NK?|T[ISV]N)(" + alt + ")");
}

TEST(LibraryAbi, SharedLibrariesExportOnlyTheirApi) {
  const fs::path lib = LibDir();
  if (!fs::exists(lib / "libgraph.so")) GTEST_SKIP() << "no shared libraries in " << lib << " (make libs)";
  if (!testsupport::HaveProgram("nm")) GTEST_SKIP() << "no nm";
  const std::regex ours = InNamespaces({"base", "dm", "thinpool", "graph", "volume"});
  const std::regex c_abi("^graph_[a-z0-9_]+$");
  // Checked on the qualified name (what precedes the parameter list).
  const std::regex hidden_parts(R"(\(anonymous namespace\)|absl::|std::|::internal::)");
  // Each library and a few of the symbols its users need (demangled name
  // prefixes; C calls as they are).
  const std::map<std::string, std::vector<std::string>> libraries = {
      {"libdmbase.so", {"base::ErrnoError(", "base::sqlite::Db::Open(", "base::EscapeForText"}},
      {"libdm.so", {"dm::Control::", "dm::Table::"}},
      {"libthinpool.so", {"thinpool::Pool::Open(", "thinpool::MakeExt4("}},
      {"libgraph.so",
       {"graph_store_open", "graph_prepare", "graph_walk", "graph_last_error", "graph::OpenLayerStore(",
        "graph::LayerStore::Walk(", "graph::OpenDriver("}},
      {"libvolume.so", {"volume::"}},
  };
  for (const auto& [name, wanted] : libraries) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(fs::exists(lib / name)) << lib / name;
    std::vector<Symbol> symbols = Exported(lib / name);
    EXPECT_FALSE(symbols.empty());
    std::string stray;
    int strays = 0;
    for (const Symbol& s : symbols) {
      bool allowed = std::regex_search(s.name, ours) || (name == "libgraph.so" && std::regex_match(s.name, c_abi));
      const std::string qualified = s.demangled.substr(0, s.demangled.find('('));
      if (!allowed || std::regex_search(qualified, hidden_parts)) {
        if (++strays <= 20) stray += "  " + s.demangled + " (" + s.name + ")\n";
      }
    }
    EXPECT_EQ(strays, 0) << name << " exports what is not its API:\n" << stray;
    for (const std::string& w : wanted) {
      bool found = false;
      for (const Symbol& s : symbols) found = found || s.demangled.rfind(w, 0) == 0;
      EXPECT_TRUE(found) << name << " does not export " << w;
    }
  }
}

}  // namespace
