#include "libdm/table.h"

#include <type_traits>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/status.h"
#include "parse_util.h"

namespace dm {
namespace {

using internal::Overloaded;
using internal::ParseDecimal;

std::vector<absl::string_view> Words(absl::string_view s) {
  return absl::StrSplit(s, absl::ByAnyChar(" \t\n"), absl::SkipEmpty());
}

absl::Status Bad(absl::string_view type, absl::string_view params, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("bad ", type, " target params '", params, "': ", why));
}

// Cursor over whitespace-separated words.
class Args {
 public:
  Args(absl::string_view type, absl::string_view params)
      : type_(type), params_(params), words_(Words(params)) {}

  bool done() const { return i_ == words_.size(); }
  size_t left() const { return words_.size() - i_; }

  absl::StatusOr<absl::string_view> Word(absl::string_view what) {
    if (done()) return Bad(type_, params_, absl::StrCat("missing ", what));
    return words_[i_++];
  }
  template <typename T>
  absl::StatusOr<T> Number(absl::string_view what) {
    ASSIGN_OR_RETURN(absl::string_view w, Word(what));
    T v;
    if (!ParseDecimal(w, &v))
      return Bad(type_, params_, absl::StrCat(what, " '", w, "' is not a number"));
    return v;
  }
  absl::StatusOr<DevNum> Dev(absl::string_view what) {
    ASSIGN_OR_RETURN(absl::string_view w, Word(what));
    auto d = DevNum::Parse(w);
    if (!d.ok())
      return Bad(type_, params_, absl::StrCat(what, " '", w, "' is not MAJOR:MINOR"));
    return *d;
  }
  absl::Status End() {
    if (!done())
      return Bad(type_, params_, absl::StrCat("unexpected '", words_[i_], "'"));
    return absl::OkStatus();
  }
  absl::Status Error(absl::string_view why) { return Bad(type_, params_, why); }

 private:
  absl::string_view type_;
  absl::string_view params_;
  std::vector<absl::string_view> words_;
  size_t i_ = 0;
};

absl::StatusOr<TargetParams> ParseLinear(Args& a) {
  LinearTarget t;
  ASSIGN_OR_RETURN(t.device, a.Dev("device"));
  ASSIGN_OR_RETURN(uint64_t off, a.Number<uint64_t>("offset"));
  t.offset = Sectors(off);
  RETURN_IF_ERROR(a.End());
  return t;
}

absl::StatusOr<TargetParams> ParseThinPool(Args& a) {
  ThinPoolTarget t;
  ASSIGN_OR_RETURN(t.metadata, a.Dev("metadata device"));
  ASSIGN_OR_RETURN(t.data, a.Dev("data device"));
  ASSIGN_OR_RETURN(uint64_t bs, a.Number<uint64_t>("block size"));
  t.block_size = Sectors(bs);
  ASSIGN_OR_RETURN(uint64_t lwm, a.Number<uint64_t>("low water mark"));
  t.low_water_mark = DataBlocks(lwm);
  if (a.done()) return t;  // feature count is optional on input
  ASSIGN_OR_RETURN(uint32_t n, a.Number<uint32_t>("feature count"));
  if (n != a.left())
    return a.Error(absl::StrCat("feature count ", n, " but ", a.left(), " features follow"));
  for (uint32_t i = 0; i < n; ++i) {
    ASSIGN_OR_RETURN(absl::string_view f, a.Word("feature"));
    bool* flag = f == "skip_block_zeroing"    ? &t.skip_block_zeroing
                 : f == "ignore_discard"      ? &t.ignore_discard
                 : f == "no_discard_passdown" ? &t.no_discard_passdown
                 : f == "read_only"           ? &t.read_only
                 : f == "error_if_no_space"   ? &t.error_if_no_space
                                              : nullptr;
    if (flag == nullptr) return a.Error(absl::StrCat("unknown feature '", f, "'"));
    if (*flag) return a.Error(absl::StrCat("feature '", f, "' repeated"));
    *flag = true;
  }
  return t;
}

absl::StatusOr<TargetParams> ParseThin(Args& a) {
  ThinTarget t;
  ASSIGN_OR_RETURN(t.pool, a.Dev("pool device"));
  ASSIGN_OR_RETURN(t.device_id, a.Number<uint32_t>("device id"));
  if (!a.done()) {
    ASSIGN_OR_RETURN(DevNum origin, a.Dev("external origin"));
    t.external_origin = origin;
  }
  RETURN_IF_ERROR(a.End());
  return t;
}

absl::StatusOr<TargetParams> ParseFlakey(Args& a) {
  FlakeyTarget t;
  ASSIGN_OR_RETURN(t.device, a.Dev("device"));
  ASSIGN_OR_RETURN(uint64_t off, a.Number<uint64_t>("offset"));
  t.offset = Sectors(off);
  ASSIGN_OR_RETURN(t.up_interval, a.Number<uint32_t>("up interval"));
  ASSIGN_OR_RETURN(t.down_interval, a.Number<uint32_t>("down interval"));
  if (a.done()) return t;
  ASSIGN_OR_RETURN(uint32_t n, a.Number<uint32_t>("feature count"));
  if (n != a.left())
    return a.Error(absl::StrCat("feature argument count ", n, " but ", a.left(), " follow"));
  while (!a.done()) {
    ASSIGN_OR_RETURN(absl::string_view f, a.Word("feature"));
    if (f == "drop_writes" || f == "error_writes") {
      if (t.down_mode != FlakeyTarget::DownMode::kFailAll)
        return a.Error("drop_writes and error_writes exclude each other");
      t.down_mode = f == "drop_writes" ? FlakeyTarget::DownMode::kDropWrites
                                       : FlakeyTarget::DownMode::kErrorWrites;
    } else if (f == "corrupt_bio_byte") {
      if (t.corrupt) return a.Error("corrupt_bio_byte repeated");
      FlakeyTarget::CorruptBioByte c;
      ASSIGN_OR_RETURN(c.nth_byte, a.Number<uint32_t>("corrupt byte position"));
      ASSIGN_OR_RETURN(absl::string_view rw, a.Word("corrupt direction"));
      if (rw != "r" && rw != "w") return a.Error("corrupt direction must be r or w");
      c.on_write = rw == "w";
      ASSIGN_OR_RETURN(c.value, a.Number<uint32_t>("corrupt value"));
      ASSIGN_OR_RETURN(c.bio_flags, a.Number<uint32_t>("corrupt bio flags"));
      t.corrupt = c;
    } else {
      return a.Error(absl::StrCat("unknown feature '", f, "'"));
    }
  }
  return t;
}

}  // namespace

std::string Target::type() const {
  return std::visit(
      Overloaded{
          [](const LinearTarget&) { return std::string("linear"); },
          [](const ZeroTarget&) { return std::string("zero"); },
          [](const ErrorTarget&) { return std::string("error"); },
          [](const ThinPoolTarget&) { return std::string("thin-pool"); },
          [](const ThinTarget&) { return std::string("thin"); },
          [](const FlakeyTarget&) { return std::string("flakey"); },
          [](const OtherTarget& o) { return o.type; },
      },
      params);
}

std::string Target::FormatParams() const {
  return std::visit(
      Overloaded{
          [](const LinearTarget& t) {
            return absl::StrCat(t.device.ToString(), " ", t.offset.value());
          },
          [](const ZeroTarget&) { return std::string(); },
          [](const ErrorTarget&) { return std::string(); },
          [](const ThinPoolTarget& t) {
            // As the kernel's pool_status(STATUSTYPE_TABLE) emits it,
            // trailing space included.
            int n = t.skip_block_zeroing + t.ignore_discard + t.no_discard_passdown +
                    t.read_only + t.error_if_no_space;
            std::string s = absl::StrCat(t.metadata.ToString(), " ", t.data.ToString(), " ",
                                         t.block_size.value(), " ",
                                         t.low_water_mark.value(), " ", n, " ");
            if (t.skip_block_zeroing) s += "skip_block_zeroing ";
            if (t.ignore_discard) s += "ignore_discard ";
            if (t.no_discard_passdown) s += "no_discard_passdown ";
            if (t.read_only) s += "read_only ";
            if (t.error_if_no_space) s += "error_if_no_space ";
            return s;
          },
          [](const ThinTarget& t) {
            std::string s = absl::StrCat(t.pool.ToString(), " ", t.device_id);
            if (t.external_origin) absl::StrAppend(&s, " ", t.external_origin->ToString());
            return s;
          },
          [](const FlakeyTarget& t) {
            bool mode = t.down_mode != FlakeyTarget::DownMode::kFailAll;
            std::string s = absl::StrCat(t.device.ToString(), " ", t.offset.value(), " ",
                                         t.up_interval, " ", t.down_interval, " ",
                                         int{mode} + (t.corrupt ? 5 : 0));
            if (t.down_mode == FlakeyTarget::DownMode::kDropWrites) s += " drop_writes";
            if (t.down_mode == FlakeyTarget::DownMode::kErrorWrites) s += " error_writes";
            if (t.corrupt)
              absl::StrAppend(&s, " corrupt_bio_byte ", t.corrupt->nth_byte, " ",
                              t.corrupt->on_write ? "w" : "r", " ", t.corrupt->value, " ",
                              t.corrupt->bio_flags);
            return s;
          },
          [](const OtherTarget& o) { return o.params; },
      },
      params);
}

absl::Status Target::Validate() const {
  if (length.value() == 0) return absl::InvalidArgumentError("target length is 0");
  return std::visit(
      Overloaded{
          [](const ThinPoolTarget& t) -> absl::Status {
            uint64_t bs = t.block_size.value();
            if (bs < 128 || bs > 2097152 || bs % 128 != 0)
              return absl::InvalidArgumentError(absl::StrCat(
                  "thin-pool block size ", bs,
                  " sectors: must be a multiple of 128 in [128, 2097152]"));
            if (t.metadata == t.data)
              return absl::InvalidArgumentError(
                  "thin-pool metadata and data devices are the same");
            return absl::OkStatus();
          },
          [](const ThinTarget& t) -> absl::Status {
            if (t.device_id >= (1u << 24))
              return absl::InvalidArgumentError(
                  absl::StrCat("thin device id ", t.device_id, " exceeds 24 bits"));
            return absl::OkStatus();
          },
          [](const FlakeyTarget& t) -> absl::Status {
            if (uint64_t{t.up_interval} + t.down_interval == 0)
              return absl::InvalidArgumentError("flakey up + down interval is 0");
            if (t.corrupt && (t.corrupt->nth_byte == 0 || t.corrupt->value > 255))
              return absl::InvalidArgumentError(
                  "flakey corrupt_bio_byte: position must be >= 1, value <= 255");
            return absl::OkStatus();
          },
          [](const OtherTarget& o) -> absl::Status {
            if (o.type.empty() || o.type.size() >= 16)
              return absl::InvalidArgumentError(
                  absl::StrCat("target type '", o.type, "' must be 1..15 bytes"));
            if (o.params.find_first_of(std::string("\\\0", 2)) != std::string::npos)
              return absl::InvalidArgumentError(
                  absl::StrCat(o.type, " params contain a backslash or NUL"));
            return absl::OkStatus();
          },
          [](const auto&) -> absl::Status { return absl::OkStatus(); },
      },
      params);
}

namespace {
absl::StatusOr<TargetParams> ParseParams(absl::string_view type, absl::string_view params) {
  Args a(type, params);
  if (type == "linear") return ParseLinear(a);
  if (type == "thin-pool") return ParseThinPool(a);
  if (type == "thin") return ParseThin(a);
  if (type == "flakey") return ParseFlakey(a);
  if (type == "zero" || type == "error") {
    RETURN_IF_ERROR(a.End());
    if (type == "zero") return TargetParams(ZeroTarget{});
    return TargetParams(ErrorTarget{});
  }
  if (type.empty() || type.size() >= 16)
    return absl::InvalidArgumentError(absl::StrCat("bad target type '", type, "'"));
  return TargetParams(OtherTarget{std::string(type),
                                  std::string(absl::StripTrailingAsciiWhitespace(params))});
}
}  // namespace

absl::StatusOr<Target> Target::Parse(Sectors start, Sectors length, absl::string_view type,
                                     absl::string_view params) {
  absl::StatusOr<TargetParams> p = ParseParams(type, params);
  if (!p.ok()) return p.status();
  absl::StatusOr<Target> t(absl::in_place);
  t->start = start;
  t->length = length;
  t->params = *std::move(p);
  return t;
}

Sectors Table::size() const {
  return targets_.empty() ? Sectors(0) : targets_.back().start + targets_.back().length;
}

absl::Status Table::Validate() const {
  if (targets_.empty()) return absl::InvalidArgumentError("table has no targets");
  Sectors next(0);
  for (size_t i = 0; i < targets_.size(); ++i) {
    const Target& t = targets_[i];
    if (t.start != next)
      return absl::InvalidArgumentError(absl::StrCat(
          "table target ", i, " starts at sector ", t.start.value(), ", expected ",
          next.value(), " (targets must be contiguous from 0)"));
    absl::Status s = t.Validate();
    if (!s.ok()) return base::Annotate(s, absl::StrCat("table target ", i));
    next = t.start + t.length;
  }
  return absl::OkStatus();
}

std::string Table::ToString() const {
  std::string s;
  for (const Target& t : targets_)
    absl::StrAppend(&s, t.start.value(), " ", t.length.value(), " ", t.type(), " ",
                    t.FormatParams(), "\n");
  return s;
}

absl::StatusOr<Table> Table::ParseText(absl::string_view text) {
  Table table;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    std::vector<absl::string_view> head =
        absl::StrSplit(absl::StripLeadingAsciiWhitespace(line), absl::MaxSplits(' ', 3));
    uint64_t start, length;
    if (head.size() < 3 || !ParseDecimal(head[0], &start) || !ParseDecimal(head[1], &length))
      return absl::InvalidArgumentError(
          absl::StrCat("bad table line '", line, "': want 'start length type params'"));
    ASSIGN_OR_RETURN(Target t, Target::Parse(Sectors(start), Sectors(length), head[2],
                                             head.size() > 3 ? head[3] : ""));
    table.targets_.push_back(std::move(t));
  }
  return table;
}

}  // namespace dm
