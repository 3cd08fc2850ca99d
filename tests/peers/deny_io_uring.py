#!/usr/bin/python3
"""Runs a command under a seccomp filter that makes io_uring_setup fail with ENOSYS, the way
Docker's and many Kubernetes default seccomp profiles do. Needs Debian's python3-seccomp, so it
runs under /usr/bin/python3 (the system interpreter that package installs into).

usage: deny_io_uring.py [--merge-stderr] COMMAND [ARGS...]
"""
import errno
import os
import sys

import seccomp

args = sys.argv[1:]
if args and args[0] == "--merge-stderr":
    os.dup2(1, 2)
    args = args[1:]
f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
f.add_rule(seccomp.ERRNO(errno.ENOSYS), "io_uring_setup")
f.load()
os.execvp(args[0], args)
