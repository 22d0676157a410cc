// containerd filter expressions (graph/filter.h): the grammar, containerd's
// matching rules, and errors that say where.
#include "graph/filter.h"

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace graph {
namespace {

using ::testing::HasSubstr;

// An object with top-level fields and labels (a dotted key may be several
// fields: labels.a.b is label "a.b"), as the layer store's adaptor.
struct Obj {
  std::map<std::string, std::string> fields;
  std::map<std::string, std::string> labels;
};

bool Matches(const std::string& expr, const Obj& o) {
  absl::StatusOr<Filter> f = Filter::Parse(expr);
  EXPECT_TRUE(f.ok()) << expr << ": " << f.status();
  if (!f.ok()) return false;
  std::string key;
  return f->Match([&](const std::vector<std::string>& path) -> std::optional<absl::string_view> {
    if (path.size() == 1) {
      auto it = o.fields.find(path[0]);
      if (it == o.fields.end()) return std::nullopt;
      return absl::string_view(it->second);
    }
    if (path[0] != "labels") return std::nullopt;
    key = absl::StrJoin(path.begin() + 1, path.end(), ".");
    auto it = o.labels.find(key);
    if (it == o.labels.end()) return std::nullopt;
    return absl::string_view(it->second);
  });
}

const Obj kLayer = {{{"name", "foo"}, {"kind", "committed"}, {"parent", "sha256:abc"}},
                    {{"a.b", "c"}, {"containerd.io/gc.root", "2026"}, {"x", "a b,c|d"}}};

TEST(FilterTest, EmptyMatchesEverything) {
  EXPECT_TRUE(Matches("", kLayer));
  EXPECT_TRUE(Matches("  \t", kLayer));
  EXPECT_TRUE(Filter().MatchesEverything());
  EXPECT_EQ(Filter::Parse("")->ToString(), "");
}

TEST(FilterTest, EqualNotEqualPresent) {
  EXPECT_TRUE(Matches("name==foo", kLayer));
  EXPECT_FALSE(Matches("name==fo", kLayer));
  EXPECT_TRUE(Matches("name!=bar", kLayer));
  EXPECT_FALSE(Matches("name!=foo", kLayer));
  EXPECT_TRUE(Matches("kind==committed", kLayer));
  EXPECT_TRUE(Matches("labels.x", kLayer));
  EXPECT_FALSE(Matches("labels.y", kLayer));
  // containerd: != on an absent field matches.
  EXPECT_TRUE(Matches("labels.y!=z", kLayer));
  EXPECT_FALSE(Matches("labels.y==z", kLayer));
  EXPECT_TRUE(Matches("  name  ==  foo  ", kLayer));
}

TEST(FilterTest, QuotedFieldsAndValues) {
  EXPECT_TRUE(Matches("labels.\"a.b\"==c", kLayer));
  EXPECT_TRUE(Matches("labels.a.b==c", kLayer));  // joined with dots, as containerd
  EXPECT_TRUE(Matches("labels.\"containerd.io/gc.root\"", kLayer));
  EXPECT_TRUE(Matches("labels.x==\"a b,c|d\"", kLayer));
  EXPECT_TRUE(Matches("name==\"\\x66o\\157\"", kLayer));
  EXPECT_TRUE(Matches("parent==sha256:abc", kLayer));  // ':' in a bare value
  EXPECT_TRUE(Matches("labels.\"containerd.io/gc.root\"==2026", kLayer));
}

TEST(FilterTest, AndOr) {
  EXPECT_TRUE(Matches("name==foo,kind==committed", kLayer));
  EXPECT_FALSE(Matches("name==foo,kind==active", kLayer));
  EXPECT_TRUE(Matches("name==bar|kind==committed", kLayer));
  EXPECT_TRUE(Matches("kind==active|name==foo,labels.a.b==c", kLayer));
  EXPECT_FALSE(Matches("kind==active|name==foo,labels.a.b==d", kLayer));
  // Several strings: any matches (containerd's ParseAll).
  auto any = Filter::ParseAll({"name==bar", "kind==committed"});
  ASSERT_TRUE(any.ok());
  EXPECT_EQ(any->ToString(), "name==\"bar\"|kind==\"committed\"");
  EXPECT_TRUE(Filter::ParseAll({"name==bar", ""})->MatchesEverything());
  EXPECT_TRUE(Filter::ParseAll({})->MatchesEverything());
}

TEST(FilterTest, RegexpIsUnanchoredRe2) {
  EXPECT_TRUE(Matches("parent~=abc", kLayer));
  EXPECT_TRUE(Matches("parent~=^sha256:", kLayer));
  EXPECT_FALSE(Matches("parent~=^abc", kLayer));
  EXPECT_TRUE(Matches("labels.\"containerd.io/gc.root\"~=/^\\d{4}$/", kLayer));
  EXPECT_TRUE(Matches("labels.x~=/a b,c\\|d/", kLayer));
  EXPECT_TRUE(Matches("labels.y~=^$", kLayer));  // absent: matched as ""
  auto bad = Filter::Parse("name~=(");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("bad regexp"));
}

TEST(FilterTest, ErrorsSayWhere) {
  for (const char* bad : {"name==", "name=foo", "name===foo", ",name", "name,", "a|", "|a",
                          "labels.", "labels.\"x", "name==\"\\q\"", "name==\"\\400\"",
                          "na-me", "name==foo bar", "name~=/x", "name==\"\\ud800\""}) {
    auto f = Filter::Parse(bad);
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(f.status().message(), HasSubstr("at byte")) << bad;
  }
  EXPECT_THAT(Filter::Parse("name==\"foo\"x").status().message(), HasSubstr("\"foo\\\"x"));
  EXPECT_THAT(Filter::Parse("name=foo").status().message(), HasSubstr("at byte 4"));
}

TEST(FilterTest, CanonicalTextRoundTrips) {
  for (const char* expr : {"name==foo", "labels.\"a.b\"==c,kind!=view|parent~=/^x\\//",
                           "labels.x", "name==\"\\x00\\n\\\"\"", "labels.\"\"==\"\""}) {
    auto f = Filter::Parse(expr);
    ASSERT_TRUE(f.ok()) << expr << ": " << f.status();
    std::string text = f->ToString();
    auto again = Filter::Parse(text);
    ASSERT_TRUE(again.ok()) << text << ": " << again.status();
    EXPECT_EQ(again->ToString(), text);
  }
  EXPECT_EQ(Filter::Parse("labels.\"a.b\"==c , kind!=view")->ToString(),
            "labels.\"a.b\"==\"c\",kind!=\"view\"");
}

}  // namespace
}  // namespace graph
