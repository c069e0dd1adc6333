/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Minimal <linux/types.h> stand-in for generating xway-sys bindings with -nostdinc.
 * Written for xway-sys (not copied from Linux). It declares the fixed-width __sN/__uN
 * types with the same C types, in the same order, as the kernel's
 * asm-generic/int-ll64.h, which every architecture Linux supports (x86_64, aarch64
 * included) uses for its user-space ABI: 64-bit types are "long long".
 */
#ifndef XWAY_SYS_SHIM_LINUX_TYPES_H
#define XWAY_SYS_SHIM_LINUX_TYPES_H

typedef signed char __s8;
typedef unsigned char __u8;
typedef signed short __s16;
typedef unsigned short __u16;
typedef signed int __s32;
typedef unsigned int __u32;
__extension__ typedef signed long long __s64;
__extension__ typedef unsigned long long __u64;

#endif /* XWAY_SYS_SHIM_LINUX_TYPES_H */
