/* SPDX-License-Identifier: GPL-2.0 */
/*
 * LiteFlow integer inference engine: the data model of a snapshot and the
 * arithmetic that runs it.
 *
 * A snapshot is a stack of fully connected layers quantized the way TFLite's
 * full-integer converter quantizes them (Zhang et al., "LiteFlow: Towards
 * High-Performance Adaptive Neural Networks for Kernel Datapath", SIGCOMM
 * 2022, section 4: the fast path runs integer-only inference of a frozen
 * snapshot).  Per layer:
 *
 *   acc[o]  = bias[o] + sum_i (in[i] - input_zero_point) * weights[o][i]
 *   q[o]    = requantize(acc[o], multiplier[o], shift[o]) + output_zero_point
 *   q[o]    = clamp(q[o], act_min, act_max)        (fused RELU lives here)
 *   out[o]  = act_table ? act_table[q[o] + 128] : q[o]   (TANH, LOGISTIC)
 *
 * requantize() is TFLite's MultiplyByQuantizedMultiplier as TF 2.21 builds it
 * (TFLITE_SINGLE_ROUNDING: (acc * multiplier + 2^(30 - shift)) >> (31 - shift),
 * shift in [-31, 30]; measured, gemmlowp's double rounding disagrees with TF
 * 2.21 on a few percent of inputs), so a snapshot computes exactly what
 * TFLite's built-in int8 kernels compute.  Element-wise
 * activations act on an int8 tensor, so a 256-entry table is exact by
 * construction.  No floating point, no SIMD, no division: the same source
 * builds into the kernel and into a user-space shared library that the
 * toolchain's bit-exactness check and the user-space baseline call.
 */
#ifndef _LF_ENGINE_H
#define _LF_ENGINE_H

#ifdef __KERNEL__
#include <linux/types.h>
#else
#include <stddef.h>
#include <stdint.h>
typedef int8_t s8;
typedef uint8_t u8;
typedef int16_t s16;
typedef uint16_t u16;
typedef int32_t s32;
typedef uint32_t u32;
typedef int64_t s64;
typedef uint64_t u64;
#endif

/* Documented limits; the toolchain refuses larger networks before any C is generated. */
#define LF_MAX_LAYERS		8
#define LF_MAX_UNITS		256
#define LF_ACT_TABLE_SIZE	256	/* one entry per int8 value */

/* Fixed-point multipliers are Q31: real = multiplier * 2^(shift - 31). */
#define LF_MULTIPLIER_FRAC_BITS	31

enum lf_activation {
	LF_ACT_LINEAR	= 0,
	LF_ACT_RELU	= 1,	/* fused: act_min/act_max clamp */
	LF_ACT_TANH	= 2,	/* act_table */
	LF_ACT_SIGMOID	= 3,	/* act_table */
};

/* How a tensor's int8 values map to reals: real = (q - zero_point) * scale. */
struct lf_quant {
	s32 zero_point;
	s32 scale_multiplier;	/* Q31 */
	s32 scale_shift;	/* scale = scale_multiplier * 2^(scale_shift - 31) */
};

struct lf_layer {
	u16 in_units;
	u16 out_units;
	u8 activation;			/* enum lf_activation, informational */
	s32 input_zero_point;
	s32 output_zero_point;
	s32 act_min;			/* clamp after requantization, in [-128, 127] */
	s32 act_max;
	const s8 *weights;		/* [out_units][in_units], row-major */
	const s32 *bias;		/* [out_units] */
	const s32 *multiplier;		/* [out_units], Q31 */
	const s32 *shift;		/* [out_units], left shift if > 0 */
	const s8 *act_table;		/* [LF_ACT_TABLE_SIZE] indexed by q + 128, or NULL */
};

struct lf_snapshot_spec {
	u16 input_size;
	u16 output_size;
	u8 num_layers;
	struct lf_quant input_quant;	/* how the app quantizes its features */
	struct lf_quant output_quant;	/* how the app reads the decision */
	struct lf_layer layers[LF_MAX_LAYERS];
};

/*
 * Hot-update weight blob (little endian, every section 4-byte aligned):
 *
 *   struct lf_blob_header
 *   per layer: struct lf_blob_layer, then
 *       s8  weights[out][in]    padded to 4
 *       s32 bias[out]
 *       s32 multiplier[out]
 *       s32 shift[out]
 *       s8  act_table[256]      only if has_act_table
 *
 * crc32 is zlib's CRC-32 (crc32_le(~0, p, n) ^ ~0 in the kernel) of every
 * byte after the header.  The parser checks magic, version, lengths, limits,
 * layer chaining, ranges and crc before anything points into the blob.
 */
#define LF_BLOB_MAGIC		0x4e53464cU	/* "LFSN" */
#define LF_BLOB_VERSION		1

struct lf_blob_header {
	u32 magic;
	u16 version;
	u16 header_size;		/* sizeof(struct lf_blob_header) */
	u32 total_size;			/* header + payload */
	u32 crc32;			/* of the payload */
	u16 input_size;
	u16 output_size;
	u8 num_layers;
	u8 reserved[3];
	struct lf_quant input_quant;
	struct lf_quant output_quant;
};

struct lf_blob_layer {
	u16 in_units;
	u16 out_units;
	u8 activation;
	u8 has_act_table;
	u8 reserved[2];
	s32 input_zero_point;
	s32 output_zero_point;
	s32 act_min;
	s32 act_max;
};

/*
 * Run the snapshot on one input vector.  Reentrant: scratch lives on the
 * caller's stack (2 * LF_MAX_UNITS bytes), nothing is shared between CPUs.
 * Returns 0, or -EINVAL-like negative value (-22) on a malformed spec.
 */
int lf_engine_infer(const struct lf_snapshot_spec *spec, const s8 *input, s8 *output);

/*
 * Check a spec for internal consistency (limits, chaining, ranges).  Both
 * generated modules and parsed blobs go through it before use.
 */
int lf_engine_validate(const struct lf_snapshot_spec *spec);

/*
 * Parse a weight blob into spec; spec's pointers point into blob, which the
 * caller keeps alive (and 4-byte aligned) for as long as spec is used.
 * Returns 0 or a negative errno (-EINVAL malformed, -EBADMSG bad crc,
 * -E2BIG over the limits).
 */
int lf_engine_parse_blob(const void *blob, size_t len, struct lf_snapshot_spec *spec);

/*
 * The inverse of lf_engine_parse_blob: serialize a (validated) spec into
 * @buf, which holds at least lf_engine_blob_size(spec) bytes.  How a
 * network trained in the kernel becomes a snapshot in the format every
 * other path uses.  Returns the bytes written, -EINVAL for an invalid
 * spec, -ENOSPC for a short buffer.
 */
size_t lf_engine_blob_size(const struct lf_snapshot_spec *spec);
long lf_engine_write_blob(const struct lf_snapshot_spec *spec, void *buf, size_t len);

/* The engine's multiply-accumulate count for one inference (for benchmarks). */
u64 lf_engine_macs(const struct lf_snapshot_spec *spec);

#endif /* _LF_ENGINE_H */
