// SPDX-License-Identifier: GPL-2.0
/*
 * lf_cc: TCP congestion control driven by a LiteFlow snapshot.
 *
 * LiteFlow (Zhang et al., "LiteFlow: Towards High-Performance Adaptive
 * Neural Networks for Kernel Datapath", SIGCOMM 2022) evaluates its
 * congestion control with Aurora's network (Jay et al., ICML 2019): a
 * rate-based sender whose pacing rate an MLP moves once per monitor
 * interval (MI) from a history of the last ten MIs' latency inflation,
 * latency ratio and send ratio.  Here the network is the active snapshot of
 * the LiteFlow app "cc", run in the kernel on the ACK path
 * (lf_query_model_ex); the slow path adapts it on the samples this module
 * reports and hot-swaps the snapshot.
 *
 * Per socket, ACK by ACK (cong_control), the MI accumulates RTT samples in
 * the two halves of its time, its least RTT sample (for the slow path's
 * teacher, which reads the queue from it), and the segments sent,
 * delivered and lost.
 * When it has lasted max(srtt / 2, the time to send five segments at the
 * current rate) and has an RTT sample, it ends:
 *  1. the decision taken at its start, with what the MI measured (struct
 *     lf_cc_context), is reported to the sampler (lf_record_sample);
 *  2. its three features are encoded (lf_cc_model.h) and shifted into the
 *     history (the latency ratio against the minimum per-MI mean RTT of the
 *     last 10 s, so a path whose RTT grew is not taken for a queue; with
 *     stale_min set, sooner: lf_cc_stale_min_update);
 *  3. the snapshot answers an action, which moves the pacing rate by at
 *     most ~10%, clamped to a floor and to sk_max_pacing_rate;
 *  4. a new MI starts.
 * cwnd is only a cap (two rate-BDPs over the smoothed RTT), reset every ACK,
 * so the pacing rate is the control, as in Aurora.
 *
 * The reference LiteFlow module queried the network on every ACK (one MI
 * per ACK), so its latency inflation was always 0 and its send ratio, on
 * 4.15, a constant 1; its cwnd was pinned at 5000.  Here an MI is Aurora's
 * (many ACKs), both halves of its RTT samples give a real inflation, the
 * send ratio comes from the MI's own segment counters, and cwnd follows
 * the rate.
 *
 * Without an active snapshot (the slow path has not loaded one yet) or when
 * a query fails, the MI falls back to an AIMD on the rate
 * (lf_cc_fallback_rate) and the fallback is counted; the history keeps
 * filling so the network starts from real features when it arrives.
 *
 * The app declares its quantization (input 1/16, output 1/128, both zero
 * point 0): the core refuses a snapshot encoded differently, so a retrained
 * network can never be decoded with stale scales.  Counters are in
 * /sys/module/lf_cc/parameters/stats.
 *
 * The same module offers the deployment LiteFlow argues against, as a
 * second congestion control, "liteflow_user": the same features and
 * action rule, but the network runs in a user-space agent.  Every
 * user_interval_us (0: at the end of every MI) the socket posts its history
 * to the agent (lf_post_user, asynchronous, as user-space congestion
 * control frameworks are) and goes on at its current rate; an answer, when
 * it comes, lands in a slot keyed by its sequence number, and the socket
 * applies the newest one at its next ACK.  Answers that come after
 * user_timeout_ms, and every user_timeout_ms a socket waited without any
 * answer, are counted.
 *
 * And the deployment that trains in the kernel, "liteflow_full": the same
 * network, its master weights (Q24, lf_cc_full.h) adapted in the kernel by
 * the slow path's algorithm (imitation of the online teacher on each
 * decision's outcome, minibatches from a replay), on the CPUs that process
 * the ACKs: every full_round decisions owe full_steps minibatches, trained
 * at most full_budget samples per ACK (bounded softirq work), and every
 * full_publish_steps steps a work item requantizes the network and loads
 * it as the snapshot of app "cc_full", which these sockets query.  The
 * master weights arrive through /sys/kernel/debug/lf_cc/full_weights.
 */
#define pr_fmt(fmt) "lf_cc: " fmt

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/percpu.h>
#include <linux/string.h>
#include <linux/vmalloc.h>
#include <linux/debugfs.h>
#include <linux/workqueue.h>
#include <linux/spinlock.h>
#include <linux/uaccess.h>
#include <linux/random.h>
#include <net/tcp.h>
#include "compat.h"
#include "liteflow.h"
#include "lf_cc_model.h"
#include "lf_cc_full.h"

#define LF_CC_APP_NAME		"cc"
#define LF_CC_FULL_APP_NAME	"cc_full"	/* kernel-full's snapshots */
#define LF_CC_FULL_L2_Q32	429497		/* 1e-4 x 2^32: train.py's L2 on the kernels */
#define LF_CC_MIN_RATE_KBPS	100	/* default pacing floor, kbit/s */
#define LF_CC_MAX_MACS		8192	/* default budget: Aurora's MLP needs 1488 */
#define LF_CC_RTT_COUNT_MAX	0xffffU
#define LF_CC_FALLBACK_RATE_BPS	125000U	/* 1 Mbit/s before any RTT is known */
#define LF_CC_USER_TIMEOUT_MS	100
#define LF_CC_ANSWER_SLOTS	4096	/* answers in flight (power of 2) */

static unsigned int min_rate_kbps = LF_CC_MIN_RATE_KBPS;
module_param(min_rate_kbps, uint, 0644);
MODULE_PARM_DESC(min_rate_kbps, "pacing-rate floor, kbit/s (default 100)");

static bool stale_min;
module_param(stale_min, bool, 0644);
MODULE_PARM_DESC(stale_min,
		 "let go of a minimum RTT the path has outgrown once the flow drained its own queue (default off: the committed networks were trained without)");

static unsigned int user_interval_us;
module_param(user_interval_us, uint, 0644);
MODULE_PARM_DESC(user_interval_us, "liteflow_user: post the features every this many us (0: every MI)");

static unsigned int user_timeout_ms = LF_CC_USER_TIMEOUT_MS;
module_param(user_timeout_ms, uint, 0644);
MODULE_PARM_DESC(user_timeout_ms,
		 "liteflow_user: an answer later than this is late; each such period a socket waits without an answer is a timeout (default 100)");

static unsigned int full_batch = 64;
module_param(full_batch, uint, 0444);
MODULE_PARM_DESC(full_batch, "liteflow_full: samples per SGD step (default 64)");

static unsigned int full_round = 64;
module_param(full_round, uint, 0644);
MODULE_PARM_DESC(full_round, "liteflow_full: decisions per round of training (default 64)");

static unsigned int full_steps = 4;
module_param(full_steps, uint, 0644);
MODULE_PARM_DESC(full_steps, "liteflow_full: minibatches trained per round, from the replay (default 4, as the slow path)");

static unsigned int full_budget = 16;
module_param(full_budget, uint, 0644);
MODULE_PARM_DESC(full_budget, "liteflow_full: samples trained at most per ACK (bounded softirq work, default 16)");

static unsigned int full_publish_steps = 8;
module_param(full_publish_steps, uint, 0644);
MODULE_PARM_DESC(full_publish_steps, "liteflow_full: requantize and load a snapshot every this many steps (default 8)");

static unsigned int full_lr_q32 = 4294967;	/* 1e-3 */
module_param(full_lr_q32, uint, 0444);
MODULE_PARM_DESC(full_lr_q32, "liteflow_full: SGD learning rate x 2^32 (default 1e-3)");

static unsigned int full_replay = 2048;
module_param(full_replay, uint, 0444);
MODULE_PARM_DESC(full_replay, "liteflow_full: replay capacity, samples (default 2048)");

static ulong max_macs = LF_CC_MAX_MACS;
module_param(max_macs, ulong, 0444);
MODULE_PARM_DESC(max_macs, "cost budget of a snapshot: multiply-accumulates per query (default 8192)");

enum lf_cc_flags {
	LF_CC_MI_OPEN		= 1 << 0,	/* an MI is being measured */
	LF_CC_USER_DECIDED	= 1 << 1,	/* liteflow_user: an agent's answer set the rate */
};
#define LF_CC_FLAG_BITS		2
#define LF_CC_STALE_MIS_BITS	6	/* holds LF_CC_STALE_MIS_MAX */

/* Per-socket state, in the congestion-control private area (88 bytes on 4.15). */
struct lf_cc {
	union {
		u64 snapshot_id;	/* decided the current MI's rate; 0 = fallback */
		struct {		/* liteflow_user, which has no snapshot of its own */
			u32 seq;	/* newest post, 0 = none pending */
			u32 waiting_us;	/* since when no answer came (tcp_mstamp) */
		} user;
	};
	u32 rate_Bps;			/* pacing rate set for the current MI */
	u32 mi_start_us;		/* tcp_mstamp at the MI's first ACK (low 32 bits) */
	u16 mi_target_units;		/* the MI ends once it lasted this long */
	u16 mi_min_rtt_units;		/* the MI's least RTT sample; 0 = none yet */
	u32 rtt_sum_us[2];		/* RTT samples of the MI's two time halves */
	u16 rtt_count[2];
	u32 segs_out_start;		/* tp->data_segs_out at the MI's start */
	u32 delivered_start;		/* tp->delivered at the MI's start */
	u16 segs_lost;			/* rs->losses summed over the MI, saturating */
	s16 stale_drained_segs;		/* struct lf_cc_stale, when stale_min is set */
	u32 min_mean_rtt_us;		/* over the last LF_CC_MIN_RTT_WIN_MS; 0 = none yet */
	u32 min_stamp_ms;		/* when that minimum was taken */
	u8 flags:LF_CC_FLAG_BITS;	/* enum lf_cc_flags */
	u8 stale_mis:LF_CC_STALE_MIS_BITS;	/* struct lf_cc_stale */
	s8 action;			/* the current MI's decision, output units */
	s8 history[LF_CC_INPUTS];	/* encoded features, oldest MI first */
	u32 user_posted_us;		/* liteflow_user: the last post (tcp_mstamp) */
};

/*
 * liteflow_user's answers, by sequence number modulo the slot count.  The
 * agent's answer writes out, then seq (release); a socket reads seq, then
 * out (acquire).  A slot reused by a newer post before its answer was read
 * just makes the older post time out.
 */
struct lf_cc_answer {
	u32 seq;
	s8 out;
	u64 posted_ns;
};

static struct lf_cc_answer lf_cc_answers[LF_CC_ANSWER_SLOTS];
static atomic_t lf_cc_user_next_seq = ATOMIC_INIT(0);
static struct tcp_congestion_ops lf_cc_user_ops __read_mostly;
static struct tcp_congestion_ops lf_cc_full_ops __read_mostly;

/* Counters, per CPU, summed when read. */
struct lf_cc_stats {
	u64 intervals;			/* MIs ended */
	u64 decisions;			/* MIs the snapshot decided */
	u64 fallback_no_snapshot;	/* MIs decided by the fallback: no snapshot */
	u64 fallback_error;		/* ... a query failed otherwise */
	u64 stale_min_resets;		/* minimums the path had outgrown, let go */
	u64 samples;			/* decisions reported with their outcome */
	u64 user_posts;			/* liteflow_user: features sent to the agent */
	u64 user_post_errors;		/* ... posts that failed (no agent, socket full) */
	u64 user_answers;		/* ... answers the agent sent back */
	u64 user_applied;		/* ... answers a socket applied */
	u64 user_late;			/* ... answers later than user_timeout_ms */
	u64 user_timeouts;		/* ... waits for an answer past user_timeout_ms */
	u64 full_samples;		/* liteflow_full: labelled decisions added to the replay */
	u64 full_trained;		/* ... samples trained on (forward + backward) */
	u64 full_busy;			/* ... times the trainer was busy on another CPU: skipped */
	u64 full_published;		/* ... snapshots requantized and loaded */
	u64 full_publish_errors;	/* ... loads the core refused */
};

static DEFINE_PER_CPU(struct lf_cc_stats, lf_cc_stats);
static u32 lf_cc_app_id;
static u32 lf_cc_full_app_id;

/*
 * kernel-full's one network, shared by every liteflow_full socket.  The
 * datapath only ever trylocks it (a busy trainer skips, counted), the
 * publication work and the weights upload lock it with bottom halves off.
 */
struct lf_cc_full {
	spinlock_t lock;
	bool loaded;			/* master weights uploaded */
	struct lf_full_net net;
	struct lf_full_trainer tr;
	struct lf_full_replay replay;
	u32 since_round;		/* decisions since the last owed round */
	u64 published_at;		/* tr.steps at the last publication */
	struct work_struct publish;
	struct lf_full_net scratch;	/* the publication's copy, outside the lock */
	struct lf_full_snapshot snap;
	struct mutex upload_lock;
	size_t staged;			/* bytes of the weights upload so far */
	s32 staging[LF_FULL_UPLOAD_WORDS];
};

static struct lf_cc_full *lf_cc_full;
static struct dentry *lf_cc_debugfs;

static u64 lf_cc_min_rate_Bps(void)
{
	return (u64)READ_ONCE(min_rate_kbps) * 1000 / 8;
}

/* The smoothed RTT, or the minimum one before the first smoothing. */
static u32 lf_cc_srtt_us(const struct tcp_sock *tp)
{
	u32 srtt_us = tp->srtt_us >> 3;

	if (!srtt_us) {
		srtt_us = tcp_min_rtt(tp);
		if (srtt_us == ~0U)
			srtt_us = 0;
	}
	return srtt_us;
}

static void lf_cc_set_rate(struct sock *sk, struct lf_cc *ca, u64 rate_Bps)
{
	rate_Bps = lf_cc_clamp_rate(rate_Bps, lf_cc_min_rate_Bps(),
				    min_t(u64, U32_MAX,
					  READ_ONCE(sk->sk_max_pacing_rate)));
	ca->rate_Bps = (u32)rate_Bps;
	lf_set_pacing_rate(sk, rate_Bps);
}

/* Initial window over the handshake's RTT, as TCP's first round would send. */
static u64 lf_cc_initial_rate_Bps(const struct tcp_sock *tp)
{
	u32 srtt_us = tp->srtt_us >> 3;

	if (!srtt_us)
		return LF_CC_FALLBACK_RATE_BPS;
	return div64_u64((u64)TCP_INIT_CWND * tp->mss_cache * LF_CC_USEC_PER_SEC,
			 srtt_us);
}

static void lf_cc_start_mi(struct sock *sk, struct lf_cc *ca)
{
	const struct tcp_sock *tp = tcp_sk(sk);

	ca->mi_start_us = (u32)tp->tcp_mstamp;
	ca->mi_target_units = lf_cc_target_units(lf_cc_mi_target_us(tp->srtt_us >> 3,
								    ca->rate_Bps,
								    tp->mss_cache));
	ca->mi_min_rtt_units = 0;
	ca->rtt_sum_us[0] = ca->rtt_sum_us[1] = 0;
	ca->rtt_count[0] = ca->rtt_count[1] = 0;
	ca->segs_out_start = tp->data_segs_out;
	ca->delivered_start = tp->delivered;
	ca->segs_lost = 0;
	ca->flags |= LF_CC_MI_OPEN;
}

static void lf_cc_init(struct sock *sk)
{
	struct lf_cc *ca = inet_csk_ca(sk);

	LF_CA_PRIV_ASSERT(struct lf_cc);
	BUILD_BUG_ON(LF_CC_USER_DECIDED >= 1 << LF_CC_FLAG_BITS);
	BUILD_BUG_ON(LF_CC_STALE_MIS_MAX >= 1 << LF_CC_STALE_MIS_BITS);
	memset(ca, 0, sizeof(*ca));
	lf_cc_set_rate(sk, ca, lf_cc_initial_rate_Bps(tcp_sk(sk)));
	/* Pace in TCP itself when no fq qdisc does (as tcp_bbr.c). */
	cmpxchg(&sk->sk_pacing_status, SK_PACING_NONE, SK_PACING_NEEDED);
}

static u32 lf_cc_mi_target_of(const struct lf_cc *ca)
{
	return (u32)ca->mi_target_units * LF_CC_RTT_UNIT_US;
}

/*
 * Add one ACK's RTT sample to the half of the MI it falls in, and to the
 * MI's least sample (every sample counts there, even once a half is full).
 */
static void lf_cc_add_rtt(struct lf_cc *ca, u32 elapsed_us, long rtt_us)
{
	int half = (u64)elapsed_us * 2 >= lf_cc_mi_target_of(ca);
	u16 units;

	if (rtt_us <= 0)
		return;
	units = lf_cc_rtt_units(min_t(long, rtt_us, U32_MAX));
	if (!ca->mi_min_rtt_units || units < ca->mi_min_rtt_units)
		ca->mi_min_rtt_units = units;
	if (ca->rtt_count[half] == LF_CC_RTT_COUNT_MAX ||
	    ca->rtt_sum_us[half] > U32_MAX - (u32)rtt_us)
		return;
	ca->rtt_sum_us[half] += (u32)rtt_us;
	ca->rtt_count[half]++;
}

static void lf_cc_measure(const struct tcp_sock *tp, const struct lf_cc *ca,
			  u32 elapsed_us, struct lf_cc_mi *mi)
{
	mi->duration_us = elapsed_us;
	mi->rtt_count[0] = ca->rtt_count[0];
	mi->rtt_count[1] = ca->rtt_count[1];
	mi->rtt_sum_us[0] = ca->rtt_sum_us[0];
	mi->rtt_sum_us[1] = ca->rtt_sum_us[1];
	mi->segs_sent = tp->data_segs_out - ca->segs_out_start;
	mi->segs_delivered = tp->delivered - ca->delivered_start;
	mi->segs_lost = ca->segs_lost;
}

static u32 lf_cc_per_sec(u64 segs, u32 mss, u32 duration_us)
{
	return (u32)min_t(u64, U32_MAX,
			  div64_u64(segs * mss * LF_CC_USEC_PER_SEC,
				    max_t(u32, duration_us, 1)));
}

/*
 * Report the decision that set this MI's rate, with what the MI measured.
 * liteflow_user's samples carry snapshot id 0: the kernel does not know
 * which blob the agent answered with (its slow path does).
 */
static void lf_cc_context_of(const struct tcp_sock *tp, const struct lf_cc *ca,
			     const struct lf_cc_mi *mi, u32 mean_rtt_us,
			     struct lf_cc_context *ctx)
{
	ctx->mi_duration_us = mi->duration_us;
	ctx->pacing_rate_Bps = ca->rate_Bps;
	ctx->send_rate_Bps = lf_cc_per_sec(mi->segs_sent, tp->mss_cache,
					   mi->duration_us);
	ctx->delivery_rate_Bps = lf_cc_per_sec(mi->segs_delivered, tp->mss_cache,
					       mi->duration_us);
	ctx->mean_rtt_us = mean_rtt_us;
	ctx->min_mean_rtt_us = ca->min_mean_rtt_us;
	ctx->segs_sent = mi->segs_sent;
	ctx->segs_delivered = mi->segs_delivered;
	ctx->segs_lost = mi->segs_lost;
	ctx->mss_bytes = tp->mss_cache;
	ctx->mi_min_rtt_us = (u32)ca->mi_min_rtt_units * LF_CC_RTT_UNIT_US;
}

static void lf_cc_full_learn(const s8 *input, const struct lf_cc_context *ctx,
			     s8 action);

static bool lf_cc_is_user(const struct sock *sk);

static void lf_cc_report(const struct sock *sk, const struct lf_cc *ca,
			 const struct lf_cc_mi *mi, u32 mean_rtt_us)
{
	struct lf_cc_context ctx;

	lf_cc_context_of(tcp_sk(sk), ca, mi, mean_rtt_us, &ctx);
	if (inet_csk(sk)->icsk_ca_ops == &lf_cc_full_ops) {
		lf_cc_full_learn(ca->history, &ctx, ca->action);
		return;
	}
	lf_record_sample(lf_cc_app_id, lf_cc_is_user(sk) ? 0 : ca->snapshot_id,
			 ca->history, &ca->action, &ctx);
	this_cpu_inc(lf_cc_stats.samples);
}

/* ---- the user-space deployment (liteflow_user) ------------------------ */

static bool lf_cc_is_user(const struct sock *sk)
{
	return inet_csk(sk)->icsk_ca_ops == &lf_cc_user_ops;
}

static struct lf_cc_answer *lf_cc_slot(u32 seq)
{
	return &lf_cc_answers[seq & (LF_CC_ANSWER_SLOTS - 1)];
}

/* The agent's answer (core, netlink receive, bottom halves off). */
static void lf_cc_on_answer(u32 app_id, u64 seq, const s8 *out)
{
	struct lf_cc_answer *slot = lf_cc_slot((u32)seq);

	this_cpu_inc(lf_cc_stats.user_answers);
	if (ktime_get_ns() - READ_ONCE(slot->posted_ns) >
	    (u64)READ_ONCE(user_timeout_ms) * NSEC_PER_MSEC)
		this_cpu_inc(lf_cc_stats.user_late);
	WRITE_ONCE(slot->out, out[0]);
	smp_store_release(&slot->seq, (u32)seq);
}

/*
 * Has the socket been waiting for an answer longer than user_timeout_ms?
 * Counted once per timeout period: posts keep going out (the newest one
 * supersedes the others), so what times out is the wait, not a post.
 */
static bool lf_cc_user_timed_out(struct lf_cc *ca, u32 now_us)
{
	if (!ca->user.seq ||
	    now_us - ca->user.waiting_us <= READ_ONCE(user_timeout_ms) * USEC_PER_MSEC)
		return false;
	ca->user.waiting_us = now_us;
	return true;
}

/* Ship the history to the agent; the socket keeps its rate meanwhile. */
static void lf_cc_user_post(struct sock *sk, struct lf_cc *ca)
{
	u32 now_us = (u32)tcp_sk(sk)->tcp_mstamp;
	struct lf_cc_answer *slot;
	u32 seq;
	int err;

	do {
		seq = (u32)atomic_inc_return(&lf_cc_user_next_seq);
	} while (!seq);
	slot = lf_cc_slot(seq);
	WRITE_ONCE(slot->seq, 0);
	WRITE_ONCE(slot->posted_ns, ktime_get_ns());
	ca->user_posted_us = now_us;	/* failed or not: the next post waits an interval */
	err = lf_post_user(lf_cc_app_id, seq, ca->history);
	if (err) {
		this_cpu_inc(lf_cc_stats.user_post_errors);
		return;
	}
	this_cpu_inc(lf_cc_stats.user_posts);
	if (!ca->user.seq)
		ca->user.waiting_us = now_us;
	ca->user.seq = seq;
}

/* Per ACK: apply the newest post's answer once it is there; count waits past the timeout. */
static void lf_cc_user_poll(struct sock *sk, struct lf_cc *ca)
{
	u32 now_us = (u32)tcp_sk(sk)->tcp_mstamp;
	struct lf_cc_answer *slot;
	u32 interval_us;
	s8 action;

	if (ca->user.seq) {
		slot = lf_cc_slot(ca->user.seq);
		if (smp_load_acquire(&slot->seq) == ca->user.seq) {
			action = READ_ONCE(slot->out);
			ca->action = action;
			ca->flags |= LF_CC_USER_DECIDED;
			lf_cc_set_rate(sk, ca, lf_cc_apply_action(ca->rate_Bps, action));
			ca->user.seq = 0;
			this_cpu_inc(lf_cc_stats.user_applied);
		} else if (lf_cc_user_timed_out(ca, now_us)) {
			this_cpu_inc(lf_cc_stats.user_timeouts);
		}
	}
	interval_us = READ_ONCE(user_interval_us);
	if (interval_us && now_us - ca->user_posted_us >= interval_us)
		lf_cc_user_post(sk, ca);
}

/* ---- kernel-full (liteflow_full) ---------------------------------------- */

/* A decision with its outcome, labelled by the teacher, into the replay; a round owes steps. */
static void lf_cc_full_learn(const s8 *input, const struct lf_cc_context *ctx,
			     s8 action)
{
	struct lf_cc_full *f = lf_cc_full;
	s32 label = lf_full_teacher_label(ctx, action);

	if (!spin_trylock_bh(&f->lock)) {
		this_cpu_inc(lf_cc_stats.full_busy);
		return;
	}
	lf_full_replay_add(&f->replay, input, label);
	if (++f->since_round >= READ_ONCE(full_round)) {
		lf_full_owe_steps(&f->tr, READ_ONCE(full_steps));
		f->since_round = 0;
	}
	spin_unlock_bh(&f->lock);
	this_cpu_inc(lf_cc_stats.full_samples);
}

/* Per ACK: train what is owed, at most full_budget samples, here, on the datapath's CPU. */
static void lf_cc_full_train(void)
{
	struct lf_cc_full *f = lf_cc_full;
	bool publish = false;
	u32 done;

	if (!READ_ONCE(f->tr.owed) || !READ_ONCE(f->loaded))
		return;
	if (!spin_trylock_bh(&f->lock)) {
		this_cpu_inc(lf_cc_stats.full_busy);
		return;
	}
	done = lf_full_train_replay(&f->net, &f->tr, &f->replay,
				    READ_ONCE(full_budget));
	if (f->tr.steps - f->published_at >= READ_ONCE(full_publish_steps)) {
		f->published_at = f->tr.steps;
		publish = true;
	}
	spin_unlock_bh(&f->lock);
	this_cpu_add(lf_cc_stats.full_trained, done);
	if (publish)
		schedule_work(&f->publish);
}

/* Requantize a copy of the network and load it as cc_full's snapshot (process context). */
static void lf_cc_full_publish(struct work_struct *work)
{
	struct lf_cc_full *f = container_of(work, struct lf_cc_full, publish);
	int err;

	spin_lock_bh(&f->lock);
	memcpy(&f->scratch, &f->net, sizeof(f->net));
	lf_full_reset_ranges(&f->net);	/* the next snapshot: the seed and what follows */
	spin_unlock_bh(&f->lock);
	err = lf_full_requantize(&f->scratch, &f->snap);
	if (!err)
		err = lf_load_spec(lf_cc_full_app_id, get_random_u64() | 1,
				   &f->snap.spec);
	if (err) {
		this_cpu_inc(lf_cc_stats.full_publish_errors);
		pr_warn_ratelimited("kernel-full snapshot not loaded (%d)\n", err);
	} else {
		this_cpu_inc(lf_cc_stats.full_published);
	}
}

/*
 * The master weights and their range seed, LF_FULL_UPLOAD_WORDS
 * little-endian s32 (lf_full_load), written in one or more pieces from
 * offset 0; the last byte loads them.  Rewriting starts over (offset 0).
 */
static ssize_t lf_cc_full_weights_write(struct file *file,
					const char __user *buf, size_t len,
					loff_t *ppos)
{
	struct lf_cc_full *f = lf_cc_full;
	size_t total = sizeof(f->staging);
	int err = 0;

	if (*ppos < 0 || *ppos > total || len > total - *ppos)
		return -EFBIG;
	mutex_lock(&f->upload_lock);
	if (*ppos != f->staged && *ppos) {
		err = -EINVAL;		/* pieces come in order */
		goto out;
	}
	if (copy_from_user((u8 *)f->staging + *ppos, buf, len)) {
		err = -EFAULT;
		goto out;
	}
	f->staged = *ppos + len;
	*ppos += len;
	if (f->staged == total) {
		spin_lock_bh(&f->lock);
		err = lf_full_load(&f->net, f->staging, LF_FULL_UPLOAD_WORDS);
		if (!err)
			f->loaded = true;
		spin_unlock_bh(&f->lock);
		f->staged = 0;
	}
out:
	mutex_unlock(&f->upload_lock);
	return err ? err : len;
}

static const struct file_operations lf_cc_full_weights_fops = {
	.owner	= THIS_MODULE,
	.write	= lf_cc_full_weights_write,
	.llseek	= default_llseek,
};

static int lf_cc_full_alloc(void)
{
	struct lf_cc_full *f;
	int err;

	f = vzalloc(sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->replay.slot = vzalloc((size_t)full_replay * sizeof(*f->replay.slot));
	if (!f->replay.slot || !full_replay) {
		vfree(f->replay.slot);
		vfree(f);
		return -ENOMEM;
	}
	f->replay.capacity = full_replay;
	err = lf_full_trainer_init(&f->tr, full_batch, full_lr_q32,
				   LF_CC_FULL_L2_Q32, get_random_u32());
	if (err) {
		vfree(f->replay.slot);
		vfree(f);
		return err;
	}
	spin_lock_init(&f->lock);
	mutex_init(&f->upload_lock);
	INIT_WORK(&f->publish, lf_cc_full_publish);
	lf_cc_full = f;
	return 0;
}

static void lf_cc_full_free(void)
{
	struct lf_cc_full *f = lf_cc_full;

	cancel_work_sync(&f->publish);
	vfree(f->replay.slot);
	vfree(f);
	lf_cc_full = NULL;
}

/* ---- the MI ----------------------------------------------------------- */

/* lf_cc_stale_min_update() on the socket's packed state. */
static void lf_cc_stale_min(struct lf_cc *ca, u32 mean_rtt_us,
			    const struct lf_cc_mi *mi, u32 now_ms)
{
	struct lf_cc_stale st = {
		.mis = ca->stale_mis,
		.drained_segs = ca->stale_drained_segs,
	};

	if (lf_cc_stale_min_update(&st, &ca->min_mean_rtt_us, &ca->min_stamp_ms,
				   mean_rtt_us, mi, now_ms))
		this_cpu_inc(lf_cc_stats.stale_min_resets);
	ca->stale_mis = st.mis;
	ca->stale_drained_segs = st.drained_segs;
}

/* The MI is over: learn from it, decide the next one's rate. */
static void lf_cc_end_mi(struct sock *sk, struct lf_cc *ca, u32 elapsed_us)
{
	const struct tcp_sock *tp = tcp_sk(sk);
	struct lf_cc_mi mi;
	u32 mean_rtt_us, now_ms;
	s8 action;
	int err;

	lf_cc_measure(tp, ca, elapsed_us, &mi);
	mean_rtt_us = lf_cc_mean_rtt_us(&mi);
	now_ms = (u32)div_u64(tp->tcp_mstamp, USEC_PER_MSEC);
	lf_cc_min_rtt_update(&ca->min_mean_rtt_us, &ca->min_stamp_ms, mean_rtt_us, now_ms);
	if (READ_ONCE(stale_min))
		lf_cc_stale_min(ca, mean_rtt_us, &mi, now_ms);
	if (lf_cc_is_user(sk) ? ca->flags & LF_CC_USER_DECIDED : ca->snapshot_id)
		lf_cc_report(sk, ca, &mi, mean_rtt_us);

	lf_cc_push_history(ca->history, lf_cc_q_latency_inflation(&mi),
			   lf_cc_q_latency_ratio(mean_rtt_us, ca->min_mean_rtt_us),
			   lf_cc_q_send_ratio(mi.segs_sent, mi.segs_delivered));
	this_cpu_inc(lf_cc_stats.intervals);

	if (lf_cc_is_user(sk)) {
		/* the agent decides; every MI, unless posts have an interval of their own */
		if (!READ_ONCE(user_interval_us))
			lf_cc_user_post(sk, ca);
		lf_cc_start_mi(sk, ca);
		return;
	}

	err = lf_query_model_ex(inet_csk(sk)->icsk_ca_ops == &lf_cc_full_ops ?
				lf_cc_full_app_id : lf_cc_app_id,
				ca->history, &action, &ca->snapshot_id, NULL, NULL);
	if (likely(!err)) {
		ca->action = action;
		lf_cc_set_rate(sk, ca, lf_cc_apply_action(ca->rate_Bps, action));
		this_cpu_inc(lf_cc_stats.decisions);
	} else {
		ca->snapshot_id = 0;
		ca->action = 0;
		lf_cc_set_rate(sk, ca, lf_cc_fallback_rate(ca->rate_Bps, &mi,
							   mean_rtt_us,
							   ca->min_mean_rtt_us));
		if (err == -ENOENT)
			this_cpu_inc(lf_cc_stats.fallback_no_snapshot);
		else
			this_cpu_inc(lf_cc_stats.fallback_error);
	}
	lf_cc_start_mi(sk, ca);
}

static LF_CONG_CONTROL_FN(lf_cc_cong_control)
{
	struct tcp_sock *tp = tcp_sk(sk);
	struct lf_cc *ca = inet_csk_ca(sk);
	u32 elapsed_us;

	if (!(ca->flags & LF_CC_MI_OPEN))
		lf_cc_start_mi(sk, ca);
	elapsed_us = (u32)tp->tcp_mstamp - ca->mi_start_us;
	lf_cc_add_rtt(ca, elapsed_us, rs->rtt_us);
	if (rs->losses > 0)
		ca->segs_lost = min_t(u32, (u32)ca->segs_lost + rs->losses, U16_MAX);
	if (elapsed_us >= lf_cc_mi_target_of(ca) && ca->rtt_count[0] + ca->rtt_count[1])
		lf_cc_end_mi(sk, ca, elapsed_us);
	if (lf_cc_is_user(sk))
		lf_cc_user_poll(sk, ca);
	else if (inet_csk(sk)->icsk_ca_ops == &lf_cc_full_ops)
		lf_cc_full_train();

	lf_tcp_snd_cwnd_set(tp, min_t(u32, lf_cc_cwnd_cap(ca->rate_Bps,
							   lf_cc_srtt_us(tp),
							   tp->mss_cache),
				       tp->snd_cwnd_clamp));
}

/* The rate, not ssthresh, reacts to loss: keep slow start out of the way. */
static u32 lf_cc_ssthresh(struct sock *sk)
{
	return tcp_sk(sk)->snd_ssthresh;
}

static u32 lf_cc_undo_cwnd(struct sock *sk)
{
	return lf_tcp_snd_cwnd(tcp_sk(sk));
}

/* ---- counters --------------------------------------------------------- */

static int lf_cc_stats_get(char *buf, const struct kernel_param *kp)
{
	struct lf_cc_stats sum = {};
	const struct lf_cc_stats *c;
	int cpu;

	for_each_possible_cpu(cpu) {
		c = per_cpu_ptr(&lf_cc_stats, cpu);
		sum.intervals += READ_ONCE(c->intervals);
		sum.decisions += READ_ONCE(c->decisions);
		sum.fallback_no_snapshot += READ_ONCE(c->fallback_no_snapshot);
		sum.fallback_error += READ_ONCE(c->fallback_error);
		sum.stale_min_resets += READ_ONCE(c->stale_min_resets);
		sum.samples += READ_ONCE(c->samples);
		sum.user_posts += READ_ONCE(c->user_posts);
		sum.user_post_errors += READ_ONCE(c->user_post_errors);
		sum.user_answers += READ_ONCE(c->user_answers);
		sum.user_applied += READ_ONCE(c->user_applied);
		sum.user_late += READ_ONCE(c->user_late);
		sum.user_timeouts += READ_ONCE(c->user_timeouts);
		sum.full_samples += READ_ONCE(c->full_samples);
		sum.full_trained += READ_ONCE(c->full_trained);
		sum.full_busy += READ_ONCE(c->full_busy);
		sum.full_published += READ_ONCE(c->full_published);
		sum.full_publish_errors += READ_ONCE(c->full_publish_errors);
	}
	return scnprintf(buf, PAGE_SIZE,
			 "app_id %u\nintervals %llu\ndecisions %llu\nfallback_no_snapshot %llu\nfallback_error %llu\n"
			 "stale_min_resets %llu\nsamples %llu\n"
			 "user_posts %llu\nuser_post_errors %llu\nuser_answers %llu\nuser_applied %llu\nuser_late %llu\nuser_timeouts %llu\n"
			 "full_samples %llu\nfull_trained %llu\nfull_busy %llu\nfull_published %llu\nfull_publish_errors %llu\n",
			 lf_cc_app_id, sum.intervals, sum.decisions,
			 sum.fallback_no_snapshot, sum.fallback_error,
			 sum.stale_min_resets, sum.samples, sum.user_posts, sum.user_post_errors,
			 sum.user_answers, sum.user_applied, sum.user_late,
			 sum.user_timeouts, sum.full_samples, sum.full_trained,
			 sum.full_busy, sum.full_published,
			 sum.full_publish_errors);
}

static const struct kernel_param_ops lf_cc_stats_ops = {
	.get = lf_cc_stats_get,
};
module_param_cb(stats, &lf_cc_stats_ops, NULL, 0444);
MODULE_PARM_DESC(stats, "counters: MIs, snapshot decisions, fallbacks, samples reported");

/* ---- module ----------------------------------------------------------- */

static struct tcp_congestion_ops lf_cc_full_ops __read_mostly = {
	.flags		= TCP_CONG_NON_RESTRICTED,
	.name		= "liteflow_full",
	.owner		= THIS_MODULE,
	.init		= lf_cc_init,
	.cong_control	= lf_cc_cong_control,
	.ssthresh	= lf_cc_ssthresh,
	.undo_cwnd	= lf_cc_undo_cwnd,
};

static struct tcp_congestion_ops lf_cc_user_ops __read_mostly = {
	.flags		= TCP_CONG_NON_RESTRICTED,
	.name		= "liteflow_user",
	.owner		= THIS_MODULE,
	.init		= lf_cc_init,
	.cong_control	= lf_cc_cong_control,
	.ssthresh	= lf_cc_ssthresh,
	.undo_cwnd	= lf_cc_undo_cwnd,
};

static struct tcp_congestion_ops lf_cc_ops __read_mostly = {
	.flags		= TCP_CONG_NON_RESTRICTED,
	.name		= "liteflow",
	.owner		= THIS_MODULE,
	.init		= lf_cc_init,
	.cong_control	= lf_cc_cong_control,
	.ssthresh	= lf_cc_ssthresh,
	.undo_cwnd	= lf_cc_undo_cwnd,
};

static int __init lf_cc_module_init(void)
{
	struct lf_app_desc desc = {
		.name		= LF_CC_APP_NAME,
		.input_size	= LF_CC_INPUTS,
		.output_size	= LF_CC_OUTPUTS,
		.context_size	= sizeof(struct lf_cc_context),
		.max_macs	= max_macs,
		.quant_mode	= LF_APP_QUANT_FIXED,
		.input_quant	= {
			.zero_point = 0,
			.scale_multiplier = LF_CC_INPUT_QUANT_MULT,
			.scale_shift = LF_CC_INPUT_QUANT_SHIFT,
		},
		.output_quant	= {
			.zero_point = 0,
			.scale_multiplier = LF_CC_OUTPUT_QUANT_MULT,
			.scale_shift = LF_CC_OUTPUT_QUANT_SHIFT,
		},
		.on_answer	= lf_cc_on_answer,
	};
	int err;

	BUILD_BUG_ON(sizeof(struct lf_cc_context) > LF_MAX_CONTEXT);
	err = lf_cc_full_alloc();
	if (err)
		return err;
	err = lf_register_app(&desc, &lf_cc_app_id);
	if (err) {
		pr_err("cannot register app %s (%d)\n", LF_CC_APP_NAME, err);
		goto free_full;
	}
	/* kernel-full's snapshots: the same network and encoding, no context, no agent */
	desc.name = LF_CC_FULL_APP_NAME;
	desc.context_size = 0;
	desc.on_answer = NULL;
	err = lf_register_app(&desc, &lf_cc_full_app_id);
	if (err) {
		pr_err("cannot register app %s (%d)\n", LF_CC_FULL_APP_NAME, err);
		goto unregister_app;
	}
	lf_cc_debugfs = debugfs_create_dir("lf_cc", NULL);
	debugfs_create_file("full_weights", 0200, lf_cc_debugfs, NULL,
			    &lf_cc_full_weights_fops);
	err = tcp_register_congestion_control(&lf_cc_ops);
	if (err)
		goto remove_debugfs;
	err = tcp_register_congestion_control(&lf_cc_user_ops);
	if (err)
		goto unregister_ops;
	err = tcp_register_congestion_control(&lf_cc_full_ops);
	if (err)
		goto unregister_user_ops;
	pr_info("congestion controls liteflow, liteflow_user, liteflow_full use apps %s (id %u) and %s (id %u)\n",
		LF_CC_APP_NAME, lf_cc_app_id, LF_CC_FULL_APP_NAME,
		lf_cc_full_app_id);
	return 0;

unregister_user_ops:
	tcp_unregister_congestion_control(&lf_cc_user_ops);
unregister_ops:
	tcp_unregister_congestion_control(&lf_cc_ops);
remove_debugfs:
	pr_err("cannot register the congestion controls (%d)\n", err);
	debugfs_remove_recursive(lf_cc_debugfs);
	lf_unregister_app(lf_cc_full_app_id);
unregister_app:
	lf_unregister_app(lf_cc_app_id);
free_full:
	lf_cc_full_free();
	return err;
}

/*
 * Sockets using any of the three hold a reference on this module, so the
 * exit only runs once none is left (rmmod fails with EBUSY before), as
 * for any congestion-control module.
 */
static void __exit lf_cc_module_exit(void)
{
	tcp_unregister_congestion_control(&lf_cc_full_ops);
	tcp_unregister_congestion_control(&lf_cc_user_ops);
	tcp_unregister_congestion_control(&lf_cc_ops);
	debugfs_remove_recursive(lf_cc_debugfs);
	lf_unregister_app(lf_cc_full_app_id);
	lf_unregister_app(lf_cc_app_id);
	lf_cc_full_free();	/* after the app: no publication can start */
}

module_init(lf_cc_module_init);
module_exit(lf_cc_module_exit);

MODULE_AUTHOR("LiteFlow Testbed");
MODULE_DESCRIPTION("LiteFlow congestion control: Aurora-style rate control by an in-kernel NN snapshot");
MODULE_LICENSE("GPL");
