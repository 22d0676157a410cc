// Test support: undo steps run in reverse order when the test ends, whether it
// passed or failed, so no device, loop or mount outlives a test.
#ifndef DMTHIN_TESTS_SUPPORT_CLEANUP_STACK_H_
#define DMTHIN_TESTS_SUPPORT_CLEANUP_STACK_H_

#include <functional>
#include <utility>
#include <vector>

namespace testsupport {

class CleanupStack {
 public:
  CleanupStack() = default;
  CleanupStack(const CleanupStack&) = delete;
  CleanupStack& operator=(const CleanupStack&) = delete;
  ~CleanupStack() { RunAll(); }

  void Push(std::function<void()> undo) { steps_.push_back(std::move(undo)); }
  void RunAll() {
    while (!steps_.empty()) {
      auto step = std::move(steps_.back());
      steps_.pop_back();
      step();
    }
  }

 private:
  std::vector<std::function<void()>> steps_;
};

}  // namespace testsupport

#endif  // DMTHIN_TESTS_SUPPORT_CLEANUP_STACK_H_
