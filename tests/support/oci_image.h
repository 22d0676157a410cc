// Test support: a small real OCI image for containerd tests, made with the
// reference tools (umoci builds the layers, skopeo writes the archive).
#ifndef DMTHIN_TESTS_SUPPORT_OCI_IMAGE_H_
#define DMTHIN_TESTS_SUPPORT_OCI_IMAGE_H_

#include <string>

namespace testsupport {

// Writes a docker-archive (what `ctr images import` takes) of a two-layer
// image named `name` into `dir`/image.tar and returns its path. Layer 1:
// busybox-static (/bin/busybox, sh, cat, test), /etc/hello, /delfile,
// /deldir/a/b, /keep/orig, /keep/x with xattr user.color=red. Layer 2
// deletes /delfile and /deldir, sets user.color=blue on /keep/x, hard-links
// /keep/link to /keep/orig and adds /top.txt ("top layer\n"). Throws
// std::runtime_error naming the tool that failed.
std::string MakeTestImage(const std::string& dir, const std::string& name);

}  // namespace testsupport

#endif  // DMTHIN_TESTS_SUPPORT_OCI_IMAGE_H_
