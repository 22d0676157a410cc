# dmthin-docker-plugin: Docker's graph-driver plugin protocol served from
# libgraph (see docs/docker.md). HTTP from cpp-httplib (Debian's shared
# library), command line from CLI11, JSON from nlohmann-json.
TOOLS += dmthin-docker-plugin
dmthin-docker-plugin_SRCS := tools/docker-plugin/main.cc tools/docker-plugin/unix_server.cc \
  tools/docker-plugin/router.cc tools/docker-plugin/codec.cc \
  tools/docker-plugin/pipe_stream.cc tools/docker-plugin/graphdriver_role.cc \
  tools/docker-plugin/volume_role.cc tools/common/cli.cc \
  tools/common/storage_opts.cc tools/common/unix_socket.cc
dmthin-docker-plugin_LDLIBS := $(call pkglibs,cpp-httplib)

# Its host tests run the binary (and speak HTTP with cpp-httplib's client).
$(BUILD)/tests/host/docker_plugin_test: | $(BUILD)/bin/dmthin-docker-plugin
$(BUILD)/tests/host/docker_plugin_test: TEST_LDLIBS += $(call pkglibs,cpp-httplib)
$(BUILD)/tests/host/docker_volume_test: | $(BUILD)/bin/dmthin-docker-plugin
$(BUILD)/tests/host/docker_volume_test: TEST_LDLIBS += $(call pkglibs,cpp-httplib)
$(BUILD)/tests/host/docker_dockerd_test: | $(BUILD)/bin/dmthin-docker-plugin

# tests/bench/docker_bench starts dockerd (and the plugin, and in the vm
# containerd) with the tests' helpers.
DOCKER_BENCH_SUPPORT := $(patsubst %,$(BUILD)/obj/tests/support/%.o,containerd daemon dockerd graph_tar process scratch_dir)
$(BUILD)/bench/docker_bench: $(DOCKER_BENCH_SUPPORT) $(BUILD)/lib/libgraph.a | $(BUILD)/bin/dmthin-docker-plugin
$(BUILD)/bench/docker_bench: LDLIBS := $(DOCKER_BENCH_SUPPORT) $(BUILD)/lib/libgraph.a $(BUILD)/lib/libdmbase.a $(LDLIBS)
$(BUILD)/obj/tests/bench/docker_bench.o: CXXFLAGS += $(call pkgcflags,absl_time)
$(BUILD)/tests/vm/docker_volume_backends_test: | $(BUILD)/bin/dmthin-docker-plugin
$(BUILD)/tests/vm/docker_volume_backends_test: TEST_LDLIBS += $(call pkglibs,cpp-httplib)
