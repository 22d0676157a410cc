#!/bin/sh
# fdatasync/fsync calls per dmthin CLI operation (thin create / snapshot /
# delete / list), two dmthin binaries side by side on pools of their own.
# Runs where device-mapper is (the vm tier):
#   tests/vm/run -- tests/bench/thinpool_cli_syncs.sh OLD_DMTHIN build/bin/dmthin [ROUNDS]
# Prints "<before|after> <op> round<N> syncs=<count>" per operation.
set -e
before=${1:?usage: thinpool_cli_syncs.sh BEFORE_DMTHIN AFTER_DMTHIN [ROUNDS]}
after=${2:?usage: thinpool_cli_syncs.sh BEFORE_DMTHIN AFTER_DMTHIN [ROUNDS]}
rounds=${3:-6}
for variant in before after; do
  if [ "$variant" = before ]; then bin=$before; else bin=$after; fi
  S=$(mktemp -d /tmp/dmthin-syncs.XXXXXX)
  chmod 700 "$S"
  "$bin" --state-dir "$S" pool create sp --data-size 2G >/dev/null
  "$bin" --state-dir "$S" thin create sp a --size 1G >/dev/null
  "$bin" --state-dir "$S" thin create sp b --size 1G >/dev/null
  i=1
  while [ "$i" -le "$rounds" ]; do
    for op in create snapshot delete list; do
      case $op in
        create) set -- thin create sp "c$i" --size 1G ;;
        snapshot) set -- thin snapshot sp a "s$i" ;;
        delete) set -- thin delete sp "c$i" ;;
        list) set -- thin list sp ;;
      esac
      strace -f -qq -e trace=fdatasync,fsync -o "$S/T" "$bin" --state-dir "$S" "$@" >/dev/null
      echo "$variant $op round$i syncs=$(grep -c -E 'fdatasync|fsync' "$S/T" || true)"
    done
    i=$((i + 1))
  done
  "$bin" --state-dir "$S" pool destroy sp --force >/dev/null || true
  rm -rf "$S"
done
