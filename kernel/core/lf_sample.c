// SPDX-License-Identifier: GPL-2.0
/*
 * LiteFlow sampler: ships (input, output) pairs of the fast path to the
 * slow path, which adapts the network on them (Zhang et al., SIGCOMM 2022,
 * the "adapt" interface is fed with batches collected in the kernel).
 *
 * Every Nth query on a CPU (a per-CPU tick, no shared counter) appends its
 * pair to that CPU's fill buffer.  A full buffer is handed to a work item
 * (double buffering: the work owns the other buffer while "flushing" is
 * set), which multicasts it to the "samples" group with GFP_KERNEL, off the
 * hot path.  If the fill buffer is full while the previous batch is still
 * being sent, the pair is dropped and counted: the datapath never waits.
 * A batch only ever holds pairs of one snapshot, so the slow path can tell
 * which snapshot produced every output.
 *
 * The per-CPU lock is a raw spinlock taken with interrupts off: queries
 * can nest (process context, softirq, hardirq) on one CPU, and the only
 * other taker is the work item, twice per batch.
 *
 * Reconfiguration swaps the RCU-protected sampler, waits a grace period
 * (no query still appends), lets pending work finish and frees the old
 * one; partial batches of the old sampler are discarded.
 */
#define pr_fmt(fmt) "liteflow: " fmt

#include <linux/kernel.h>
#include <linux/slab.h>
#include <linux/mm.h>
#include <linux/string.h>
#include <linux/workqueue.h>
#include "compat.h"
#include "lf_core.h"

struct lf_sample_buf {
	u64 snapshot_id;
	u32 count;			/* pairs held */
	s8 *inputs;			/* [batch][input_size] */
	s8 *outputs;			/* [batch][output_size] */
};

struct lf_sample_cpu {
	raw_spinlock_t lock;
	u32 tick;			/* queries since the last sample */
	bool flushing;			/* buf[fill ^ 1] belongs to the work */
	u8 fill;			/* index of the buffer being filled */
	struct lf_sample_buf buf[2];
	struct work_struct work;
	struct lf_sampler *sampler;
	void *mem;			/* both buffers, one allocation */
};

struct lf_sampler {
	u32 every_n;			/* sample every Nth query per CPU, >= 1 */
	u32 batch;			/* pairs per message */
	struct lf_app *app;
	struct lf_sample_cpu __percpu *cpu;
};

/* Caller holds c->lock with interrupts off. */
static void lf_sample_handoff(struct lf_sample_cpu *c)
{
	c->flushing = true;
	c->fill ^= 1;
	queue_work(system_wq, &c->work);
}

void lf_sample_record(struct lf_app *app, struct lf_sampler *s,
		      const struct lf_model *model, const s8 *input,
		      const s8 *output)
{
	u32 in_bytes = app->input_size, out_bytes = app->output_size;
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
	    (b->count == s->batch || b->snapshot_id != model->snapshot_id)) {
		if (c->flushing)
			goto drop;
		lf_sample_handoff(c);
		b = &c->buf[c->fill];
	}
	if (!b->count)
		b->snapshot_id = model->snapshot_id;
	memcpy(b->inputs + b->count * in_bytes, input, in_bytes);
	memcpy(b->outputs + b->count * out_bytes, output, out_bytes);
	b->count++;
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

static void lf_sample_flush_work(struct work_struct *work)
{
	struct lf_sample_cpu *c = container_of(work, struct lf_sample_cpu, work);
	struct lf_sampler *s = c->sampler;
	struct lf_sample_buf *b;
	int err;

	raw_spin_lock_irq(&c->lock);
	b = &c->buf[c->fill ^ 1];
	raw_spin_unlock_irq(&c->lock);

	err = lf_netlink_send_samples(s->app, b->snapshot_id, b->count,
				      b->inputs, b->outputs);
	if (!err)
		atomic64_add(b->count, &s->app->samples_sent);
	else if (err != -ESRCH)		/* -ESRCH: nobody listens */
		this_cpu_add(s->app->stats->samples_dropped, b->count);

	raw_spin_lock_irq(&c->lock);
	b->count = 0;
	c->flushing = false;
	/* pairs were dropped meanwhile if the fill buffer filled up */
	if (c->buf[c->fill].count == s->batch)
		lf_sample_handoff(c);
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
		flush_work(&c->work);
		cancel_work_sync(&c->work);	/* it may have requeued itself */
		kvfree(c->mem);
	}
	free_percpu(s->cpu);
	kfree(s);
}

static struct lf_sampler *lf_sampler_alloc(struct lf_app *app, u32 every_n,
					   u32 batch)
{
	size_t in_bytes = (size_t)batch * app->input_size;
	size_t out_bytes = (size_t)batch * app->output_size;
	struct lf_sample_cpu *c;
	struct lf_sampler *s;
	s8 *mem;
	int cpu;

	s = kzalloc(sizeof(*s), GFP_KERNEL);
	if (!s)
		return NULL;
	s->every_n = every_n;
	s->batch = batch;
	s->app = app;
	s->cpu = alloc_percpu(struct lf_sample_cpu);
	if (!s->cpu) {
		kfree(s);
		return NULL;
	}
	for_each_possible_cpu(cpu) {
		c = per_cpu_ptr(s->cpu, cpu);
		raw_spin_lock_init(&c->lock);
		INIT_WORK(&c->work, lf_sample_flush_work);
		c->sampler = s;
		mem = kvmalloc_node(2 * (in_bytes + out_bytes), GFP_KERNEL,
				    cpu_to_node(cpu));
		if (!mem) {
			lf_sampler_free(s);
			return NULL;
		}
		c->mem = mem;
		c->buf[0].inputs = mem;
		c->buf[0].outputs = mem + in_bytes;
		c->buf[1].inputs = mem + in_bytes + out_bytes;
		c->buf[1].outputs = mem + 2 * in_bytes + out_bytes;
	}
	return s;
}

static int lf_sampling_check(const struct lf_app *app, u32 every_n, u32 batch,
			     struct netlink_ext_ack *extack)
{
	if (!every_n)
		return 0;
	if (!batch) {
		NL_SET_ERR_MSG(extack, "liteflow: sample batch must be >= 1");
		return -EINVAL;
	}
	if (batch > LF_NL_SAMPLE_MAX_BATCH) {
		NL_SET_ERR_MSG(extack, "liteflow: sample batch over LF_NL_SAMPLE_MAX_BATCH");
		return -E2BIG;
	}
	if ((u64)batch * (app->input_size + app->output_size) >
	    LF_NL_SAMPLE_MAX_BYTES) {
		NL_SET_ERR_MSG(extack, "liteflow: sample batch over LF_NL_SAMPLE_MAX_BYTES");
		return -E2BIG;
	}
	return 0;
}

int lf_sampling_set_locked(struct lf_app *app, u32 every_n, u32 batch,
			   struct netlink_ext_ack *extack)
{
	struct lf_sampler *old, *s = NULL;
	int err;

	err = lf_sampling_check(app, every_n, batch, extack);
	if (err)
		return err;
	if (every_n && !LF_SAMPLES_PRIVATE) {
		NL_SET_ERR_MSG(extack,
			       "liteflow: this kernel cannot keep the samples group private");
		return -EOPNOTSUPP;
	}
	if (every_n) {
		s = lf_sampler_alloc(app, every_n, batch);
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
void lf_sampling_get_rcu(struct lf_app *app, u32 *every_n, u32 *batch)
{
	struct lf_sampler *s = rcu_dereference(app->sampler);

	*every_n = s ? s->every_n : 0;
	*batch = s ? s->batch : 0;
}
