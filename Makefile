# dmthin — top-level build. GNU make, no generator.
#
#   make [all]          libraries (static + shared) and tools into build/
#   make deps           apt-get what the build, tests and the VM tier need
#   make check          deps, build, then every test tier the machine allows
#   make check-unit | check-host | check-vm
#   make bench | demo | fuzz | install | clean
#   make SANITIZE=address,undefined check   (separate build folder)
#
# Each directory contributes a `module.mk` fragment (see below); this file
# owns only the rules.

SHELL := /bin/bash
.DEFAULT_GOAL := all
.DELETE_ON_ERROR:
.SECONDARY:
.SUFFIXES:

PREFIX  ?= /usr/local
DESTDIR ?=
LIBDIR  ?= $(PREFIX)/lib
INCDIR  ?= $(PREFIX)/include
BINDIR  ?= $(PREFIX)/bin
SBINDIR ?= $(PREFIX)/sbin
DOCDIR  ?= $(PREFIX)/share/doc/dmthin
UDEVDIR ?= $(PREFIX)/lib/udev/rules.d
UNITDIR ?= $(PREFIX)/lib/systemd/system
STATE_DIR ?= /var/lib/dmthin

comma := ,
# Quiet by default ("CXX file"); `make V=1` shows the full commands.
ifeq ($(V),1)
Q :=
say = @true
else
Q := @
say = @printf '  %-6s %s\n' $(1) $(2)
endif
ifdef SANITIZE
BUILD ?= build/san-$(subst $(comma),-,$(SANITIZE))
SANFLAGS := -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
else
BUILD ?= build
SANFLAGS :=
endif

CXX      ?= g++
CC       ?= gcc
# Compiles go through ccache when it is installed (`make deps` installs it):
# CI builds a fresh clone every time, and the object files of an unchanged
# source are then hits (~13 of the ~30 minutes of a cold .ci/run). CCACHE=
# turns it off.
CCACHE   ?= $(shell command -v ccache 2>/dev/null)
OPT      ?= -O2 -g
PKGS     := absl_status absl_statusor absl_strings absl_str_format absl_time \
            absl_synchronization absl_flat_hash_map blkid libudev ext2fs \
            libarchive sqlite3 libcrypto zlib re2
TEST_PKGS := gtest gmock

pkgcflags = $(shell pkg-config --cflags $(1) 2>/dev/null)
pkglibs   = $(shell pkg-config --libs $(1) 2>/dev/null)

CPPFLAGS += -I. -Ibase/include -Ilibdm/include -Ithinpool/include -Igraph/include -Ivolume/include -MMD -MP
# -fdebug-prefix-map: the debug info names sources relative to the tree, so
# the objects (and ccache's hash of them) do not depend on where it is cloned.
PREFIX_MAP := -fdebug-prefix-map=$(CURDIR)=.
CXXFLAGS += -std=c++20 -Wall -Wextra -Werror $(OPT) -fPIC $(SANFLAGS) $(PREFIX_MAP) \
            $(call pkgcflags,$(PKGS))
CFLAGS   += -std=c11 -Wall -Wextra -Werror $(OPT) $(SANFLAGS) $(PREFIX_MAP)
LDFLAGS  += $(SANFLAGS)
LDLIBS   += $(call pkglibs,$(PKGS)) -lpthread
TEST_LDLIBS := $(call pkglibs,gmock gtest_main gtest)

# ---------------------------------------------------------------- modules ---
# A module.mk appends to these:
#   LIBRARIES           short names (dm, thinpool, graph): lib<name>.{a,so}
#   <name>_SRCS         the library's .cc files; <name>_VERSION its soname version
#   TOOLS               tool names; <tool>_SRCS its sources; linked to all libs
#                       and <tool>_LDLIBS (its own extra libraries); a test
#                       binary's own: `$(BUILD)/tests/T/N_test: TEST_LDLIBS += ...`
#   FUZZ_BINS, BENCH_BINS, EXTRA_TEST_BINS  extra binaries for fuzz/bench/check
# Fragments are found at */module.mk and */*/module.mk.
#   HEADERS_<name>      public headers to install (dir prefix stripped)
# Test sources are found by convention: tests/<tier>/*_test.cc becomes the
# binary $(BUILD)/tests/<tier>/<name>_test, linked to every library.
LIBRARIES :=
TOOLS :=
include $(sort $(wildcard */module.mk */*/module.mk))

# Link order: higher layers first (graph, volume → thinpool → dm → dmbase).
LINK_ORDER := graph volume thinpool dm dmbase
LIBS_ORDERED := $(foreach l,$(LINK_ORDER),$(filter $(l),$(LIBRARIES))) \
                $(filter-out $(LINK_ORDER),$(LIBRARIES))
STATIC_LIBS := $(foreach l,$(LIBS_ORDERED),$(BUILD)/lib/lib$(l).a)
SHARED_LIBS := $(foreach l,$(LIBS_ORDERED),$(BUILD)/lib/lib$(l).so)

objs = $(patsubst %.cc,$(BUILD)/obj/%.o,$(filter %.cc,$(1))) \
       $(patsubst %.c,$(BUILD)/obj/%.o,$(filter %.c,$(1)))

$(BUILD)/obj/%.o: %.cc
	@mkdir -p $(@D)
	$(call say,CXX,$<)
	$(Q)$(CCACHE) $(CXX) $(CPPFLAGS) $(CXXFLAGS) -c $< -o $@

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(call say,CC,$<)
	$(Q)$(CCACHE) $(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

# Library objects export only their public headers' declarations
# (base/export.h; graph.h for the C ABI); each .so resolves every symbol
# at link time (--no-undefined) and exports only its own namespaces and C
# calls (exports.map drops std and absl code instantiated inside).
define LIBRARY_RULES
$(call objs,$($(1)_SRCS)): CXXFLAGS += -fvisibility=hidden
$(BUILD)/lib/lib$(1).a: $(call objs,$($(1)_SRCS))
	@mkdir -p $$(@D)
	$$(call say,AR,$$@)
	$(Q)rm -f $$@ && ar rcs $$@ $$^

$(BUILD)/lib/lib$(1).so: $(call objs,$($(1)_SRCS)) $(foreach d,$($(1)_DEPS),$(BUILD)/lib/lib$(d).so) exports.map
	@mkdir -p $$(@D)
	$$(call say,LD,$$@)
	$(Q)$(CXX) -shared -Wl,-soname,lib$(1).so.$(or $($(1)_VERSION),0) -Wl,--no-undefined \
	  -Wl,--version-script=exports.map $(LDFLAGS) \
	  -o $$@.$(or $($(1)_VERSION),0) $(call objs,$($(1)_SRCS)) \
	  -L$(BUILD)/lib $(foreach d,$($(1)_DEPS),-l$(d)) $(LDLIBS)
	$(Q)ln -sf lib$(1).so.$(or $($(1)_VERSION),0) $$@
endef
$(foreach l,$(LIBRARIES),$(eval $(call LIBRARY_RULES,$(l))))

define TOOL_RULES
$(BUILD)/bin/$(1): $(call objs,$($(1)_SRCS)) $(STATIC_LIBS)
	@mkdir -p $$(@D)
	$$(call say,LD,$$@)
	$(Q)$(CXX) $(LDFLAGS) -o $$@ $(call objs,$($(1)_SRCS)) $(STATIC_LIBS) $($(1)_LDLIBS) $(LDLIBS)
endef
$(foreach t,$(TOOLS),$(eval $(call TOOL_RULES,$(t))))
TOOL_BINS := $(foreach t,$(TOOLS),$(BUILD)/bin/$(t))

# ------------------------------------------------------------------ tests ---
TIERS := unit host vm
define TIER_RULES
$(1)_TEST_SRCS := $$(sort $$(wildcard tests/$(1)/*_test.cc))
$(1)_TEST_BINS := $$(patsubst tests/$(1)/%.cc,$(BUILD)/tests/$(1)/%,$$($(1)_TEST_SRCS))
$(BUILD)/tests/$(1)/%_test: $(BUILD)/obj/tests/$(1)/%_test.o $(TEST_SUPPORT_OBJS) $(STATIC_LIBS)
	@mkdir -p $$(@D)
	$$(call say,LD,$$@)
	$(Q)$(CXX) $(LDFLAGS) -o $$@ $$< $(TEST_SUPPORT_OBJS) $(STATIC_LIBS) $$(TEST_LDLIBS) $(LDLIBS)
endef
TEST_SUPPORT_SRCS := $(sort $(wildcard tests/support/*.cc))
TEST_SUPPORT_OBJS := $(call objs,$(TEST_SUPPORT_SRCS))
$(foreach t,$(TIERS),$(eval $(call TIER_RULES,$(t))))
$(BUILD)/obj/tests/%.o: CXXFLAGS += $(call pkgcflags,$(TEST_PKGS))

ALL_TEST_BINS := $(foreach t,$(TIERS),$($(t)_TEST_BINS)) $(EXTRA_TEST_BINS)

# Benchmarks: tests/bench/NAME_bench.cc → $(BUILD)/bench/NAME_bench, linked
# with tests/bench/*.c (plain-C baselines) and every library.
BENCH_C_OBJS := $(call objs,$(sort $(wildcard tests/bench/*.c)))
BENCH_BINS += $(patsubst tests/bench/%.cc,$(BUILD)/bench/%,$(sort $(wildcard tests/bench/*_bench.cc)))
$(BUILD)/bench/%_bench: $(BUILD)/obj/tests/bench/%_bench.o $(BENCH_C_OBJS) $(STATIC_LIBS)
	@mkdir -p $(@D)
	$(call say,LD,$@)
	$(Q)$(CXX) $(LDFLAGS) -o $@ $< $(BENCH_C_OBJS) $(STATIC_LIBS) $(LDLIBS)

# ---------------------------------------------------------------- targets ---
.PHONY: all libs tools tests deps check check-unit check-host check-vm \
        bench demo fuzz install clean distclean vm-kernel

all: libs tools
libs: $(STATIC_LIBS) $(SHARED_LIBS)
tools: $(TOOL_BINS)
tests: $(ALL_TEST_BINS)

deps:
	@tests/deps.sh

# check = deps, build, every tier; tests/run-tiers prints one line per tier.
# check runs every fuzz target this long (make fuzz FUZZ_SECONDS=N for more).
CHECK_FUZZ_SECONDS ?= 5
# The build inside check/demo uses every core unless the caller chose -j.
JOBS := $(if $(findstring -j,$(MAKEFLAGS)),,-j$(shell nproc 2>/dev/null || echo 2))

check: deps
	$(MAKE) $(JOBS) all tests
	$(MAKE) $(JOBS) fuzz FUZZ_SECONDS=$(CHECK_FUZZ_SECONDS)
	@BUILD=$(BUILD) tests/run-tiers $(TIERS)

check-unit check-host check-vm: check-%: all tests
	@BUILD=$(BUILD) tests/run-tiers $*

vm-kernel:
	@tests/vm/run --prepare-only

bench: all tests $(BENCH_BINS)
	@BUILD=$(BUILD) tests/bench/run

demo: deps
	$(MAKE) $(JOBS) all
	@BUILD=$(BUILD) tools/demo.sh

fuzz: $(FUZZ_BINS)
	@BUILD=$(BUILD) tests/fuzz/run $(FUZZ_SECONDS)

install: all
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCDIR) $(DESTDIR)$(BINDIR) \
	  $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(DOCDIR) $(DESTDIR)$(UDEVDIR) \
	  $(DESTDIR)$(UNITDIR)
	for l in $(LIBS_ORDERED); do \
	  install -m 644 $(BUILD)/lib/lib$$l.a $(DESTDIR)$(LIBDIR)/ && \
	  cp -P $(BUILD)/lib/lib$$l.so $(BUILD)/lib/lib$$l.so.* $(DESTDIR)$(LIBDIR)/ ; \
	done
	for d in base libdm thinpool graph volume; do \
	  if [ -d $$d/include ]; then cp -r $$d/include/. $(DESTDIR)$(INCDIR)/; fi; \
	done
	for pc in $(wildcard */*.pc.in); do \
	  sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
	      -e 's|@INCDIR@|$(INCDIR)|g' $$pc \
	      > $(DESTDIR)$(LIBDIR)/pkgconfig/$$(basename $${pc%.in}); \
	done
	$(if $(TOOL_BINS),install -m 755 $(TOOL_BINS) $(DESTDIR)$(BINDIR)/)
	for f in $(wildcard udev-rules/*.in); do \
	  out=$$(basename $${f%.in}); \
	  case $$out in *.rules) dir=$(DESTDIR)$(UDEVDIR) ;; *) dir=$(DESTDIR)$(UNITDIR) ;; esac; \
	  sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@STATE_DIR@|$(STATE_DIR)|g' \
	      -e 's|@DOCDIR@|$(DOCDIR)|g' $$f > $$dir/$$out && chmod 644 $$dir/$$out; \
	done
	install -m 644 README.md $(wildcard docs/*.md) $(DESTDIR)$(DOCDIR)/

# clean keeps build/vm (the downloaded kernel and initramfs cache).
clean:
	rm -rf $(BUILD)/obj $(BUILD)/lib $(BUILD)/bin $(BUILD)/tests $(BUILD)/fuzz $(BUILD)/gen $(BUILD)/proto \
	  $(BUILD)/go build/san-*

distclean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
