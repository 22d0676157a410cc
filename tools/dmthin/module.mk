# dmthin: the admin tool (parses, calls libthinpool/libdm, prints).
TOOLS += dmthin
dmthin_SRCS := $(sort $(wildcard tools/dmthin/*.cc tools/common/*.cc))
