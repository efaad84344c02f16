#!/usr/bin/env bash
# System tools the tests use for real parts (tmux for the terminal test, sshd for remote attach).
# Installed when missing and when we may (root with apt); otherwise the tests that need them say so.
set -u
need=()
command -v tmux >/dev/null 2>&1 || need+=(tmux)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing for the tests: ${need[*]}"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >/dev/null 2>&1 \
      || echo "could not install ${need[*]}: the tests that need them will say so"
  else
    echo "missing ${need[*]} (not root, or no apt-get): the tests that need them will say so"
  fi
fi
exit 0
