// SPDX-License-Identifier: GPL-2.0
/*
 * LiteFlow upcalls: the "NN deployed in user space" baseline.
 *
 * LiteFlow (Zhang et al., SIGCOMM 2022, sections 2 and 6) argues against
 * running the datapath's NN in user space, because every decision then
 * pays a cross-space round trip: the kernel ships the features to a
 * user-space agent, waits, and applies the answer.  To measure that cost
 * against the in-kernel fast path with the same snapshot and the same
 * arithmetic, the core offers the round trip as a service:
 *
 *   agent  --AGENT_REGISTER(app)-->  kernel     (its portid becomes the app's agent)
 *   kernel --QUERY(app, seq, in)-->  agent      (genlmsg_unicast, never blocks)
 *   agent  --ANSWER(app, seq, out)-> kernel     (wakes the waiting caller)
 *
 * lf_query_user() does one round trip from process context and sleeps on a
 * completion until the answer with its sequence number arrives, the
 * timeout expires or a signal comes; nothing waits forever.  Queries of an
 * app are serialised (one in flight per app, like a single-threaded
 * agent); an answer whose sequence number nobody waits for (it arrived
 * after its query timed out, or the agent made it up) is counted as stale
 * and dropped.  UPCALL_BENCH (lf_netlink.c) times many round trips.
 *
 * Lifetimes.  An app's upcall record is created when an agent first
 * registers for it, under lf_mutex so it cannot race with the app's
 * unregistration; it is freed when the app goes (lf_upcall_app_gone) or
 * when the core unloads, and is refcounted so a sleeping query keeps it
 * alive.  The agent is forgotten when its socket closes (NETLINK_URELEASE)
 * or another socket registers; a query waiting on it fails at once.
 * The family lives in the initial namespace only, so agents do too.
 *
 * Asynchronous posts (lf_post_user) are the deployment as user-space
 * congestion-control frameworks run it: the datapath, in softirq, ships a
 * query tagged with LF_USER_SEQ_ASYNC and goes on; the agent's answer is
 * handed to the app's on_answer under the lock, which the app's
 * unregistration also takes, so no answer reaches an app that left.  The
 * lock is taken with bottom halves off everywhere for that reason.
 */
#define pr_fmt(fmt) "liteflow: " fmt

#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/kref.h>
#include <linux/mutex.h>
#include <linux/spinlock.h>
#include <linux/completion.h>
#include <linux/jiffies.h>
#include <linux/notifier.h>
#include <linux/netlink.h>
#include <linux/random.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/timekeeping.h>
#include <net/net_namespace.h>
#include "lf_core.h"

#define LF_UPCALL_SLOT_MASK		(LF_MAX_APPS - 1)
/* UPCALL_BENCH gives up after this many timeouts in a row (agent hung). */
#define LF_UPCALL_MAX_TIMEOUTS_IN_ROW	5

struct lf_upcall {
	struct kref ref;
	u32 app_id;
	u16 input_size;
	u16 output_size;
	struct mutex query_lock;	/* one query in flight per app */
	u64 next_seq;			/* query_lock; 0 is never a seq */
	/* lf_upcall_lock: */
	u32 agent_portid;		/* 0 = no agent */
	bool gone;			/* the app unregistered */
	u64 wait_seq;			/* seq of the query waiting, 0 = none */
	s8 *answer;			/* where its answer goes (caller's buffer) */
	int answer_err;
	u64 stale_answers;
	lf_answer_fn on_answer;		/* the app's, for asynchronous answers */
	struct completion done;
};

/* Serialises the table and every record's agent / waiter fields. */
static DEFINE_SPINLOCK(lf_upcall_lock);
static struct lf_upcall *lf_upcalls[LF_MAX_APPS];	/* lf_upcall_lock */

/* ---- records ---------------------------------------------------------- */

static void lf_upcall_free(struct kref *ref)
{
	kfree(container_of(ref, struct lf_upcall, ref));
}

static void lf_upcall_put(struct lf_upcall *up)
{
	kref_put(&up->ref, lf_upcall_free);
}

/* Caller holds lf_upcall_lock. */
static struct lf_upcall *lf_upcall_find_locked(u32 app_id)
{
	struct lf_upcall *up = lf_upcalls[app_id & LF_UPCALL_SLOT_MASK];

	return up && up->app_id == app_id ? up : NULL;
}

/* A referenced record, or NULL if no agent ever registered for the app. */
static struct lf_upcall *lf_upcall_get(u32 app_id)
{
	struct lf_upcall *up;

	spin_lock_bh(&lf_upcall_lock);
	up = lf_upcall_find_locked(app_id);
	if (up)
		kref_get(&up->ref);
	spin_unlock_bh(&lf_upcall_lock);
	return up;
}

/* Caller holds lf_upcall_lock: fail the waiting query, if any, with @err. */
static void lf_upcall_abort_waiter_locked(struct lf_upcall *up, int err)
{
	if (!up->wait_seq)
		return;
	up->answer_err = err;
	up->wait_seq = 0;
	up->answer = NULL;
	complete(&up->done);
}

/* Caller holds lf_upcall_lock; the table's reference goes to the caller. */
static void lf_upcall_unlink_locked(struct lf_upcall *up)
{
	lf_upcalls[up->app_id & LF_UPCALL_SLOT_MASK] = NULL;
	up->gone = true;
	up->agent_portid = 0;
	lf_upcall_abort_waiter_locked(up, -ENOENT);
}

static struct lf_upcall *lf_upcall_alloc(const struct lf_app *app)
{
	struct lf_upcall *up = kzalloc(sizeof(*up), GFP_KERNEL);

	if (!up)
		return NULL;
	kref_init(&up->ref);
	up->app_id = app->id;
	up->input_size = app->input_size;
	up->output_size = app->output_size;
	up->on_answer = app->on_answer;
	mutex_init(&up->query_lock);
	init_completion(&up->done);
	return up;
}

/*
 * Make @portid the agent of @app.  Caller holds lf_mutex, so the app
 * cannot unregister meanwhile and a record never outlives its app.
 */
int lf_upcall_register_locked(struct lf_app *app, u32 portid)
{
	struct lf_upcall *fresh = NULL, *up;

	if (!portid)
		return -EINVAL;
	spin_lock_bh(&lf_upcall_lock);
	up = lf_upcall_find_locked(app->id);
	spin_unlock_bh(&lf_upcall_lock);
	if (!up) {
		fresh = lf_upcall_alloc(app);
		if (!fresh)
			return -ENOMEM;
	}

	spin_lock_bh(&lf_upcall_lock);
	up = lf_upcall_find_locked(app->id);
	if (!up) {
		up = fresh;
		fresh = NULL;
		lf_upcalls[app->id & LF_UPCALL_SLOT_MASK] = up;
	}
	if (up->agent_portid != portid)
		lf_upcall_abort_waiter_locked(up, -ENOTCONN);
	up->agent_portid = portid;
	spin_unlock_bh(&lf_upcall_lock);
	kfree(fresh);
	return 0;
}

/* The app is unregistering (caller holds lf_mutex): forget its agent. */
void lf_upcall_app_gone(u32 app_id)
{
	struct lf_upcall *up;

	spin_lock_bh(&lf_upcall_lock);
	up = lf_upcall_find_locked(app_id);
	if (up)
		lf_upcall_unlink_locked(up);
	spin_unlock_bh(&lf_upcall_lock);
	if (up)
		lf_upcall_put(up);
}

/* Caller holds lf_upcall_lock: hand an asynchronous answer to the app. */
static int lf_upcall_deliver_locked(struct lf_upcall *up, u64 seq,
				    const s8 *out, u32 len)
{
	if (len != up->output_size)
		return -EINVAL;
	if (!up->on_answer || up->gone)
		return -ENOENT;
	up->on_answer(up->app_id, seq & ~LF_USER_SEQ_ASYNC, out);
	return 0;
}

/*
 * ANSWER from @portid.  0 if it completed the query waiting for @seq;
 * -ESTALE if nobody waits for that seq (counted); -EPERM if @portid is not
 * the app's agent; -ENOENT no agent record for the app.  An answer of the
 * wrong size fails the waiting query with -EBADMSG.
 */
int lf_upcall_answer(u32 app_id, u32 portid, u64 seq, const s8 *out,
		     u32 len)
{
	struct lf_upcall *up;
	int err = 0;

	spin_lock_bh(&lf_upcall_lock);
	up = lf_upcall_find_locked(app_id);
	if (!up) {
		err = -ENOENT;
	} else if (!up->agent_portid || up->agent_portid != portid) {
		err = -EPERM;
	} else if (seq & LF_USER_SEQ_ASYNC) {
		err = lf_upcall_deliver_locked(up, seq, out, len);
	} else if (!seq || up->wait_seq != seq) {
		up->stale_answers++;
		err = -ESTALE;
	} else if (len != up->output_size) {
		lf_upcall_abort_waiter_locked(up, -EBADMSG);
		err = -EINVAL;
	} else {
		memcpy(up->answer, out, len);
		up->answer_err = 0;
		up->wait_seq = 0;
		up->answer = NULL;
		complete(&up->done);
	}
	spin_unlock_bh(&lf_upcall_lock);
	return err;
}

/* ---- one round trip --------------------------------------------------- */

/*
 * Send @in to the agent and sleep until its answer lands in @out.  Caller
 * holds a reference and up->query_lock.  -ENOTCONN no agent (or it left),
 * -ENOENT the app left, -ETIMEDOUT, -EINTR on a signal, -EBADMSG a
 * malformed answer, or the send's errno (-EAGAIN: agent's socket full).
 */
static int lf_upcall_roundtrip(struct lf_upcall *up, const s8 *in, s8 *out,
			       unsigned long timeout_ms)
{
	long left;
	u32 portid;
	u64 seq;
	int err;

	seq = ++up->next_seq;
	spin_lock_bh(&lf_upcall_lock);
	portid = up->agent_portid;
	err = up->gone ? -ENOENT : portid ? 0 : -ENOTCONN;
	if (!err) {
		reinit_completion(&up->done);
		up->wait_seq = seq;
		up->answer = out;
		up->answer_err = -ETIMEDOUT;
	}
	spin_unlock_bh(&lf_upcall_lock);
	if (err)
		return err;

	err = lf_netlink_send_query(portid, up->app_id, seq, in, up->input_size,
				    GFP_KERNEL);
	if (err) {
		if (err == -ECONNREFUSED)	/* socket gone, URELEASE on its way */
			err = -ENOTCONN;
	} else {
		left = wait_for_completion_interruptible_timeout(&up->done,
					msecs_to_jiffies(timeout_ms));
		if (left < 0)
			err = -EINTR;
	}

	spin_lock_bh(&lf_upcall_lock);
	if (up->wait_seq == seq) {	/* not answered: timed out, signal, send error */
		up->wait_seq = 0;
		up->answer = NULL;
		if (!err)
			err = -ETIMEDOUT;
	} else if (!err) {
		err = up->answer_err;
	}
	spin_unlock_bh(&lf_upcall_lock);
	return err;
}

int lf_query_user(u32 app_id, const s8 *in, s8 *out, unsigned long timeout_ms)
{
	struct lf_upcall *up;
	int err;

	might_sleep();
	if (!timeout_ms || timeout_ms > LF_NL_UPCALL_MAX_TIMEOUT_MS)
		return -EINVAL;
	up = lf_upcall_get(app_id);
	if (!up)
		return -ENOTCONN;
	err = mutex_lock_interruptible(&up->query_lock);
	if (!err) {
		err = lf_upcall_roundtrip(up, in, out, timeout_ms);
		mutex_unlock(&up->query_lock);
	} else {
		err = -EINTR;
	}
	lf_upcall_put(up);
	return err;
}
EXPORT_SYMBOL_GPL(lf_query_user);

/* ---- asynchronous posts ------------------------------------------------ */

int lf_post_user(u32 app_id, u64 seq, const s8 *in)
{
	struct lf_upcall *up;
	u16 input_size = 0;
	u32 portid = 0;
	int err;

	if (seq & LF_USER_SEQ_ASYNC)
		return -EINVAL;
	spin_lock_bh(&lf_upcall_lock);
	up = lf_upcall_find_locked(app_id);
	if (up && !up->gone && up->on_answer) {
		portid = up->agent_portid;
		input_size = up->input_size;
	}
	err = !up || up->gone ? -ENOTCONN : !up->on_answer ? -EINVAL :
	      portid ? 0 : -ENOTCONN;
	spin_unlock_bh(&lf_upcall_lock);
	if (err)
		return err;
	err = lf_netlink_send_query(portid, app_id, seq | LF_USER_SEQ_ASYNC, in,
				    input_size, GFP_ATOMIC);
	return err == -ECONNREFUSED ? -ENOTCONN : err;
}
EXPORT_SYMBOL_GPL(lf_post_user);

/* ---- benchmark -------------------------------------------------------- */

static u64 lf_upcall_stale(struct lf_upcall *up)
{
	u64 stale;

	spin_lock_bh(&lf_upcall_lock);
	stale = up->stale_answers;
	spin_unlock_bh(&lf_upcall_lock);
	return stale;
}

/*
 * The loop of UPCALL_BENCH.  Failed round trips are counted, not fatal;
 * the run stops early (the rest counted as errors) when the agent or the
 * app leaves or after LF_UPCALL_MAX_TIMEOUTS_IN_ROW timeouts in a row.
 */
static int lf_upcall_bench_loop(struct lf_upcall *up, u32 iterations,
				unsigned long timeout_ms,
				struct lf_upcall_bench *res)
{
	s8 input[LF_MAX_UNITS], output[LF_MAX_UNITS];
	u32 done, timeouts_in_row = 0;
	u64 start = ktime_get_ns();
	int err = 0;

	get_random_bytes(input, up->input_size);
	for (done = 0; done < iterations; done++, res->iterations = done) {
		/* bounded per request: user space asks again for the rest */
		if (ktime_get_ns() - start >= LF_NL_UPCALL_MAX_NS)
			break;
		if (signal_pending(current))
			return -EINTR;
		if (mutex_lock_interruptible(&up->query_lock))
			return -EINTR;
		err = lf_upcall_roundtrip(up, input, output, timeout_ms);
		mutex_unlock(&up->query_lock);
		if (err == -EINTR)
			return err;
		if (err) {
			res->errors++;
			if (err == -ETIMEDOUT) {
				res->timeouts++;
				timeouts_in_row++;
			}
			if (err == -ENOTCONN || err == -ENOENT ||
			    timeouts_in_row >= LF_UPCALL_MAX_TIMEOUTS_IN_ROW) {
				res->errors += iterations - done - 1;
				res->iterations = iterations;
				break;
			}
		} else {
			timeouts_in_row = 0;
		}
		cond_resched();
	}
	return 0;
}

int lf_upcall_bench(u32 app_id, u32 iterations, unsigned long timeout_ms,
		    struct lf_upcall_bench *res)
{
	struct lf_upcall *up;
	u64 start, stale;
	int err;

	memset(res, 0, sizeof(*res));
	up = lf_upcall_get(app_id);
	if (!up)
		return -ENOTCONN;
	spin_lock_bh(&lf_upcall_lock);
	err = up->gone ? -ENOENT : up->agent_portid ? 0 : -ENOTCONN;
	spin_unlock_bh(&lf_upcall_lock);
	if (!err) {
		stale = lf_upcall_stale(up);
		start = ktime_get_ns();
		err = lf_upcall_bench_loop(up, iterations, timeout_ms, res);
		res->total_ns = ktime_get_ns() - start;
		res->stale_answers = lf_upcall_stale(up) - stale;
	}
	lf_upcall_put(up);
	return err;
}

/* ---- agent sockets ---------------------------------------------------- */

/* A generic netlink socket closed: forget it wherever it was an agent. */
static int lf_upcall_netlink_event(struct notifier_block *nb,
				   unsigned long event, void *ptr)
{
	struct netlink_notify *n = ptr;
	struct lf_upcall *up;
	unsigned int i;

	if (event != NETLINK_URELEASE || n->protocol != NETLINK_GENERIC ||
	    !net_eq(n->net, &init_net) || !n->portid)
		return NOTIFY_DONE;
	spin_lock_bh(&lf_upcall_lock);
	for (i = 0; i < LF_MAX_APPS; i++) {
		up = lf_upcalls[i];
		if (!up || up->agent_portid != n->portid)
			continue;
		up->agent_portid = 0;
		lf_upcall_abort_waiter_locked(up, -ENOTCONN);
	}
	spin_unlock_bh(&lf_upcall_lock);
	return NOTIFY_DONE;
}

static struct notifier_block lf_upcall_notifier = {
	.notifier_call	= lf_upcall_netlink_event,
};

int __init lf_upcall_init(void)
{
	return netlink_register_notifier(&lf_upcall_notifier);
}

/* The family is gone, so no handler runs and no new query can start. */
void lf_upcall_exit(void)
{
	struct lf_upcall *up;
	unsigned int i;

	netlink_unregister_notifier(&lf_upcall_notifier);
	for (i = 0; i < LF_MAX_APPS; i++) {
		spin_lock_bh(&lf_upcall_lock);
		up = lf_upcalls[i];
		if (up)
			lf_upcall_unlink_locked(up);
		spin_unlock_bh(&lf_upcall_lock);
		if (up)
			lf_upcall_put(up);
	}
}
