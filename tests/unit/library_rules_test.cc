// Rules of the project checked on the library sources themselves (see
// docs/conventions.md): no fork() in a library — a library's process may
// run other threads (the devmapper reaper, a tar reader), and what a child
// of such a process may do before exec is a minefield. Libraries exec
// helpers only with posix_spawn (thinpool/exec.h) and never through a shell.
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/support/process.h"

namespace {

namespace fs = std::filesystem;

// The source without comments and string or character literals, so only
// code is matched (line breaks kept for line numbers).
std::string CodeOnly(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  enum { kCode, kLine, kBlock, kString, kChar } state = kCode;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    char next = i + 1 < text.size() ? text[i + 1] : '\0';
    switch (state) {
      case kCode:
        if (c == 'R' && next == '"' && (i == 0 || !(std::isalnum(static_cast<unsigned char>(text[i - 1])) ||
                                                   text[i - 1] == '_'))) {
          // A raw string literal R"delim( ... )delim": skipped whole.
          size_t open = text.find('(', i + 2);
          if (open == std::string::npos) return out;
          const std::string end = ")" + text.substr(i + 2, open - i - 2) + "\"";
          size_t close = text.find(end, open);
          if (close == std::string::npos) return out;
          out.append(std::count(text.begin() + i, text.begin() + close, '\n'), '\n');
          i = close + end.size() - 1;
        } else if (c == '/' && next == '/') state = kLine, ++i;
        else if (c == '/' && next == '*') state = kBlock, ++i;
        else if (c == '"') state = kString, out += ' ';
        else if (c == '\'') state = kChar, out += ' ';
        else out += c;
        break;
      case kLine:
        if (c == '\n') state = kCode, out += c;
        break;
      case kBlock:
        if (c == '*' && next == '/') state = kCode, ++i;
        else if (c == '\n') out += c;
        break;
      case kString:
      case kChar:
        if (c == '\\') ++i;
        else if ((state == kString && c == '"') || (state == kChar && c == '\'')) state = kCode;
        else if (c == '\n') out += c;
        break;
    }
  }
  return out;
}

TEST(LibraryRules, NoForkOrShellInALibrary) {
  const std::string root = testsupport::RepoRoot();
  // A call of fork, vfork, clone, system or popen (also as ::name or
  // std::name), not a member function of that name.
  const std::regex call(R"((^|[^A-Za-z0-9_.>])(v?fork|clone3?|system|popen|daemon)\s*\()");
  std::vector<std::string> found;
  int files = 0;
  for (const char* lib : {"base", "libdm", "thinpool", "graph", "volume"}) {
    ASSERT_TRUE(fs::is_directory(fs::path(root) / lib)) << root << "/" << lib;
    for (const fs::directory_entry& e : fs::recursive_directory_iterator(fs::path(root) / lib)) {
      const std::string ext = e.path().extension().string();
      if (!e.is_regular_file() || (ext != ".cc" && ext != ".h" && ext != ".c")) continue;
      ++files;
      std::ifstream in(e.path());
      std::stringstream text;
      text << in.rdbuf();
      std::istringstream code(CodeOnly(text.str()));
      std::string line;
      for (int n = 1; std::getline(code, line); ++n) {
        if (std::regex_search(line, call)) {
          found.push_back(fs::relative(e.path(), root).string() + ":" + std::to_string(n) + ": " + line);
        }
      }
    }
  }
  EXPECT_GT(files, 50);
  EXPECT_TRUE(found.empty()) << "library code forks or runs a shell:\n" << [&] {
    std::string all;
    for (const std::string& f : found) all += f + "\n";
    return all;
  }();
}

TEST(LibraryRules, CodeOnlyDropsCommentsAndLiterals) {
  EXPECT_EQ(CodeOnly("a(); // fork()\nb(\"system(x)\"); /* popen(\n) */ c('(');"),
            "a(); \nb( ); \n c( );");
  EXPECT_EQ(CodeOnly("x = R\"s(fork(\"\n)s\"; y();"), "x = \n; y();");
}

}  // namespace
