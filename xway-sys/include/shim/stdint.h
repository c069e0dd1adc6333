/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Minimal <stdint.h> stand-in for generating xway-sys bindings with -nostdinc.
 * Written for xway-sys (not copied from a libc). Only what the vendored headers use.
 * The underlying types come from the compiler's own predefined macros, so they are
 * right for whatever --target clang is given. bindgen maps the standard names
 * (uint32_t, ...) straight to Rust's u32, ..., so the spelling here does not show up
 * in the generated code.
 */
#ifndef XWAY_SYS_SHIM_STDINT_H
#define XWAY_SYS_SHIM_STDINT_H

typedef __INT8_TYPE__ int8_t;
typedef __INT16_TYPE__ int16_t;
typedef __INT32_TYPE__ int32_t;
typedef __INT64_TYPE__ int64_t;
typedef __UINT8_TYPE__ uint8_t;
typedef __UINT16_TYPE__ uint16_t;
typedef __UINT32_TYPE__ uint32_t;
typedef __UINT64_TYPE__ uint64_t;

#endif /* XWAY_SYS_SHIM_STDINT_H */
