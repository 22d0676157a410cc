# graph: libgraph — layer drivers, layer tarballs, layer store, C ABI.
# Sources are picked up by wildcard so each part can add files freely.
LIBRARIES += graph
graph_SRCS := $(sort $(wildcard graph/*.cc graph/*/*.cc))
graph_DEPS := thinpool dm dmbase
# The zfs driver links OpenZFS's libzfs_core and libzfs (Debian contrib's
# libzfslinux-dev); their headers (libspl's shadow system ones) are seen by
# graph/drivers/zfs_lib.cc alone.
LDLIBS += $(call pkglibs,libzfs_core libzfs)
$(BUILD)/obj/graph/drivers/zfs_lib.o: CPPFLAGS += $(call pkgcflags,libzfs_core libzfs)
