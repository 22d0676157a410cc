// Scratch directories for tests, and the removal they are cleaned up with.
#ifndef DMTHIN_TESTS_SUPPORT_SCRATCH_DIR_H_
#define DMTHIN_TESTS_SUPPORT_SCRATCH_DIR_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace testsupport {

// Removes `path` and everything below it without following symlinks; fails
// on mount points below it rather than descending into them. Missing is OK.
// The tests' own code, not graph::RemoveTree: cleaning up must not depend on
// the library under test (nor may a bug there reach beyond the scratch dir).
absl::Status RemoveTree(const std::string& path);

// A fresh directory <parent>/dmthin-<tag>-<pid>-XXXXXX (mkdtemp, mode 0700;
// parent "" = $TMPDIR, else /tmp), removed with everything in it on
// destruction (a failure to remove is printed as a warning).
class ScratchDir {
 public:
  // For fixtures and test bodies: throws std::runtime_error when the
  // directory cannot be made.
  explicit ScratchDir(const std::string& tag, const std::string& parent = "");
  // For code that reports errors as a Status.
  static absl::StatusOr<std::unique_ptr<ScratchDir>> Create(const std::string& tag,
                                                            const std::string& parent = "");
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::string& path() const { return path_; }
  std::string Sub(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  struct Made {};
  ScratchDir(Made, std::string path) : path_(std::move(path)) {}
  static absl::StatusOr<std::string> Make(const std::string& tag, const std::string& parent);

  std::string path_;
};

}  // namespace testsupport

#endif  // DMTHIN_TESTS_SUPPORT_SCRATCH_DIR_H_
