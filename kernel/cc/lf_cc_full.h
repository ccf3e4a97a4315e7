/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kernel-full's arithmetic: lf_cc's network trained inside the kernel.
 *
 * LiteFlow (Zhang et al., "LiteFlow: Towards High-Performance Adaptive
 * Neural Networks for Kernel Datapath", SIGCOMM 2022, sections 2 and 6)
 * argues against running the adaptation of a datapath NN in the kernel: it
 * reports that in-kernel training costs up to 90% of a flow's throughput even
 * with batching.  This header is the baseline it is measured against: the
 * *same* 30-32-16-1 tanh network as lf_cc's snapshot, adapted with the *same*
 * algorithm as LiteFlow's slow path (userspace/cc/adapter.py: online
 * imitation of the online teacher, userspace/cc/teacher.py, on the samples'
 * contexts, over minibatches drawn from a replay), but in the kernel, in
 * fixed point (softirq context has no FPU).  Only the deployment differs.
 *
 * Pure integer functions of their arguments (like lf_cc_model.h), so the
 * same header builds into a module and into a user-space test library
 * (lf_cc_full_user.c) that tests/kernel/test_cc_full.py checks against a
 * float64 reference.
 *
 * Fixed-point formats (real = integer / 2^shift):
 *
 *   master weights, biases   Q24 in s32 (LF_FULL_W_SHIFT), |w| < 64
 *   activations, pre-acts    Q16 in s32 (LF_FULL_A_SHIFT); an input q is
 *                            q / 16 = q << 12 exactly
 *   labels, errors, deltas   Q24 in s32 (LF_FULL_D_SHIFT), |delta| < 8
 *   gradient sums            Q40 in s64 (LF_FULL_G_SHIFT = delta x act.)
 *   learning rate, L2        Q32 in u32 (LF_FULL_LR_SHIFT) at the interface,
 *                            Q31 multiplier + shift inside (the engine's
 *                            requantization form)
 *
 * The saturations (weights at +-64, deltas at +-8, minibatch at
 * LF_FULL_MAX_BATCH) make every s64 sum provably overflow-free; the
 * committed model's largest weight is 3.4 and a tanh network's output delta
 * is at most 4, so they are guards, not part of the algorithm (a counter
 * says if one ever fired).
 *
 * Forward.  tanh is a cubic Hermite interpolation of a 257-entry Q30 table of
 * tanh on [0, 8] (step 1/32; the derivative at a node is 1 - tanh^2), odd
 * symmetry below 0 and 1 beyond 8: interpolation error below 1e-7, so the
 * error of the Q16 result is its rounding, half a Q16 unit (7.6e-6,
 * measured over every Q16 argument in [-9, 9] by the test).
 *
 * Backward and step.  Loss: mean squared error of the output against the
 * teacher's label plus L2 (1e-4 on the kernels, as train.py's
 * regularizer), i.e. exactly the loss Keras minimises in the slow path.
 * Gradients of a minibatch are summed sample by sample into Q40
 * accumulators; when a minibatch of @batch samples is in, one plain SGD step
 * w -= lr * (sum / batch + 2 * l2 * w) is taken.  The slow path uses Adam
 * (lr 1e-4), which divides each weight's step by the root of a running
 * mean of its squared gradient: squared gradients of 1e-4 .. 1e-2 span
 * 1e-8 .. 1e-4, which needs two 64-bit moments per weight, and every step a
 * square root and a division per weight.  So the objective, the data, the
 * minibatches and the replay are the slow path's; the optimizer is not:
 * plain SGD (no momentum: one state array less, and with slowly varying
 * gradients momentum b only amounts to a step size lr / (1 - b)), with a
 * learning rate that has to be chosen larger than Adam's (docs/cc.md).
 *
 * Bounded work.  lf_full_train_samples() and lf_full_train_replay() process
 * at most @budget samples per call (one forward and backward of 1537
 * parameters each, and an SGD step over the 1537 per minibatch completed:
 * at most budget / batch + 1 steps), so a softirq invocation does bounded
 * work; a minibatch may span calls.
 *
 * Snapshot.  Inference stays the same int8 arithmetic as every other
 * deployment: lf_full_requantize() turns the master weights into an
 * lf_snapshot_spec the engine (kernel/engine/lf_engine.c) runs, quantized the
 * way TFLite's full-integer converter would: per-output-channel symmetric int8
 * weights (scale max|w| / 127), int32 biases (scale input x weight scale),
 * Q31 multipliers and shifts (TFLite's QuantizeMultiplier, exact rounding),
 * input 1/16 zero point 0 and every tanh output 1/128 zero point 0 (what lf_cc
 * declares), and each hidden tanh as the engine's 256-entry table.  The
 * pre-tanh int8 scale of a layer is asymmetric, (max - min) / 255, from the
 * minimum and maximum pre-activation (Q16) over the committed network's
 * offline calibration states (the upload's seed) and every forward since --
 * TFLite's calibration rule, on what the slow path calibrates on: those
 * states and the kernel's own inputs -- with the range widened to include 0
 * and clipped to +-4: beyond 4, 128 tanh rounds to the int8 extremes (127,
 * -128) anyway, so the clip costs nothing and buys resolution (the committed
 * network's first layer spans [-55, 26] on lf_cc's calibration states).
 * Measured on those states, the engine's answer is within 2.4 output steps
 * (of 1/128) of the fixed-point forward on average, 8 at the 99th percentile.
 */
#ifndef _LF_CC_FULL_H
#define _LF_CC_FULL_H

#include "lf_cc_model.h"
#include "lf_engine.h"

#ifdef __KERNEL__
#include <linux/errno.h>
#else
#include <errno.h>
#endif

/* The network: 30 -> 32 -> 16 -> 1, tanh everywhere. */
#define LF_FULL_LAYERS		3
#define LF_FULL_H1		32
#define LF_FULL_H2		16
#define LF_FULL_UNITS		(LF_FULL_H1 + LF_FULL_H2 + LF_CC_OUTPUTS)	/* 49 */
#define LF_FULL_WEIGHTS		(LF_CC_INPUTS * LF_FULL_H1 + LF_FULL_H1 * LF_FULL_H2 + \
				 LF_FULL_H2 * LF_CC_OUTPUTS)			/* 1488 */
#define LF_FULL_PARAMS		(LF_FULL_WEIGHTS + LF_FULL_UNITS)		/* 1537 */
/* The upload: the parameters, then a (min, max) Q16 range seed per layer. */
#define LF_FULL_UPLOAD_WORDS	(LF_FULL_PARAMS + 2 * LF_FULL_LAYERS)		/* 1543 */

/* Fixed-point formats: real = value / 2^shift. */
#define LF_FULL_W_SHIFT		24	/* master weights and biases, s32 */
#define LF_FULL_A_SHIFT		16	/* activations and pre-activations, s32 */
#define LF_FULL_D_SHIFT		24	/* labels, output errors, deltas, s32 */
/* gradient sums, s64: a delta times an activation */
#define LF_FULL_G_SHIFT		(LF_FULL_D_SHIFT + LF_FULL_A_SHIFT)
#define LF_FULL_LR_SHIFT	32	/* learning rate and L2 factor given as u32 */
#define LF_FULL_W_ONE		(1 << LF_FULL_W_SHIFT)
#define LF_FULL_A_ONE		(1 << LF_FULL_A_SHIFT)
#define LF_FULL_D_ONE		(1 << LF_FULL_D_SHIFT)

/* An int8 input q is q / 16: in Q16 that is q << 12. */
#define LF_FULL_INPUT_TO_A	(LF_FULL_A_SHIFT - 4)

/* Guards that make the s64 sums overflow-free (see the opening comment). */
#define LF_FULL_W_MAX		((s32)64 << LF_FULL_W_SHIFT)	/* |w| < 64 */
#define LF_FULL_DELTA_MAX	((s32)8 << LF_FULL_D_SHIFT)	/* |delta| < 8 */
#define LF_FULL_MAX_BATCH	4096

/* tanh table: tanh(k / 32) in Q30 for k = 0..256, cubic Hermite in between. */
#define LF_FULL_TANH_STEP_SHIFT	5	/* node spacing 2^-5 */
#define LF_FULL_TANH_NODES	256	/* [0, 8) */
#define LF_FULL_TANH_Q		30

/* Snapshot: pre-tanh ranges are clipped to +-4 (tanh(4) * 128 rounds to 128). */
#define LF_FULL_PRE_TANH_CLIP	((s32)4 << LF_FULL_A_SHIFT)
#define LF_FULL_PRE_TANH_MIN_SPAN ((s32)1 << (LF_FULL_A_SHIFT - 4))	/* 1/16 */
#define LF_FULL_TANH_OUT_SHIFT	7	/* tanh output scale 1/128 */
#define LF_FULL_WMAX_FLOOR	((s32)1 << 8)	/* an all-zero row still gets a scale */
/* the engine's bias bound, LF_BIAS_ABS_MAX in lf_engine.c */
#define LF_FULL_BIAS_ABS_MAX	(2147483647LL - (s64)LF_MAX_UNITS * 255 * 128)
#define LF_FULL_INPUT_SCALE_SHIFT 4	/* the network's input is q / 2^4 */

static const s32 lf_full_tanh_table[LF_FULL_TANH_NODES + 1] = {
	0, 33543514, 67021619, 100369417, 133523019, 166420030,
	199000008, 231204897, 262979411, 294271390, 325032097, 355216470,
	384783327, 413695509, 441919982, 469427884, 496194519, 522199322,
	547425766, 571861244, 595496917, 618327534, 640351229, 661569304,
	681985995, 701608235, 720445410, 738509109, 755812887, 772372023,
	788203292, 803324746, 817755498, 831515533, 844625518, 857106631,
	868980407, 880268593, 890993016, 901175474, 910837623, 920000894,
	928686409, 936914916, 944706725, 952081667, 959059047, 965657614,
	971895537, 977790386, 983359117, 988618065, 993582944, 998268841,
	1002690226, 1006860957, 1010794288, 1014502881, 1017998824, 1021293637,
	1024398298, 1027323250, 1030078428, 1032673268, 1035116732, 1037417324,
	1039583108, 1041621725, 1043540415, 1045346031, 1047045057, 1048643629,
	1050147544, 1051562285, 1052893030, 1054144667, 1055321814, 1056428829,
	1057469822, 1058448672, 1059369036, 1060234362, 1061047900, 1061812714,
	1062531689, 1063207545, 1063842843, 1064439994, 1065001270, 1065528808,
	1066024621, 1066490604, 1066928539, 1067340105, 1067726879, 1068090347,
	1068431906, 1068752870, 1069054476, 1069337886, 1069604193, 1069854425,
	1070089550, 1070310477, 1070518060, 1070713102, 1070896360, 1071068543,
	1071230320, 1071382317, 1071525125, 1071659298, 1071785356, 1071903791,
	1072015063, 1072119603, 1072217818, 1072310092, 1072396782, 1072478226,
	1072554741, 1072626625, 1072694159, 1072757605, 1072817210, 1072873207,
	1072925813, 1072975235, 1073021665, 1073065284, 1073106261, 1073144757,
	1073180922, 1073214897, 1073246815, 1073276799, 1073304968, 1073331431,
	1073356291, 1073379645, 1073401585, 1073422196, 1073441558, 1073459748,
	1073476836, 1073492889, 1073507970, 1073522137, 1073535446, 1073547948,
	1073559694, 1073570728, 1073581093, 1073590830, 1073599978, 1073608572,
	1073616644, 1073624228, 1073631353, 1073638045, 1073644333, 1073650239,
	1073655788, 1073661000, 1073665897, 1073670497, 1073674818, 1073678878,
	1073682692, 1073686274, 1073689640, 1073692801, 1073695771, 1073698561,
	1073701183, 1073703645, 1073705958, 1073708131, 1073710172, 1073712090,
	1073713891, 1073715584, 1073717174, 1073718667, 1073720070, 1073721388,
	1073722626, 1073723789, 1073724882, 1073725908, 1073726873, 1073727779,
	1073728629, 1073729429, 1073730180, 1073730885, 1073731548, 1073732171,
	1073732756, 1073733305, 1073733821, 1073734306, 1073734761, 1073735189,
	1073735591, 1073735969, 1073736324, 1073736657, 1073736970, 1073737264,
	1073737540, 1073737800, 1073738044, 1073738273, 1073738488, 1073738690,
	1073738880, 1073739058, 1073739226, 1073739383, 1073739531, 1073739670,
	1073739801, 1073739923, 1073740038, 1073740146, 1073740248, 1073740344,
	1073740433, 1073740518, 1073740597, 1073740671, 1073740741, 1073740807,
	1073740868, 1073740926, 1073740980, 1073741032, 1073741080, 1073741125,
	1073741167, 1073741207, 1073741244, 1073741279, 1073741312, 1073741343,
	1073741373, 1073741400, 1073741426, 1073741450, 1073741472, 1073741494,
	1073741514, 1073741532, 1073741550, 1073741567, 1073741582,
};

/* Layer l: in_units, out_units, offset of W[out][in] and of b[out] in the flat parameters. */
struct lf_full_layer_dims {
	u16 in_units;
	u16 out_units;
	u16 w_off;
	u16 b_off;
};

static const struct lf_full_layer_dims lf_full_dims[LF_FULL_LAYERS] = {
	{ LF_CC_INPUTS, LF_FULL_H1, 0, LF_CC_INPUTS * LF_FULL_H1 },
	{ LF_FULL_H1, LF_FULL_H2, LF_CC_INPUTS * LF_FULL_H1 + LF_FULL_H1,
	  LF_CC_INPUTS * LF_FULL_H1 + LF_FULL_H1 + LF_FULL_H1 * LF_FULL_H2 },
	{ LF_FULL_H2, LF_CC_OUTPUTS,
	  LF_CC_INPUTS * LF_FULL_H1 + LF_FULL_H1 + LF_FULL_H1 * LF_FULL_H2 + LF_FULL_H2,
	  LF_CC_INPUTS * LF_FULL_H1 + LF_FULL_H1 + LF_FULL_H1 * LF_FULL_H2 + LF_FULL_H2 +
	  LF_FULL_H2 * LF_CC_OUTPUTS },
};

/* Pre-activation range of one layer, Q16: its seed widened by every forward since the last reset. */
struct lf_full_range {
	s32 min;
	s32 max;
};

/*
 * The master network.  Flat layout, layer by layer: W[out][in] row-major,
 * then b[out] (Keras stores W as [in][out]: the user-space loader
 * transposes).  All Q24.
 */
struct lf_full_net {
	s32 param[LF_FULL_PARAMS];
	struct lf_full_range range[LF_FULL_LAYERS];
	struct lf_full_range seed[LF_FULL_LAYERS];	/* what a reset returns to */
};

/* One forward's activations, kept for the backward. */
struct lf_full_acts {
	s32 x[LF_CC_INPUTS];		/* Q16 */
	s32 h1[LF_FULL_H1];		/* Q16, tanh outputs */
	s32 h2[LF_FULL_H2];
	s32 y[LF_CC_OUTPUTS];
};

/* A labelled sample: lf_cc's int8 input and the teacher's label (Q24). */
struct lf_full_sample {
	s8 input[LF_CC_INPUTS];
	s8 reserved[2];
	s32 label;
};

/* Replay: the last @capacity labelled samples, in caller-provided memory. */
struct lf_full_replay {
	struct lf_full_sample *slot;
	u32 capacity;
	u32 next;			/* where the next sample goes */
	u32 count;			/* valid slots */
};

/* Minibatch SGD state. */
struct lf_full_trainer {
	u32 batch;			/* samples per step */
	u32 seen;			/* samples summed into grad so far */
	s32 inv_batch_mult;		/* 1 / batch, Q31 multiplier and shift */
	s32 inv_batch_shift;
	s32 lr_mult;			/* learning rate, Q31 multiplier and shift */
	s32 lr_shift;
	s32 decay_mult;			/* 2 * l2, Q31 multiplier and shift */
	s32 decay_shift;
	u32 rng;			/* xorshift32 state: replay picks */
	u32 owed;			/* replay samples still to train on */
	u64 steps;			/* SGD steps taken */
	u64 samples;			/* samples trained on */
	u32 saturations;		/* guards that fired (weights, deltas) */
	s64 loss_sum;			/* sum of squared errors of this minibatch, Q24 */
	s32 last_loss;			/* the last minibatch's MSE, Q24 */
	s64 grad[LF_FULL_PARAMS];	/* Q40 sums over this minibatch */
};

/* round(v / 2^s), halves up (TFLite's rounding), s >= 1. */
static inline s64 lf_full_rshift_round(s64 v, unsigned int s)
{
	return (v + ((s64)1 << (s - 1))) >> s;
}

/* s64 / s32, the kernel's div_s64 */
static inline s64 lf_full_div_s64(s64 n, s32 d)
{
#ifdef __KERNEL__
	return div_s64(n, d);
#else
	return n / d;
#endif
}

static inline s32 lf_full_clamp_s32(s64 v, s32 max, u32 *saturations)
{
	if (v > max) {
		(*saturations)++;
		return max;
	}
	if (v < -(s64)max) {
		(*saturations)++;
		return -max;
	}
	return (s32)v;
}

/*
 * round(a * mult * 2^(shift - 31)) for |a| < 2^62, 0 <= mult < 2^31 and
 * shift <= 1 (a ratio of at most 1): a is split at bit 31 so no product exceeds s64; the low
 * part's product loses less than one unit of the result.
 */
static inline s64 lf_full_mul_q31(s64 a, s32 mult, s32 shift)
{
	s64 hi = a >> 31;			/* arithmetic: floor */
	s64 lo = a & 0x7fffffff;
	s64 v = hi * mult + ((lo * mult) >> 31);	/* a * mult / 2^31 */

	if (shift > 0)
		return v << shift;
	if (shift == 0)
		return v;
	return lf_full_rshift_round(v, -shift);
}

/*
 * The Q31 multiplier and shift of num / den * 2^exp2 (num, den > 0),
 * real = *mult * 2^(*shift - 31), *mult in [2^30, 2^31), rounded to nearest,
 * clamped as TFLite's QuantizeMultiplier clamps it for a single-rounding
 * build (shift in [-31, 30]; below, 0).  Exact while den fits 32 bits.
 */
static inline void lf_full_quantize_ratio(u64 num, u64 den, int exp2,
					  s32 *mult, s32 *shift)
{
	int e = exp2;
	u64 q;

	if (!num || !den) {
		*mult = 0;
		*shift = 0;
		return;
	}
	while (num >= (1ULL << 63)) {
		num >>= 1;
		e++;
	}
	while (!(num & (1ULL << 62))) {		/* num in [2^62, 2^63) */
		num <<= 1;
		e--;
	}
	while (den >= (1ULL << 32)) {		/* den in [2^31, 2^32) */
		den = (den + 1) >> 1;
		e++;
	}
	while (den < (1ULL << 31)) {
		den <<= 1;
		e++;
	}
	/* num / den in (2^30, 2^32): real = (num / den) * 2^e */
	q = div64_u64(num + den / 2, den);
	if (q >= (1ULL << 31)) {
		q = div64_u64(num + den, den * 2);
		e++;
	}
	if (q == (1ULL << 31)) {
		q >>= 1;
		e++;
	}
	e += 31;				/* real = q * 2^(e - 31) */
	if (e < -31) {
		*mult = 0;
		*shift = 0;
		return;
	}
	if (e > 30) {
		*mult = 0x7fffffff;
		*shift = 30;
		return;
	}
	*mult = (s32)q;
	*shift = e;
}

/*
 * tanh of a Q16 argument, Q16.  Cubic Hermite between the Q30 nodes
 * f(k / 32) with slopes 1 - f^2: interpolation error < 1e-7, and the basis
 * polynomials are computed in Q30 with h00 + h01 = 1 exactly.
 */
static inline s32 lf_full_tanh(s32 x)
{
	const s64 one = (s64)1 << LF_FULL_TANH_Q;
	u32 ax = x < 0 ? -(u32)x : (u32)x;
	u32 k = ax >> (LF_FULL_A_SHIFT - LF_FULL_TANH_STEP_SHIFT);
	s64 t, t2, t3, h01, h10, h11, f0, f1, d0, d1, p;
	s32 r;

	if (k >= LF_FULL_TANH_NODES) {
		r = LF_FULL_A_ONE;		/* tanh(8) = 1 - 2.3e-7 */
		return x < 0 ? -r : r;
	}
	/* t = the position between nodes k and k + 1, Q30 */
	t = (s64)(ax & ((1U << (LF_FULL_A_SHIFT - LF_FULL_TANH_STEP_SHIFT)) - 1))
		<< (LF_FULL_TANH_Q - (LF_FULL_A_SHIFT - LF_FULL_TANH_STEP_SHIFT));
	t2 = (t * t) >> LF_FULL_TANH_Q;
	t3 = (t2 * t) >> LF_FULL_TANH_Q;
	h01 = 3 * t2 - 2 * t3;
	h10 = t3 - 2 * t2 + t;
	h11 = t3 - t2;
	f0 = lf_full_tanh_table[k];
	f1 = lf_full_tanh_table[k + 1];
	/* slopes times the node spacing */
	d0 = (one - ((f0 * f0) >> LF_FULL_TANH_Q)) >> LF_FULL_TANH_STEP_SHIFT;
	d1 = (one - ((f1 * f1) >> LF_FULL_TANH_Q)) >> LF_FULL_TANH_STEP_SHIFT;
	p = f0 + ((h01 * (f1 - f0) + h10 * d0 + h11 * d1) >> LF_FULL_TANH_Q);
	r = (s32)lf_full_rshift_round(p, LF_FULL_TANH_Q - LF_FULL_A_SHIFT);
	return x < 0 ? -r : r;
}

/*
 * Load Q24 parameters in the flat layout (@n = LF_FULL_PARAMS), optionally
 * followed by the tracked ranges' seed (@n = LF_FULL_UPLOAD_WORDS):
 * [min0, max0, min1, max1, min2, max2], Q16, the committed network's
 * pre-activation ranges on its offline calibration states, which LiteFlow's
 * slow path also calibrates every snapshot on.  Without a seed the first
 * requantization knows only the inputs seen since the load -- at the start
 * of a run, an empty queue -- and clips every queue state.  -EINVAL on a
 * wrong count, a parameter out of range or a min above its max; @net is
 * unchanged then.
 */
static inline int lf_full_load(struct lf_full_net *net, const s32 *flat, u32 n)
{
	const s32 *seed = flat + LF_FULL_PARAMS;
	u32 i;

	if (n != LF_FULL_PARAMS && n != LF_FULL_UPLOAD_WORDS)
		return -EINVAL;
	for (i = 0; i < LF_FULL_PARAMS; i++)
		if (flat[i] >= LF_FULL_W_MAX || flat[i] <= -LF_FULL_W_MAX)
			return -EINVAL;
	if (n == LF_FULL_UPLOAD_WORDS)
		for (i = 0; i < LF_FULL_LAYERS; i++)
			if (seed[2 * i] > seed[2 * i + 1])
				return -EINVAL;
	memcpy(net->param, flat, sizeof(net->param));
	for (i = 0; i < LF_FULL_LAYERS; i++) {
		net->seed[i].min = n == LF_FULL_UPLOAD_WORDS ? seed[2 * i] : 0;
		net->seed[i].max = n == LF_FULL_UPLOAD_WORDS ? seed[2 * i + 1] : 0;
		net->range[i] = net->seed[i];
	}
	return 0;
}

/* Back to the seed: the next snapshot calibrates on it and what follows. */
static inline void lf_full_reset_ranges(struct lf_full_net *net)
{
	memcpy(net->range, net->seed, sizeof(net->range));
}

/* One dense tanh layer: out = tanh(W in + b), tracking the pre-activation range. */
static inline void lf_full_dense(const struct lf_full_net *net, unsigned int l,
				 const s32 *in, s32 *out,
				 struct lf_full_range *range)
{
	const struct lf_full_layer_dims *d = &lf_full_dims[l];
	const s32 *w = net->param + d->w_off;
	const s32 *b = net->param + d->b_off;
	unsigned int o, i;

	for (o = 0; o < d->out_units; o++, w += d->in_units) {
		s64 acc = (s64)b[o] << LF_FULL_A_SHIFT;		/* Q40 */
		s32 z;

		for (i = 0; i < d->in_units; i++)
			acc += (s64)w[i] * in[i];
		z = (s32)lf_full_rshift_round(acc, LF_FULL_W_SHIFT);	/* Q16 */
		if (z < range->min)
			range->min = z;
		if (z > range->max)
			range->max = z;
		out[o] = lf_full_tanh(z);
	}
}

/* Forward of one int8 input; returns y (Q16) and keeps the activations in @a. */
static inline s32 lf_full_forward(struct lf_full_net *net, const s8 *input,
				  struct lf_full_acts *a)
{
	unsigned int i;

	for (i = 0; i < LF_CC_INPUTS; i++)
		a->x[i] = (s32)input[i] * (1 << LF_FULL_INPUT_TO_A);
	lf_full_dense(net, 0, a->x, a->h1, &net->range[0]);
	lf_full_dense(net, 1, a->h1, a->h2, &net->range[1]);
	lf_full_dense(net, 2, a->h2, a->y, &net->range[2]);
	return a->y[0];
}

/* 1 - h^2 for a tanh output h, Q16. */
static inline s32 lf_full_dtanh(s32 h)
{
	return LF_FULL_A_ONE - (s32)lf_full_rshift_round((s64)h * h, LF_FULL_A_SHIFT);
}

/*
 * Backward through layer l: sum delta[o] * in[i] into the gradients and, for
 * a layer whose input is a tanh output (l > 0), the input's deltas
 * (1 - in^2) * sum_o W[o][i] delta[o] into @delta_in.
 */
static inline void lf_full_backward_layer(const struct lf_full_net *net,
					  struct lf_full_trainer *tr,
					  unsigned int l, const s32 *in,
					  const s32 *delta, s32 *delta_in)
{
	const struct lf_full_layer_dims *d = &lf_full_dims[l];
	const s32 *w = net->param + d->w_off;
	s64 *gw = tr->grad + d->w_off;
	s64 *gb = tr->grad + d->b_off;
	unsigned int o, i;

	for (o = 0; o < d->out_units; o++, gw += d->in_units) {
		for (i = 0; i < d->in_units; i++)
			gw[i] += (s64)delta[o] * in[i];			/* Q40 */
		gb[o] += (s64)delta[o] << LF_FULL_A_SHIFT;		/* Q40 */
	}
	if (!delta_in)
		return;
	for (i = 0; i < d->in_units; i++) {
		s64 back = 0;						/* Q48 */

		for (o = 0; o < d->out_units; o++)
			back += (s64)w[o * d->in_units + i] * delta[o];
		back = lf_full_rshift_round(back, LF_FULL_W_SHIFT);	/* Q24 */
		back = lf_full_rshift_round(back * lf_full_dtanh(in[i]),
					    LF_FULL_A_SHIFT);
		delta_in[i] = lf_full_clamp_s32(back, LF_FULL_DELTA_MAX,
						&tr->saturations);
	}
}

/*
 * Forward and backward of one sample: its squared error into loss_sum and
 * its gradient of (y - label)^2 into the minibatch's sums.
 */
static inline void lf_full_accumulate(struct lf_full_net *net,
				      struct lf_full_trainer *tr,
				      const s8 *input, s32 label)
{
	struct lf_full_acts a;
	s32 d3[LF_CC_OUTPUTS], d2[LF_FULL_H2], d1[LF_FULL_H1];
	s64 err;

	lf_full_forward(net, input, &a);
	err = ((s64)a.y[0] << (LF_FULL_D_SHIFT - LF_FULL_A_SHIFT)) - label;	/* Q24 */
	tr->loss_sum += lf_full_rshift_round(err * err, LF_FULL_D_SHIFT);
	/* d/dz (y - t)^2 = 2 (y - t) (1 - y^2) */
	d3[0] = lf_full_clamp_s32(lf_full_rshift_round(2 * err * lf_full_dtanh(a.y[0]),
						       LF_FULL_A_SHIFT),
				  LF_FULL_DELTA_MAX, &tr->saturations);
	lf_full_backward_layer(net, tr, 2, a.h2, d3, d2);
	lf_full_backward_layer(net, tr, 1, a.h1, d2, d1);
	lf_full_backward_layer(net, tr, 0, a.x, d1, NULL);
	tr->seen++;
	tr->samples++;
}

/*
 * One SGD step on the minibatch's sums:
 * w -= lr * (grad / batch + 2 * l2 * w) (biases without the L2 term).
 */
static inline void lf_full_step(struct lf_full_net *net, struct lf_full_trainer *tr)
{
	unsigned int l, p;

	for (l = 0; l < LF_FULL_LAYERS; l++) {
		const struct lf_full_layer_dims *d = &lf_full_dims[l];
		unsigned int end = d->b_off + d->out_units;

		for (p = d->w_off; p < end; p++) {
			s64 g = lf_full_mul_q31(tr->grad[p], tr->inv_batch_mult,
						tr->inv_batch_shift);	/* Q40 */
			s64 upd;

			if (p < d->b_off)
				g += lf_full_mul_q31((s64)net->param[p] << LF_FULL_A_SHIFT,
						     tr->decay_mult, tr->decay_shift);
			upd = lf_full_mul_q31(g, tr->lr_mult, tr->lr_shift);
			upd = lf_full_rshift_round(upd, LF_FULL_G_SHIFT - LF_FULL_W_SHIFT);
			net->param[p] = lf_full_clamp_s32((s64)net->param[p] - upd,
							  LF_FULL_W_MAX - 1,
							  &tr->saturations);
			tr->grad[p] = 0;
		}
	}
	tr->last_loss = (s32)lf_full_div_s64(tr->loss_sum, (s32)tr->seen);
	tr->loss_sum = 0;
	tr->seen = 0;
	tr->steps++;
}

/*
 * Set up a trainer: minibatch of @batch samples, learning rate @lr_q32 and
 * L2 factor @l2_q32 (both real * 2^32, below 1), replay picks seeded by
 * @seed.  The divisions happen here, once, not per sample.
 */
static inline int lf_full_trainer_init(struct lf_full_trainer *tr, u32 batch,
				       u32 lr_q32, u32 l2_q32, u32 seed)
{
	if (!batch || batch > LF_FULL_MAX_BATCH || !lr_q32)
		return -EINVAL;
	memset(tr, 0, sizeof(*tr));
	tr->batch = batch;
	lf_full_quantize_ratio(1, batch, 0, &tr->inv_batch_mult, &tr->inv_batch_shift);
	lf_full_quantize_ratio(lr_q32, 1, -LF_FULL_LR_SHIFT, &tr->lr_mult, &tr->lr_shift);
	lf_full_quantize_ratio(2ULL * l2_q32, 1, -LF_FULL_LR_SHIFT,
			       &tr->decay_mult, &tr->decay_shift);
	tr->rng = seed ? seed : 0x9e3779b9U;
	return 0;
}

/*
 * Train on @n given samples in order, at most @budget of them; a step is
 * taken whenever a minibatch completes.  Returns the samples consumed.
 */
static inline u32 lf_full_train_samples(struct lf_full_net *net,
					struct lf_full_trainer *tr,
					const struct lf_full_sample *s, u32 n,
					u32 budget)
{
	u32 k;

	if (n > budget)
		n = budget;
	for (k = 0; k < n; k++) {
		lf_full_accumulate(net, tr, s[k].input, s[k].label);
		if (tr->seen == tr->batch)
			lf_full_step(net, tr);
	}
	return n;
}

static inline u32 lf_full_rand(struct lf_full_trainer *tr)
{
	u32 x = tr->rng;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	tr->rng = x;
	return x;
}

static inline void lf_full_replay_add(struct lf_full_replay *r, const s8 *input,
				      s32 label)
{
	struct lf_full_sample *s = &r->slot[r->next];

	memcpy(s->input, input, LF_CC_INPUTS);
	s->reserved[0] = 0;
	s->reserved[1] = 0;
	s->label = label;
	if (++r->next == r->capacity)
		r->next = 0;
	if (r->count < r->capacity)
		r->count++;
}

/* Schedule @steps minibatches of replay training (the slow path takes 4 per batch). */
static inline void lf_full_owe_steps(struct lf_full_trainer *tr, u32 steps)
{
	u64 owed = tr->owed + (u64)steps * tr->batch;

	tr->owed = owed > 0xffffffffULL ? 0xffffffffU : (u32)owed;
}

/*
 * Train on owed samples drawn uniformly from the replay (with replacement,
 * as the slow path's minibatches), at most @budget of them.  The pick is a
 * multiply-shift, not a modulo.  Returns the samples consumed.
 */
static inline u32 lf_full_train_replay(struct lf_full_net *net,
				       struct lf_full_trainer *tr,
				       const struct lf_full_replay *r, u32 budget)
{
	u32 n = tr->owed < budget ? tr->owed : budget;
	u32 k;

	if (!r->count)
		return 0;
	for (k = 0; k < n; k++) {
		u32 idx = (u32)(((u64)lf_full_rand(tr) * r->count) >> 32);

		lf_full_accumulate(net, tr, r->slot[idx].input, r->slot[idx].label);
		if (tr->seen == tr->batch)
			lf_full_step(net, tr);
	}
	tr->owed -= n;
	return n;
}

/*
 * The online teacher (userspace/cc/teacher.py, online_label) in integers.
 *
 * From the MI after the decision: its queue estimate, the inflation, is its
 * least RTT sample over the connection's minimum per-MI mean RTT, minus
 * one, at least 0 (the least sample: noise that delays most samples, such
 * as ACKs released in bursts, does not read as queue).  Saturated when that
 * is over 5%, 20 (least - min) > min, or it delivered (net of losses) less
 * than 90% of what it sent, 10 (dlv + lost) < 9 sent -- both exact here.
 * Saturated: target = share (1.1 - inflation), at least share / 10, share
 * the delivery rate (the pacing rate if none); otherwise a
 * probe, target = 1.1 pacing.  The label is the output that moves the rate
 * the decision started from (undoing its action q) onto the target in one
 * MI, saturated at +-1.  Rates are Q16 Bps, the inflation and the label Q24.
 */
#define LF_FULL_TEACHER_RATE_SHIFT	16
#define LF_FULL_TEACHER_Q		24
/* 1.1 = QUEUE_TARGET + 1 / DRAIN_RTTS, Q24 */
#define LF_FULL_TEACHER_GAIN		((((s64)11 << LF_FULL_TEACHER_Q) + 5) / 10)
#define LF_FULL_TEACHER_PROBE_NUM	11	/* 1 + PROBE */
#define LF_FULL_TEACHER_PROBE_DEN	10
#define LF_FULL_TEACHER_FLOOR_DEN	10	/* MIN_TARGET_FRACTION */
/* y = 10 (target / rate - 1): a 10% step is 1 */
#define LF_FULL_TEACHER_STEP		10

/* round(n / d) for n >= 0, d > 0 */
static inline u64 lf_full_udiv_round(u64 n, u64 d)
{
	return div64_u64(n + d / 2, d);
}

/* The teacher's target rate for @ctx, Q16 Bps. */
static inline u64 lf_full_teacher_target(const struct lf_cc_context *ctx)
{
	const u64 pacing = (u64)ctx->pacing_rate_Bps << LF_FULL_TEACHER_RATE_SHIFT;
	u64 share, floor;
	s64 inflation = 0, factor;
	bool saturated, short_dlv;

	if (ctx->mi_min_rtt_us > ctx->min_mean_rtt_us && ctx->min_mean_rtt_us) {
		u64 gap = ctx->mi_min_rtt_us - ctx->min_mean_rtt_us;

		inflation = (s64)lf_full_udiv_round(gap << LF_FULL_TEACHER_Q,
						    ctx->min_mean_rtt_us);
		saturated = gap * 20 > ctx->min_mean_rtt_us;
	} else {
		saturated = false;
	}
	short_dlv = ctx->segs_sent &&
		((u64)ctx->segs_delivered + ctx->segs_lost) * 10 <
		(u64)ctx->segs_sent * 9;
	if (!saturated && !short_dlv)
		return div64_u64(pacing * LF_FULL_TEACHER_PROBE_NUM,
				 LF_FULL_TEACHER_PROBE_DEN);

	share = ctx->delivery_rate_Bps ? ctx->delivery_rate_Bps : ctx->pacing_rate_Bps;
	floor = div64_u64((u64)share << LF_FULL_TEACHER_RATE_SHIFT,
			  LF_FULL_TEACHER_FLOOR_DEN);
	factor = LF_FULL_TEACHER_GAIN - inflation;		/* Q24 */
	if (factor <= 0)
		return floor;
	/* share < 2^32 Bps, factor < 2^25 (inflation >= 0): < 2^57 */
	share = (u64)lf_full_rshift_round((s64)share * factor,
					  LF_FULL_TEACHER_Q - LF_FULL_TEACHER_RATE_SHIFT);
	return share > floor ? share : floor;
}

/*
 * The teacher's label (Q24, in [-1, 1]) for a decision that answered @q and
 * whose following MI measured @ctx.
 */
static inline s32 lf_full_teacher_label(const struct lf_cc_context *ctx, s8 q)
{
	const u64 one = 1ULL << LF_FULL_TEACHER_RATE_SHIFT;	/* 1 Bps */
	const u64 pacing = (u64)ctx->pacing_rate_Bps << LF_FULL_TEACHER_RATE_SHIFT;
	u64 rate, target, gap;

	/* the rate the decision started from: undo lf_cc_apply_action */
	if (q >= 0)
		rate = lf_full_udiv_round(pacing * LF_CC_ACTION_DEN, LF_CC_ACTION_DEN + q);
	else
		rate = lf_full_udiv_round(pacing * (LF_CC_ACTION_DEN - q), LF_CC_ACTION_DEN);
	target = lf_full_teacher_target(ctx);
	if (rate < one)
		rate = one;
	if (target < one)
		target = one;

	/* (gap * 10) << 24 must fit u64: halve both (their ratio keeps 37 bits) */
	while (rate >= (1ULL << 38) || target >= (1ULL << 38)) {
		rate >>= 1;
		target >>= 1;
	}
	if (target >= rate) {
		/* 10 (target / rate - 1) >= 1 once target >= 1.1 rate */
		if (target * LF_FULL_TEACHER_STEP >= rate * (LF_FULL_TEACHER_STEP + 1))
			return 1 << LF_FULL_TEACHER_Q;
		gap = target - rate;		/* 10 gap < rate < 2^38 */
		return (s32)lf_full_udiv_round(gap * LF_FULL_TEACHER_STEP
					       << LF_FULL_TEACHER_Q, rate);
	}
	/* 10 (1 - rate / target) <= -1 once rate >= 1.1 target */
	if (rate * LF_FULL_TEACHER_STEP >= target * (LF_FULL_TEACHER_STEP + 1))
		return -(1 << LF_FULL_TEACHER_Q);
	gap = rate - target;
	return -(s32)lf_full_udiv_round(gap * LF_FULL_TEACHER_STEP
					<< LF_FULL_TEACHER_Q, target);
}

/*
 * The int8 snapshot of the master weights, self-contained: spec's pointers
 * point into this struct, so it must not be copied after
 * lf_full_requantize() (re-run it instead).
 */
struct lf_full_snapshot {
	s8 weights[LF_FULL_WEIGHTS];
	s32 bias[LF_FULL_UNITS];
	s32 multiplier[LF_FULL_UNITS];
	s32 shift[LF_FULL_UNITS];
	s8 act_table[LF_FULL_LAYERS][LF_ACT_TABLE_SIZE];
	struct lf_snapshot_spec spec;
};

/* A layer's pre-tanh int8 quantization: span (Q16) / 255 and a zero point. */
static inline void lf_full_pre_tanh_quant(const struct lf_full_range *range,
					  s32 *span, s32 *zero_point)
{
	s32 lo = range->min < 0 ? range->min : 0;	/* TFLite: 0 is representable */
	s32 hi = range->max > 0 ? range->max : 0;
	s64 zp;

	if (lo < -LF_FULL_PRE_TANH_CLIP)
		lo = -LF_FULL_PRE_TANH_CLIP;
	if (hi > LF_FULL_PRE_TANH_CLIP)
		hi = LF_FULL_PRE_TANH_CLIP;
	if (hi - lo < LF_FULL_PRE_TANH_MIN_SPAN)
		hi = lo + LF_FULL_PRE_TANH_MIN_SPAN;
	*span = hi - lo;
	zp = -128 + lf_cc_div_round((s64)-lo * 255, *span);
	*zero_point = (s32)(zp > 127 ? 127 : zp);
}

/*
 * The engine's table for tanh after a pre-activation quantized with
 * (span / 255, zero point): round(128 tanh(x)) clamped to int8, as TFLite's
 * PopulateLookupTable builds it in float (it may differ by one where
 * 128 tanh(x) is within ~1e-3 of a half).
 */
static inline void lf_full_tanh_table_int8(s32 span, s32 zero_point, s8 *table)
{
	int q;

	for (q = -128; q <= 127; q++) {
		s32 x = (s32)lf_cc_div_round((s64)span * (q - zero_point), 255);
		s64 v = lf_cc_div_round(lf_full_tanh(x),
					1U << (LF_FULL_A_SHIFT - LF_FULL_TANH_OUT_SHIFT));

		table[q + 128] = lf_cc_clamp_s8(v);
	}
}

/*
 * Requantize the master weights into @snap's int8 spec (see the opening
 * comment), pre-tanh scales from net->range.  Not a hot path: it divides
 * once per weight.  Returns 0 (the engine's lf_engine_validate accepts it).
 */
static inline int lf_full_requantize(const struct lf_full_net *net,
				     struct lf_full_snapshot *snap)
{
	struct lf_snapshot_spec *spec = &snap->spec;
	unsigned int l, o, i, unit = 0, woff = 0;

	memset(spec, 0, sizeof(*spec));
	spec->input_size = LF_CC_INPUTS;
	spec->output_size = LF_CC_OUTPUTS;
	spec->num_layers = LF_FULL_LAYERS;
	spec->input_quant.scale_multiplier = LF_CC_INPUT_QUANT_MULT;
	spec->input_quant.scale_shift = LF_CC_INPUT_QUANT_SHIFT;
	spec->output_quant.scale_multiplier = LF_CC_OUTPUT_QUANT_MULT;
	spec->output_quant.scale_shift = LF_CC_OUTPUT_QUANT_SHIFT;

	for (l = 0; l < LF_FULL_LAYERS; l++) {
		const struct lf_full_layer_dims *d = &lf_full_dims[l];
		struct lf_layer *layer = &spec->layers[l];
		/* the layer's input scale is 2^-in_shift: 1/16, then tanh's 1/128 */
		int in_shift = l ? LF_FULL_TANH_OUT_SHIFT : LF_FULL_INPUT_SCALE_SHIFT;
		s32 span, zp;

		lf_full_pre_tanh_quant(&net->range[l], &span, &zp);
		layer->in_units = d->in_units;
		layer->out_units = d->out_units;
		layer->activation = LF_ACT_TANH;
		layer->input_zero_point = 0;
		layer->output_zero_point = zp;
		layer->act_min = -128;
		layer->act_max = 127;
		layer->weights = snap->weights + woff;
		layer->bias = snap->bias + unit;
		layer->multiplier = snap->multiplier + unit;
		layer->shift = snap->shift + unit;
		layer->act_table = snap->act_table[l];
		lf_full_tanh_table_int8(span, zp, snap->act_table[l]);

		for (o = 0; o < d->out_units; o++, unit++) {
			const s32 *w = net->param + d->w_off + o * d->in_units;
			s64 wmax = LF_FULL_WMAX_FLOOR, b;

			for (i = 0; i < d->in_units; i++) {
				s64 aw = w[i] < 0 ? -(s64)w[i] : w[i];

				if (aw > wmax)
					wmax = aw;
			}
			/* weight scale wmax / 127 (Q24): q = round(127 w / wmax) */
			for (i = 0; i < d->in_units; i++)
				snap->weights[woff++] =
					lf_cc_clamp_s8(lf_cc_div_round((s64)w[i] * 127, wmax));
			/* bias scale 2^-in_shift * wmax / 127 */
			b = lf_cc_div_round(((s64)net->param[d->b_off + o] * 127) << in_shift,
					    wmax);
			if (b > LF_FULL_BIAS_ABS_MAX)
				b = LF_FULL_BIAS_ABS_MAX;
			if (b < -LF_FULL_BIAS_ABS_MAX)
				b = -LF_FULL_BIAS_ABS_MAX;
			snap->bias[unit] = (s32)b;
			/*
			 * input scale x weight scale / output scale
			 * = 2^-in_shift (wmax / (127 2^24)) / (span / (255 2^16))
			 * = wmax 255 / (127 span) 2^-(in_shift + 8)
			 */
			lf_full_quantize_ratio((u64)wmax * 255, (u64)span * 127,
					       -(in_shift + LF_FULL_W_SHIFT - LF_FULL_A_SHIFT),
					       &snap->multiplier[unit], &snap->shift[unit]);
		}
	}
	return 0;
}

#endif /* _LF_CC_FULL_H */
