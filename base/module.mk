# base: errno-carrying status helpers and RAII handles shared by every layer.
LIBRARIES += dmbase
dmbase_SRCS := $(sort $(wildcard base/*.cc))
