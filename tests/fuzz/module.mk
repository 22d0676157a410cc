# libFuzzer targets for libdm's decoders and parsers, libgraph's filter
# parser and dmthin-docker-plugin's request decoding (clang only).
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
	  $(FUZZ_FLAGS) $(call pkgcflags,absl_status absl_statusor absl_strings re2) -c $< -o $@

$(BUILD)/fuzz/%_fuzz: $(BUILD)/fuzz/obj/tests/fuzz/%_fuzz.o $(FUZZ_LIB_OBJS)
	@mkdir -p $(@D)
	$(FUZZ_CXX) $(FUZZ_FLAGS) -o $@ $^ \
	  $(call pkglibs,absl_status absl_statusor absl_strings absl_str_format re2) -lpthread
