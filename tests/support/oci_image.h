// Test support: a small real OCI image for containerd tests: umoci builds
// the layers (an OCI image layout), and the archive `ctr images import`
// takes is that layout in a tar, written here (libarchive) with the image's
// name on its manifest. No skopeo: its blob-info cache is a bbolt file at a
// fixed path (/var/lib/containers/cache), which in the vm tier's guest is
// the host's file over 9p, and skopeo panicked on it there.
#ifndef DMTHIN_TESTS_SUPPORT_OCI_IMAGE_H_
#define DMTHIN_TESTS_SUPPORT_OCI_IMAGE_H_

#include <string>

namespace testsupport {

// Writes an OCI image archive (a tar of an OCI image layout, what
// `ctr images import` takes) of a two-layer image named `name` (a full
// reference, e.g. docker.io/library/x:latest; containerd's
// io.containerd.image.name annotation) into `dir`/image.tar and returns its
// path. Layer 1: busybox-static (/bin/busybox, sh, cat, test, true),
// /etc/hello, /delfile, /deldir/a/b, /keep/orig, /keep/x with xattr
// user.color=red. Layer 2 deletes /delfile and /deldir, sets
// user.color=blue on /keep/x, hard-links /keep/link to /keep/orig and adds
// /top.txt ("top layer\n"). Throws std::runtime_error naming the tool or
// step that failed.
std::string MakeTestImage(const std::string& dir, const std::string& name);

// The OCI image layout at `layout` (umoci's; its index's first manifest) as
// the tar `docker load` takes (docker save's manifest.json + the blobs),
// tagged `ref` (name:tag). Throws std::runtime_error on a malformed layout.
std::string DockerArchive(const std::string& layout, const std::string& ref);

}  // namespace testsupport

#endif  // DMTHIN_TESTS_SUPPORT_OCI_IMAGE_H_
