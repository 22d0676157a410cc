# libdm: the device-mapper ioctl binding (no libdevmapper, no dmsetup).
LIBRARIES += dm
dm_SRCS := $(sort $(wildcard libdm/*.cc))
dm_DEPS := dmbase
HEADERS_dm := $(wildcard libdm/include/libdm/*.h)
