# containerd's snapshotter conformance suite as a Go test binary
# (tests/containerd/snapshotter_suite_test.go), built offline in GOPATH mode
# against Debian's Go packages and run by tests/host/snapshotter_suite_test.
# The binary is rebuilt only when its source, Go or the containerd/grpc
# packages change (the key below); Go's build cache is machine-wide
# (GO_BUILD_CACHE) so a fresh clone relinks instead of recompiling grpc and
# containerd.
GO ?= go
GO_BUILD_CACHE ?= $(if $(filter 0,$(shell id -u)),/var/cache/dmthin/go-build,$(abspath $(BUILD)/go/cache))
GO_SUITE := $(BUILD)/go/snapshotter-suite.test
GO_SUITE_KEY := $(shell { $(GO) version; dpkg-query -W -f '$${Version}\n' golang-go \
                  golang-github-containerd-containerd-dev golang-google-grpc-dev; } 2>/dev/null | md5sum | cut -c1-12)
GO_SUITE_PKG := $(BUILD)/go/src/dmthin/snapshottersuite
EXTRA_TEST_BINS += $(GO_SUITE)

$(BUILD)/go/key-%:
	@mkdir -p $(@D)
	$(Q)rm -f $(BUILD)/go/key-* && touch $@

$(GO_SUITE): tests/containerd/snapshotter_suite_test.go $(BUILD)/go/key-$(GO_SUITE_KEY)
	$(call say,GO,$@)
	$(Q)rm -rf $(GO_SUITE_PKG) && mkdir -p $(GO_SUITE_PKG) $(GO_BUILD_CACHE) && cp $< $(GO_SUITE_PKG)/
	$(Q)cd $(GO_SUITE_PKG) && GO111MODULE=off GOPROXY=off GOFLAGS= GOCACHE=$(GO_BUILD_CACHE) \
	  GOPATH=$(abspath $(BUILD)/go):/usr/share/gocode $(GO) test -c -o $(abspath $@) .

$(BUILD)/tests/host/snapshotter_test: | $(BUILD)/bin/dmthin-snapshotter $(GO_SUITE)
$(BUILD)/tests/host/snapshotter_containerd_test: | $(BUILD)/bin/dmthin-snapshotter
$(BUILD)/tests/vm/snapshotter_zfs_test: | $(BUILD)/bin/dmthin-snapshotter $(GO_SUITE)

# tests/bench/snapshotter_bench: containerd with the snapshotter, started
# with the tests' helpers.
SNAPSHOTTER_BENCH_SUPPORT := $(patsubst %,$(BUILD)/obj/tests/support/%.o,containerd daemon ext4_scratch oci_image graph_tar thinpool_cleanup \
                               process scratch_dir)
$(BUILD)/bench/snapshotter_bench: $(SNAPSHOTTER_BENCH_SUPPORT) | $(BUILD)/bin/dmthin-snapshotter
# (linked before the libraries: the bench rule puts BENCH_C_OBJS first)
$(BUILD)/bench/snapshotter_bench: BENCH_C_OBJS += $(SNAPSHOTTER_BENCH_SUPPORT)
# It calls containerd's Snapshots API itself (gRPC, the snapshotter's
# generated code; second expansion and a recursive LDLIBS: the snapshotter's
# module is read after this file).
.SECONDEXPANSION:
$(BUILD)/obj/tests/bench/snapshotter_bench.o: CPPFLAGS += -I$(BUILD)/gen
$(BUILD)/obj/tests/bench/snapshotter_bench.o: CXXFLAGS += $(call pkgcflags,grpc++ protobuf)
$(BUILD)/obj/tests/bench/snapshotter_bench.o: | $$(SNAPSHOTTER_GEN_HDRS)
$(BUILD)/bench/snapshotter_bench: $$(SNAPSHOTTER_GEN_OBJS)
$(BUILD)/bench/snapshotter_bench: LDLIBS += $(SNAPSHOTTER_GEN_OBJS) $(call pkglibs,$(SNAPSHOTTER_PKGS))
