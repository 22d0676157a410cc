// Byte streams for layer tarballs: what Diff writes to and ApplyDiff reads.
//
// Small virtual interfaces so a tar can come from a file, a pipe, a socket or
// memory, and so the C ABI can hand in a plain file descriptor.
#ifndef DMTHIN_GRAPH_STREAM_H_
#define DMTHIN_GRAPH_STREAM_H_

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/export.h"

DMTHIN_API_BEGIN
namespace graph {

// A source of bytes. Read returns the number of bytes read, 0 at end of
// stream, or an error.
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  virtual absl::StatusOr<size_t> Read(void* buf, size_t len) = 0;
};

// A sink of bytes. Write writes all `len` bytes or fails.
class ByteSink {
 public:
  virtual ~ByteSink() = default;
  virtual absl::Status Write(const void* buf, size_t len) = 0;
};

// Reads from a file descriptor it does not own (retries EINTR).
class FdSource : public ByteSource {
 public:
  explicit FdSource(int fd) : fd_(fd) {}
  // InvalidArgument unless `fd` is open for reading and not a directory:
  // the check at the edge, before anything is created.
  static absl::Status Check(int fd);
  absl::StatusOr<size_t> Read(void* buf, size_t len) override;

 private:
  int fd_;
};

// Writes to a file descriptor it does not own (retries EINTR, short writes).
class FdSink : public ByteSink {
 public:
  explicit FdSink(int fd) : fd_(fd) {}
  // InvalidArgument unless `fd` is open for writing and not a directory.
  static absl::Status Check(int fd);
  absl::Status Write(const void* buf, size_t len) override;

 private:
  int fd_;
};

// Reads from a caller-owned buffer (tests, small in-memory tarballs).
class StringSource : public ByteSource {
 public:
  explicit StringSource(const std::string& data) : data_(data) {}
  // It keeps a reference: a temporary would dangle.
  explicit StringSource(std::string&&) = delete;
  absl::StatusOr<size_t> Read(void* buf, size_t len) override;

 private:
  const std::string& data_;
  size_t pos_ = 0;
};

// Appends to a caller-owned string.
class StringSink : public ByteSink {
 public:
  explicit StringSink(std::string* out) : out_(out) {}
  absl::Status Write(const void* buf, size_t len) override;

 private:
  std::string* out_;
};

}  // namespace graph
DMTHIN_API_END

#endif  // DMTHIN_GRAPH_STREAM_H_
