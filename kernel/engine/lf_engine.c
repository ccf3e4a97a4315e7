// SPDX-License-Identifier: GPL-2.0
/*
 * LiteFlow integer inference engine (see lf_engine.h for the data model).
 *
 * The fast path of LiteFlow (Zhang et al., SIGCOMM 2022, section 4) answers
 * every datapath query with a frozen, quantized snapshot of the adaptive NN.
 * The snapshot is produced by TFLite's full-integer converter in user space,
 * and the toolchain's contract is that the kernel computes *exactly* what
 * tf.lite.Interpreter computes on the same int8 input.  Three details decide
 * whether that holds:
 *
 * 1. Requantization.  TF 2.21's interpreter is built with
 *    TFLITE_SINGLE_ROUNDING: MultiplyByQuantizedMultiplier is one 64-bit
 *    product, a round-half-up offset and one arithmetic right shift by
 *    (31 - shift).  gemmlowp's double rounding (SaturatingRoundingDoubling-
 *    HighMul, then RoundingDivideByPOT) disagrees with it on a few percent of
 *    inputs of real models, so it is not what we implement.  The toolchain
 *    clamps shift to [LF_MIN_SHIFT, LF_MAX_SHIFT] exactly as TFLite's
 *    QuantizeMultiplier does for that build, which keeps the total shift in
 *    [1, 62] and the product inside s64.  (Python's tf.lite.Interpreter by
 *    default hands int8 graphs to the XNNPACK delegate, which requantizes in
 *    float32 and so differs by one step on ~0.05 % of vectors; the reference
 *    is TFLite's own built-in kernels, and those we match bit for bit.)
 *
 * 2. Accumulator width.  TFLite accumulates in int32.  The products are
 *    bounded (LF_MAX_UNITS * 255 * 128 < 2^23), and lf_engine_validate()
 *    refuses biases that could push the sum out of s32, so an s32 accumulator
 *    here never overflows and always equals TFLite's.
 *
 * 3. Element-wise activations.  TANH and LOGISTIC act on an int8 tensor, so
 *    the toolchain precomputes them as a 256-entry table the same way TFLite's
 *    kernels do at Prepare time; here they are a single load.
 *
 * No floating point, no SIMD, no division, no allocation: scratch (two
 * LF_MAX_UNITS-byte activations and the centred input of one layer, about
 * 1 KiB) lives on the caller's stack, so lf_engine_infer() is
 * reentrant and safe in softirq context.  The same file builds as a
 * user-space shared library (kernel/engine/Makefile) for the toolchain's
 * bit-exactness tests and the user-space baseline; the core module links it
 * in and exports nothing from here.
 */
#ifdef __KERNEL__
#include <linux/kernel.h>
#include <linux/errno.h>
#include <linux/string.h>
#include <linux/crc32.h>
#ifdef __BIG_ENDIAN
#define LF_HOST_BIG_ENDIAN	1
#endif
#else
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define LF_HOST_BIG_ENDIAN	1
#endif
#endif

#include "lf_engine.h"

#define LF_INT8_MIN		(-128)
#define LF_INT8_MAX		127
#define LF_S32_MAX		2147483647LL
/* act_table is indexed by q - LF_INT8_MIN, i.e. q + 128 */
#define LF_ACT_TABLE_OFFSET	(-LF_INT8_MIN)

/* QuantizeMultiplier's range for a TFLITE_SINGLE_ROUNDING build */
#define LF_MIN_SHIFT		(-31)
#define LF_MAX_SHIFT		30

/*
 * Largest |sum_i (in[i] - input_zero_point) * weights[o][i]|: the centred
 * input is in [-255, 255], a weight in [-128, 127].
 */
#define LF_ACC_PRODUCTS_MAX	((s64)LF_MAX_UNITS * 255 * 128)
/* Biases beyond this could overflow the s32 accumulator. */
#define LF_BIAS_ABS_MAX		(LF_S32_MAX - LF_ACC_PRODUCTS_MAX)

#define LF_BLOB_ALIGN		4

/*
 * Scratch buffers are written in full before they are read, so they opt out
 * of CONFIG_INIT_STACK_ALL_ZERO (Debian's 6.x kernels), which would otherwise
 * clear 1.5 KB of stack on every query of an Aurora-sized snapshot.
 */
#if defined(__has_attribute)
#if __has_attribute(__uninitialized__)
#define LF_SCRATCH	__attribute__((__uninitialized__))
#endif
#endif
#ifndef LF_SCRATCH
#define LF_SCRATCH
#endif

/*
 * real(acc) * multiplier * 2^(shift - 31), rounded half up, as TFLite's
 * single-rounding MultiplyByQuantizedMultiplier.  |acc| < 2^31 and
 * 0 <= multiplier < 2^31, so the product and the rounding offset
 * (at most 2^61) fit in s64.  Right shift of a negative s64 is arithmetic
 * with gcc, which both TFLite and the kernel rely on.
 */
static inline s64 lf_requantize(s32 acc, s32 multiplier, s32 shift)
{
	int total_shift = LF_MULTIPLIER_FRAC_BITS - shift;
	s64 round = (s64)1 << (total_shift - 1);

	return ((s64)acc * multiplier + round) >> total_shift;
}

/*
 * sum_i x[i] * row[i], four products per step into two independent
 * accumulators: without SIMD the multiply latency, not the adds, bounds a
 * dot product, so breaking the dependency chain is what buys speed.
 * Integer addition is associative, so the order changes nothing.
 */
static inline s32 lf_dot(const s16 *x, const s8 *row, unsigned int n)
{
	s32 acc0 = 0, acc1 = 0;
	unsigned int i = 0;

	for (; i + 4 <= n; i += 4) {
		acc0 += x[i] * row[i] + x[i + 2] * row[i + 2];
		acc1 += x[i + 1] * row[i + 1] + x[i + 3] * row[i + 3];
	}
	for (; i < n; i++)
		acc0 += x[i] * row[i];
	return acc0 + acc1;
}

/* One fully connected layer: in[in_units] -> out[out_units]. */
static void lf_layer_forward(const struct lf_layer *layer, const s8 *in,
			     s8 *out)
{
	s16 centred[LF_MAX_UNITS] LF_SCRATCH;	/* in[i] - input zero point */
	const s8 *row = layer->weights;
	unsigned int o, i;

	for (i = 0; i < layer->in_units; i++)
		centred[i] = (s16)((s32)in[i] - layer->input_zero_point);

	for (o = 0; o < layer->out_units; o++, row += layer->in_units) {
		s32 acc = lf_dot(centred, row, layer->in_units) + layer->bias[o];
		s64 q;

		q = lf_requantize(acc, layer->multiplier[o], layer->shift[o]);
		q += layer->output_zero_point;
		if (q < layer->act_min)
			q = layer->act_min;
		if (q > layer->act_max)
			q = layer->act_max;
		if (layer->act_table)
			q = layer->act_table[q + LF_ACT_TABLE_OFFSET];
		out[o] = (s8)q;
	}
}

int lf_engine_infer(const struct lf_snapshot_spec *spec, const s8 *input,
		    s8 *output)
{
	s8 scratch[2][LF_MAX_UNITS] LF_SCRATCH;
	const s8 *in = input;
	unsigned int l, width;

	if (!spec || !input || !output || !spec->num_layers ||
	    spec->num_layers > LF_MAX_LAYERS)
		return -EINVAL;

	/*
	 * Cheap guards that keep a malformed spec from overrunning the stack
	 * buffers; everything else was checked by lf_engine_validate().
	 */
	width = spec->input_size;
	for (l = 0; l < spec->num_layers; l++) {
		const struct lf_layer *layer = &spec->layers[l];

		if (layer->in_units != width ||
		    layer->out_units > LF_MAX_UNITS)
			return -EINVAL;
		width = layer->out_units;
	}
	if (width != spec->output_size)
		return -EINVAL;

	for (l = 0; l < spec->num_layers; l++) {
		s8 *out = l + 1 == spec->num_layers ? output : scratch[l & 1];

		lf_layer_forward(&spec->layers[l], in, out);
		in = out;
	}
	return 0;
}

static bool lf_zero_point_ok(s32 zp)
{
	return zp >= LF_INT8_MIN && zp <= LF_INT8_MAX;
}

static int lf_validate_layer(const struct lf_layer *layer)
{
	unsigned int o;

	if (!layer->in_units || !layer->out_units)
		return -EINVAL;
	if (layer->in_units > LF_MAX_UNITS || layer->out_units > LF_MAX_UNITS)
		return -E2BIG;
	if (!layer->weights || !layer->bias || !layer->multiplier ||
	    !layer->shift)
		return -EINVAL;
	if (layer->activation > LF_ACT_SIGMOID)
		return -EINVAL;
	if (!lf_zero_point_ok(layer->input_zero_point) ||
	    !lf_zero_point_ok(layer->output_zero_point))
		return -EINVAL;
	if (layer->act_min < LF_INT8_MIN || layer->act_max > LF_INT8_MAX ||
	    layer->act_min > layer->act_max)
		return -EINVAL;

	for (o = 0; o < layer->out_units; o++) {
		s64 bias = layer->bias[o];

		if (layer->multiplier[o] < 0 ||
		    layer->shift[o] < LF_MIN_SHIFT ||
		    layer->shift[o] > LF_MAX_SHIFT)
			return -EINVAL;
		if (bias > LF_BIAS_ABS_MAX || bias < -LF_BIAS_ABS_MAX)
			return -EINVAL;
	}
	return 0;
}

int lf_engine_validate(const struct lf_snapshot_spec *spec)
{
	unsigned int l, width;
	int err;

	if (!spec || !spec->num_layers || !spec->input_size ||
	    !spec->output_size)
		return -EINVAL;
	if (spec->num_layers > LF_MAX_LAYERS ||
	    spec->input_size > LF_MAX_UNITS ||
	    spec->output_size > LF_MAX_UNITS)
		return -E2BIG;
	if (!lf_zero_point_ok(spec->input_quant.zero_point) ||
	    !lf_zero_point_ok(spec->output_quant.zero_point) ||
	    spec->input_quant.scale_multiplier < 0 ||
	    spec->output_quant.scale_multiplier < 0)
		return -EINVAL;

	width = spec->input_size;
	for (l = 0; l < spec->num_layers; l++) {
		const struct lf_layer *layer = &spec->layers[l];

		err = lf_validate_layer(layer);
		if (err)
			return err;
		if (layer->in_units != width)
			return -EINVAL;
		width = layer->out_units;
	}
	return width == spec->output_size ? 0 : -EINVAL;
}

#ifdef __KERNEL__
static u32 lf_crc32(const void *p, size_t len)
{
	return crc32_le(~0U, p, len) ^ ~0U;
}
#else
/*
 * zlib's CRC-32 (reflected polynomial 0xedb88320), four bits at a time from
 * a constant 16-entry table: no lazily built state, so still reentrant.
 */
static const u32 lf_crc32_nibble[16] = {
	0x00000000, 0x1db71064, 0x3b6e20c8, 0x26d930ac,
	0x76dc4190, 0x6b6b51f4, 0x4db26158, 0x5005713c,
	0xedb88320, 0xf00f9344, 0xd6d6a3e8, 0xcb61b38c,
	0x9b64c2b0, 0x86d3d2d4, 0xa00ae278, 0xbdbdf21c,
};

static u32 lf_crc32(const void *p, size_t len)
{
	const u8 *b = p;
	u32 crc = ~0U;
	size_t i;

	for (i = 0; i < len; i++) {
		crc ^= b[i];
		crc = (crc >> 4) ^ lf_crc32_nibble[crc & 0xf];
		crc = (crc >> 4) ^ lf_crc32_nibble[crc & 0xf];
	}
	return crc ^ ~0U;
}
#endif

static size_t lf_align4(size_t n)
{
	return (n + LF_BLOB_ALIGN - 1) & ~(size_t)(LF_BLOB_ALIGN - 1);
}

/* Bytes a layer's arrays take after its struct lf_blob_layer. */
static size_t lf_blob_layer_arrays(const struct lf_blob_layer *bl)
{
	size_t out = bl->out_units;
	size_t bytes = lf_align4(out * bl->in_units);

	bytes += 3 * out * sizeof(s32);	/* bias, multiplier, shift */
	if (bl->has_act_table)
		bytes += LF_ACT_TABLE_SIZE;
	return bytes;
}

int lf_engine_parse_blob(const void *blob, size_t len,
			 struct lf_snapshot_spec *spec)
{
	const struct lf_blob_header *hdr = blob;
	const u8 *base = blob;
	size_t off;
	unsigned int l;
	int err;

	if (!blob || !spec)
		return -EINVAL;
	memset(spec, 0, sizeof(*spec));
#ifdef LF_HOST_BIG_ENDIAN
	/* the arrays are used in place, and they are little endian */
	return -EOPNOTSUPP;
#endif
	if ((unsigned long)blob % LF_BLOB_ALIGN)
		return -EINVAL;
	if (len < sizeof(*hdr))
		return -EINVAL;
	if (hdr->magic != LF_BLOB_MAGIC || hdr->version != LF_BLOB_VERSION ||
	    hdr->header_size != sizeof(*hdr) || hdr->total_size != len)
		return -EINVAL;
	if (lf_crc32(base + sizeof(*hdr), len - sizeof(*hdr)) != hdr->crc32)
		return -EBADMSG;
	if (hdr->reserved[0] || hdr->reserved[1] || hdr->reserved[2])
		return -EINVAL;
	if (!hdr->num_layers)
		return -EINVAL;
	if (hdr->num_layers > LF_MAX_LAYERS)
		return -E2BIG;

	spec->input_size = hdr->input_size;
	spec->output_size = hdr->output_size;
	spec->num_layers = hdr->num_layers;
	spec->input_quant = hdr->input_quant;
	spec->output_quant = hdr->output_quant;

	off = sizeof(*hdr);
	for (l = 0; l < hdr->num_layers; l++) {
		const struct lf_blob_layer *bl;
		struct lf_layer *layer = &spec->layers[l];
		size_t out;

		if (len - off < sizeof(*bl))
			goto malformed;
		bl = (const struct lf_blob_layer *)(base + off);
		off += sizeof(*bl);
		if (bl->in_units > LF_MAX_UNITS || bl->out_units > LF_MAX_UNITS) {
			memset(spec, 0, sizeof(*spec));
			return -E2BIG;
		}
		if (bl->has_act_table > 1 || bl->reserved[0] || bl->reserved[1])
			goto malformed;
		if (len - off < lf_blob_layer_arrays(bl))
			goto malformed;

		out = bl->out_units;
		layer->in_units = bl->in_units;
		layer->out_units = bl->out_units;
		layer->activation = bl->activation;
		layer->input_zero_point = bl->input_zero_point;
		layer->output_zero_point = bl->output_zero_point;
		layer->act_min = bl->act_min;
		layer->act_max = bl->act_max;
		layer->weights = (const s8 *)(base + off);
		off += lf_align4(out * bl->in_units);
		layer->bias = (const s32 *)(base + off);
		off += out * sizeof(s32);
		layer->multiplier = (const s32 *)(base + off);
		off += out * sizeof(s32);
		layer->shift = (const s32 *)(base + off);
		off += out * sizeof(s32);
		layer->act_table = NULL;
		if (bl->has_act_table) {
			layer->act_table = (const s8 *)(base + off);
			off += LF_ACT_TABLE_SIZE;
		}
	}
	if (off != len)
		goto malformed;
	err = lf_engine_validate(spec);
	if (err)
		memset(spec, 0, sizeof(*spec));
	return err;

malformed:
	memset(spec, 0, sizeof(*spec));
	return -EINVAL;
}

size_t lf_engine_blob_size(const struct lf_snapshot_spec *spec)
{
	size_t len = sizeof(struct lf_blob_header);
	unsigned int l;

	for (l = 0; l < spec->num_layers && l < LF_MAX_LAYERS; l++) {
		const struct lf_layer *layer = &spec->layers[l];
		size_t out = layer->out_units;

		len += sizeof(struct lf_blob_layer) +
		       lf_align4(out * layer->in_units) + 3 * out * sizeof(s32) +
		       (layer->act_table ? LF_ACT_TABLE_SIZE : 0);
	}
	return len;
}

long lf_engine_write_blob(const struct lf_snapshot_spec *spec, void *buf,
			  size_t len)
{
	struct lf_blob_header *hdr = buf;
	u8 *base = buf;
	size_t off, need;
	unsigned int l;
	int err;

	if (!spec || !buf)
		return -EINVAL;
	err = lf_engine_validate(spec);
	if (err)
		return err;
	need = lf_engine_blob_size(spec);
	if (len < need)
		return -ENOSPC;
	memset(buf, 0, need);
	off = sizeof(*hdr);
	for (l = 0; l < spec->num_layers; l++) {
		const struct lf_layer *layer = &spec->layers[l];
		struct lf_blob_layer *bl = (struct lf_blob_layer *)(base + off);
		size_t out = layer->out_units, weights = out * layer->in_units;

		bl->in_units = layer->in_units;
		bl->out_units = layer->out_units;
		bl->activation = layer->activation;
		bl->has_act_table = layer->act_table != NULL;
		bl->input_zero_point = layer->input_zero_point;
		bl->output_zero_point = layer->output_zero_point;
		bl->act_min = layer->act_min;
		bl->act_max = layer->act_max;
		off += sizeof(*bl);
		memcpy(base + off, layer->weights, weights);
		off += lf_align4(weights);
		memcpy(base + off, layer->bias, out * sizeof(s32));
		off += out * sizeof(s32);
		memcpy(base + off, layer->multiplier, out * sizeof(s32));
		off += out * sizeof(s32);
		memcpy(base + off, layer->shift, out * sizeof(s32));
		off += out * sizeof(s32);
		if (layer->act_table) {
			memcpy(base + off, layer->act_table, LF_ACT_TABLE_SIZE);
			off += LF_ACT_TABLE_SIZE;
		}
	}
	hdr->magic = LF_BLOB_MAGIC;
	hdr->version = LF_BLOB_VERSION;
	hdr->header_size = sizeof(*hdr);
	hdr->total_size = need;
	hdr->input_size = spec->input_size;
	hdr->output_size = spec->output_size;
	hdr->num_layers = spec->num_layers;
	hdr->input_quant = spec->input_quant;
	hdr->output_quant = spec->output_quant;
	hdr->crc32 = lf_crc32(base + sizeof(*hdr), need - sizeof(*hdr));
	return (long)need;
}

u64 lf_engine_macs(const struct lf_snapshot_spec *spec)
{
	u64 macs = 0;
	unsigned int l;

	if (!spec || spec->num_layers > LF_MAX_LAYERS)
		return 0;
	for (l = 0; l < spec->num_layers; l++)
		macs += (u64)spec->layers[l].in_units *
			spec->layers[l].out_units;
	return macs;
}
