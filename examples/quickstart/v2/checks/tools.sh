#!/bin/bash
# Preflight: the hooks need a POSIX shell and coreutils.
for tool in sh cp mkdir date; do
  command -v "$tool" >/dev/null || { echo "missing $tool"; exit 1; }
done
echo "tools present"
