/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Input to bindgen for xway-sys (see ../regenerate.sh). Not used by `cargo build`.
 *
 * The Linux UAPI headers xen/evtchn.h and xen/gntdev.h use domid_t and grant_ref_t
 * without defining them (inside the kernel they come from Xen's public headers), so
 * they are defined here, after <stdint.h> and <sys/ioctl.h> (which provides _IOC).
 * regenerate.sh resolves <stdint.h>, <sys/types.h>, <sys/ioctl.h> and <linux/types.h>
 * to the minimal stand-ins in shim/ (with -nostdinc), so generation does not depend on
 * the host's libc or kernel headers and works the same for every target triple.
 */
#ifndef XWAY_SYS_WRAPPER_H
#define XWAY_SYS_WRAPPER_H

#include <stdint.h>
#include <sys/ioctl.h>

typedef uint16_t domid_t;
typedef uint32_t grant_ref_t;

#include <xen/evtchn.h>
#include <xen/gntalloc.h>
#include <xen/gntdev.h>
#include <xen/io/xs_wire.h>
#include <xen/io/libxenvchan.h>

#endif /* XWAY_SYS_WRAPPER_H */
