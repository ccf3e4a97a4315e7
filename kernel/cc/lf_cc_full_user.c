// SPDX-License-Identifier: GPL-2.0
/*
 * kernel-full's arithmetic (lf_cc_full.h) as a user-space library, for
 * tests: the header's static inline functions exported so ctypes can call
 * the very code a module would run (tests/kernel/test_cc_full.py).  The
 * structs are allocated by the caller, whose sizes it asks for here.
 * Nothing here is built into the kernel.
 */
#include "lf_cc_full.h"

enum lf_full_user_struct {
	LF_FULL_USER_NET = 0,
	LF_FULL_USER_TRAINER = 1,
	LF_FULL_USER_SNAPSHOT = 2,
	LF_FULL_USER_SAMPLE = 3,
	LF_FULL_USER_SPEC = 4,
	LF_FULL_USER_PARAMS = 5,
};

unsigned long lf_full_user_sizeof(int what)
{
	switch (what) {
	case LF_FULL_USER_NET:
		return sizeof(struct lf_full_net);
	case LF_FULL_USER_TRAINER:
		return sizeof(struct lf_full_trainer);
	case LF_FULL_USER_SNAPSHOT:
		return sizeof(struct lf_full_snapshot);
	case LF_FULL_USER_SAMPLE:
		return sizeof(struct lf_full_sample);
	case LF_FULL_USER_SPEC:
		return sizeof(struct lf_snapshot_spec);
	case LF_FULL_USER_PARAMS:
		return LF_FULL_PARAMS;
	}
	return 0;
}

int lf_full_user_load(struct lf_full_net *net, const s32 *flat, u32 n)
{
	return lf_full_load(net, flat, n);
}

void lf_full_user_export(const struct lf_full_net *net, s32 *flat)
{
	memcpy(flat, net->param, sizeof(net->param));
}

/* Ranges as [min0, max0, min1, max1, min2, max2], Q16. */
void lf_full_user_ranges(const struct lf_full_net *net, s32 *out)
{
	unsigned int l;

	for (l = 0; l < LF_FULL_LAYERS; l++) {
		out[2 * l] = net->range[l].min;
		out[2 * l + 1] = net->range[l].max;
	}
}

void lf_full_user_reset_ranges(struct lf_full_net *net)
{
	lf_full_reset_ranges(net);
}

/* Forward of @n inputs (int8 [n][30]); y (Q16) into out[n]; tracks ranges. */
void lf_full_user_forward(struct lf_full_net *net, const s8 *inputs, u32 n,
			  s32 *out)
{
	struct lf_full_acts a;
	u32 k;

	for (k = 0; k < n; k++)
		out[k] = lf_full_forward(net, inputs + k * LF_CC_INPUTS, &a);
}

/* tanh of @n Q16 arguments, Q16 */
void lf_full_user_tanh(const s32 *x_q16, u32 n, s32 *out)
{
	u32 k;

	for (k = 0; k < n; k++)
		out[k] = lf_full_tanh(x_q16[k]);
}

int lf_full_user_trainer_init(struct lf_full_trainer *tr, u32 batch, u32 lr_q32,
			      u32 l2_q32, u32 seed)
{
	return lf_full_trainer_init(tr, batch, lr_q32, l2_q32, seed);
}

/* The trainer's step constants: [inv_batch m, s, lr m, s, decay m, s]. */
void lf_full_user_trainer_consts(const struct lf_full_trainer *tr, s32 *out)
{
	out[0] = tr->inv_batch_mult;
	out[1] = tr->inv_batch_shift;
	out[2] = tr->lr_mult;
	out[3] = tr->lr_shift;
	out[4] = tr->decay_mult;
	out[5] = tr->decay_shift;
}

/* [steps, samples, saturations, seen, owed, last_loss (Q24)] */
void lf_full_user_trainer_stats(const struct lf_full_trainer *tr, s64 *out)
{
	out[0] = (s64)tr->steps;
	out[1] = (s64)tr->samples;
	out[2] = tr->saturations;
	out[3] = tr->seen;
	out[4] = tr->owed;
	out[5] = tr->last_loss;
}

u32 lf_full_user_train_samples(struct lf_full_net *net, struct lf_full_trainer *tr,
			       const struct lf_full_sample *s, u32 n, u32 budget)
{
	return lf_full_train_samples(net, tr, s, n, budget);
}

void lf_full_user_owe_steps(struct lf_full_trainer *tr, u32 steps)
{
	lf_full_owe_steps(tr, steps);
}

/* Replay over caller memory: @slots [capacity], the first @count valid. */
u32 lf_full_user_train_replay(struct lf_full_net *net, struct lf_full_trainer *tr,
			      struct lf_full_sample *slots, u32 capacity, u32 count,
			      u32 budget)
{
	struct lf_full_replay r = {
		.slot = slots, .capacity = capacity, .next = count % capacity,
		.count = count,
	};

	return lf_full_train_replay(net, tr, &r, budget);
}

/* Labels (Q24) for @n contexts (struct lf_cc_context [n]) and answers q[n]. */
void lf_full_user_teacher_label(const struct lf_cc_context *ctx, const s8 *q,
				u32 n, s32 *out)
{
	u32 k;

	for (k = 0; k < n; k++)
		out[k] = lf_full_teacher_label(&ctx[k], q[k]);
}

void lf_full_user_quantize_ratio(u64 num, u64 den, int exp2, s32 *out)
{
	lf_full_quantize_ratio(num, den, exp2, &out[0], &out[1]);
}

/* Requantize into @snap; returns its spec, for the engine library. */
const struct lf_snapshot_spec *lf_full_user_requantize(const struct lf_full_net *net,
							struct lf_full_snapshot *snap)
{
	if (lf_full_requantize(net, snap))
		return NULL;
	return &snap->spec;
}

/* The table lf_full_requantize builds for a pre-tanh quantization. */
void lf_full_user_tanh_table(s32 span_q16, s32 zero_point, s8 *table)
{
	lf_full_tanh_table_int8(span_q16, zero_point, table);
}
