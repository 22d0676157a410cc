// Test support: write a file until the filesystem (or a quota) says no.
#ifndef DMTHIN_TESTS_SUPPORT_FILL_FILE_H_
#define DMTHIN_TESTS_SUPPORT_FILL_FILE_H_

#include <cstdint>
#include <string>
#include <utility>

namespace testsupport {

// Writes 1 MiB chunks to `path` (created or truncated) until a write or the
// final fsync fails or `limit` bytes are written. Returns the bytes written
// and the errno that stopped it (0: none).
std::pair<uint64_t, int> FillFile(const std::string& path, uint64_t limit);

}  // namespace testsupport

#endif  // DMTHIN_TESTS_SUPPORT_FILL_FILE_H_
