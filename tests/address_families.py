"""Runs a command the way systemd's RestrictAddressFamilies= would: socket() with an address
family not in the list fails with EAFNOSUPPORT (a seccomp filter, through libseccomp).

Usage: python3 tests/address_families.py "AF_INET AF_INET6 AF_UNIX" COMMAND [ARGS...]
Exits 3 if libseccomp cannot be loaded (the caller skips the check, saying so).
"""
import ctypes
import errno
import os
import socket
import sys

# Families a program might ask for; systemd denies every one not listed.
FAMILIES = {"AF_UNIX": 1, "AF_INET": 2, "AF_INET6": 10, "AF_NETLINK": 16, "AF_PACKET": 17}
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_ERRNO = 0x00050000
SCMP_CMP_EQ = 4


class Compare(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


def main():
    allowed = {FAMILIES[name] for name in sys.argv[1].split()}
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError as error:
        print(f"address_families: no libseccomp ({error})", file=sys.stderr)
        sys.exit(3)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    ctx = ctypes.c_void_p(lib.seccomp_init(ctypes.c_uint32(SCMP_ACT_ALLOW)))
    syscall = lib.seccomp_syscall_resolve_name(b"socket")
    for family in set(FAMILIES.values()) - allowed:
        rule = (Compare * 1)(Compare(0, SCMP_CMP_EQ, family, 0))
        action = ctypes.c_uint32(SCMP_ACT_ERRNO | errno.EAFNOSUPPORT)
        if lib.seccomp_rule_add_array(ctx, action, syscall, 1, rule) != 0:
            sys.exit("address_families: cannot add a seccomp rule")
    if lib.seccomp_load(ctx) != 0:
        sys.exit("address_families: cannot load the seccomp filter")
    try:
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()
        unix = True
    except OSError:
        unix = False
    if unix != (FAMILIES["AF_UNIX"] in allowed):
        sys.exit("address_families: the filter does not hold")
    os.execv(sys.argv[2], sys.argv[2:])


main()
