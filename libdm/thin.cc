#include "libdm/thin.h"

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/status.h"
#include "parse_util.h"

namespace dm {
namespace {

using internal::Overloaded;
using internal::ParseDecimal;

// "used/total" with used <= total.
bool Fraction(absl::string_view s, uint64_t* used, uint64_t* total) {
  std::pair<absl::string_view, absl::string_view> p = absl::StrSplit(s, absl::MaxSplits('/', 1));
  return ParseDecimal(p.first, used) && ParseDecimal(p.second, total) && *used <= *total;
}

// Splits on spaces/tabs/newlines into at most `max` words without
// allocating; returns the number of words found (which may exceed max).
size_t SplitWords(absl::string_view s, absl::string_view* out, size_t max) {
  size_t n = 0, i = 0;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n')) ++i;
    if (i == s.size()) break;
    size_t start = i;
    while (i < s.size() && s[i] != ' ' && s[i] != '\t' && s[i] != '\n') ++i;
    if (n < max) out[n] = s.substr(start, i - start);
    ++n;
  }
  return n;
}

absl::Status BadStatus(absl::string_view what, absl::string_view text, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("bad ", what, " status '", text, "': ", why));
}

absl::Status CheckId(uint32_t id, absl::string_view what) {
  if (id > kMaxThinDeviceId)
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", id, " exceeds the 24-bit limit ", kMaxThinDeviceId));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ThinPoolStatus> ParseThinPoolStatus(absl::string_view text) {
  constexpr absl::string_view kWhat = "thin-pool";
  absl::string_view w[10];
  const size_t size = SplitWords(text, w, 10);
  ThinPoolStatus s;
  if (size == 1 && w[0] == "Fail") {
    s.health = ThinPoolStatus::Health::kFail;
    return s;
  }
  if (size == 1 && w[0] == "Error") {
    s.health = ThinPoolStatus::Health::kError;
    return s;
  }
  if (size < 5)
    return BadStatus(kWhat, text, absl::StrCat("has ", size, " fields, want at least 5"));
  if (size > 9)
    return BadStatus(kWhat, text, absl::StrCat("has ", size, " fields, want at most 9"));
  uint64_t a, b;
  if (!ParseDecimal(w[0], &s.transaction_id))
    return BadStatus(kWhat, text, "transaction id is not a number");
  if (!Fraction(w[1], &a, &b))
    return BadStatus(kWhat, text, "metadata usage is not used/total");
  s.used_metadata = MetaBlocks(a);
  s.total_metadata = MetaBlocks(b);
  if (!Fraction(w[2], &a, &b)) return BadStatus(kWhat, text, "data usage is not used/total");
  s.used_data = DataBlocks(a);
  s.total_data = DataBlocks(b);
  if (w[3] != "-") {
    if (!ParseDecimal(w[3], &a)) return BadStatus(kWhat, text, "held root is not a number or '-'");
    s.held_metadata_root = a;
  }
  if (w[4] == "rw")
    s.mode = ThinPoolStatus::Mode::kReadWrite;
  else if (w[4] == "ro")
    s.mode = ThinPoolStatus::Mode::kReadOnly;
  else if (w[4] == "out_of_data_space")
    s.mode = ThinPoolStatus::Mode::kOutOfDataSpace;
  else
    return BadStatus(kWhat, text, absl::StrCat("unknown mode '", w[4], "'"));
  if (size > 5) {
    if (w[5] == "discard_passdown")
      s.discard = ThinPoolStatus::Discard::kPassdown;
    else if (w[5] == "no_discard_passdown")
      s.discard = ThinPoolStatus::Discard::kNoPassdown;
    else if (w[5] == "ignore_discard")
      s.discard = ThinPoolStatus::Discard::kIgnore;
    else
      return BadStatus(kWhat, text, absl::StrCat("unknown discard mode '", w[5], "'"));
  }
  if (size > 6) {
    if (w[6] == "queue_if_no_space")
      s.no_space = ThinPoolStatus::NoSpace::kQueue;
    else if (w[6] == "error_if_no_space")
      s.no_space = ThinPoolStatus::NoSpace::kError;
    else
      return BadStatus(kWhat, text, absl::StrCat("unknown no-space policy '", w[6], "'"));
  }
  if (size > 7) {
    if (w[7] == "needs_check")
      s.needs_check = true;
    else if (w[7] != "-")
      return BadStatus(kWhat, text, absl::StrCat("unknown check flag '", w[7], "'"));
  }
  if (size > 8) {
    if (!ParseDecimal(w[8], &a))
      return BadStatus(kWhat, text, "metadata low watermark is not a number");
    s.metadata_low_watermark = MetaBlocks(a);
  }
  return s;
}

std::string FormatThinPoolStatus(const ThinPoolStatus& s) {
  if (s.health == ThinPoolStatus::Health::kFail) return "Fail";
  if (s.health == ThinPoolStatus::Health::kError) return "Error";
  std::string out = absl::StrCat(s.transaction_id, " ", s.used_metadata.value(), "/",
                                 s.total_metadata.value(), " ", s.used_data.value(), "/",
                                 s.total_data.value(), " ");
  if (s.held_metadata_root)
    absl::StrAppend(&out, *s.held_metadata_root, " ");
  else
    out += "- ";
  switch (s.mode) {
    case ThinPoolStatus::Mode::kReadWrite: out += "rw "; break;
    case ThinPoolStatus::Mode::kReadOnly: out += "ro "; break;
    case ThinPoolStatus::Mode::kOutOfDataSpace: out += "out_of_data_space "; break;
  }
  if (!s.discard) return out;
  switch (*s.discard) {
    case ThinPoolStatus::Discard::kIgnore: out += "ignore_discard "; break;
    case ThinPoolStatus::Discard::kPassdown: out += "discard_passdown "; break;
    case ThinPoolStatus::Discard::kNoPassdown: out += "no_discard_passdown "; break;
  }
  if (!s.no_space) return out;
  out += *s.no_space == ThinPoolStatus::NoSpace::kError ? "error_if_no_space "
                                                        : "queue_if_no_space ";
  out += s.needs_check ? "needs_check " : "- ";
  if (s.metadata_low_watermark) absl::StrAppend(&out, s.metadata_low_watermark->value(), " ");
  return out;
}

absl::StatusOr<ThinStatus> ParseThinStatus(absl::string_view text) {
  constexpr absl::string_view kWhat = "thin";
  absl::string_view w[3];
  size_t size = SplitWords(text, w, 3);
  ThinStatus s;
  if (size == 1) {
    if (w[0] == "Fail") s.health = ThinStatus::Health::kFail;
    else if (w[0] == "Error") s.health = ThinStatus::Health::kError;
    else if (w[0] == "-") s.health = ThinStatus::Health::kUnavailable;
    else return BadStatus(kWhat, text, "unknown single-word status");
    return s;
  }
  if (size != 2) return BadStatus(kWhat, text, absl::StrCat("has ", size, " fields, want 2"));
  uint64_t v;
  if (!ParseDecimal(w[0], &v)) return BadStatus(kWhat, text, "mapped sectors is not a number");
  s.mapped = Sectors(v);
  if (w[1] != "-") {
    if (!ParseDecimal(w[1], &v))
      return BadStatus(kWhat, text, "highest mapped sector is not a number or '-'");
    s.highest_mapped = Sectors(v);
  }
  return s;
}

std::string FormatThinStatus(const ThinStatus& s) {
  switch (s.health) {
    case ThinStatus::Health::kFail: return "Fail";
    case ThinStatus::Health::kError: return "Error";
    case ThinStatus::Health::kUnavailable: return "-";
    case ThinStatus::Health::kOk: break;
  }
  return absl::StrCat(s.mapped.value(), " ",
                      s.highest_mapped ? absl::StrCat(s.highest_mapped->value()) : "-");
}

absl::StatusOr<std::string> FormatThinPoolMessage(const ThinPoolMessage& message) {
  return std::visit(
      Overloaded{
          [](const thin_msg::CreateThin& m) -> absl::StatusOr<std::string> {
            RETURN_IF_ERROR(CheckId(m.id, "thin device id"));
            return absl::StrCat("create_thin ", m.id);
          },
          [](const thin_msg::CreateSnap& m) -> absl::StatusOr<std::string> {
            RETURN_IF_ERROR(CheckId(m.id, "snapshot id"));
            RETURN_IF_ERROR(CheckId(m.origin_id, "origin id"));
            if (m.id == m.origin_id)
              return absl::InvalidArgumentError(
                  absl::StrCat("snapshot id ", m.id, " equals its origin's"));
            return absl::StrCat("create_snap ", m.id, " ", m.origin_id);
          },
          [](const thin_msg::Delete& m) -> absl::StatusOr<std::string> {
            RETURN_IF_ERROR(CheckId(m.id, "thin device id"));
            return absl::StrCat("delete ", m.id);
          },
          [](const thin_msg::SetTransactionId& m) -> absl::StatusOr<std::string> {
            return absl::StrCat("set_transaction_id ", m.current, " ", m.next);
          },
          [](const thin_msg::ReserveMetadataSnap&) -> absl::StatusOr<std::string> {
            return std::string("reserve_metadata_snap");
          },
          [](const thin_msg::ReleaseMetadataSnap&) -> absl::StatusOr<std::string> {
            return std::string("release_metadata_snap");
          },
      },
      message);
}

}  // namespace dm
