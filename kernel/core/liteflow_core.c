// SPDX-License-Identifier: GPL-2.0
/*
 * LiteFlow core: the kernel half of an adaptive neural network that drives
 * a datapath function.
 *
 * LiteFlow (Zhang et al., "LiteFlow: Towards High-Performance Adaptive
 * Neural Networks for Kernel Datapath", SIGCOMM 2022) splits the network in
 * two.  The fast path, here, runs integer-only inference of a frozen
 * *snapshot* on every packet or ACK, with no crossing into user space.  The
 * slow path, in user space, keeps adapting the real network on samples of
 * what the kernel saw and, when the snapshot has drifted far enough from it
 * (the fidelity loss), ships a new snapshot: either a generated module
 * that registers itself, or a weight blob loaded over netlink.
 *
 * Registry.  An app (a datapath function: congestion control, flow
 * scheduling, ...) is registered with its input and output sizes, the
 * bytes of context it ships with each sample, and how its snapshots must
 * be quantized: an app that encodes features or decodes decisions with
 * fixed constants is never served a snapshot quantized otherwise.  Apps
 * live in a small table of RCU pointers indexed by id modulo LF_MAX_APPS;
 * ids grow monotonically so a stale id never finds a newer app.  Writers
 * hold lf_mutex; the fast path only reads under rcu_read_lock(), like
 * net/ipv4/tcp_cong.c.
 *
 * Two slots per app.  A new snapshot goes to standby and is switched
 * active with rcu_assign_pointer(); the previous active becomes standby
 * (a rollback target: LF_CMD_SWAP).  The whole inference runs inside one
 * rcu_read_lock() section.  A snapshot module is pinned with
 * try_module_get() for as long as it is active, so it cannot be removed
 * while it serves; once it is standby it may go, and its exit
 * (lf_unregister_model) waits for a grace period before the module's
 * memory is freed.  A hot-loaded snapshot is owned by the core and freed
 * with call_rcu() once it leaves both slots.  So an update never waits for
 * a grace period: it costs the parse, the checks and a pointer store.
 *
 * Fast path.  lf_query_model() takes no lock, never sleeps, never logs,
 * uses no floating point; the engine keeps its scratch on the stack.
 * Statistics are per-CPU counters.  Sampling (lf_sample.c) appends every
 * Nth (input, output) pair to a per-CPU batch that a work item multicasts
 * off the hot path (lf_netlink.c); a busy buffer drops, never blocks.  An
 * app with context samples at lf_record_sample() instead, once it knows
 * what followed a decision, through the same per-CPU batches.
 */
#define pr_fmt(fmt) "liteflow: " fmt

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/slab.h>
#include <linux/mm.h>
#include <linux/math64.h>
#include <linux/string.h>
#include <linux/rcupdate.h>
#include <linux/random.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/timekeeping.h>
#include "lf_core.h"

#define LF_APP_SLOT_MASK	(LF_MAX_APPS - 1)

DEFINE_MUTEX(lf_mutex);

static struct lf_app __rcu *lf_apps[LF_MAX_APPS];
static u32 lf_next_app_id = 1;		/* lf_mutex; 0 is never an app id */

/* ---- app table -------------------------------------------------------- */

static unsigned int lf_app_slot(u32 app_id)
{
	return app_id & LF_APP_SLOT_MASK;
}

struct lf_app *lf_app_lookup_rcu(u32 app_id)
{
	struct lf_app *app = rcu_dereference(lf_apps[lf_app_slot(app_id)]);

	if (unlikely(!app || app->id != app_id))
		return NULL;
	return app;
}

struct lf_app *lf_app_at_rcu(unsigned int slot)
{
	return rcu_dereference(lf_apps[slot]);
}

struct lf_app *lf_app_at_locked(unsigned int slot)
{
	return rcu_dereference_protected(lf_apps[slot],
					 lockdep_is_held(&lf_mutex));
}

struct lf_app *lf_app_lookup_locked(u32 app_id)
{
	struct lf_app *app = lf_app_at_locked(lf_app_slot(app_id));

	if (!app || app->id != app_id)
		return NULL;
	return app;
}

struct lf_model *lf_active_locked(struct lf_app *app)
{
	return rcu_dereference_protected(app->active,
					 lockdep_is_held(&lf_mutex));
}

struct lf_model *lf_standby_locked(struct lf_app *app)
{
	return rcu_dereference_protected(app->standby,
					 lockdep_is_held(&lf_mutex));
}

static struct lf_app *lf_app_by_name_locked(const char *name)
{
	struct lf_app *app;
	unsigned int i;

	for (i = 0; i < LF_MAX_APPS; i++) {
		app = lf_app_at_locked(i);
		if (app && !strcmp(app->name, name))
			return app;
	}
	return NULL;
}

/* Next unused id whose slot is free; 0 when the table is full. */
static u32 lf_app_alloc_id_locked(void)
{
	unsigned int tries;
	u32 id;

	for (tries = 0; tries < LF_MAX_APPS; tries++) {
		id = lf_next_app_id++;
		if (!id)		/* wrapped: skip 0 */
			id = lf_next_app_id++;
		if (!lf_app_at_locked(lf_app_slot(id)))
			return id;
	}
	return 0;
}

void lf_app_stats_sum(struct lf_app *app, struct lf_app_stats *sum)
{
	const struct lf_app_stats *c;
	int cpu;

	memset(sum, 0, sizeof(*sum));
	for_each_possible_cpu(cpu) {
		c = per_cpu_ptr(app->stats, cpu);
		sum->queries += READ_ONCE(c->queries);
		sum->errors += READ_ONCE(c->errors);
		sum->samples_dropped += READ_ONCE(c->samples_dropped);
	}
}

static bool lf_sizes_ok(u16 input_size, u16 output_size)
{
	return input_size && input_size <= LF_MAX_UNITS &&
	       output_size && output_size <= LF_MAX_UNITS;
}

/* ---- snapshots -------------------------------------------------------- */

static void lf_model_free_rcu(struct rcu_head *head)
{
	struct lf_model *model = container_of(head, struct lf_model, rcu);

	kvfree(model->blob);
	kfree(model);
}

/* A snapshot left both slots: free it if the core owns it. */
static void lf_model_drop(struct lf_model *model)
{
	if (!model->owner)
		call_rcu(&model->rcu, lf_model_free_rcu);
}

static bool lf_model_sizes_match(const struct lf_app *app,
				 const struct lf_model *model)
{
	if (model->spec.input_size == app->input_size &&
	    model->spec.output_size == app->output_size)
		return true;
	pr_warn("app %s (id %u) takes %u inputs and %u outputs, snapshot %llu has %u and %u: refused\n",
		app->name, app->id, app->input_size, app->output_size,
		(unsigned long long)model->snapshot_id,
		model->spec.input_size, model->spec.output_size);
	return false;
}

/*
 * Make @model active; the active snapshot becomes standby and whatever was
 * in standby (unless it is @model) is dropped.  The new active's module is
 * pinned first; the old one is released after a grace period, when no
 * query can still run on it.
 */
static int lf_activate_locked(struct lf_app *app, struct lf_model *model)
{
	struct lf_model *old = lf_active_locked(app);
	struct lf_model *standby = lf_standby_locked(app);
	struct lf_model *displaced = NULL;

	if (model->owner && !try_module_get(model->owner))
		return -ENODEV;
	if (standby != model)
		displaced = standby;
	rcu_assign_pointer(app->active, model);
	rcu_assign_pointer(app->standby, old);
	WRITE_ONCE(app->swaps, app->swaps + 1);

	/*
	 * No grace period on the update path: a query may still be running on
	 * @old, but a module's snapshot memory only goes away through
	 * lf_unregister_model(), which waits for one, and core-owned snapshots
	 * are freed by call_rcu().  Unpinning now lets the module be removed.
	 */
	if (old && old->owner)
		module_put(old->owner);
	if (displaced)
		lf_model_drop(displaced);
	return 0;
}

/* Is a snapshot with @snapshot_id in a slot of any app? */
static bool lf_snapshot_id_taken_locked(u64 snapshot_id)
{
	const struct lf_model *active, *standby;
	struct lf_app *app;
	unsigned int i;

	for (i = 0; i < LF_MAX_APPS; i++) {
		app = lf_app_at_locked(i);
		if (!app)
			continue;
		active = lf_active_locked(app);
		standby = lf_standby_locked(app);
		if ((active && active->snapshot_id == snapshot_id) ||
		    (standby && standby->snapshot_id == snapshot_id))
			return true;
	}
	return false;
}

/*
 * A query runs the whole snapshot inside one RCU read section, in softirq
 * for most apps: its cost is the app's to bound, not the snapshot's.
 */
static bool lf_model_within_budget(const struct lf_app *app,
				   const struct lf_model *model)
{
	u64 macs = lf_engine_macs(&model->spec);

	if (macs <= app->max_macs)
		return true;
	pr_warn("app %s (id %u) allows %llu multiply-accumulates per query, snapshot %llu needs %llu: refused\n",
		app->name, app->id, (unsigned long long)app->max_macs,
		(unsigned long long)model->snapshot_id,
		(unsigned long long)macs);
	return false;
}

static bool lf_quant_equal(const struct lf_quant *a, const struct lf_quant *b)
{
	return a->zero_point == b->zero_point &&
	       a->scale_multiplier == b->scale_multiplier &&
	       a->scale_shift == b->scale_shift;
}

/*
 * TFLite recalibrates scales at every conversion: an app that encodes its
 * features and decodes its decisions with the constants it was built with
 * would silently misread a snapshot quantized otherwise.  Exact match: a
 * multiplier one unit off is another scale.
 */
static bool lf_model_quant_matches(const struct lf_app *app,
				   const struct lf_model *model)
{
	const struct lf_quant *in = &model->spec.input_quant;
	const struct lf_quant *out = &model->spec.output_quant;

	if (app->quant_mode != LF_APP_QUANT_FIXED ||
	    (lf_quant_equal(&app->input_quant, in) &&
	     lf_quant_equal(&app->output_quant, out)))
		return true;
	pr_warn("app %s (id %u) quantizes input (zp %d, mult %d, shift %d) output (zp %d, mult %d, shift %d), snapshot %llu input (zp %d, mult %d, shift %d) output (zp %d, mult %d, shift %d): refused\n",
		app->name, app->id, app->input_quant.zero_point,
		app->input_quant.scale_multiplier, app->input_quant.scale_shift,
		app->output_quant.zero_point, app->output_quant.scale_multiplier,
		app->output_quant.scale_shift,
		(unsigned long long)model->snapshot_id, in->zero_point,
		in->scale_multiplier, in->scale_shift, out->zero_point,
		out->scale_multiplier, out->scale_shift);
	return false;
}

/*
 * Checks shared by module snapshots and hot loads, then the switch.
 * Snapshot ids are unique among loaded snapshots: unloads and sample
 * batches name a snapshot by its id.
 */
static int lf_install_locked(struct lf_app *app, struct lf_model *model)
{
	if (!lf_model_sizes_match(app, model))
		return -EINVAL;
	if (!lf_model_quant_matches(app, model))
		return -EPROTO;
	if (lf_snapshot_id_taken_locked(model->snapshot_id))
		return -EEXIST;
	if (!lf_model_within_budget(app, model))
		return -EFBIG;
	return lf_activate_locked(app, model);
}

int lf_register_model(struct lf_model *model)
{
	struct lf_app *app;
	int err;

	if (!model || !model->owner || !model->snapshot_id)
		return -EINVAL;
	err = lf_engine_validate(&model->spec);
	if (err) {
		pr_warn("snapshot %llu of %s: invalid spec (%d)\n",
			(unsigned long long)model->snapshot_id,
			module_name(model->owner), err);
		return err;
	}

	mutex_lock(&lf_mutex);
	app = lf_app_lookup_locked(model->app_id);
	if (!app)
		err = -ENOENT;
	else
		err = lf_install_locked(app, model);
	mutex_unlock(&lf_mutex);
	return err;
}
EXPORT_SYMBOL_GPL(lf_register_model);

/*
 * The active snapshot's module is pinned, so only a forced unload
 * (rmmod -f) reaches its exit.  The module goes whatever we return: take
 * its snapshot out of service, promoting the standby if it can be pinned,
 * so that no query runs on freed memory.
 */
static void lf_force_detach_locked(struct lf_app *app, struct lf_model *model)
{
	struct lf_model *next = lf_standby_locked(app);

	if (next && next->owner && !try_module_get(next->owner))
		next = NULL;
	if (next)
		RCU_INIT_POINTER(app->standby, NULL);
	rcu_assign_pointer(app->active, next);
	pr_warn("app %s (id %u): active snapshot %llu removed by force, now %llu\n",
		app->name, app->id, (unsigned long long)model->snapshot_id,
		next ? (unsigned long long)next->snapshot_id : 0ULL);
}

int lf_unregister_model(struct lf_model *model)
{
	struct lf_app *app;
	int err = 0;

	mutex_lock(&lf_mutex);
	app = lf_app_lookup_locked(model->app_id);
	if (!app)
		err = -ENOENT;
	else if (lf_active_locked(app) == model)
		lf_force_detach_locked(app, model);
	else if (lf_standby_locked(app) != model)
		err = -ENOENT;
	else
		RCU_INIT_POINTER(app->standby, NULL);
	mutex_unlock(&lf_mutex);
	/*
	 * The caller, a snapshot module's exit, frees the snapshot with the
	 * module: first let every query that may still run on it finish, in
	 * whichever slot (or none) it was.
	 */
	synchronize_rcu();
	return err;
}
EXPORT_SYMBOL_GPL(lf_unregister_model);

int lf_hot_load_locked(struct lf_app *app, u64 snapshot_id, const void *blob,
		       size_t len, struct netlink_ext_ack *extack)
{
	struct lf_model *model;
	int err;

	model = kzalloc(sizeof(*model), GFP_KERNEL);
	if (!model)
		return -ENOMEM;
	/*
	 * A large blob need not be physically contiguous; kvmalloc memory is
	 * at least 8-byte aligned, as the parser needs.
	 */
	model->blob = kvmalloc(len, GFP_KERNEL);
	if (!model->blob) {
		kfree(model);
		return -ENOMEM;
	}
	memcpy(model->blob, blob, len);
	model->app_id = app->id;
	model->snapshot_id = snapshot_id;

	err = lf_engine_parse_blob(model->blob, len, &model->spec);
	if (err == -EBADMSG)
		NL_SET_ERR_MSG(extack, "liteflow: blob crc32 mismatch");
	else if (err == -E2BIG)
		NL_SET_ERR_MSG(extack, "liteflow: blob exceeds engine limits");
	else if (err)
		NL_SET_ERR_MSG(extack, "liteflow: malformed blob");
	if (!err) {
		err = lf_engine_validate(&model->spec);
		if (err)
			NL_SET_ERR_MSG(extack, "liteflow: blob spec fails validation");
	}
	if (!err) {
		err = lf_install_locked(app, model);
		if (err == -EINVAL)
			NL_SET_ERR_MSG(extack, "liteflow: snapshot sizes do not match the app");
		else if (err == -EEXIST)
			NL_SET_ERR_MSG(extack, "liteflow: a snapshot with this id is already loaded");
		else if (err == -EFBIG)
			NL_SET_ERR_MSG(extack, "liteflow: snapshot exceeds the app's cost budget");
		else if (err == -EPROTO)
			NL_SET_ERR_MSG(extack, "liteflow: snapshot quantization differs from the app's");
	}
	if (err) {
		kvfree(model->blob);
		kfree(model);
	}
	return err;
}

int lf_load_spec(u32 app_id, u64 snapshot_id,
		 const struct lf_snapshot_spec *spec)
{
	struct lf_app *app;
	void *blob;
	long len;
	int err;

	might_sleep();
	if (!spec || !snapshot_id)
		return -EINVAL;
	len = lf_engine_blob_size(spec);
	blob = kvmalloc(len, GFP_KERNEL);
	if (!blob)
		return -ENOMEM;
	len = lf_engine_write_blob(spec, blob, len);
	if (len < 0) {
		kvfree(blob);
		return len;
	}
	mutex_lock(&lf_mutex);
	app = lf_app_lookup_locked(app_id);
	err = app ? lf_hot_load_locked(app, snapshot_id, blob, len, NULL) : -ENOENT;
	mutex_unlock(&lf_mutex);
	kvfree(blob);		/* the hot load keeps a copy of its own */
	return err;
}
EXPORT_SYMBOL_GPL(lf_load_spec);

int lf_hot_unload_locked(struct lf_app *app, u64 snapshot_id)
{
	struct lf_model *active = lf_active_locked(app);
	struct lf_model *standby = lf_standby_locked(app);

	if (active && active->snapshot_id == snapshot_id)
		return -EBUSY;
	if (!standby || standby->snapshot_id != snapshot_id)
		return -ENOENT;
	if (standby->owner)
		return -EPERM;
	RCU_INIT_POINTER(app->standby, NULL);
	lf_model_drop(standby);
	return 0;
}

int lf_swap_locked(struct lf_app *app)
{
	struct lf_model *standby = lf_standby_locked(app);

	if (!standby)
		return -ENOENT;
	return lf_activate_locked(app, standby);
}

/* ---- apps ------------------------------------------------------------- */

/* A declared scale must be one the engine can produce: Q31, shift in range. */
static bool lf_quant_ok(const struct lf_quant *q)
{
	return q->zero_point >= S8_MIN && q->zero_point <= S8_MAX &&
	       q->scale_multiplier > 0 &&
	       q->scale_shift >= LF_QUANT_MIN_SHIFT &&
	       q->scale_shift <= LF_QUANT_MAX_SHIFT;
}

static bool lf_app_desc_ok(const struct lf_app_desc *desc)
{
	if (!desc->name || !desc->name[0] ||
	    strlen(desc->name) >= LF_APP_NAME_MAX ||
	    !lf_sizes_ok(desc->input_size, desc->output_size) ||
	    !desc->max_macs || desc->context_size > LF_MAX_CONTEXT)
		return false;
	switch (desc->quant_mode) {
	case LF_APP_QUANT_FIXED:
		return lf_quant_ok(&desc->input_quant) &&
		       lf_quant_ok(&desc->output_quant);
	case LF_APP_QUANT_ANY:
		return true;
	}
	return false;
}

static struct lf_app *lf_app_alloc(const struct lf_app_desc *desc)
{
	struct lf_app *app;

	app = kzalloc(sizeof(*app), GFP_KERNEL);
	if (!app)
		return NULL;
	app->stats = alloc_percpu(struct lf_app_stats);
	if (!app->stats) {
		kfree(app);
		return NULL;
	}
	/* The name fits (checked before); 4.15's strscpy is __must_check. */
	if (WARN_ON_ONCE(strscpy(app->name, desc->name, sizeof(app->name)) < 0)) {
		free_percpu(app->stats);
		kfree(app);
		return NULL;
	}
	app->input_size = desc->input_size;
	app->output_size = desc->output_size;
	app->context_size = desc->context_size;
	app->max_macs = desc->max_macs;
	app->quant_mode = desc->quant_mode;
	app->on_answer = desc->on_answer;
	if (desc->quant_mode == LF_APP_QUANT_FIXED) {
		app->input_quant = desc->input_quant;
		app->output_quant = desc->output_quant;
	}
	atomic64_set(&app->samples_sent, 0);
	INIT_LIST_HEAD(&app->ios);
	return app;
}

int lf_register_app(const struct lf_app_desc *desc, u32 *app_id)
{
	struct lf_app *app;
	int err = 0;
	u32 id;

	if (!desc || !app_id || !lf_app_desc_ok(desc))
		return -EINVAL;
	app = lf_app_alloc(desc);
	if (!app)
		return -ENOMEM;

	mutex_lock(&lf_mutex);
	if (lf_app_by_name_locked(app->name)) {
		err = -EEXIST;
		goto unlock;
	}
	id = lf_app_alloc_id_locked();
	if (!id) {
		err = -ENOSPC;
		goto unlock;
	}
	app->id = id;
	rcu_assign_pointer(lf_apps[lf_app_slot(id)], app);
	*app_id = id;
	pr_info("app %s registered as id %u (%u inputs, %u outputs, %u context bytes, at most %llu MACs per query, %s quantization)\n",
		app->name, id, app->input_size, app->output_size,
		app->context_size, (unsigned long long)app->max_macs,
		app->quant_mode == LF_APP_QUANT_FIXED ? "fixed" : "any");
unlock:
	mutex_unlock(&lf_mutex);
	if (err) {
		free_percpu(app->stats);
		kfree(app);
	}
	return err;
}
EXPORT_SYMBOL_GPL(lf_register_app);

/* The app is unreachable and sampling is off: release both slots and it. */
static void lf_app_destroy_locked(struct lf_app *app)
{
	struct lf_model *active = lf_active_locked(app);
	struct lf_model *standby = lf_standby_locked(app);

	lf_upcall_app_gone(app->id);	/* its user-space agent, if any */
	synchronize_rcu();		/* no query still sees app or its active */
	if (active) {
		if (active->owner)
			module_put(active->owner);
		else
			lf_model_drop(active);
	}
	if (standby)
		lf_model_drop(standby);
	kvfree(app->stage);		/* a chunked load nobody finished */
	free_percpu(app->stats);
	kfree(app);
}

int lf_unregister_app(u32 app_id)
{
	struct lf_app *app;
	int err = 0;

	mutex_lock(&lf_mutex);
	app = lf_app_lookup_locked(app_id);
	if (!app) {
		err = -ENOENT;
	} else if (app->n_ios) {
		pr_warn("app %s (id %u) still has %u io modules: not unregistered\n",
			app->name, app_id, app->n_ios);
		err = -EBUSY;
	} else {
		RCU_INIT_POINTER(lf_apps[lf_app_slot(app_id)], NULL);
		lf_sampling_set_locked(app, 0, 0, 0, NULL);
		pr_info("app %s (id %u) unregistered\n", app->name, app_id);
		lf_app_destroy_locked(app);
	}
	mutex_unlock(&lf_mutex);
	return err;
}
EXPORT_SYMBOL_GPL(lf_unregister_app);

/* ---- io modules ------------------------------------------------------- */

int lf_register_io(struct lf_io *io)
{
	struct lf_app *app;
	int err = 0;

	if (!io || !io->name)
		return -EINVAL;
	mutex_lock(&lf_mutex);
	app = lf_app_lookup_locked(io->app_id);
	if (!app) {
		err = -ENOENT;
	} else if (io->input_size != app->input_size ||
		   io->output_size != app->output_size) {
		pr_warn("io %s: app %s (id %u) takes %u inputs and %u outputs, io has %u and %u: refused\n",
			io->name, app->name, app->id, app->input_size,
			app->output_size, io->input_size, io->output_size);
		err = -EINVAL;
	} else {
		list_add_tail(&io->list, &app->ios);
		WRITE_ONCE(app->n_ios, app->n_ios + 1);
	}
	mutex_unlock(&lf_mutex);
	return err;
}
EXPORT_SYMBOL_GPL(lf_register_io);

void lf_unregister_io(struct lf_io *io)
{
	struct lf_app *app;

	mutex_lock(&lf_mutex);
	app = lf_app_lookup_locked(io->app_id);
	/* an app cannot go away while it has io modules */
	if (!WARN_ON_ONCE(!app)) {
		list_del_init(&io->list);
		WRITE_ONCE(app->n_ios, app->n_ios - 1);
	}
	mutex_unlock(&lf_mutex);
}
EXPORT_SYMBOL_GPL(lf_unregister_io);

/* ---- fast path -------------------------------------------------------- */

/*
 * The fast path behind lf_query_model and lf_query_model_ex.  An app with
 * context samples when it reports an outcome (lf_record_sample), so its
 * queries are never sampled here: a pair without its context would teach
 * the slow path nothing.
 */
static int lf_query(u32 app_id, const s8 *input, s8 *output, u64 *snapshot_id,
		    struct lf_quant *in_quant, struct lf_quant *out_quant)
{
	const struct lf_model *model;
	struct lf_sampler *sampler;
	struct lf_app *app;
	int err;

	rcu_read_lock();
	app = lf_app_lookup_rcu(app_id);
	if (unlikely(!app)) {
		err = -ENOENT;
		goto out;
	}
	this_cpu_inc(app->stats->queries);
	model = rcu_dereference(app->active);
	if (unlikely(!model))
		err = -ENOENT;
	else
		err = lf_engine_infer(&model->spec, input, output);
	if (unlikely(err)) {
		this_cpu_inc(app->stats->errors);
		goto out;
	}
	if (snapshot_id)
		*snapshot_id = model->snapshot_id;
	if (in_quant)
		*in_quant = model->spec.input_quant;
	if (out_quant)
		*out_quant = model->spec.output_quant;
	sampler = rcu_dereference(app->sampler);
	if (sampler && !app->context_size)
		lf_sample_record(app, sampler, model->snapshot_id, input,
				 output, NULL);
out:
	rcu_read_unlock();
	return err;
}

int lf_query_model(u32 app_id, const s8 *input, s8 *output)
{
	return lf_query(app_id, input, output, NULL, NULL, NULL);
}
EXPORT_SYMBOL_GPL(lf_query_model);

int lf_query_model_ex(u32 app_id, const s8 *input, s8 *output,
		      u64 *snapshot_id, struct lf_quant *in_quant,
		      struct lf_quant *out_quant)
{
	return lf_query(app_id, input, output, snapshot_id, in_quant,
			out_quant);
}
EXPORT_SYMBOL_GPL(lf_query_model_ex);

/*
 * Costs a lookup and a pointer load when nobody samples; otherwise the
 * sampler's per-CPU tick decides, exactly as for queries.
 */
void lf_record_sample(u32 app_id, u64 snapshot_id, const s8 *input,
		      const s8 *output, const void *context)
{
	struct lf_sampler *sampler;
	struct lf_app *app;

	if (unlikely(!input || !output || !context))
		return;
	rcu_read_lock();
	app = lf_app_lookup_rcu(app_id);
	if (likely(app && app->context_size)) {
		sampler = rcu_dereference(app->sampler);
		if (sampler)
			lf_sample_record(app, sampler, snapshot_id, input,
					 output, context);
	}
	rcu_read_unlock();
}
EXPORT_SYMBOL_GPL(lf_record_sample);

/* ---- in-kernel micro-benchmark ------------------------------------------ */

/*
 * Work between two looks at the clock and cond_resched(), in
 * multiply-accumulates rather than inferences, so that the pause does not
 * grow with the snapshot's size.
 */
#define LF_BENCH_CHUNK_MACS	(1U << 18)

/*
 * One inference the way the fast path does it (lookup and inference inside
 * rcu_read_lock()), minus the statistics and the sampling, so the number
 * is the cost of a query, not of the bookkeeping.
 */
static int lf_bench_one(u32 app_id, const s8 *input, s8 *output)
{
	const struct lf_model *model;
	struct lf_app *app;
	int err = -ENOENT;

	rcu_read_lock();
	app = lf_app_lookup_rcu(app_id);
	model = app ? rcu_dereference(app->active) : NULL;
	if (model)
		err = lf_engine_infer(&model->spec, input, output);
	rcu_read_unlock();
	return err;
}

/*
 * Up to @iterations inferences, but no more than LF_NL_BENCH_MAX_NS of
 * them: a netlink handler must return soon (it holds generic netlink's
 * cb_lock), so a long benchmark is a loop of requests in user space.
 * *@done says how many ran.
 */
int lf_bench(u32 app_id, u32 iterations, u32 *done, u64 *total_ns,
	     u64 *snapshot_id, u64 *macs)
{
	s8 input[LF_MAX_UNITS], output[LF_MAX_UNITS];
	const struct lf_model *model;
	struct lf_app *app;
	u32 i, chunk, per_chunk = 1;
	u64 start, elapsed = 0;
	int err = 0;

	mutex_lock(&lf_mutex);
	app = lf_app_lookup_locked(app_id);
	model = app ? lf_active_locked(app) : NULL;
	if (model) {
		get_random_bytes(input, app->input_size);
		*snapshot_id = model->snapshot_id;
		*macs = lf_engine_macs(&model->spec);
		per_chunk = max_t(u64, 1, div64_u64(LF_BENCH_CHUNK_MACS,
						   max_t(u64, 1, *macs)));
	}
	mutex_unlock(&lf_mutex);
	if (!model)
		return -ENOENT;

	start = ktime_get_ns();
	for (*done = 0; *done < iterations && !err; *done += i) {
		chunk = min_t(u32, iterations - *done, per_chunk);
		for (i = 0; i < chunk && !err; i++)
			err = lf_bench_one(app_id, input, output);
		elapsed = ktime_get_ns() - start;
		if (elapsed >= LF_NL_BENCH_MAX_NS) {
			*done += i;
			break;
		}
		if (signal_pending(current))
			err = -EINTR;
		cond_resched();
	}
	*total_ns = elapsed;
	return err;
}

/* ---- module ----------------------------------------------------------- */

static int __init liteflow_init(void)
{
	int err;

	err = lf_netlink_init();
	if (err) {
		pr_err("cannot register generic netlink family (%d)\n", err);
		return err;
	}
	pr_info("core loaded\n");
	return 0;
}

static void __exit liteflow_exit(void)
{
	struct lf_app *app;
	unsigned int i;

	/* Apps are registered by modules that use our symbols, so none
	 * should remain; be defensive anyway (before the family goes, since
	 * pending sample batches are sent through it). */
	mutex_lock(&lf_mutex);
	for (i = 0; i < LF_MAX_APPS; i++) {
		app = lf_app_at_locked(i);
		if (!app)
			continue;
		pr_warn("app %s (id %u) still registered at exit\n",
			app->name, app->id);
		RCU_INIT_POINTER(lf_apps[i], NULL);
		lf_sampling_set_locked(app, 0, 0, 0, NULL);
		lf_app_destroy_locked(app);
	}
	mutex_unlock(&lf_mutex);

	lf_netlink_exit();
	rcu_barrier();		/* hot-loaded snapshots freed by call_rcu */
	pr_info("core unloaded\n");
}

module_init(liteflow_init);
module_exit(liteflow_exit);

MODULE_AUTHOR("LiteFlow Testbed");
MODULE_DESCRIPTION("LiteFlow core: in-kernel NN snapshot inference, registry and netlink control");
MODULE_LICENSE("GPL");
