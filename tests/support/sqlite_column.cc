#include "tests/support/sqlite_column.h"

#include "base/sqlite.h"

namespace testsupport {

std::vector<std::string> SqlColumn(const std::string& path, const std::string& sql) {
  std::vector<std::string> out;
  auto db = base::sqlite::Db::Open(path, false);
  if (!db.ok()) return {"open: " + std::string(db.status().message())};
  auto s = (*db)->Prepare(sql);
  if (!s.ok()) return {"prepare: " + std::string(s.status().message())};
  for (;;) {
    auto row = s->Step();
    if (!row.ok() || !*row) break;
    out.push_back(s->Text(0));
  }
  return out;
}

}  // namespace testsupport
