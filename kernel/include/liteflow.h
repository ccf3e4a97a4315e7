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
 *  - Everything here may sleep except lf_query_model.
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

/*
 * Register an app; sizes in 1..LF_MAX_UNITS.  @max_macs (> 0) is the most
 * multiply-accumulates one query may cost (lf_engine_macs of a snapshot):
 * a query runs whole inside an RCU read section, in softirq for most
 * apps, so the app bounds it, and any snapshot over it is refused with
 * -EFBIG however it arrives.  App ids are never reused while the core is
 * loaded.  -EEXIST for a name already taken, -ENOSPC beyond LF_MAX_APPS,
 * -EINVAL for bad sizes, name or budget.
 */
int lf_register_app(const char *name, u16 input_size, u16 output_size,
		    u64 max_macs, u32 *app_id);

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

#endif /* _LITEFLOW_H */
