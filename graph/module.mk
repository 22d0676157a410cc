# graph: libgraph — layer drivers, layer tarballs, layer store, C ABI.
# Sources are picked up by wildcard so each part can add files freely.
LIBRARIES += graph
graph_SRCS := $(sort $(wildcard graph/*.cc graph/*/*.cc))
graph_DEPS := thinpool dm dmbase
