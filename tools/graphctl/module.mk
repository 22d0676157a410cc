# graphctl: the command-line face of libgraph (see docs/graphctl.md).
TOOLS += graphctl
graphctl_SRCS := tools/graphctl/main.cc tools/common/cli.cc

# Its host test runs the binary.
$(BUILD)/tests/host/graphctl_test: | $(BUILD)/bin/graphctl
