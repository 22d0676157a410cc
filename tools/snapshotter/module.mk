# dmthin-snapshotter: containerd's snapshots gRPC service
# (containerd.services.snapshots.v1.Snapshots) over graph::LayerStore; see
# docs/containerd.md.
#
# The .proto files come from Debian's golang-github-containerd-containerd-dev.
# protoc's C++ generator aborts on their `import weak "gogoproto/gogo.proto"`,
# so a copy without the gogoproto import and options (Go-only annotations;
# the wire format is the same) is generated under $(BUILD)/proto and compiled
# into $(BUILD)/gen. Nothing generated goes into the repository.
TOOLS += dmthin-snapshotter
CONTAINERD_API_SRC ?= /usr/share/gocode/src
SNAPSHOTTER_PROTO_NAMES := github.com/containerd/containerd/api/types/mount \
                           github.com/containerd/containerd/api/services/snapshots/v1/snapshots
SNAPSHOTTER_PROTOS := $(patsubst %,$(BUILD)/proto/%.proto,$(SNAPSHOTTER_PROTO_NAMES))
SNAPSHOTTER_GEN_SRCS := $(patsubst %,$(BUILD)/gen/%.pb.cc,$(SNAPSHOTTER_PROTO_NAMES)) \
                        $(BUILD)/gen/github.com/containerd/containerd/api/services/snapshots/v1/snapshots.grpc.pb.cc
SNAPSHOTTER_GEN_HDRS := $(SNAPSHOTTER_GEN_SRCS:.cc=.h)
SNAPSHOTTER_PKGS := grpc++ protobuf

dmthin-snapshotter_SRCS := $(sort $(wildcard tools/snapshotter/*.cc)) tools/common/storage_opts.cc tools/common/unix_socket.cc tools/common/cli.cc \
                           $(SNAPSHOTTER_GEN_SRCS)

$(BUILD)/proto/%.proto: $(CONTAINERD_API_SRC)/%.proto
	@mkdir -p $(@D)
	$(call say,GEN,$@)
	$(Q)sed -e '/^import weak "gogoproto\/gogo.proto";/d' \
	        -e '/^[[:space:]]*option (gogoproto\.[^)]*) = [^;]*;/d' \
	        -e 's/ *\[(gogoproto\.[^]]*\]//' $< > $@

# One protoc run makes every generated file (grouped target).
$(SNAPSHOTTER_GEN_SRCS) $(SNAPSHOTTER_GEN_HDRS) &: $(SNAPSHOTTER_PROTOS)
	@mkdir -p $(BUILD)/gen
	$(call say,PROTOC,$(BUILD)/gen)
	$(Q)protoc -I$(BUILD)/proto -I/usr/include --cpp_out=$(BUILD)/gen $(SNAPSHOTTER_PROTOS)
	$(Q)protoc -I$(BUILD)/proto -I/usr/include --grpc_out=$(BUILD)/gen \
	  --plugin=protoc-gen-grpc=$$(command -v grpc_cpp_plugin) \
	  $(BUILD)/proto/github.com/containerd/containerd/api/services/snapshots/v1/snapshots.proto

# (The top Makefile's objs function is defined after the modules are read.)
SNAPSHOTTER_OWN_OBJS := $(patsubst %.cc,$(BUILD)/obj/%.o,$(filter tools/%,$(dmthin-snapshotter_SRCS)))
SNAPSHOTTER_GEN_OBJS := $(patsubst %.cc,$(BUILD)/obj/%.o,$(SNAPSHOTTER_GEN_SRCS))
$(SNAPSHOTTER_OWN_OBJS) $(SNAPSHOTTER_GEN_OBJS): CPPFLAGS += -I$(BUILD)/gen
$(SNAPSHOTTER_OWN_OBJS) $(SNAPSHOTTER_GEN_OBJS): CXXFLAGS += $(call pkgcflags,$(SNAPSHOTTER_PKGS))
$(SNAPSHOTTER_OWN_OBJS): | $(SNAPSHOTTER_GEN_HDRS)
dmthin-snapshotter_LDLIBS := $(call pkglibs,$(SNAPSHOTTER_PKGS))
