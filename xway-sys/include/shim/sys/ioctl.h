/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Minimal <sys/ioctl.h> stand-in for generating xway-sys bindings with -nostdinc.
 * Written for xway-sys (not copied from Linux or a libc). It provides only the _IOC
 * request encoding the vendored Xen headers use, in the "asm-generic" layout that
 * Linux uses on x86_64 and aarch64 (and most other architectures):
 *
 *   bits  0..7   nr
 *   bits  8..15  type (a character such as 'E' or 'G')
 *   bits 16..29  size of the argument (14 bits)
 *   bits 30..31  direction (_IOC_NONE = 0, _IOC_WRITE = 1, _IOC_READ = 2)
 *
 * powerpc, mips, sparc and alpha use 13 size bits and 3 direction bits with other
 * direction values: supporting them means a shim with their layout (see
 * ../README.md), not this file.
 */
#ifndef XWAY_SYS_SHIM_SYS_IOCTL_H
#define XWAY_SYS_SHIM_SYS_IOCTL_H

#if !defined(__x86_64__) && !defined(__aarch64__)
#error "xway-sys shim/sys/ioctl.h only knows the asm-generic _IOC layout of x86_64 and aarch64"
#endif

#define _IOC_NRBITS 8
#define _IOC_TYPEBITS 8
#define _IOC_SIZEBITS 14
#define _IOC_DIRBITS 2

#define _IOC_NRSHIFT 0
#define _IOC_TYPESHIFT (_IOC_NRSHIFT + _IOC_NRBITS)
#define _IOC_SIZESHIFT (_IOC_TYPESHIFT + _IOC_TYPEBITS)
#define _IOC_DIRSHIFT (_IOC_SIZESHIFT + _IOC_SIZEBITS)

#define _IOC_NONE 0U
#define _IOC_WRITE 1U
#define _IOC_READ 2U

#define _IOC(dir, type, nr, size) \
	(((dir) << _IOC_DIRSHIFT) | \
	 ((type) << _IOC_TYPESHIFT) | \
	 ((nr) << _IOC_NRSHIFT) | \
	 ((size) << _IOC_SIZESHIFT))

#endif /* XWAY_SYS_SHIM_SYS_IOCTL_H */
