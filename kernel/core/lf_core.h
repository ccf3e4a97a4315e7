/* SPDX-License-Identifier: GPL-2.0 */
/*
 * LiteFlow core, private: the app record shared by the registry
 * (liteflow_core.c), the sampler (lf_sample.c), the generic netlink
 * family (lf_netlink.c) and the upcalls (lf_upcall.c).  Not for apps;
 * they use liteflow.h.
 */
#ifndef _LF_CORE_H
#define _LF_CORE_H

#include <linux/mutex.h>
#include <linux/percpu.h>
#include <linux/atomic.h>
#include <linux/workqueue.h>
#include <linux/spinlock.h>
#include <net/netlink.h>
#include "liteflow.h"

/* Per-CPU counters of an app, bumped with this_cpu_inc on the fast path. */
struct lf_app_stats {
	u64 queries;
	u64 errors;
	u64 samples_dropped;
};

struct lf_sampler;

/*
 * A weight blob arriving over several LOAD_MODEL requests (a netlink
 * attribute carries under 64 KB, the engine takes larger blobs).  One per
 * app; a chunk at offset 0 starts a new one.
 */
struct lf_blob_stage {
	u64 snapshot_id;
	u32 portid;			/* the sender of the first chunk */
	u32 size;			/* the whole blob */
	u32 received;			/* bytes so far, in order */
	u8 data[] __aligned(8);		/* the parser needs 8-byte alignment */
};

/*
 * Scale shifts an app may declare: the range the engine accepts for a
 * layer's requantization shift (lf_engine.c, TFLite's QuantizeMultiplier
 * in a single-rounding build), which is where a snapshot's scales come from.
 */
#define LF_QUANT_MIN_SHIFT	(-31)
#define LF_QUANT_MAX_SHIFT	30

struct lf_app {
	u32 id;
	char name[LF_APP_NAME_MAX];
	u16 input_size;
	u16 output_size;
	u16 context_size;			/* bytes per sample, 0 = none */
	enum lf_app_quant_mode quant_mode;
	lf_answer_fn on_answer;			/* asynchronous answers, or NULL */
	struct lf_quant input_quant;		/* LF_APP_QUANT_FIXED only */
	struct lf_quant output_quant;		/* LF_APP_QUANT_FIXED only */
	struct lf_model __rcu *active;		/* read under RCU */
	struct lf_model __rcu *standby;		/* lf_mutex; LIST_APPS reads under RCU */
	struct lf_sampler __rcu *sampler;	/* read under RCU, NULL = off */
	struct lf_app_stats __percpu *stats;
	atomic64_t samples_sent;
	u64 max_macs;				/* per query, declared by the app */
	struct lf_blob_stage *stage;		/* lf_mutex, kvmalloc'd, or NULL */
	u64 swaps;				/* lf_mutex, READ_ONCE elsewhere */
	struct list_head ios;			/* lf_mutex */
	u32 n_ios;				/* lf_mutex, READ_ONCE elsewhere */
};

/* Serialises every writer: registry, slots, io list, sampling setup. */
extern struct mutex lf_mutex;

/* liteflow_core.c */
struct lf_app *lf_app_lookup_locked(u32 app_id);
struct lf_app *lf_app_at_locked(unsigned int slot);
struct lf_app *lf_app_lookup_rcu(u32 app_id);
struct lf_app *lf_app_at_rcu(unsigned int slot);
struct lf_model *lf_active_locked(struct lf_app *app);
struct lf_model *lf_standby_locked(struct lf_app *app);
void lf_app_stats_sum(struct lf_app *app, struct lf_app_stats *sum);
int lf_hot_load_locked(struct lf_app *app, u64 snapshot_id, const void *blob,
		       size_t len, struct netlink_ext_ack *extack);
int lf_hot_unload_locked(struct lf_app *app, u64 snapshot_id);
int lf_swap_locked(struct lf_app *app);
int lf_bench(u32 app_id, u32 iterations, u32 *done, u64 *total_ns,
	     u64 *snapshot_id, u64 *macs);

/* lf_sample.c */
int lf_sampling_set_locked(struct lf_app *app, u32 every_n, u32 batch,
			   u32 flush_ms, struct netlink_ext_ack *extack);
void lf_sampling_get_rcu(struct lf_app *app, u32 *every_n, u32 *batch,
			 u32 *flush_ms);
void lf_sample_record(struct lf_app *app, struct lf_sampler *s,
		      u64 snapshot_id, const s8 *input, const s8 *output,
		      const void *context);

/* lf_netlink.c */
int lf_netlink_init(void);
void lf_netlink_exit(void);
int lf_netlink_send_samples(struct lf_app *app, u64 snapshot_id, u32 count,
			    const s8 *inputs, const s8 *outputs,
			    const u8 *contexts);
int lf_netlink_send_query(u32 portid, u32 app_id, u64 seq, const s8 *inputs,
			  u16 input_size, gfp_t gfp);

/* lf_upcall.c: the user-space deployment baseline (agent round trips) */
struct lf_upcall_bench {
	u32 iterations;		/* accounted for: run, or counted as failed */
	u64 total_ns;
	u64 errors;		/* failed round trips, timeouts included */
	u64 timeouts;
	u64 stale_answers;	/* answers nobody waited for */
};

int lf_upcall_init(void);
void lf_upcall_exit(void);
int lf_upcall_register_locked(struct lf_app *app, u32 portid);
void lf_upcall_app_gone(u32 app_id);
int lf_upcall_answer(u32 app_id, u32 portid, u64 seq, const s8 *out, u32 len);
int lf_upcall_bench(u32 app_id, u32 iterations, unsigned long timeout_ms,
		    struct lf_upcall_bench *res);

#endif /* _LF_CORE_H */
