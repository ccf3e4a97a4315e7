// SPDX-License-Identifier: GPL-2.0
/*
 * lf_cc's arithmetic as a user-space library, for tests: the header's
 * static inline functions, exported so ctypes can call the very code the
 * module runs (tests/kernel/test_cc_model.py).  Nothing here is built into
 * the kernel.
 */
#include "lf_cc_model.h"

s8 lf_cc_user_latency_inflation(u32 duration_us, u32 count0, u64 sum0_us,
				u32 count1, u64 sum1_us)
{
	struct lf_cc_mi mi = {
		.duration_us = duration_us,
		.rtt_count = { count0, count1 },
		.rtt_sum_us = { sum0_us, sum1_us },
	};

	return lf_cc_q_latency_inflation(&mi);
}

u32 lf_cc_user_mean_rtt_us(u32 count0, u64 sum0_us, u32 count1, u64 sum1_us)
{
	struct lf_cc_mi mi = {
		.rtt_count = { count0, count1 },
		.rtt_sum_us = { sum0_us, sum1_us },
	};

	return lf_cc_mean_rtt_us(&mi);
}

s8 lf_cc_user_latency_ratio(u32 mean_rtt_us, u32 min_mean_rtt_us)
{
	return lf_cc_q_latency_ratio(mean_rtt_us, min_mean_rtt_us);
}

s8 lf_cc_user_send_ratio(u32 segs_sent, u32 segs_delivered)
{
	return lf_cc_q_send_ratio(segs_sent, segs_delivered);
}

void lf_cc_user_push_history(s8 *history, s8 li, s8 lr, s8 sr)
{
	lf_cc_push_history(history, li, lr, sr);
}

u64 lf_cc_user_apply_action(u64 rate_Bps, s8 q)
{
	return lf_cc_apply_action(rate_Bps, q);
}

u32 lf_cc_user_mi_target_us(u32 srtt_us, u64 rate_Bps, u32 mss)
{
	return lf_cc_mi_target_us(srtt_us, rate_Bps, mss);
}

u32 lf_cc_user_target_units(u32 target_us)
{
	return lf_cc_target_units(target_us);
}

u32 lf_cc_user_rtt_units(u32 rtt_us)
{
	return lf_cc_rtt_units(rtt_us);
}

u32 lf_cc_user_cwnd_cap(u64 rate_Bps, u32 min_rtt_us, u32 mss)
{
	return lf_cc_cwnd_cap(rate_Bps, min_rtt_us, mss);
}

u64 lf_cc_user_fallback_rate(u64 rate_Bps, u32 segs_lost, u32 mean_rtt_us,
			     u32 min_mean_rtt_us)
{
	struct lf_cc_mi mi = { .segs_lost = segs_lost };

	return lf_cc_fallback_rate(rate_Bps, &mi, mean_rtt_us, min_mean_rtt_us);
}

unsigned int lf_cc_user_context_size(void)
{
	return sizeof(struct lf_cc_context);
}

void lf_cc_user_min_rtt_update(u32 *min_us, u32 *stamp_ms, u32 mean_rtt_us,
			       u32 now_ms)
{
	lf_cc_min_rtt_update(min_us, stamp_ms, mean_rtt_us, now_ms);
}

/* Returns whether the minimum was replaced; *mis and *drained_segs carry the state. */
int lf_cc_user_stale_min_update(u8 *mis, s16 *drained_segs, u32 *min_us,
				u32 *stamp_ms, u32 mean_rtt_us, u32 duration_us,
				u32 segs_sent, u32 segs_delivered, u32 segs_lost,
				u32 now_ms)
{
	struct lf_cc_stale st = { .mis = *mis, .drained_segs = *drained_segs };
	struct lf_cc_mi mi = {
		.duration_us = duration_us,
		.segs_sent = segs_sent,
		.segs_delivered = segs_delivered,
		.segs_lost = segs_lost,
	};
	bool fired = lf_cc_stale_min_update(&st, min_us, stamp_ms, mean_rtt_us,
					    &mi, now_ms);

	*mis = st.mis;
	*drained_segs = st.drained_segs;
	return fired;
}
