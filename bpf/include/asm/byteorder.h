/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Minimal <asm/byteorder.h> for BPF targets: the UAPI network headers only
 * need it to pick the bitfield layout of struct iphdr / ipv6hdr. The byte
 * order comes from the compiler (bpfel or bpfeb), not from the build host.
 */
#ifndef _ASM_BYTEORDER_H
#define _ASM_BYTEORDER_H

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#ifndef __LITTLE_ENDIAN
#define __LITTLE_ENDIAN 1234
#endif
#define __LITTLE_ENDIAN_BITFIELD
#elif __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#ifndef __BIG_ENDIAN
#define __BIG_ENDIAN 4321
#endif
#define __BIG_ENDIAN_BITFIELD
#else
#error "unknown byte order"
#endif

#endif /* _ASM_BYTEORDER_H */
