// Bridges between httplib's push-style bodies and libgraph's pull-style
// streams, through a pipe and a second thread, so a layer tarball flows
// through a bounded buffer (the pipe, 1 MiB) and is never held whole.
//
//  - Request bodies (ApplyDiff): httplib calls a receiver per chunk; the
//    driver reads a graph::ByteSource. PipeIn runs the consumer on a thread
//    reading the pipe while the caller's thread writes the chunks into it.
//  - Response bodies (Diff): the driver writes a graph::ByteSink; httplib asks
//    a content provider for chunks. PipeOut runs the producer on a thread
//    writing the pipe; Provide() reads it for httplib.
#ifndef DMTHIN_TOOLS_DOCKER_PLUGIN_PIPE_STREAM_H_
#define DMTHIN_TOOLS_DOCKER_PLUGIN_PIPE_STREAM_H_

#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/unique_fd.h"
#include "graph/stream.h"
#include "httplib.h"

namespace dockerplugin {

struct PipeInResult {
  absl::Status consumed;      // what `consume` returned
  bool body_complete = false;  // the whole body arrived
};

// Runs `consume` on a thread over the bytes `reader` delivers. Once
// `consume` has returned, the rest of the body is read and dropped (so the
// connection stays in step).
absl::StatusOr<PipeInResult> PipeIn(const httplib::ContentReader& reader,
                                    std::function<absl::Status(graph::ByteSource&)> consume);

class PipeOut {
 public:
  // Starts `produce` on a thread.
  static absl::StatusOr<std::shared_ptr<PipeOut>> Start(
      std::function<absl::Status(graph::ByteSink&)> produce);
  // Closes the read end (a producer still writing fails with EPIPE) and
  // joins the thread.
  ~PipeOut();

  // An httplib content provider step: passes the next chunk to `sink`,
  // calls sink.done() at the end of a successful stream, and returns false
  // when the producer failed or the peer went away (httplib then drops the
  // connection, so the client sees a cut stream, never a short one).
  bool Provide(httplib::DataSink& sink);

  // The producer's status (after Provide saw the end).
  const absl::Status& status() const { return status_; }

 private:
  PipeOut() = default;
  base::UniqueFd read_;
  std::vector<char> buf_;
  std::thread thread_;
  absl::Status status_;
};

}  // namespace dockerplugin

#endif  // DMTHIN_TOOLS_DOCKER_PLUGIN_PIPE_STREAM_H_
