# thinpool: pools on sparse files and loop devices, registry, thin devices.
LIBRARIES += thinpool
thinpool_SRCS := $(sort $(wildcard thinpool/*.cc))
thinpool_DEPS := dm dmbase
# filesystem.cc reports libext2fs errors with com_err's error_message().
LDLIBS += $(call pkglibs,com_err)
# mounts.cc reads /proc/self/mountinfo with libmount (util-linux).
LDLIBS += $(call pkglibs,mount)
