#include "thinpool/monitor.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status.h"

namespace thinpool {

absl::Status AutoextendPolicy::Validate() const {
  if (!(threshold_percent >= 1 && threshold_percent <= 100)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "autoextend threshold ", threshold_percent, "% must be between 1 and 100"));
  }
  if (!(step_percent > 0 && step_percent <= 1000)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "autoextend step ", step_percent, "% must be above 0 and at most 1000"));
  }
  if (poll_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("autoextend poll interval must be positive");
  }
  if (repeat_interval < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("monitor repeat interval must not be negative");
  }
  if (max_metadata_bytes > kMaxMetadataBytes) {
    return absl::InvalidArgumentError("autoextend metadata maximum above the kernel's");
  }
  return absl::OkStatus();
}

absl::string_view MonitorEventKindName(MonitorEvent::Kind kind) {
  switch (kind) {
    case MonitorEvent::Kind::kExtendedData: return "extended-data";
    case MonitorEvent::Kind::kExtendedMetadata: return "extended-metadata";
    case MonitorEvent::Kind::kCannotExtend: return "cannot-extend";
    case MonitorEvent::Kind::kOutOfDataSpace: return "out-of-data-space";
    case MonitorEvent::Kind::kReadOnly: return "read-only";
    case MonitorEvent::Kind::kNeedsCheck: return "needs-check";
    case MonitorEvent::Kind::kFailed: return "failed";
    case MonitorEvent::Kind::kError: return "error";
    case MonitorEvent::Kind::kRecovered: return "recovered";
    case MonitorEvent::Kind::kCleared: return "cleared";
  }
  return "?";
}

Monitor::Monitor(StateDir& state, const dm::Control& dm, AutoextendPolicy policy,
                 std::vector<std::string> pools,
                 std::function<void(const MonitorEvent&)> report)
    : state_(state),
      dm_(dm),
      policy_(policy),
      pools_(std::move(pools)),
      report_(std::move(report)) {}

Monitor::~Monitor() { Stop(); }

bool Monitor::IsCondition(MonitorEvent::Kind kind) {
  switch (kind) {
    case MonitorEvent::Kind::kCannotExtend:
    case MonitorEvent::Kind::kOutOfDataSpace:
    case MonitorEvent::Kind::kReadOnly:
    case MonitorEvent::Kind::kNeedsCheck:
    case MonitorEvent::Kind::kFailed:
    case MonitorEvent::Kind::kError:
      return true;
    default:
      return false;
  }
}

void Monitor::Emit(MonitorEvent e, std::vector<MonitorEvent>* events,
                   const std::string& subject) {
  if (IsCondition(e.kind)) {
    Condition key{e.pool, e.kind, subject};
    if (!seen_.insert(key).second) return;  // once per pass
    auto it = conditions_.find(key);
    const absl::Time now = absl::Now();
    if (it != conditions_.end() && now - it->second < policy_.repeat_interval) return;
    conditions_[key] = now;
  }
  if (report_) report_(e);
  events->push_back(std::move(e));
}

absl::Status Monitor::CheckPool(const std::string& name,
                                std::vector<MonitorEvent>* events) {
  auto emit = [&](MonitorEvent::Kind kind, uint64_t from, uint64_t to, std::string msg,
                  const std::string& subject = "") {
    Emit(MonitorEvent{kind, name, from, to, std::move(msg)}, events, subject);
  };
  ASSIGN_OR_RETURN(auto pool, Pool::Open(state_, dm_, name));
  for (std::string& done : pool->TakeRecovered()) {
    emit(MonitorEvent::Kind::kRecovered, 0, 0, absl::StrCat("pool ", name, ": ", done));
  }
  ASSIGN_OR_RETURN(PoolStatus st, pool->Status());
  if (!st.active) return absl::OkStatus();
  if (st.failed) {
    emit(MonitorEvent::Kind::kFailed, 0, 0,
         absl::StrCat("pool ", name, " has failed; deactivate it and run thin_check"));
    return absl::OkStatus();
  }
  if (st.read_only) {
    emit(MonitorEvent::Kind::kReadOnly, 0, 0,
         absl::StrCat("pool ", name, " is read-only (metadata full or damaged)"));
  }
  if (st.needs_check) {
    emit(MonitorEvent::Kind::kNeedsCheck, 0, 0,
         absl::StrCat("pool ", name, " needs thin_check"));
  }
  if (st.out_of_data_space) {
    emit(MonitorEvent::Kind::kOutOfDataSpace, st.data_used_bytes, st.data_total_bytes,
         absl::StrCat("pool ", name, " is out of data space"));
  }
  ASSIGN_OR_RETURN(PoolRecord rec, pool->Record());
  const uint64_t block = uint64_t{rec.block_sectors} * 512;

  auto over = [&](uint64_t used, uint64_t total) {
    return total > 0 && 100.0 * static_cast<double>(used) / static_cast<double>(total) >=
                            policy_.threshold_percent;
  };
  auto grown = [&](uint64_t cur, uint64_t unit, uint64_t max) {
    uint64_t step = static_cast<uint64_t>(std::ceil(cur * policy_.step_percent / 100.0));
    step = (std::max(step, unit) + unit - 1) / unit * unit;
    uint64_t next = cur + step;
    if (max != 0) next = std::min(next, max - max % unit);
    return next;
  };

  std::optional<uint64_t> new_data, new_meta;
  if (over(st.data_used_bytes, st.data_total_bytes) || st.out_of_data_space) {
    uint64_t next = grown(rec.data_bytes, block, policy_.max_data_bytes);
    if (next <= rec.data_bytes) {
      emit(MonitorEvent::Kind::kCannotExtend, rec.data_bytes, rec.data_bytes,
           absl::StrFormat("pool %s data is %.1f%% full and at its maximum of %d bytes",
                           name, 100.0 * st.data_used_bytes / st.data_total_bytes,
                           rec.data_bytes));
    } else {
      new_data = next;
    }
  }
  if (over(st.metadata_used_bytes, st.metadata_total_bytes)) {
    uint64_t next = grown(rec.metadata_bytes, 4096, policy_.max_metadata_bytes);
    if (next <= rec.metadata_bytes) {
      emit(MonitorEvent::Kind::kCannotExtend, rec.metadata_bytes, rec.metadata_bytes,
           absl::StrCat("pool ", name, " metadata is at its maximum"), "metadata");
    } else {
      new_meta = next;
    }
  }
  if (!new_data && !new_meta) return absl::OkStatus();
  absl::Status resized = pool->Resize(new_data, new_meta);
  if (!resized.ok()) {
    emit(MonitorEvent::Kind::kCannotExtend, rec.data_bytes, new_data.value_or(0),
         absl::StrCat("pool ", name, ": extending failed: ", resized.message()));
    return absl::OkStatus();
  }
  if (new_data) {
    ++extensions_;
    emit(MonitorEvent::Kind::kExtendedData, rec.data_bytes, *new_data,
         absl::StrCat("pool ", name, " data extended from ", rec.data_bytes, " to ",
                      *new_data, " bytes"));
  }
  if (new_meta) {
    ++extensions_;
    emit(MonitorEvent::Kind::kExtendedMetadata, rec.metadata_bytes, *new_meta,
         absl::StrCat("pool ", name, " metadata extended from ", rec.metadata_bytes,
                      " to ", *new_meta, " bytes"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<MonitorEvent>> Monitor::CheckOnce() {
  RETURN_IF_ERROR(policy_.Validate());
  std::vector<std::string> names = pools_;
  if (names.empty()) {
    ASSIGN_OR_RETURN(auto all, state_.registry().ListPools());
    for (const auto& p : all) names.push_back(p.name);
  }
  std::lock_guard<std::mutex> pass(pass_mu_);
  seen_.clear();
  std::vector<MonitorEvent> events;
  for (const auto& name : names) {
    absl::Status s = CheckPool(name, &events);
    if (!s.ok()) {
      Emit(MonitorEvent{MonitorEvent::Kind::kError, name, 0, 0,
                        absl::StrCat("cannot check pool ", name, ": ", s.message())},
           &events);
    }
  }
  // Conditions not seen in this pass have ended: say so once.
  for (auto it = conditions_.begin(); it != conditions_.end();) {
    if (seen_.count(it->first)) {
      ++it;
      continue;
    }
    const auto& [pool, kind, subject] = it->first;
    MonitorEvent e{MonitorEvent::Kind::kCleared, pool, 0, 0,
                   absl::StrCat("pool ", pool, ": ", MonitorEventKindName(kind),
                                subject.empty() ? "" : absl::StrCat(" (", subject, ")"),
                                " cleared")};
    it = conditions_.erase(it);
    if (report_) report_(e);
    events.push_back(std::move(e));
  }
  return events;
}

absl::Status Monitor::Start() {
  RETURN_IF_ERROR(policy_.Validate());
  if (thread_.joinable()) return absl::FailedPreconditionError("monitor already running");
  stop_ = false;
  thread_ = std::thread([this] { Run(); });
  return absl::OkStatus();
}

void Monitor::Stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void Monitor::Run() {
  auto poller = dm::EventPoller::Open(dm_);
  while (!stop_) {
    if (poller.ok()) (void)poller->Arm();
    (void)CheckOnce();
    // Wake on any dm event (e.g. a pool's low-water mark) or after the poll
    // interval, whichever comes first; stop within ~100 ms.
    absl::Time until = absl::Now() + policy_.poll_interval;
    while (!stop_ && absl::Now() < until) {
      absl::Duration slice = std::min(absl::Milliseconds(100), until - absl::Now());
      if (poller.ok()) {
        auto woke = poller->Wait(slice);
        if (woke.ok() && *woke) break;
        if (!woke.ok()) absl::SleepFor(slice);
      } else {
        absl::SleepFor(slice);
      }
    }
  }
}

}  // namespace thinpool
