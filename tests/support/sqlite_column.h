// One column of an SQL query's rows, read through a connection of the
// test's own (another process's view of a registry).
#ifndef DMTHIN_TESTS_SUPPORT_SQLITE_COLUMN_H_
#define DMTHIN_TESTS_SUPPORT_SQLITE_COLUMN_H_

#include <string>
#include <vector>

namespace testsupport {

// The first column of `sql`'s rows in the database at `path` (which must
// exist); a failure to open or prepare is the one row "open: ..." or
// "prepare: ...", so an EXPECT_EQ on the result shows it.
std::vector<std::string> SqlColumn(const std::string& path, const std::string& sql);

}  // namespace testsupport

#endif  // DMTHIN_TESTS_SUPPORT_SQLITE_COLUMN_H_
