# volume: libvolume — managed volumes (thin devices or quota'd directories)
# with their own registry; above thinpool, below the tools.
LIBRARIES += volume
volume_SRCS := $(sort $(wildcard volume/*.cc))
volume_DEPS := thinpool dm dmbase
