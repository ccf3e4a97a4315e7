// SPDX-License-Identifier: GPL-2.0
/*
 * LiteFlow sampler: ships (input, output) pairs of the fast path to the
 * slow path, which adapts the network on them (Zhang et al., SIGCOMM 2022,
 * the "adapt" interface is fed with batches collected in the kernel).
 *
 * Every Nth query on a CPU (a per-CPU tick, no shared counter) appends its
 * pair to that CPU's fill buffer.  An app with context reports its pairs
 * itself once their outcome is known (lf_record_sample), with
 * context_size bytes of its own that travel next to the pair; its reports
 * go through the same tick and buffers.  A full buffer is handed to a work
 * item (double buffering: the work owns the other buffer while "flushing"
 * is set), which multicasts it to the "samples" group with GFP_KERNEL, off
 * the hot path.  If the fill buffer is full while the previous batch is
 * still being sent, the pair is dropped and counted: the datapath never
 * waits.  A batch only ever holds pairs of one snapshot, so the slow path
 * can tell which snapshot produced every output.
 *
 * A quiet CPU may take long to fill a batch (a congestion controller
 * reports once per monitor interval), and stale samples are worth little
 * to the slow path.  So the work item is a delayed work: the first pair
 * that lands in an empty fill buffer arms it with the sampler's flush
 * delay, and when it fires on a partial batch it hands that batch off as
 * if it were full.  A full batch requeues it with no delay.
 *
 * The per-CPU lock is a raw spinlock taken with interrupts off: queries
 * can nest (process context, softirq, hardirq) on one CPU, and the only
 * other taker is the work item, twice per batch.  Queueing a (delayed)
 * work never sleeps and is allowed from any context.
 *
 * Reconfiguration swaps the RCU-protected sampler, waits a grace period
 * (no query still appends, so nobody queues the work any more), lets a
 * handed-off batch be sent, cancels the flush timer and frees the old
 * sampler; partial batches of the old sampler are discarded.
 */
#define pr_fmt(fmt) "liteflow: " fmt

#include <linux/kernel.h>
#include <linux/jiffies.h>
#include <linux/slab.h>
#include <linux/mm.h>
#include <linux/string.h>
#include <linux/workqueue.h>
#include "compat.h"
#include "lf_core.h"

struct lf_sample_buf {
	u64 snapshot_id;
	u32 count;			/* pairs held */
	unsigned long first;		/* jiffies when the first pair landed */
	s8 *inputs;			/* [batch][input_size] */
	s8 *outputs;			/* [batch][output_size] */
	u8 *contexts;			/* [batch][context_size], NULL if none */
};

struct lf_sample_cpu {
	raw_spinlock_t lock;
	u32 tick;			/* queries since the last sample */
	bool flushing;			/* buf[fill ^ 1] belongs to the work */
	u8 fill;			/* index of the buffer being filled */
	struct lf_sample_buf buf[2];
	struct delayed_work work;	/* sends a handed-off or overdue batch */
	struct lf_sampler *sampler;
	void *mem;			/* both buffers, one allocation */
};

struct lf_sampler {
	u32 every_n;			/* sample every Nth query per CPU, >= 1 */
	u32 batch;			/* pairs per message */
	u32 flush_ms;			/* a partial batch waits at most this */
	unsigned long flush_jiffies;	/* the same, in jiffies, >= 1 */
	struct lf_app *app;
	struct lf_sample_cpu __percpu *cpu;
};

/*
 * Caller holds c->lock with interrupts off.  mod_delayed_work() with no
 * delay also takes back a pending flush timer: the batch goes now.
 */
static void lf_sample_handoff(struct lf_sample_cpu *c)
{
	c->flushing = true;
	c->fill ^= 1;
	mod_delayed_work(system_wq, &c->work, 0);
}

/*
 * Caller holds c->lock with interrupts off; the fill buffer holds pairs.
 * Arm the flush timer for its first pair's deadline.  A no-op while the
 * work is pending: it then runs soon for a handed-off batch and rearms
 * the timer itself on its way out.
 */
static void lf_sample_arm_flush(struct lf_sample_cpu *c,
				const struct lf_sampler *s)
{
	unsigned long due = c->buf[c->fill].first + s->flush_jiffies;
	unsigned long now = jiffies;

	queue_delayed_work(system_wq, &c->work,
			   time_after(due, now) ? due - now : 0);
}

void lf_sample_record(struct lf_app *app, struct lf_sampler *s,
		      u64 snapshot_id, const s8 *input, const s8 *output,
		      const void *context)
{
	u32 in_bytes = app->input_size, out_bytes = app->output_size;
	u32 ctx_bytes = app->context_size;
	struct lf_sample_cpu *c;
	struct lf_sample_buf *b;
	unsigned long flags;

	if (this_cpu_inc_return(s->cpu->tick) < s->every_n)
		return;

	local_irq_save(flags);
	c = this_cpu_ptr(s->cpu);
	c->tick = 0;
	raw_spin_lock(&c->lock);
	b = &c->buf[c->fill];
	if (b->count &&
	    (b->count == s->batch || b->snapshot_id != snapshot_id)) {
		if (c->flushing)
			goto drop;
		lf_sample_handoff(c);
		b = &c->buf[c->fill];
	}
	memcpy(b->inputs + b->count * in_bytes, input, in_bytes);
	memcpy(b->outputs + b->count * out_bytes, output, out_bytes);
	if (ctx_bytes)
		memcpy(b->contexts + b->count * ctx_bytes, context, ctx_bytes);
	if (!b->count++) {
		b->snapshot_id = snapshot_id;
		b->first = jiffies;
		if (b->count < s->batch)
			lf_sample_arm_flush(c, s);
	}
	if (b->count == s->batch && !c->flushing)
		lf_sample_handoff(c);
	raw_spin_unlock(&c->lock);
	local_irq_restore(flags);
	return;

drop:
	raw_spin_unlock(&c->lock);
	local_irq_restore(flags);
	this_cpu_inc(app->stats->samples_dropped);
}

/*
 * Runs for a handed-off batch, or when the flush timer fires: then a
 * partial fill buffer is handed off here, as if it were full.
 */
static void lf_sample_flush_work(struct work_struct *work)
{
	struct lf_sample_cpu *c = container_of(to_delayed_work(work),
					       struct lf_sample_cpu, work);
	struct lf_sampler *s = c->sampler;
	struct lf_sample_buf *b;
	int err;

	raw_spin_lock_irq(&c->lock);
	if (!c->flushing) {
		if (!c->buf[c->fill].count) {	/* its batch went out full */
			raw_spin_unlock_irq(&c->lock);
			return;
		}
		c->flushing = true;
		c->fill ^= 1;
	}
	b = &c->buf[c->fill ^ 1];
	raw_spin_unlock_irq(&c->lock);

	err = lf_netlink_send_samples(s->app, b->snapshot_id, b->count,
				      b->inputs, b->outputs, b->contexts);
	if (!err)
		atomic64_add(b->count, &s->app->samples_sent);
	else if (err != -ESRCH)		/* -ESRCH: nobody listens */
		this_cpu_add(s->app->stats->samples_dropped, b->count);

	raw_spin_lock_irq(&c->lock);
	b->count = 0;
	c->flushing = false;
	/*
	 * Pairs that arrived meanwhile: a full buffer goes at once (pairs
	 * were dropped while it waited), a partial one when its first pair's
	 * deadline passes (the timer a record armed may have been a no-op
	 * while this work was pending).
	 */
	if (c->buf[c->fill].count == s->batch)
		lf_sample_handoff(c);
	else if (c->buf[c->fill].count)
		lf_sample_arm_flush(c, s);
	raw_spin_unlock_irq(&c->lock);
}

static void lf_sampler_free(struct lf_sampler *s)
{
	struct lf_sample_cpu *c;
	int cpu;

	for_each_possible_cpu(cpu) {
		c = per_cpu_ptr(s->cpu, cpu);
		if (!c->mem)
			continue;
		/*
		 * Nobody records any more (a grace period has passed), so
		 * only the work itself can requeue the work: let a handed-off
		 * batch go out, then take back the flush timer of a partial
		 * one (discarded) and whatever the work requeued, which
		 * cancel_delayed_work_sync() waits for and keeps from
		 * rearming.
		 */
		flush_work(&c->work.work);
		cancel_delayed_work_sync(&c->work);
		kvfree(c->mem);
	}
	free_percpu(s->cpu);
	kfree(s);
}

/* One fill / send buffer pair of a CPU: inputs, outputs, contexts. */
static void lf_sample_bufs_init(struct lf_sample_cpu *c, s8 *mem,
				size_t in_bytes, size_t out_bytes,
				size_t ctx_bytes)
{
	unsigned int i;

	for (i = 0; i < 2; i++) {
		c->buf[i].inputs = mem;
		c->buf[i].outputs = mem + in_bytes;
		c->buf[i].contexts = ctx_bytes ?
			(u8 *)(mem + in_bytes + out_bytes) : NULL;
		mem += in_bytes + out_bytes + ctx_bytes;
	}
}

static struct lf_sampler *lf_sampler_alloc(struct lf_app *app, u32 every_n,
					   u32 batch, u32 flush_ms)
{
	size_t in_bytes = (size_t)batch * app->input_size;
	size_t out_bytes = (size_t)batch * app->output_size;
	size_t ctx_bytes = (size_t)batch * app->context_size;
	struct lf_sample_cpu *c;
	struct lf_sampler *s;
	s8 *mem;
	int cpu;

	s = kzalloc(sizeof(*s), GFP_KERNEL);
	if (!s)
		return NULL;
	s->every_n = every_n;
	s->batch = batch;
	s->flush_ms = flush_ms;
	s->flush_jiffies = max_t(unsigned long, 1, msecs_to_jiffies(flush_ms));
	s->app = app;
	s->cpu = alloc_percpu(struct lf_sample_cpu);
	if (!s->cpu) {
		kfree(s);
		return NULL;
	}
	for_each_possible_cpu(cpu) {
		c = per_cpu_ptr(s->cpu, cpu);
		raw_spin_lock_init(&c->lock);
		INIT_DELAYED_WORK(&c->work, lf_sample_flush_work);
		c->sampler = s;
		mem = kvmalloc_node(2 * (in_bytes + out_bytes + ctx_bytes),
				    GFP_KERNEL, cpu_to_node(cpu));
		if (!mem) {
			lf_sampler_free(s);
			return NULL;
		}
		c->mem = mem;
		lf_sample_bufs_init(c, mem, in_bytes, out_bytes, ctx_bytes);
	}
	return s;
}

static int lf_sampling_check(const struct lf_app *app, u32 every_n, u32 batch,
			     u32 flush_ms, struct netlink_ext_ack *extack)
{
	if (!every_n)
		return 0;
	if (!flush_ms || flush_ms > LF_NL_FLUSH_MAX_MS) {
		NL_SET_ERR_MSG(extack, "liteflow: FLUSH_MS must be 1..LF_NL_FLUSH_MAX_MS");
		return -ERANGE;
	}
	if (!batch) {
		NL_SET_ERR_MSG(extack, "liteflow: sample batch must be >= 1");
		return -EINVAL;
	}
	if (batch > LF_NL_SAMPLE_MAX_BATCH) {
		NL_SET_ERR_MSG(extack, "liteflow: sample batch over LF_NL_SAMPLE_MAX_BATCH");
		return -E2BIG;
	}
	if ((u64)batch * (app->input_size + app->output_size +
			  app->context_size) > LF_NL_SAMPLE_MAX_BYTES) {
		NL_SET_ERR_MSG(extack, "liteflow: sample batch over LF_NL_SAMPLE_MAX_BYTES");
		return -E2BIG;
	}
	return 0;
}

int lf_sampling_set_locked(struct lf_app *app, u32 every_n, u32 batch,
			   u32 flush_ms, struct netlink_ext_ack *extack)
{
	struct lf_sampler *old, *s = NULL;
	int err;

	err = lf_sampling_check(app, every_n, batch, flush_ms, extack);
	if (err)
		return err;
	if (every_n && !LF_SAMPLES_PRIVATE) {
		NL_SET_ERR_MSG(extack,
			       "liteflow: this kernel cannot keep the samples group private");
		return -EOPNOTSUPP;
	}
	if (every_n) {
		s = lf_sampler_alloc(app, every_n, batch, flush_ms);
		if (!s)
			return -ENOMEM;
	}
	old = rcu_dereference_protected(app->sampler,
					lockdep_is_held(&lf_mutex));
	rcu_assign_pointer(app->sampler, s);
	if (old) {
		synchronize_rcu();	/* no query still appends to old */
		lf_sampler_free(old);
	}
	return 0;
}

/* Caller is in an RCU read section: the sampler is freed after a grace period. */
void lf_sampling_get_rcu(struct lf_app *app, u32 *every_n, u32 *batch,
			 u32 *flush_ms)
{
	struct lf_sampler *s = rcu_dereference(app->sampler);

	*every_n = s ? s->every_n : 0;
	*batch = s ? s->batch : 0;
	*flush_ms = s ? s->flush_ms : 0;
}
