/* SPDX-License-Identifier: GPL-2.0 */
/*
 * LiteFlow core: the API that datapath apps, snapshot modules and io
 * (input collector / output enforcer) modules use.  See liteflow_core.c for
 * the design; see lf_engine.h for what a snapshot computes.
 */
#ifndef _LITEFLOW_H
#define _LITEFLOW_H

#include <linux/types.h>
#include <linux/rcupdate.h>
#include <linux/module.h>
#include "lf_engine.h"
#include "lf_netlink.h"

#define LF_APP_NAME_MAX		32

/*
 * A registered snapshot.  A generated snapshot module owns one statically
 * (owner = THIS_MODULE); a hot-loaded one is allocated by the core
 * (owner = NULL, blob holds the weights).
 */
struct lf_model {
	u32 app_id;
	u64 snapshot_id;		/* unique per snapshot, chosen by the toolchain */
	struct lf_snapshot_spec spec;
	struct module *owner;
	/* private to the core */
	void *blob;
	struct rcu_head rcu;
};

int lf_register_app(const char *name, u16 input_size, u16 output_size, u32 *app_id);
int lf_unregister_app(u32 app_id);

/* Install into the standby slot, then switch it active. */
int lf_register_model(struct lf_model *model);
/* Remove from the standby slot; the active snapshot cannot be removed (-EBUSY). */
int lf_unregister_model(struct lf_model *model);

/*
 * Fast path: run the active snapshot.  Safe from any context (softirq
 * included); never sleeps, never logs.  -ENOENT: no such app or no active
 * snapshot; -EINVAL: malformed.
 */
int lf_query_model(u32 app_id, const s8 *input, s8 *output);

/* Input collectors / output enforcers declare the sizes they produce/consume. */
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

#endif /* _LITEFLOW_H */
