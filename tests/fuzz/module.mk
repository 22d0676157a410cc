# libFuzzer targets for libdm's decoders and parsers, libgraph's filter
# parser, dmthin-docker-plugin's request decoding and dmthin-snapshotter's
# request handling (clang only).
#   make fuzz [FUZZ_SECONDS=N]   builds them and runs each for N seconds.
# The library sources they need are rebuilt here with the fuzzer and
# sanitizer instrumentation, into $(BUILD)/fuzz/obj.
FUZZ_CXX ?= clang++
FUZZ_FLAGS := -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
              -fno-omit-frame-pointer -g -O1
FUZZ_TARGETS := $(patsubst tests/fuzz/%_fuzz.cc,%,$(sort $(wildcard tests/fuzz/*_fuzz.cc)))
FUZZ_BINS := $(patsubst %,$(BUILD)/fuzz/%_fuzz,$(FUZZ_TARGETS))
# Pure code only: no ioctl, no udev, no sockets (dmthin-docker-plugin's JSON
# codec is pure too).
FUZZ_LIB_SRCS := libdm/wire.cc libdm/types.cc libdm/table.cc libdm/thin.cc base/status.cc \
                 base/size.cc tools/docker-plugin/codec.cc graph/store/filter.cc
FUZZ_LIB_OBJS := $(patsubst %.cc,$(BUILD)/fuzz/obj/%.o,$(FUZZ_LIB_SRCS))

$(BUILD)/fuzz/obj/%.o: %.cc
	@mkdir -p $(@D)
	$(FUZZ_CXX) -I. -Ibase/include -Ilibdm/include -Igraph/include -MMD -MP -std=c++20 -Wall -Wextra -Werror \
	  $(FUZZ_FLAGS) $(call pkgcflags,absl_status absl_statusor absl_strings re2) $(FUZZ_EXTRA_CFLAGS) -c $< -o $@

$(BUILD)/fuzz/%_fuzz: $(BUILD)/fuzz/obj/tests/fuzz/%_fuzz.o $(FUZZ_LIB_OBJS)
	@mkdir -p $(@D)
	$(FUZZ_CXX) $(FUZZ_FLAGS) -o $@ $^ \
	  $(call pkglibs,absl_status absl_statusor absl_strings absl_str_format re2) -lpthread

# dmthin-snapshotter's handlers run against a real store: the fuzz target,
# the service and the store's own code are instrumented; the drivers, the
# other libraries and the generated protobuf code are the normal build's.
SNAPSHOTTER_FUZZ := $(BUILD)/fuzz/snapshotter_service_fuzz
SNAPSHOTTER_FUZZ_OBJS := $(patsubst %.cc,$(BUILD)/fuzz/obj/%.o,tests/fuzz/snapshotter_service_fuzz.cc \
                           tools/snapshotter/service.cc graph/store/store.cc graph/store/filter.cc)
$(SNAPSHOTTER_FUZZ_OBJS): FUZZ_EXTRA_CFLAGS = -Ithinpool/include -Ivolume/include -I$(BUILD)/gen \
                            $(call pkgcflags,$(PKGS) $(SNAPSHOTTER_PKGS))
# (Second expansion: the snapshotter's module and the library list are read
# after this file.)
.SECONDEXPANSION:
$(SNAPSHOTTER_FUZZ_OBJS): | $$(SNAPSHOTTER_GEN_HDRS)
$(SNAPSHOTTER_FUZZ): $(SNAPSHOTTER_FUZZ_OBJS) $$(SNAPSHOTTER_GEN_OBJS) $$(STATIC_LIBS)
	@mkdir -p $(@D)
	$(FUZZ_CXX) $(FUZZ_FLAGS) -o $@ $(SNAPSHOTTER_FUZZ_OBJS) $(SNAPSHOTTER_GEN_OBJS) $(STATIC_LIBS) \
	  $(call pkglibs,$(SNAPSHOTTER_PKGS)) $(LDLIBS)
