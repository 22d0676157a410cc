#include "tools/docker-plugin/pipe_stream.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "base/status.h"

namespace dockerplugin {
namespace {

constexpr int kPipeSize = 1 << 20;

absl::Status MakePipe(base::UniqueFd* read_end, base::UniqueFd* write_end) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return base::ErrnoError(errno, "creating a pipe");
  read_end->reset(fds[0]);
  write_end->reset(fds[1]);
  (void)::fcntl(fds[1], F_SETPIPE_SZ, kPipeSize);  // best effort: 64 KiB otherwise
  return absl::OkStatus();
}

bool WriteAll(int fd, const char* data, size_t len) {
  while (len > 0) {
    ssize_t n = ::write(fd, data, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

absl::StatusOr<PipeInResult> PipeIn(const httplib::ContentReader& reader,
                                    std::function<absl::Status(graph::ByteSource&)> consume) {
  base::UniqueFd read_end, write_end;
  RETURN_IF_ERROR(MakePipe(&read_end, &write_end));
  PipeInResult result;
  std::thread consumer([&result, &consume, fd = read_end.release()] {
    base::UniqueFd owned(fd);
    graph::FdSource source(owned.get());
    result.consumed = consume(source);
    // Closing the read end here makes the writer's next write fail (EPIPE)
    // instead of blocking on a full pipe nobody reads.
  });
  bool consumer_gone = false;
  result.body_complete = reader([&](const char* data, size_t len) {
    if (!consumer_gone && !WriteAll(write_end.get(), data, len)) consumer_gone = true;
    return true;
  });
  write_end.reset();  // end of stream for the consumer
  consumer.join();
  return result;
}

absl::StatusOr<std::shared_ptr<PipeOut>> PipeOut::Start(
    std::function<absl::Status(graph::ByteSink&)> produce) {
  std::shared_ptr<PipeOut> out(new PipeOut());
  base::UniqueFd write_end;
  RETURN_IF_ERROR(MakePipe(&out->read_, &write_end));
  // The thread holds no reference to `out`: the last owner joins it.
  PipeOut* self = out.get();
  out->thread_ = std::thread([self, produce = std::move(produce), fd = write_end.release()] {
    base::UniqueFd owned(fd);
    graph::FdSink sink(owned.get());
    self->status_ = produce(sink);
  });
  return out;
}

PipeOut::~PipeOut() {
  read_.reset();
  if (thread_.joinable()) thread_.join();
}

bool PipeOut::Provide(httplib::DataSink& sink) {
  if (buf_.empty()) buf_.resize(256 * 1024);
  for (;;) {
    ssize_t n = ::read(read_.get(), buf_.data(), buf_.size());
    if (n < 0 && errno == EINTR) continue;
    if (n > 0) return sink.write(buf_.data(), static_cast<size_t>(n));
    if (n < 0) return false;
    break;
  }
  // End of the pipe: the producer has finished (or closed early).
  if (thread_.joinable()) thread_.join();
  if (!status_.ok()) return false;
  sink.done();
  return true;
}

}  // namespace dockerplugin
