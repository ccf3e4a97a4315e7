/* SPDX-License-Identifier: GPL-2.0 */
/*
 * LiteFlow core: the API that datapath apps, snapshot modules and io
 * (input collector / output enforcer) modules use.  See
 * core/liteflow_core.c for the design; see lf_engine.h for what a snapshot
 * computes and lf_netlink.h for the user-space interface.
 *
 * Lifetimes, in short:
 *  - An app module registers its app (lf_register_app) in its init and
 *    unregisters it in its exit, after its io modules are gone.
 *  - A snapshot module registers its model in init (it becomes active at
 *    once and its module is pinned while it stays active, so rmmod fails
 *    with EBUSY) and calls lf_unregister_model in exit (it can only be
 *    unloaded once it is standby or detached).
 *  - Everything here may sleep except lf_query_model, lf_query_model_ex
 *    and lf_record_sample.
 */
#ifndef _LITEFLOW_H
#define _LITEFLOW_H

#include <linux/types.h>
#include <linux/list.h>
#include <linux/rcupdate.h>
#include <linux/module.h>
#include "lf_engine.h"
#include "lf_netlink.h"

#define LF_APP_NAME_MAX		32	/* bytes, NUL included */
#define LF_MAX_APPS		64	/* apps registered at once (power of 2) */

/*
 * A registered snapshot.  A generated snapshot module owns one statically
 * (owner = THIS_MODULE, mandatory); a hot-loaded one is allocated by the
 * core (owner = NULL, blob holds the weights) and freed by it after an RCU
 * grace period once it leaves both slots.
 */
struct lf_model {
	u32 app_id;
	u64 snapshot_id;		/* != 0, unique among loaded snapshots (-EEXIST) */
	struct lf_snapshot_spec spec;
	struct module *owner;
	/* private to the core */
	void *blob;
	struct rcu_head rcu;
};

#define LF_MAX_CONTEXT		64	/* bytes of app context per sample */

/*
 * What an app is, declared once at registration.
 *
 * Quantization.  TFLite recalibrates scales at every conversion, so an app
 * that encodes features or decodes decisions with constants it was built
 * with must never be served a snapshot quantized differently: with
 * LF_APP_QUANT_FIXED the core refuses (-EPROTO) any snapshot whose
 * input_quant or output_quant is not exactly the declared one, whichever
 * way it arrives (insmod or hot load).  An app that passes raw int8 and
 * never interprets it (lf_test) declares LF_APP_QUANT_ANY and may read
 * the active snapshot's quantization with each decision
 * (lf_query_model_ex).
 *
 * Context.  An app with context_size > 0 ships, with each sampled
 * (input, output) pair, context_size bytes of its own (a congestion
 * controller: what the interval after the decision delivered), so the slow
 * path can learn from what followed a decision.  Such an app reports its
 * samples itself, once the outcome is known (lf_record_sample);
 * lf_query_model never samples for it.
 */
/*
 * The user-space deployment's answer to a query posted with lf_post_user:
 * @seq as posted, @out output_size values.  Called from the netlink
 * receive path with bottom halves off and the upcall lock held: it must
 * not sleep and should only store the answer where the datapath finds it.
 * Never called after lf_unregister_app returns.
 */
typedef void (*lf_answer_fn)(u32 app_id, u64 seq, const s8 *out);

enum lf_app_quant_mode {
	LF_APP_QUANT_FIXED	= 0,	/* snapshots must use input_quant/output_quant */
	LF_APP_QUANT_ANY	= 1,	/* any quantization; the app reads it per query */
};

struct lf_app_desc {
	const char *name;		/* < LF_APP_NAME_MAX bytes */
	u16 input_size;			/* 1..LF_MAX_UNITS */
	u16 output_size;		/* 1..LF_MAX_UNITS */
	u16 context_size;		/* 0..LF_MAX_CONTEXT bytes per sample */
	u64 max_macs;			/* > 0, see lf_register_app */
	enum lf_app_quant_mode quant_mode;
	struct lf_quant input_quant;	/* LF_APP_QUANT_FIXED only */
	struct lf_quant output_quant;	/* LF_APP_QUANT_FIXED only */
	lf_answer_fn on_answer;		/* answers to lf_post_user, or NULL */
};

/*
 * Register an app.  @desc->max_macs is the most multiply-accumulates one
 * query may cost (lf_engine_macs of a snapshot): a query runs whole inside
 * an RCU read section, in softirq for most apps, so the app bounds it, and
 * any snapshot over it is refused with -EFBIG however it arrives.  App ids
 * are never reused while the core is loaded.  -EEXIST for a name already
 * taken, -ENOSPC beyond LF_MAX_APPS, -EINVAL for bad sizes, name, budget,
 * context size or quantization (a zero or negative scale multiplier).
 */
int lf_register_app(const struct lf_app_desc *desc, u32 *app_id);

/*
 * Unregister an app.  -EBUSY while io modules are registered for it (they
 * would query a vanished app); -ENOENT if unknown.  Snapshots are
 * detached: hot-loaded ones are freed, the active module is unpinned, and
 * a snapshot module's later lf_unregister_model returns -ENOENT, which is
 * harmless.  Sampling stops; partial sample batches are discarded.
 */
int lf_unregister_app(u32 app_id);

/*
 * Validate the spec (lf_engine_validate), check its sizes against the app
 * (-EINVAL and a warning naming both otherwise), install it into standby
 * and switch it active; the previous active becomes standby, a standby it
 * displaces is dropped (freed if hot-loaded).  Sleeps (synchronize_rcu).
 * -ENOENT unknown app, -EEXIST a snapshot with this id is already loaded
 * (for any app), -EFBIG over the app's cost budget, -ENODEV owner going
 * away.
 */
int lf_register_model(struct lf_model *model);

/*
 * A snapshot made in the kernel (the kernel-full baseline trains its
 * network in the kernel and requantizes it): serialized as a weight blob
 * and hot-loaded, so it goes through every check a LOAD_MODEL does
 * (sizes, quantization, id, budget) and is owned by the core.  Process
 * context (sleeps).  Errors as lf_register_model, plus -ENOMEM.
 */
int lf_load_spec(u32 app_id, u64 snapshot_id,
		 const struct lf_snapshot_spec *spec);

/*
 * Remove from the standby slot, then wait for a grace period.  The active
 * snapshot's module is pinned, so only rmmod -f gets here with it: it is
 * then taken out of service (the standby, if any, becomes active) before
 * the grace period, and the module may go.
 */
int lf_unregister_model(struct lf_model *model);

/*
 * Fast path: run the active snapshot.  Safe from any context (hard and
 * soft irq included); never sleeps, never logs, takes no lock shared
 * between CPUs.  input holds input_size values, output output_size.
 * -ENOENT: no such app or no active snapshot; -EINVAL: malformed.
 */
int lf_query_model(u32 app_id, const s8 *input, s8 *output);

/*
 * The same, and says which snapshot answered (@snapshot_id, for
 * lf_record_sample) and, when @in_quant / @out_quant are not NULL, how it
 * quantizes (for LF_APP_QUANT_ANY apps).  Outputs are left untouched on
 * error.
 */
int lf_query_model_ex(u32 app_id, const s8 *input, s8 *output,
		      u64 *snapshot_id, struct lf_quant *in_quant,
		      struct lf_quant *out_quant);

/*
 * An app with context (context_size > 0) reports a decision once its
 * outcome is known: the (input, output) pair that snapshot @snapshot_id
 * produced, and context_size bytes of @context.  Sampled like queries
 * (every Nth report per CPU, SET_SAMPLING), batched per CPU, flushed off
 * the hot path when a batch fills or its flush delay passes.  Safe from
 * any context, never waits; a report nobody samples costs a few loads.
 * Reports of apps without context, or with sampling off, are ignored.
 */
void lf_record_sample(u32 app_id, u64 snapshot_id, const s8 *input,
		      const s8 *output, const void *context);

/*
 * Input collectors / output enforcers declare the sizes they produce /
 * consume; the core refuses (-EINVAL) sizes that disagree with the app.
 * Fill name, app_id, sizes and owner; list is private to the core.
 */
struct lf_io {
	const char *name;
	u32 app_id;
	u16 input_size;
	u16 output_size;
	struct module *owner;
	struct list_head list;		/* private to the core */
};

int lf_register_io(struct lf_io *io);
void lf_unregister_io(struct lf_io *io);

/*
 * The user-space deployment baseline (not LiteFlow's fast path): ship
 * @in (input_size values) to the app's user-space agent over generic
 * netlink (LF_CMD_QUERY) and wait up to @timeout_ms
 * (1..LF_NL_UPCALL_MAX_TIMEOUT_MS) for its answer (output_size values in
 * @out).  Process context only: it MAY SLEEP (allocation, mutex, waiting
 * for the agent), so a datapath app calls it from a work item or kthread,
 * never from softirq.  Queries of one app are serialised.  -ENOTCONN no
 * agent registered (or it left), -ENOENT the app unregistered,
 * -ETIMEDOUT, -EINTR on a signal, -EBADMSG a malformed answer, -EINVAL a
 * bad timeout; the send's errno otherwise (-EAGAIN: agent's socket full).
 */
int lf_query_user(u32 app_id, const s8 *in, s8 *out, unsigned long timeout_ms);

/*
 * The user-space deployment as user-space congestion-control frameworks
 * run it: asynchronous.  Ship @in (input_size values) to the app's agent
 * tagged with @seq (< LF_USER_SEQ_ASYNC, the app's own numbering) and
 * return at once; the answer, if any, reaches the app's on_answer later.
 * The datapath never waits: it keeps its last decision until an answer
 * arrives, and counts answers that come late or never.  Safe from any
 * context but hard irq (GFP_ATOMIC, non-blocking send).  -ENOTCONN no
 * agent, -EINVAL @seq out of range or no on_answer, the send's errno
 * otherwise (-EAGAIN: the agent's socket is full; the post is lost).
 */
#define LF_USER_SEQ_ASYNC	(1ULL << 63)	/* QUERY_SEQ bit of an asynchronous post */

int lf_post_user(u32 app_id, u64 seq, const s8 *in);

#endif /* _LITEFLOW_H */
