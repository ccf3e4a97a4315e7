/* SPDX-License-Identifier: GPL-2.0 */
/*
 * lf_cc's arithmetic: the monitor interval, Aurora's three features, the
 * network's input and output encodings, the action-to-rate rule, the cwnd
 * cap and the fallback.  Pure integer functions of their arguments, so the
 * same header builds into lf_cc.ko and into a user-space test library
 * (lf_cc_user.c), and the Python simulator that trains the network
 * (userspace/cc/features.py) is tested against it.
 *
 * Features per monitor interval (MI), after Aurora (Jay et al., "A Deep
 * Reinforcement Learning Perspective on Internet Congestion Control",
 * ICML 2019) and PCC-RL's sender_obs:
 *
 *   latency inflation  (mean RTT of the MI's second half - of its first
 *                      half) / MI duration.  The halves are halves of the
 *                      MI's time, not of its samples: a socket keeps two
 *                      running sums instead of every sample.
 *   latency ratio      the MI's mean RTT / the minimum of the per-MI mean
 *                      RTTs of the last LF_CC_MIN_RTT_WIN_MS (Aurora: of the
 *                      connection; over a window, as BBR keeps its min_rtt, a
 *                      path whose RTT grew does not look queued forever).
 *   send ratio         segments sent / segments delivered in the MI (the
 *                      MI's send rate over its delivery rate); 1 when
 *                      nothing was delivered, as Aurora does.
 *
 * Encoding.  The network's 30 inputs share one int8 quantization, so each
 * feature is mapped to reals of a common range, [-8, 8), quantized with
 * scale 1/16 and zero point 0 (the snapshot toolchain calibrates the input
 * on exactly that range, so every retrained snapshot has it, and the core
 * refuses one that does not):
 *
 *   x_li = 10 * latency inflation        q = round(160 * dRTT / duration)
 *   x_lr =  8 * (latency ratio - 1)      q = round(128 * (rtt - min) / min)
 *   x_sr =  8 * (send ratio - 1)         q = round(128 * (sent - dlv) / dlv)
 *
 * Aurora feeds the raw features; an int8 input cannot span [1, 10^4], so
 * the gains trade range for resolution where control happens (a latency
 * ratio above 2, a send ratio above 2, saturate).  Rounding is to nearest,
 * halves away from zero.
 *
 * Output.  The last layer is tanh, which TFLite always quantizes with
 * scale 1/128, zero point 0: y = q / 128.  Aurora's action is a = 4 * y,
 * and the rate moves by x(1 + 0.025 a) = x(1280 + q) / 1280 for q >= 0,
 * /(1 - 0.025 a) = x 1280 / (1280 - q) otherwise: at most about 10% per MI.
 */
#ifndef _LF_CC_MODEL_H
#define _LF_CC_MODEL_H

#ifdef __KERNEL__
#include <linux/types.h>
#include <linux/math64.h>
#include <linux/string.h>
#else
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
typedef int8_t s8;
typedef uint8_t u8;
typedef int16_t s16;
typedef uint16_t u16;
typedef int32_t s32;
typedef uint32_t u32;
typedef int64_t s64;
typedef uint64_t u64;
static inline u64 div64_u64(u64 dividend, u64 divisor)
{
	return dividend / divisor;
}
#endif

#define LF_CC_HISTORY		10	/* MIs the network sees, oldest first */
#define LF_CC_FEATURES		3	/* per MI: inflation, ratio, send ratio */
#define LF_CC_INPUTS		(LF_CC_HISTORY * LF_CC_FEATURES)
#define LF_CC_OUTPUTS		1

/* Input quantization: real = q / 16; as struct lf_quant, Q31 2^30 * 2^(-3 - 31). */
#define LF_CC_INPUT_SCALE_INV	16
#define LF_CC_INPUT_QUANT_MULT	(1 << 30)
#define LF_CC_INPUT_QUANT_SHIFT	(-3)
/* Output quantization (TFLite's tanh): real = q / 128, 2^30 * 2^(-6 - 31). */
#define LF_CC_OUTPUT_QUANT_MULT	(1 << 30)
#define LF_CC_OUTPUT_QUANT_SHIFT (-6)

/* Feature gains: real input = gain * feature (- gain for the two ratios). */
#define LF_CC_LI_GAIN		10
#define LF_CC_LR_GAIN		8
#define LF_CC_SR_GAIN		8

/* a = 4 y = 4 q / 128; 0.025 a = q / 1280. */
#define LF_CC_ACTION_DEN	1280

/* Monitor interval: max(srtt / 2, time to send LF_CC_MI_SEGS at the rate). */
#define LF_CC_MI_SEGS		5
#define LF_CC_MI_MIN_US		1000
#define LF_CC_MI_MAX_US		1000000

/* The latency ratio's base expires after this long without a new minimum. */
#define LF_CC_MIN_RTT_WIN_MS	10000

/*
 * cwnd is a cap, not the control: LF_CC_CWND_BDPS x the rate times the
 * smoothed RTT.  Over the minimum RTT instead, a path whose RTT grows past
 * twice its old minimum (the minimum is kept for minutes) would be
 * window-limited whatever the network answers.
 */
#define LF_CC_CWND_BDPS		2
#define LF_CC_CWND_MIN_SEGS	4

/*
 * Fallback (no snapshot yet, or a query error): a plain AIMD on the rate.
 * Down by 7/10 after an MI with a loss or a latency ratio over 5/4, up by
 * 21/20 otherwise: it neither starves nor floods a link while the network
 * is missing, and it is counted so a run can tell.
 */
#define LF_CC_FALLBACK_UP_NUM	21
#define LF_CC_FALLBACK_UP_DEN	20
#define LF_CC_FALLBACK_DOWN_NUM	7
#define LF_CC_FALLBACK_DOWN_DEN	10
#define LF_CC_FALLBACK_RTT_NUM	5	/* latency ratio over 5/4 is a queue */
#define LF_CC_FALLBACK_RTT_DEN	4

#define LF_CC_USEC_PER_SEC	1000000ULL

/* What one MI measured, as a socket accumulates it ACK by ACK. */
struct lf_cc_mi {
	u32 duration_us;	/* from the MI's first ACK to the ACK that ends it */
	u32 rtt_count[2];	/* RTT samples in the first and second half */
	u64 rtt_sum_us[2];
	u32 segs_sent;
	u32 segs_delivered;
	u32 segs_lost;
};

/* round(n / d) for d > 0, halves away from zero. */
static inline s64 lf_cc_div_round(s64 n, u64 d)
{
	if (n >= 0)
		return (s64)div64_u64((u64)n + d / 2, d);
	return -(s64)div64_u64((u64)-n + d / 2, d);
}

static inline s8 lf_cc_clamp_s8(s64 q)
{
	if (q > 127)
		return 127;
	if (q < -128)
		return -128;
	return (s8)q;
}

/* The MI's mean RTT, 0 without samples. */
static inline u32 lf_cc_mean_rtt_us(const struct lf_cc_mi *mi)
{
	u32 count = mi->rtt_count[0] + mi->rtt_count[1];

	if (!count)
		return 0;
	return (u32)div64_u64(mi->rtt_sum_us[0] + mi->rtt_sum_us[1], count);
}

/*
 * Fold an MI's mean RTT into the windowed minimum: a new minimum, or any
 * value once the minimum is older than LF_CC_MIN_RTT_WIN_MS, replaces it.
 */
static inline void lf_cc_min_rtt_update(u32 *min_us, u32 *stamp_ms,
					u32 mean_rtt_us, u32 now_ms)
{
	if (!mean_rtt_us)
		return;
	if (!*min_us || mean_rtt_us <= *min_us ||
	    now_ms - *stamp_ms > LF_CC_MIN_RTT_WIN_MS) {
		*min_us = mean_rtt_us;
		*stamp_ms = now_ms;
	}
}

/*
 * A minimum the path has outgrown (optional, lf_cc's stale_min parameter).
 *
 * After the path gets longer, the windowed minimum holds the old base for
 * up to LF_CC_MIN_RTT_WIN_MS: a delay-based network reads the new path as
 * a standing queue, brakes to the pacing floor and comes back only when the
 * window lets go, 0 to 10 s after the change depending on when the minimum
 * was last refreshed.  BBR drains to find out (ProbeRTT); this rule uses the
 * drain the network already does.  While every MI reads a mean RTT of at
 * least LF_CC_STALE_NUM / LF_CC_STALE_DEN of the minimum, the segments the
 * flow took out of the network (delivered + lost - sent) are summed.  Its
 * own share of a FIFO queue is (mean RTT - minimum) x its delivery rate;
 * once it has drained more than that, for at least LF_CC_STALE_MIS MIs in a
 * row, and the RTT is still inflated, the inflation is not its own queue,
 * and this MI's mean becomes the minimum.  A longer path fills with the
 * flow's own bytes at the step (to the flow it looks like a queue) and they
 * come out as it brakes, so the rule fires once the rate is down to about
 * a fifth (20 -> 60 ms); a queue that still grows, as after a bandwidth
 * step down, does not let the drained sum catch up with it.  A queue that
 * other senders hold is taken as path: the flow then competes for it.
 *
 * The committed networks were trained without the rule (the simulator's
 * default), so it is off unless an experiment turns it on.
 */
#define LF_CC_STALE_MIS		10
#define LF_CC_STALE_NUM		3
#define LF_CC_STALE_DEN		2
#define LF_CC_STALE_MIS_MAX	63	/* lf_cc keeps the count in 6 bits */
#define LF_CC_STALE_DRAINED_MAX	32767	/* an s16 */

struct lf_cc_stale {
	u8 mis;			/* inflated MIs in a row, saturating */
	s16 drained_segs;	/* delivered + lost - sent over them, saturating */
};

/*
 * Fold an MI into the rule, after lf_cc_min_rtt_update(); true when the
 * minimum was replaced by @mean_rtt_us.
 */
static inline bool lf_cc_stale_min_update(struct lf_cc_stale *st, u32 *min_us,
					  u32 *stamp_ms, u32 mean_rtt_us,
					  const struct lf_cc_mi *mi, u32 now_ms)
{
	s64 drained;

	if (!*min_us || !mean_rtt_us ||
	    (u64)mean_rtt_us * LF_CC_STALE_DEN < (u64)*min_us * LF_CC_STALE_NUM) {
		st->mis = 0;
		st->drained_segs = 0;
		return false;
	}
	drained = (s64)st->drained_segs + mi->segs_delivered + mi->segs_lost -
		  mi->segs_sent;
	if (drained > LF_CC_STALE_DRAINED_MAX)
		drained = LF_CC_STALE_DRAINED_MAX;
	else if (drained < -LF_CC_STALE_DRAINED_MAX)
		drained = -LF_CC_STALE_DRAINED_MAX;
	st->drained_segs = (s16)drained;
	if (st->mis < LF_CC_STALE_MIS_MAX)
		st->mis++;
	if (st->mis < LF_CC_STALE_MIS || st->drained_segs <= 0 ||
	    (u64)st->drained_segs * mi->duration_us <
	    (u64)(mean_rtt_us - *min_us) * mi->segs_delivered)
		return false;
	*min_us = mean_rtt_us;
	*stamp_ms = now_ms;
	st->mis = 0;
	st->drained_segs = 0;
	return true;
}

/* Latency inflation, encoded; 0 unless both halves have samples. */
static inline s8 lf_cc_q_latency_inflation(const struct lf_cc_mi *mi)
{
	s64 first, second;

	if (!mi->rtt_count[0] || !mi->rtt_count[1] || !mi->duration_us)
		return 0;
	first = (s64)div64_u64(mi->rtt_sum_us[0], mi->rtt_count[0]);
	second = (s64)div64_u64(mi->rtt_sum_us[1], mi->rtt_count[1]);
	return lf_cc_clamp_s8(lf_cc_div_round((second - first) *
					      LF_CC_LI_GAIN * LF_CC_INPUT_SCALE_INV,
					      mi->duration_us));
}

/* Latency ratio against @min_mean_rtt_us (this MI included), encoded. */
static inline s8 lf_cc_q_latency_ratio(u32 mean_rtt_us, u32 min_mean_rtt_us)
{
	if (!mean_rtt_us || !min_mean_rtt_us)
		return 0;
	return lf_cc_clamp_s8(lf_cc_div_round(((s64)mean_rtt_us - min_mean_rtt_us) *
					      LF_CC_LR_GAIN * LF_CC_INPUT_SCALE_INV,
					      min_mean_rtt_us));
}

/* Send ratio, encoded; 1 (q = 0) when nothing was delivered. */
static inline s8 lf_cc_q_send_ratio(u32 segs_sent, u32 segs_delivered)
{
	if (!segs_delivered)
		return 0;
	return lf_cc_clamp_s8(lf_cc_div_round(((s64)segs_sent - segs_delivered) *
					      LF_CC_SR_GAIN * LF_CC_INPUT_SCALE_INV,
					      segs_delivered));
}

/* Shift one MI's encoded features into the history, dropping the oldest. */
static inline void lf_cc_push_history(s8 *history, s8 latency_inflation,
				      s8 latency_ratio, s8 send_ratio)
{
	memmove(history, history + LF_CC_FEATURES,
		LF_CC_INPUTS - LF_CC_FEATURES);
	history[LF_CC_INPUTS - 3] = latency_inflation;
	history[LF_CC_INPUTS - 2] = latency_ratio;
	history[LF_CC_INPUTS - 1] = send_ratio;
}

/* The action rule, in the output's int8 units. */
static inline u64 lf_cc_apply_action(u64 rate_Bps, s8 q)
{
	if (q >= 0)
		return div64_u64(rate_Bps * (LF_CC_ACTION_DEN + q), LF_CC_ACTION_DEN);
	return div64_u64(rate_Bps * LF_CC_ACTION_DEN, LF_CC_ACTION_DEN - q);
}

static inline u64 lf_cc_clamp_rate(u64 rate_Bps, u64 min_Bps, u64 max_Bps)
{
	if (rate_Bps < min_Bps)
		return min_Bps;
	if (rate_Bps > max_Bps)
		return max_Bps;
	return rate_Bps;
}

/* The next MI's length: max(srtt / 2, LF_CC_MI_SEGS segments at the rate). */
static inline u32 lf_cc_mi_target_us(u32 srtt_us, u64 rate_Bps, u32 mss)
{
	u64 segs_us = rate_Bps ?
		div64_u64((u64)LF_CC_MI_SEGS * mss * LF_CC_USEC_PER_SEC, rate_Bps) :
		LF_CC_MI_MAX_US;
	u64 target_us = srtt_us / 2;

	if (segs_us > target_us)
		target_us = segs_us;
	if (target_us < LF_CC_MI_MIN_US)
		target_us = LF_CC_MI_MIN_US;
	if (target_us > LF_CC_MI_MAX_US)
		target_us = LF_CC_MI_MAX_US;
	return (u32)target_us;
}

/*
 * Times a socket keeps in a u16 (its private area has no room for more
 * u32s on 4.15): LF_CC_RTT_UNIT_US each, so up to about 1.05 s, which
 * holds any MI target (at most LF_CC_MI_MAX_US).
 */
#define LF_CC_RTT_UNIT_US	16
#define LF_CC_UNITS_MAX		0xffff

/* An MI target in units, rounded up: the MI never ends early. */
static inline u16 lf_cc_target_units(u32 target_us)
{
	u32 units = target_us / LF_CC_RTT_UNIT_US + !!(target_us % LF_CC_RTT_UNIT_US);

	return units > LF_CC_UNITS_MAX ? LF_CC_UNITS_MAX : (u16)units;
}

/*
 * An RTT sample in units, rounded down, saturating; at least 1 for any
 * sample, so 0 keeps meaning "none yet".
 */
static inline u16 lf_cc_rtt_units(u32 rtt_us)
{
	u32 units = rtt_us / LF_CC_RTT_UNIT_US;

	if (!rtt_us)
		return 0;
	if (!units)
		return 1;
	return units > LF_CC_UNITS_MAX ? LF_CC_UNITS_MAX : (u16)units;
}

/* cwnd cap in segments: LF_CC_CWND_BDPS x rate x smoothed RTT, plus the floor. */
static inline u32 lf_cc_cwnd_cap(u64 rate_Bps, u32 srtt_us, u32 mss)
{
	u64 bdp_segs;

	if (!mss)
		return LF_CC_CWND_MIN_SEGS;
	bdp_segs = div64_u64(rate_Bps * srtt_us, (u64)mss * LF_CC_USEC_PER_SEC);
	bdp_segs = bdp_segs * LF_CC_CWND_BDPS + LF_CC_CWND_MIN_SEGS;
	if (bdp_segs > 0xffffU)		/* far beyond any testbed BDP */
		bdp_segs = 0xffffU;
	return (u32)bdp_segs;
}

/* The fallback's next rate after an MI with @mi's outcome. */
static inline u64 lf_cc_fallback_rate(u64 rate_Bps, const struct lf_cc_mi *mi,
				      u32 mean_rtt_us, u32 min_mean_rtt_us)
{
	bool queued = min_mean_rtt_us &&
		(u64)mean_rtt_us * LF_CC_FALLBACK_RTT_DEN >
		(u64)min_mean_rtt_us * LF_CC_FALLBACK_RTT_NUM;

	if (mi->segs_lost || queued)
		return div64_u64(rate_Bps * LF_CC_FALLBACK_DOWN_NUM,
				 LF_CC_FALLBACK_DOWN_DEN);
	return div64_u64(rate_Bps * LF_CC_FALLBACK_UP_NUM, LF_CC_FALLBACK_UP_DEN);
}

/*
 * The sample context lf_cc ships with each (input, output) pair: what the
 * MI after the decision measured.  Little endian, no padding; the slow
 * path's CC adapter reads it (userspace/cc/context.py).
 */
struct lf_cc_context {
	u32 mi_duration_us;
	u32 pacing_rate_Bps;	/* the rate the decision set, in force in the MI */
	u32 send_rate_Bps;
	u32 delivery_rate_Bps;
	u32 mean_rtt_us;
	u32 min_mean_rtt_us;	/* the connection's minimum per-MI mean RTT */
	u32 segs_sent;
	u32 segs_delivered;
	u32 segs_lost;
	u32 mss_bytes;
	u32 mi_min_rtt_us;	/* the MI's least RTT sample (lf_cc_rtt_units) */
};

#endif /* _LF_CC_MODEL_H */
