// SPDX-License-Identifier: GPL-2.0
/*
 * LiteFlow generic netlink family "liteflow": the slow path's window into
 * the fast path (Zhang et al., SIGCOMM 2022: the user-space service
 * evaluates the kernel snapshot, collects samples to adapt on, and updates
 * the snapshot).  The UAPI with every attribute's type is lf_netlink.h.
 *
 * Every command with attributes is covered by the family's policy (per op
 * before 5.2, see compat.h); commands that change state or burn CPU need
 * CAP_NET_ADMIN (GENL_ADMIN_PERM); so does EVALUATE, which holds lf_mutex
 * while it runs.  LIST_APPS is open to everyone and takes no lock an
 * update needs (it reads under RCU).  Handlers run in parallel
 * (parallel_ops: no genl_mutex) and serialise on lf_mutex themselves, but
 * every handler still runs with generic netlink's cb_lock held for
 * reading.  While one runs, registering or unregistering any genl family
 * (which takes cb_lock for writing) waits, and so, behind that writer,
 * does every other genl message.  So every handler does bounded work:
 * BENCH and UPCALL_BENCH stop after LF_NL_BENCH_MAX_NS and
 * LF_NL_UPCALL_MAX_NS and user space loops over requests.  The family
 * lives in the initial network namespace only; samples go to group
 * "samples", which only CAP_NET_ADMIN may join (compat.h).
 *
 * The user-space deployment baseline rides on the same family: an agent
 * registers for an app (AGENT_REGISTER), the kernel unicasts it QUERY
 * messages and the agent sends ANSWERs back (lf_upcall.c holds the
 * state); UPCALL_BENCH times those round trips the way BENCH times the
 * in-kernel fast path.
 */
#define pr_fmt(fmt) "liteflow: " fmt

#include <linux/kernel.h>
#include <linux/cache.h>
#include <linux/capability.h>
#include <linux/module.h>
#include <linux/mm.h>
#include <linux/sched.h>
#include <net/genetlink.h>
#include "compat.h"
#include "lf_core.h"

#define LF_EVAL_RESCHED_EVERY	64	/* inferences between cond_resched() */
#define LF_ORIGIN_HOT		"hot"
#define LF_ORIGIN_NONE		""

enum lf_mcgrp {
	LF_MCGRP_SAMPLES,
};

static struct genl_family lf_genl_family;

static const struct nla_policy lf_nl_policy[LF_ATTR_MAX + 1] = {
	[LF_ATTR_APP_ID]		= { .type = NLA_U32 },
	[LF_ATTR_APP_NAME]		= { .type = NLA_NUL_STRING,
					    .len = LF_APP_NAME_MAX - 1 },
	[LF_ATTR_INPUT_SIZE]		= { .type = NLA_U32 },
	[LF_ATTR_OUTPUT_SIZE]		= { .type = NLA_U32 },
	[LF_ATTR_QUERIES]		= { .type = NLA_U64 },
	[LF_ATTR_ERRORS]		= { .type = NLA_U64 },
	[LF_ATTR_ACTIVE_ID]		= { .type = NLA_U64 },
	[LF_ATTR_STANDBY_ID]		= { .type = NLA_U64 },
	[LF_ATTR_ACTIVE_ORIGIN]		= { .type = NLA_NUL_STRING,
					    .len = MODULE_NAME_LEN - 1 },
	[LF_ATTR_STANDBY_ORIGIN]	= { .type = NLA_NUL_STRING,
					    .len = MODULE_NAME_LEN - 1 },
	[LF_ATTR_SAMPLES_SENT]		= { .type = NLA_U64 },
	[LF_ATTR_SAMPLES_DROPPED]	= { .type = NLA_U64 },
	[LF_ATTR_SAMPLE_EVERY]		= { .type = NLA_U32 },
	[LF_ATTR_SAMPLE_BATCH]		= { .type = NLA_U32 },
	[LF_ATTR_SWAPS]			= { .type = NLA_U64 },
	[LF_ATTR_SNAPSHOT_ID]		= { .type = NLA_U64 },
	[LF_ATTR_BLOB]			= { .type = NLA_BINARY,
					    .len = LF_NL_BINARY_MAX },
	[LF_ATTR_INPUTS]		= { .type = NLA_BINARY,
					    .len = LF_NL_BINARY_MAX },
	[LF_ATTR_OUTPUTS]		= { .type = NLA_BINARY,
					    .len = LF_NL_BINARY_MAX },
	[LF_ATTR_COUNT]			= { .type = NLA_U32 },
	[LF_ATTR_ITERATIONS]		= { .type = NLA_U32 },
	[LF_ATTR_TOTAL_NS]		= { .type = NLA_U64 },
	[LF_ATTR_NS_PER_QUERY]		= { .type = NLA_U64 },
	[LF_ATTR_MACS]			= { .type = NLA_U64 },
	[LF_ATTR_IO_COUNT]		= { .type = NLA_U32 },
	[LF_ATTR_QUERY_SEQ]		= { .type = NLA_U64 },
	[LF_ATTR_TIMEOUT_MS]		= { .type = NLA_U32 },
	[LF_ATTR_TIMEOUTS]		= { .type = NLA_U64 },
	[LF_ATTR_STALE_ANSWERS]		= { .type = NLA_U64 },
	[LF_ATTR_BLOB_SIZE]		= { .type = NLA_U32 },
	[LF_ATTR_BLOB_OFFSET]		= { .type = NLA_U32 },
	[LF_ATTR_MAX_MACS]		= { .type = NLA_U64 },
	[LF_ATTR_CONTEXT_SIZE]		= { .type = NLA_U32 },
	[LF_ATTR_CONTEXTS]		= { .type = NLA_BINARY,
					    .len = LF_NL_BINARY_MAX },
	[LF_ATTR_FLUSH_MS]		= { .type = NLA_U32 },
	[LF_ATTR_QUANT_MODE]		= { .type = NLA_U32 },
	[LF_ATTR_INPUT_QUANT]		= { .type = NLA_BINARY,
					    .len = sizeof(struct lf_quant) },
	[LF_ATTR_OUTPUT_QUANT]		= { .type = NLA_BINARY,
					    .len = sizeof(struct lf_quant) },
	[LF_ATTR_ACTIVE_INPUT_QUANT]	= { .type = NLA_BINARY,
					    .len = sizeof(struct lf_quant) },
	[LF_ATTR_ACTIVE_OUTPUT_QUANT]	= { .type = NLA_BINARY,
					    .len = sizeof(struct lf_quant) },
};

/* ---- helpers ---------------------------------------------------------- */

/* 0 if attribute @attr is present, else -EINVAL with @msg (a literal). */
#define lf_nl_require(info, attr, msg) ({				\
	int __err = 0;							\
									\
	if (!(info)->attrs[attr]) {					\
		NL_SET_ERR_MSG((info)->extack, msg);			\
		__err = -EINVAL;					\
	}								\
	__err;								\
})

/* Caller holds lf_mutex. */
static struct lf_app *lf_nl_app_locked(struct genl_info *info)
{
	struct lf_app *app;

	app = lf_app_lookup_locked(nla_get_u32(info->attrs[LF_ATTR_APP_ID]));
	if (!app)
		NL_SET_ERR_MSG_ATTR(info->extack, info->attrs[LF_ATTR_APP_ID],
				    "liteflow: no such app");
	return app;
}

static const char *lf_origin(const struct lf_model *model)
{
	if (!model)
		return LF_ORIGIN_NONE;
	return model->owner ? module_name(model->owner) : LF_ORIGIN_HOT;
}

static int lf_put_u64(struct sk_buff *skb, int attr, u64 value)
{
	return nla_put_u64_64bit(skb, attr, value, LF_ATTR_PAD);
}

static int lf_put_quant(struct sk_buff *skb, int attr, const struct lf_quant *q)
{
	return nla_put(skb, attr, sizeof(*q), q);
}

/*
 * What an app declared beyond its sizes, and how its active snapshot
 * quantizes: the slow path checks a candidate snapshot against the former
 * before it tries to load it.
 */
static int lf_nl_put_app_decl(struct sk_buff *skb, const struct lf_app *app,
			      const struct lf_model *active, u32 flush_ms)
{
	if (nla_put_u32(skb, LF_ATTR_CONTEXT_SIZE, app->context_size) ||
	    nla_put_u32(skb, LF_ATTR_FLUSH_MS, flush_ms) ||
	    nla_put_u32(skb, LF_ATTR_QUANT_MODE, app->quant_mode))
		return -EMSGSIZE;
	if (app->quant_mode == LF_APP_QUANT_FIXED &&
	    (lf_put_quant(skb, LF_ATTR_INPUT_QUANT, &app->input_quant) ||
	     lf_put_quant(skb, LF_ATTR_OUTPUT_QUANT, &app->output_quant)))
		return -EMSGSIZE;
	if (active &&
	    (lf_put_quant(skb, LF_ATTR_ACTIVE_INPUT_QUANT,
			  &active->spec.input_quant) ||
	     lf_put_quant(skb, LF_ATTR_ACTIVE_OUTPUT_QUANT,
			  &active->spec.output_quant)))
		return -EMSGSIZE;
	return 0;
}

/* ---- LIST_APPS ------------------------------------------------------------ */

/*
 * Caller is in an RCU read section, not under lf_mutex: listing is
 * unprivileged and must not delay updates.  RCU keeps what it reads alive:
 * apps and hot-loaded snapshots are freed after a grace period, and a
 * snapshot module's exit waits for one (lf_unregister_model) before its
 * module, and so its name, goes away.  The fields read without a lock may
 * be a moment apart.
 */
static int lf_nl_fill_app(struct sk_buff *skb, struct lf_app *app, u32 portid,
			  u32 seq, int flags)
{
	const struct lf_model *active = rcu_dereference(app->active);
	const struct lf_model *standby = rcu_dereference(app->standby);
	struct lf_app_stats stats;
	u32 every_n, batch, flush_ms;
	void *hdr;

	hdr = genlmsg_put(skb, portid, seq, &lf_genl_family, flags,
			  LF_CMD_LIST_APPS);
	if (!hdr)
		return -EMSGSIZE;
	lf_app_stats_sum(app, &stats);
	lf_sampling_get_rcu(app, &every_n, &batch, &flush_ms);

	if (nla_put_u32(skb, LF_ATTR_APP_ID, app->id) ||
	    nla_put_string(skb, LF_ATTR_APP_NAME, app->name) ||
	    nla_put_u32(skb, LF_ATTR_INPUT_SIZE, app->input_size) ||
	    nla_put_u32(skb, LF_ATTR_OUTPUT_SIZE, app->output_size) ||
	    lf_put_u64(skb, LF_ATTR_QUERIES, stats.queries) ||
	    lf_put_u64(skb, LF_ATTR_ERRORS, stats.errors) ||
	    lf_put_u64(skb, LF_ATTR_ACTIVE_ID, active ? active->snapshot_id : 0) ||
	    lf_put_u64(skb, LF_ATTR_STANDBY_ID, standby ? standby->snapshot_id : 0) ||
	    nla_put_string(skb, LF_ATTR_ACTIVE_ORIGIN, lf_origin(active)) ||
	    nla_put_string(skb, LF_ATTR_STANDBY_ORIGIN, lf_origin(standby)) ||
	    lf_put_u64(skb, LF_ATTR_SAMPLES_SENT,
		       atomic64_read(&app->samples_sent)) ||
	    lf_put_u64(skb, LF_ATTR_SAMPLES_DROPPED, stats.samples_dropped) ||
	    nla_put_u32(skb, LF_ATTR_SAMPLE_EVERY, every_n) ||
	    nla_put_u32(skb, LF_ATTR_SAMPLE_BATCH, batch) ||
	    lf_put_u64(skb, LF_ATTR_SWAPS, READ_ONCE(app->swaps)) ||
	    nla_put_u32(skb, LF_ATTR_IO_COUNT, READ_ONCE(app->n_ios)) ||
	    lf_put_u64(skb, LF_ATTR_MAX_MACS, app->max_macs) ||
	    lf_nl_put_app_decl(skb, app, active, flush_ms)) {
		genlmsg_cancel(skb, hdr);
		return -EMSGSIZE;
	}
	genlmsg_end(skb, hdr);
	return 0;
}

static int lf_nl_list_apps_doit(struct sk_buff *skb, struct genl_info *info)
{
	struct sk_buff *msg;
	struct lf_app *app;
	int err;

	err = lf_nl_require(info, LF_ATTR_APP_ID,
			    "liteflow: APP_ID required (or use a dump)");
	if (err)
		return err;
	msg = nlmsg_new(NLMSG_DEFAULT_SIZE, GFP_KERNEL);
	if (!msg)
		return -ENOMEM;

	rcu_read_lock();
	app = lf_app_lookup_rcu(nla_get_u32(info->attrs[LF_ATTR_APP_ID]));
	err = app ? lf_nl_fill_app(msg, app, info->snd_portid, info->snd_seq, 0)
		  : -ENOENT;
	rcu_read_unlock();
	if (err == -ENOENT)
		NL_SET_ERR_MSG_ATTR(info->extack, info->attrs[LF_ATTR_APP_ID],
				    "liteflow: no such app");

	if (err) {
		nlmsg_free(msg);
		return err;
	}
	return genlmsg_reply(msg, info);
}

static int lf_nl_list_apps_dumpit(struct sk_buff *skb,
				  struct netlink_callback *cb)
{
	unsigned int slot;
	struct lf_app *app;

	rcu_read_lock();
	for (slot = cb->args[0]; slot < LF_MAX_APPS; slot++) {
		app = lf_app_at_rcu(slot);
		if (!app)
			continue;
		if (lf_nl_fill_app(skb, app, NETLINK_CB(cb->skb).portid,
				   cb->nlh->nlmsg_seq, NLM_F_MULTI))
			break;
	}
	rcu_read_unlock();
	cb->args[0] = slot;
	return skb->len;
}

/* ---- SET_SAMPLING --------------------------------------------------------- */

static int lf_nl_set_sampling(struct sk_buff *skb, struct genl_info *info)
{
	const struct nlattr *flush = info->attrs[LF_ATTR_FLUSH_MS];
	u32 every_n, batch = 0, flush_ms = LF_NL_FLUSH_MS;
	struct lf_app *app;
	int err;

	err = lf_nl_require(info, LF_ATTR_APP_ID, "liteflow: APP_ID required") ?:
	      lf_nl_require(info, LF_ATTR_SAMPLE_EVERY,
			    "liteflow: SAMPLE_EVERY required (0 = off)");
	if (err)
		return err;
	every_n = nla_get_u32(info->attrs[LF_ATTR_SAMPLE_EVERY]);
	if (info->attrs[LF_ATTR_SAMPLE_BATCH])
		batch = nla_get_u32(info->attrs[LF_ATTR_SAMPLE_BATCH]);
	if (flush) {
		flush_ms = nla_get_u32(flush);
		/* checked here too, so that turning sampling off with a bad one fails alike */
		if (!flush_ms || flush_ms > LF_NL_FLUSH_MAX_MS) {
			NL_SET_ERR_MSG_ATTR(info->extack, flush,
					    "liteflow: FLUSH_MS must be 1..LF_NL_FLUSH_MAX_MS");
			return -ERANGE;
		}
	}

	mutex_lock(&lf_mutex);
	app = lf_nl_app_locked(info);
	err = app ? lf_sampling_set_locked(app, every_n, batch, flush_ms,
					   info->extack)
		  : -ENOENT;
	mutex_unlock(&lf_mutex);
	return err;
}

/* ---- EVALUATE ------------------------------------------------------------- */

/* Runs under lf_mutex: the active snapshot cannot change or be freed. */
static int lf_nl_eval_locked(struct lf_app *app, const s8 *inputs, u32 count,
			     struct sk_buff *msg, struct genl_info *info)
{
	struct lf_model *model = lf_active_locked(app);
	struct nlattr *out_attr;
	s8 *outputs;
	u32 i;
	int err;

	if (!model) {
		NL_SET_ERR_MSG(info->extack, "liteflow: app has no active snapshot");
		return -ENOENT;
	}
	if (nla_put_u32(msg, LF_ATTR_APP_ID, app->id) ||
	    lf_put_u64(msg, LF_ATTR_SNAPSHOT_ID, model->snapshot_id) ||
	    nla_put_u32(msg, LF_ATTR_COUNT, count))
		return -EMSGSIZE;
	out_attr = nla_reserve(msg, LF_ATTR_OUTPUTS, count * app->output_size);
	if (!out_attr)
		return -EMSGSIZE;
	outputs = nla_data(out_attr);

	for (i = 0; i < count; i++) {
		err = lf_engine_infer(&model->spec, inputs + i * app->input_size,
				      outputs + i * app->output_size);
		if (err)
			return err;
		if ((i + 1) % LF_EVAL_RESCHED_EVERY == 0)
			cond_resched();
	}
	return 0;
}

static int lf_nl_evaluate(struct sk_buff *skb, struct genl_info *info)
{
	const struct nlattr *in_attr = info->attrs[LF_ATTR_INPUTS];
	struct sk_buff *msg;
	struct lf_app *app;
	u32 len, count;
	void *hdr;
	int err;

	err = lf_nl_require(info, LF_ATTR_APP_ID, "liteflow: APP_ID required") ?:
	      lf_nl_require(info, LF_ATTR_INPUTS, "liteflow: INPUTS required");
	if (err)
		return err;
	len = nla_len(in_attr);

	mutex_lock(&lf_mutex);
	app = lf_nl_app_locked(info);
	if (!app) {
		err = -ENOENT;
		goto unlock;
	}
	count = len / app->input_size;
	if (!count || count * app->input_size != len) {
		NL_SET_ERR_MSG_ATTR(info->extack, in_attr,
				    "liteflow: INPUTS is not k * input_size bytes");
		err = -EINVAL;
		goto unlock;
	}
	if (count > LF_NL_EVAL_MAX_VECTORS ||
	    count * app->output_size > LF_NL_BINARY_MAX) {
		NL_SET_ERR_MSG_ATTR(info->extack, in_attr,
				    "liteflow: too many input vectors");
		err = -E2BIG;
		goto unlock;
	}
	msg = genlmsg_new(nla_total_size(count * app->output_size) +
			  3 * nla_total_size_64bit(sizeof(u64)), GFP_KERNEL);
	if (!msg) {
		err = -ENOMEM;
		goto unlock;
	}
	hdr = genlmsg_put_reply(msg, info, &lf_genl_family, 0, LF_CMD_EVALUATE);
	err = hdr ? lf_nl_eval_locked(app, nla_data(in_attr), count, msg, info)
		  : -EMSGSIZE;
	mutex_unlock(&lf_mutex);

	if (err) {
		nlmsg_free(msg);
		return err;
	}
	genlmsg_end(msg, hdr);
	return genlmsg_reply(msg, info);

unlock:
	mutex_unlock(&lf_mutex);
	return err;
}

/* ---- LOAD_MODEL / UNLOAD_MODEL / SWAP ------------------------------------- */

static void lf_nl_stage_drop_locked(struct lf_app *app)
{
	kvfree(app->stage);
	app->stage = NULL;
}

/*
 * A chunk at offset 0: (re)start the app's upload of a @size-byte blob. The caller bounds @size
 * by LF_NL_BLOB_MAX, so the sum below cannot overflow (struct_size() is 4.18+, and 4.15 builds).
 */
static int lf_nl_stage_start_locked(struct lf_app *app, u64 snapshot_id,
				    u32 size, u32 portid)
{
	struct lf_blob_stage *stage;

	lf_nl_stage_drop_locked(app);
	stage = kvmalloc(sizeof(*stage) + size, GFP_KERNEL);
	if (!stage)
		return -ENOMEM;
	stage->snapshot_id = snapshot_id;
	stage->portid = portid;
	stage->size = size;
	stage->received = 0;
	app->stage = stage;
	return 0;
}

/*
 * Append one chunk of a blob over LF_NL_BINARY_MAX to the app's upload.
 * Returns 0 once the chunk is stored; the caller loads the blob when
 * stage->received reaches stage->size.  Anything out of sequence drops
 * the upload: a client starts again at offset 0.
 */
static int lf_nl_stage_chunk_locked(struct lf_app *app, u64 snapshot_id,
				    struct genl_info *info)
{
	const struct nlattr *chunk = info->attrs[LF_ATTR_BLOB];
	u32 size = nla_get_u32(info->attrs[LF_ATTR_BLOB_SIZE]);
	u32 offset = info->attrs[LF_ATTR_BLOB_OFFSET] ?
		     nla_get_u32(info->attrs[LF_ATTR_BLOB_OFFSET]) : 0;
	struct lf_blob_stage *stage;
	int err;

	if (!size || size > LF_NL_BLOB_MAX) {
		NL_SET_ERR_MSG_ATTR(info->extack, info->attrs[LF_ATTR_BLOB_SIZE],
				    "liteflow: BLOB_SIZE must be 1..LF_NL_BLOB_MAX");
		return size ? -E2BIG : -EINVAL;
	}
	if (!offset) {
		err = lf_nl_stage_start_locked(app, snapshot_id, size,
					       info->snd_portid);
		if (err)
			return err;
	}
	stage = app->stage;
	if (!stage || stage->snapshot_id != snapshot_id ||
	    stage->portid != info->snd_portid || stage->size != size ||
	    stage->received != offset ||
	    nla_len(chunk) > size - offset) {
		lf_nl_stage_drop_locked(app);
		NL_SET_ERR_MSG(info->extack,
			       "liteflow: blob chunk out of sequence, start again at offset 0");
		return -EINVAL;
	}
	memcpy(stage->data + offset, nla_data(chunk), nla_len(chunk));
	stage->received += nla_len(chunk);
	return 0;
}

/*
 * Load the blob of this request (whole, or the last chunk of an upload);
 * -EINPROGRESS when a chunk was stored and more are to come.
 */
static int lf_nl_load_locked(struct lf_app *app, u64 snapshot_id,
			     struct genl_info *info)
{
	const struct nlattr *blob = info->attrs[LF_ATTR_BLOB];
	struct lf_blob_stage *stage;
	int err;

	if (!info->attrs[LF_ATTR_BLOB_SIZE])
		return lf_hot_load_locked(app, snapshot_id, nla_data(blob),
					  nla_len(blob), info->extack);
	err = lf_nl_stage_chunk_locked(app, snapshot_id, info);
	if (err)
		return err;
	stage = app->stage;
	if (stage->received < stage->size)
		return -EINPROGRESS;
	err = lf_hot_load_locked(app, snapshot_id, stage->data, stage->size,
				 info->extack);
	lf_nl_stage_drop_locked(app);
	return err;
}

/*
 * The reply is allocated before the update so that, once the snapshot is
 * switched, nothing can fail and tell the client otherwise.
 */
static int lf_nl_load_model(struct sk_buff *skb, struct genl_info *info)
{
	u64 snapshot_id, started_ns, kernel_ns;
	struct sk_buff *msg;
	struct lf_app *app;
	u32 app_id = 0;
	void *hdr;
	int err;

	err = lf_nl_require(info, LF_ATTR_APP_ID, "liteflow: APP_ID required") ?:
	      lf_nl_require(info, LF_ATTR_SNAPSHOT_ID,
			    "liteflow: SNAPSHOT_ID required") ?:
	      lf_nl_require(info, LF_ATTR_BLOB, "liteflow: BLOB required");
	if (err)
		return err;
	snapshot_id = nla_get_u64(info->attrs[LF_ATTR_SNAPSHOT_ID]);
	if (!snapshot_id) {
		NL_SET_ERR_MSG(info->extack, "liteflow: snapshot id 0 is reserved");
		return -EINVAL;
	}
	msg = genlmsg_new(nla_total_size(sizeof(u32)) +
			  2 * nla_total_size_64bit(sizeof(u64)), GFP_KERNEL);
	if (!msg)
		return -ENOMEM;
	hdr = genlmsg_put_reply(msg, info, &lf_genl_family, 0,
				LF_CMD_LOAD_MODEL);
	if (!hdr) {
		nlmsg_free(msg);
		return -EMSGSIZE;
	}

	started_ns = ktime_get_ns();
	mutex_lock(&lf_mutex);
	app = lf_nl_app_locked(info);
	err = app ? lf_nl_load_locked(app, snapshot_id, info) : -ENOENT;
	if (!err)
		app_id = app->id;
	mutex_unlock(&lf_mutex);
	if (err) {
		nlmsg_free(msg);
		return err == -EINPROGRESS ? 0 : err;	/* a chunk: ACK only */
	}
	kernel_ns = ktime_get_ns() - started_ns;
	/* logged after the timing: a slow console is not the update's cost */
	pr_info("snapshot %llu hot-loaded for app id %u in %llu ns\n",
		(unsigned long long)snapshot_id, app_id,
		(unsigned long long)kernel_ns);

	/* sized above, so these cannot run out of room */
	nla_put_u32(msg, LF_ATTR_APP_ID, app_id);
	lf_put_u64(msg, LF_ATTR_SNAPSHOT_ID, snapshot_id);
	lf_put_u64(msg, LF_ATTR_TOTAL_NS, kernel_ns);
	genlmsg_end(msg, hdr);
	/* a lost reply leaves the ACK saying what happened: the switch */
	genlmsg_reply(msg, info);
	return 0;
}

static int lf_nl_unload_model(struct sk_buff *skb, struct genl_info *info)
{
	struct lf_app *app;
	int err;

	err = lf_nl_require(info, LF_ATTR_APP_ID, "liteflow: APP_ID required") ?:
	      lf_nl_require(info, LF_ATTR_SNAPSHOT_ID,
			    "liteflow: SNAPSHOT_ID required");
	if (err)
		return err;

	mutex_lock(&lf_mutex);
	app = lf_nl_app_locked(info);
	err = app ? lf_hot_unload_locked(app,
			nla_get_u64(info->attrs[LF_ATTR_SNAPSHOT_ID]))
		  : -ENOENT;
	mutex_unlock(&lf_mutex);
	if (err == -EBUSY)
		NL_SET_ERR_MSG(info->extack, "liteflow: snapshot is active");
	else if (err == -EPERM)
		NL_SET_ERR_MSG(info->extack, "liteflow: snapshot belongs to a module, rmmod it");
	return err;
}

static int lf_nl_swap(struct sk_buff *skb, struct genl_info *info)
{
	struct lf_app *app;
	int err;

	err = lf_nl_require(info, LF_ATTR_APP_ID, "liteflow: APP_ID required");
	if (err)
		return err;

	mutex_lock(&lf_mutex);
	app = lf_nl_app_locked(info);
	err = app ? lf_swap_locked(app) : -ENOENT;
	mutex_unlock(&lf_mutex);
	if (err == -ENOENT && app)
		NL_SET_ERR_MSG(info->extack, "liteflow: standby slot is empty");
	return err;
}

/* ---- BENCH ---------------------------------------------------------------- */

static int lf_nl_bench(struct sk_buff *skb, struct genl_info *info)
{
	u64 total_ns = 0, snapshot_id = 0, macs = 0;
	struct sk_buff *msg;
	u32 app_id, iters, done = 0;
	void *hdr;
	int err;

	err = lf_nl_require(info, LF_ATTR_APP_ID, "liteflow: APP_ID required") ?:
	      lf_nl_require(info, LF_ATTR_ITERATIONS,
			    "liteflow: ITERATIONS required");
	if (err)
		return err;
	app_id = nla_get_u32(info->attrs[LF_ATTR_APP_ID]);
	iters = nla_get_u32(info->attrs[LF_ATTR_ITERATIONS]);
	if (!iters || iters > LF_NL_BENCH_MAX_ITERS) {
		NL_SET_ERR_MSG_ATTR(info->extack, info->attrs[LF_ATTR_ITERATIONS],
				    "liteflow: ITERATIONS must be 1..LF_NL_BENCH_MAX_ITERS");
		return iters ? -E2BIG : -EINVAL;
	}

	err = lf_bench(app_id, iters, &done, &total_ns, &snapshot_id, &macs);
	if (err) {
		if (err == -ENOENT)
			NL_SET_ERR_MSG(info->extack,
				       "liteflow: no such app or no active snapshot");
		return err;
	}

	msg = genlmsg_new(2 * nla_total_size(sizeof(u32)) +
			  4 * nla_total_size_64bit(sizeof(u64)), GFP_KERNEL);
	if (!msg)
		return -ENOMEM;
	hdr = genlmsg_put_reply(msg, info, &lf_genl_family, 0, LF_CMD_BENCH);
	if (!hdr ||
	    nla_put_u32(msg, LF_ATTR_APP_ID, app_id) ||
	    lf_put_u64(msg, LF_ATTR_SNAPSHOT_ID, snapshot_id) ||
	    nla_put_u32(msg, LF_ATTR_ITERATIONS, done) ||
	    lf_put_u64(msg, LF_ATTR_TOTAL_NS, total_ns) ||
	    lf_put_u64(msg, LF_ATTR_NS_PER_QUERY,
		       div_u64(total_ns, max_t(u32, done, 1))) ||
	    lf_put_u64(msg, LF_ATTR_MACS, macs)) {
		nlmsg_free(msg);
		return -EMSGSIZE;
	}
	genlmsg_end(msg, hdr);
	return genlmsg_reply(msg, info);
}

/* ---- SAMPLES (multicast) -------------------------------------------------- */

/*
 * Process context (the sampler's work item); never under lf_mutex.
 * @contexts is count * context_size bytes for an app with context.
 */
int lf_netlink_send_samples(struct lf_app *app, u64 snapshot_id, u32 count,
			    const s8 *inputs, const s8 *outputs,
			    const u8 *contexts)
{
	size_t in_bytes = (size_t)count * app->input_size;
	size_t out_bytes = (size_t)count * app->output_size;
	size_t ctx_bytes = (size_t)count * app->context_size;
	struct lf_app_stats stats;
	struct sk_buff *msg;
	void *hdr;

	/* a batch is up to LF_NL_SAMPLE_MAX_BYTES: build none nobody reads */
	if (!genl_has_listeners(&lf_genl_family, &init_net, LF_MCGRP_SAMPLES))
		return -ESRCH;
	msg = genlmsg_new(3 * nla_total_size(sizeof(u32)) +
			  2 * nla_total_size_64bit(sizeof(u64)) +
			  nla_total_size(in_bytes) + nla_total_size(out_bytes) +
			  nla_total_size(ctx_bytes), GFP_KERNEL);
	if (!msg)
		return -ENOMEM;
	lf_app_stats_sum(app, &stats);
	hdr = genlmsg_put(msg, 0, 0, &lf_genl_family, 0, LF_CMD_SAMPLES);
	if (!hdr ||
	    nla_put_u32(msg, LF_ATTR_APP_ID, app->id) ||
	    lf_put_u64(msg, LF_ATTR_SNAPSHOT_ID, snapshot_id) ||
	    nla_put_u32(msg, LF_ATTR_COUNT, count) ||
	    nla_put(msg, LF_ATTR_INPUTS, in_bytes, inputs) ||
	    nla_put(msg, LF_ATTR_OUTPUTS, out_bytes, outputs) ||
	    lf_put_u64(msg, LF_ATTR_SAMPLES_DROPPED, stats.samples_dropped) ||
	    (ctx_bytes &&
	     (nla_put_u32(msg, LF_ATTR_CONTEXT_SIZE, app->context_size) ||
	      nla_put(msg, LF_ATTR_CONTEXTS, ctx_bytes, contexts)))) {
		nlmsg_free(msg);
		return -EMSGSIZE;
	}
	genlmsg_end(msg, hdr);
	return genlmsg_multicast(&lf_genl_family, msg, 0, LF_MCGRP_SAMPLES,
				 GFP_KERNEL);
}

/* ---- upcalls: AGENT_REGISTER / QUERY / ANSWER / UPCALL_BENCH ------------- */

static int lf_nl_agent_register(struct sk_buff *skb, struct genl_info *info)
{
	struct lf_app *app;
	int err;

	err = lf_nl_require(info, LF_ATTR_APP_ID, "liteflow: APP_ID required");
	if (err)
		return err;

	mutex_lock(&lf_mutex);
	app = lf_nl_app_locked(info);
	err = app ? lf_upcall_register_locked(app, info->snd_portid) : -ENOENT;
	mutex_unlock(&lf_mutex);
	return err;
}

/* lf_upcall.c, process context: one QUERY to the agent at @portid. */
int lf_netlink_send_query(u32 portid, u32 app_id, u64 seq, const s8 *inputs,
			  u16 input_size, gfp_t gfp)
{
	struct sk_buff *msg;
	void *hdr;

	msg = genlmsg_new(nla_total_size(sizeof(u32)) +
			  nla_total_size_64bit(sizeof(u64)) +
			  nla_total_size(input_size), gfp);
	if (!msg)
		return -ENOMEM;
	hdr = genlmsg_put(msg, 0, 0, &lf_genl_family, 0, LF_CMD_QUERY);
	if (!hdr ||
	    nla_put_u32(msg, LF_ATTR_APP_ID, app_id) ||
	    lf_put_u64(msg, LF_ATTR_QUERY_SEQ, seq) ||
	    nla_put(msg, LF_ATTR_INPUTS, input_size, inputs)) {
		nlmsg_free(msg);
		return -EMSGSIZE;
	}
	genlmsg_end(msg, hdr);
	/* the family is not netnsok: agents live in the initial namespace */
	return genlmsg_unicast(&init_net, msg, portid);
}

static int lf_nl_answer(struct sk_buff *skb, struct genl_info *info)
{
	const struct nlattr *out = info->attrs[LF_ATTR_OUTPUTS];
	int err;

	err = lf_nl_require(info, LF_ATTR_APP_ID, "liteflow: APP_ID required") ?:
	      lf_nl_require(info, LF_ATTR_QUERY_SEQ,
			    "liteflow: QUERY_SEQ required") ?:
	      lf_nl_require(info, LF_ATTR_OUTPUTS, "liteflow: OUTPUTS required");
	if (err)
		return err;
	err = lf_upcall_answer(nla_get_u32(info->attrs[LF_ATTR_APP_ID]),
			       info->snd_portid,
			       nla_get_u64(info->attrs[LF_ATTR_QUERY_SEQ]),
			       nla_data(out), nla_len(out));
	if (err == -ESTALE)
		NL_SET_ERR_MSG(info->extack, "liteflow: no query waits for this seq");
	else if (err == -EPERM)
		NL_SET_ERR_MSG(info->extack, "liteflow: sender is not the app's agent");
	else if (err == -EINVAL)
		NL_SET_ERR_MSG_ATTR(info->extack, out,
				    "liteflow: OUTPUTS is not output_size bytes");
	else if (err == -ENOENT)
		NL_SET_ERR_MSG(info->extack, "liteflow: no agent registered for the app");
	return err;
}

/* Parse ITERATIONS and the optional TIMEOUT_MS of UPCALL_BENCH. */
static int lf_nl_upcall_bench_args(struct genl_info *info, u32 *iters,
				   u32 *timeout_ms)
{
	const struct nlattr *timeout = info->attrs[LF_ATTR_TIMEOUT_MS];

	*iters = nla_get_u32(info->attrs[LF_ATTR_ITERATIONS]);
	if (!*iters || *iters > LF_NL_UPCALL_MAX_ITERS) {
		NL_SET_ERR_MSG_ATTR(info->extack, info->attrs[LF_ATTR_ITERATIONS],
				    "liteflow: ITERATIONS must be 1..LF_NL_UPCALL_MAX_ITERS");
		return *iters ? -E2BIG : -EINVAL;
	}
	*timeout_ms = timeout ? nla_get_u32(timeout) : LF_NL_UPCALL_TIMEOUT_MS;
	if (!*timeout_ms || *timeout_ms > LF_NL_UPCALL_MAX_TIMEOUT_MS) {
		NL_SET_ERR_MSG_ATTR(info->extack, timeout,
				    "liteflow: TIMEOUT_MS must be 1..LF_NL_UPCALL_MAX_TIMEOUT_MS");
		return *timeout_ms ? -E2BIG : -EINVAL;
	}
	return 0;
}

static int lf_nl_upcall_bench(struct sk_buff *skb, struct genl_info *info)
{
	struct lf_upcall_bench res;
	u32 app_id, iters, timeout_ms;
	struct sk_buff *msg;
	void *hdr;
	int err;

	err = lf_nl_require(info, LF_ATTR_APP_ID, "liteflow: APP_ID required") ?:
	      lf_nl_require(info, LF_ATTR_ITERATIONS,
			    "liteflow: ITERATIONS required") ?:
	      lf_nl_upcall_bench_args(info, &iters, &timeout_ms);
	if (err)
		return err;
	app_id = nla_get_u32(info->attrs[LF_ATTR_APP_ID]);

	err = lf_upcall_bench(app_id, iters, timeout_ms, &res);
	if (err) {
		if (err == -ENOTCONN)
			NL_SET_ERR_MSG(info->extack,
				       "liteflow: no user-space agent registered for the app");
		else if (err == -ENOENT)
			NL_SET_ERR_MSG(info->extack, "liteflow: the app is gone");
		return err;
	}

	msg = genlmsg_new(2 * nla_total_size(sizeof(u32)) +
			  5 * nla_total_size_64bit(sizeof(u64)), GFP_KERNEL);
	if (!msg)
		return -ENOMEM;
	hdr = genlmsg_put_reply(msg, info, &lf_genl_family, 0,
				LF_CMD_UPCALL_BENCH);
	if (!hdr ||
	    nla_put_u32(msg, LF_ATTR_APP_ID, app_id) ||
	    nla_put_u32(msg, LF_ATTR_ITERATIONS, res.iterations) ||
	    lf_put_u64(msg, LF_ATTR_TOTAL_NS, res.total_ns) ||
	    lf_put_u64(msg, LF_ATTR_NS_PER_QUERY,
		       div_u64(res.total_ns, max_t(u32, res.iterations, 1))) ||
	    lf_put_u64(msg, LF_ATTR_ERRORS, res.errors) ||
	    lf_put_u64(msg, LF_ATTR_TIMEOUTS, res.timeouts) ||
	    lf_put_u64(msg, LF_ATTR_STALE_ANSWERS, res.stale_answers)) {
		nlmsg_free(msg);
		return -EMSGSIZE;
	}
	genlmsg_end(msg, hdr);
	return genlmsg_reply(msg, info);
}

/* ---- family --------------------------------------------------------------- */

static const struct genl_ops lf_genl_ops[] = {
	{
		.cmd	= LF_CMD_LIST_APPS,
		.doit	= lf_nl_list_apps_doit,
		.dumpit	= lf_nl_list_apps_dumpit,
		LF_GENL_OP_POLICY(lf_nl_policy)
	},
	{
		.cmd	= LF_CMD_SET_SAMPLING,
		.doit	= lf_nl_set_sampling,
		.flags	= GENL_ADMIN_PERM,
		LF_GENL_OP_POLICY(lf_nl_policy)
	},
	{
		.cmd	= LF_CMD_EVALUATE,
		.doit	= lf_nl_evaluate,
		.flags	= GENL_ADMIN_PERM,	/* holds lf_mutex while it runs */
		LF_GENL_OP_POLICY(lf_nl_policy)
	},
	{
		.cmd	= LF_CMD_LOAD_MODEL,
		.doit	= lf_nl_load_model,
		.flags	= GENL_ADMIN_PERM,
		LF_GENL_OP_POLICY(lf_nl_policy)
	},
	{
		.cmd	= LF_CMD_BENCH,
		.doit	= lf_nl_bench,
		.flags	= GENL_ADMIN_PERM,
		LF_GENL_OP_POLICY(lf_nl_policy)
	},
	{
		.cmd	= LF_CMD_UNLOAD_MODEL,
		.doit	= lf_nl_unload_model,
		.flags	= GENL_ADMIN_PERM,
		LF_GENL_OP_POLICY(lf_nl_policy)
	},
	{
		.cmd	= LF_CMD_SWAP,
		.doit	= lf_nl_swap,
		.flags	= GENL_ADMIN_PERM,
		LF_GENL_OP_POLICY(lf_nl_policy)
	},
	{
		.cmd	= LF_CMD_AGENT_REGISTER,
		.doit	= lf_nl_agent_register,
		.flags	= GENL_ADMIN_PERM,
		LF_GENL_OP_POLICY(lf_nl_policy)
	},
	{
		.cmd	= LF_CMD_ANSWER,
		.doit	= lf_nl_answer,
		.flags	= GENL_ADMIN_PERM,
		LF_GENL_OP_POLICY(lf_nl_policy)
	},
	{
		.cmd	= LF_CMD_UPCALL_BENCH,
		.doit	= lf_nl_upcall_bench,
		.flags	= GENL_ADMIN_PERM,	/* sleeps, LF_NL_UPCALL_MAX_NS a request */
		LF_GENL_OP_POLICY(lf_nl_policy)
	},
};

static const struct genl_multicast_group lf_genl_mcgrps[] = {
	[LF_MCGRP_SAMPLES] = {
		.name	= LF_GENL_MCGRP_SAMPLES,
		LF_GENL_MCGRP_ADMIN_FLAGS
	},
};

#ifdef LF_GENL_MCAST_BIND_CHECK
/* Runs in the process joining one of our groups (compat.h): only an admin collects samples. */
static int lf_nl_mcast_bind(struct net *net, int group)
{
	return ns_capable(net->user_ns, CAP_NET_ADMIN) ? 0 : -EPERM;
}
#endif

static struct genl_family lf_genl_family __ro_after_init = {
	.name		= LF_GENL_NAME,
	.version	= LF_GENL_VERSION,
	.maxattr	= LF_ATTR_MAX,
	LF_GENL_FAMILY_POLICY(lf_nl_policy)
	.netnsok	= false,
	.parallel_ops	= true,
	.module		= THIS_MODULE,
	.ops		= lf_genl_ops,
	.n_ops		= ARRAY_SIZE(lf_genl_ops),
	.mcgrps		= lf_genl_mcgrps,
	.n_mcgrps	= ARRAY_SIZE(lf_genl_mcgrps),
#ifdef LF_GENL_MCAST_BIND_CHECK
	.mcast_bind	= lf_nl_mcast_bind,
#endif
};

int __init lf_netlink_init(void)
{
	int err;

	err = genl_register_family(&lf_genl_family);
	if (err)
		return err;
	pr_info("samples group guarded by %s\n", LF_SAMPLES_GUARD);
	err = lf_upcall_init();
	if (err)
		genl_unregister_family(&lf_genl_family);
	return err;
}

/* Family first: afterwards no handler runs, so no upcall can start. */
void lf_netlink_exit(void)
{
	genl_unregister_family(&lf_genl_family);
	lf_upcall_exit();
}
