# graphctl: the command-line face of libgraph (see docs/graphctl.md).
TOOLS += graphctl
graphctl_SRCS := $(sort $(wildcard tools/graphctl/*.cc)) tools/common/cli.cc tools/common/storage_opts.cc

# Its host and vm tests run the binary.
$(BUILD)/tests/host/graphctl_test: | $(BUILD)/bin/graphctl
$(BUILD)/tests/vm/graphctl_devmapper_test: | $(BUILD)/bin/graphctl
