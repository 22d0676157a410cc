// SHA-256 digests (OpenSSL libcrypto EVP: uses SHA-NI / ARMv8 SHA where the
// CPU has it) in OCI form "sha256:<64 hex>".
#ifndef DMTHIN_GRAPH_DIGEST_H_
#define DMTHIN_GRAPH_DIGEST_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"
#include "base/export.h"

DMTHIN_API_BEGIN
namespace graph {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(const void* data, size_t len);
  void Update(absl::string_view data) { Update(data.data(), data.size()); }
  // Finishes and returns "sha256:<hex>". The object restarts empty.
  std::string Finish();

 private:
  void* ctx_;  // EVP_MD_CTX
};

// "sha256:<hex>" of `data`.
std::string Sha256Digest(absl::string_view data);

// True if `digest` is "sha256:" followed by 64 lowercase hex digits.
bool IsSha256Digest(absl::string_view digest);

}  // namespace graph
DMTHIN_API_END

#endif  // DMTHIN_GRAPH_DIGEST_H_
