// Fuzzes every dm ioctl result decoder with kernel-like buffers: the first
// bytes choose the header (version, target_count, flags, data_size), the
// rest is the data area; a second mode hands the raw bytes over as the whole
// buffer to exercise the header checks. Decoders must return an error or a
// value, never read outside the buffer (ASan) or loop.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "libdm/wire.h"

namespace {

void DecodeAll(const dm::wire::Response& r) {
  (void)dm::wire::DecodeDeviceList(r);
  (void)dm::wire::DecodeDeps(r);
  (void)dm::wire::DecodeVersions(r);
  (void)dm::wire::DecodeTargets(r);
  (void)dm::wire::DecodeMessageResult(r);
  (void)dm::wire::DescribeHeader(r.header);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  if (data[0] & 1) {
    // Raw mode: exactly the bytes given, in a heap block of that size.
    std::vector<uint8_t> raw(data + 1, data + size);
    auto r = dm::wire::ParseResponse(raw);
    if (r.ok()) DecodeAll(*r);
    return 0;
  }
  // Structured mode: 12 control bytes, then the data area.
  if (size < 13) return 0;
  uint32_t minor = data[1] % 64;
  uint32_t target_count;
  std::memcpy(&target_count, data + 2, 4);
  uint32_t flags;
  std::memcpy(&flags, data + 6, 4);
  uint16_t slack;  // data_size may claim more or less than the buffer
  std::memcpy(&slack, data + 10, 2);
  const uint8_t* payload = data + 12;
  size_t payload_size = size - 12;
  size_t total = dm::wire::kHeaderSize + payload_size;
  dm::wire::Buffer buf(total);
  std::memset(buf.data(), 0, dm::wire::kHeaderSize);
  std::memcpy(buf.data() + dm::wire::kHeaderSize, payload, payload_size);
  struct dm_ioctl* h = buf.header();
  h->version[0] = 4;
  h->version[1] = minor;
  h->data_start = dm::wire::kHeaderSize;
  h->data_size = static_cast<uint32_t>(total) + (slack & 0x8000 ? (slack & 0xff) : 0) -
                 (slack & 0x4000 ? std::min<size_t>(slack & 0xff, payload_size) : 0);
  h->target_count = target_count % 4096;
  h->flags = flags;
  // Exactly `total` bytes: anything past it is out of bounds for ASan.
  std::vector<uint8_t> exact(buf.data(), buf.data() + total);
  auto r = dm::wire::ParseResponse(exact);
  if (r.ok()) DecodeAll(*r);
  return 0;
}
