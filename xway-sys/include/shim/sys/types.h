/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Minimal <sys/types.h> stand-in for generating xway-sys bindings with -nostdinc.
 * Written for xway-sys. xen/io/libxenvchan.h includes it but uses nothing from it
 * beyond the fixed-width integers.
 */
#ifndef XWAY_SYS_SHIM_SYS_TYPES_H
#define XWAY_SYS_SHIM_SYS_TYPES_H

#include <stdint.h>

#endif /* XWAY_SYS_SHIM_SYS_TYPES_H */
