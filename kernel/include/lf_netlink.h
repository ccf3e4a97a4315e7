/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * LiteFlow generic netlink UAPI: family "liteflow", version 1.
 *
 * Shared by the kernel core (core/lf_netlink.c) and user space (the slow
 * path's netlink client).  Only enums and #defines live here so the file can
 * be included from C user space or transcribed into Python as is.
 *
 * Integers are host endian (netlink convention).  u64 attributes are sent
 * 64-bit aligned with LF_ATTR_PAD where needed (nla_put_u64_64bit), so a
 * reader must skip LF_ATTR_PAD.  Binary s8 arrays are row-major: a batch of
 * k vectors of n elements is k * n bytes, vector i at offset i * n.
 */
#ifndef _UAPI_LF_NETLINK_H
#define _UAPI_LF_NETLINK_H

#define LF_GENL_NAME		"liteflow"
#define LF_GENL_VERSION		1
#define LF_GENL_MCGRP_SAMPLES	"samples"

/* Limits the kernel enforces on requests (errno in brackets). */
#define LF_NL_EVAL_MAX_VECTORS	1024		/* EVALUATE: k <= this [E2BIG] */
#define LF_NL_BENCH_MAX_ITERS	10000000	/* BENCH: iterations <= this [E2BIG] */
#define LF_NL_BENCH_MAX_NS	(100 * 1000 * 1000) /* BENCH: one request stops after this, ns */
#define LF_NL_SAMPLE_MAX_BATCH	256		/* SET_SAMPLING: batch <= this [E2BIG] */
#define LF_NL_SAMPLE_MAX_BYTES	(60 * 1024)	/* batch * (in + out + context) <= this [E2BIG] */
#define LF_NL_FLUSH_MS		100		/* SET_SAMPLING: default flush delay, ms */
#define LF_NL_FLUSH_MAX_MS	10000		/* SET_SAMPLING: FLUSH_MS in 1..this [ERANGE] */
#define LF_NL_BINARY_MAX	65000		/* any binary attribute (u16 nla_len) */
#define LF_NL_BLOB_MAX		551152		/* LOAD_MODEL: BLOB_SIZE <= this, the engine's
						 * largest blob (8 layers of 256 x 256) [E2BIG] */
#define LF_NL_UPCALL_MAX_ITERS	1000000		/* UPCALL_BENCH: iterations <= this [E2BIG] */
#define LF_NL_UPCALL_TIMEOUT_MS	1000		/* UPCALL_BENCH: default per-query timeout, ms */
#define LF_NL_UPCALL_MAX_TIMEOUT_MS 1000	/* per-query timeout <= this, ms [E2BIG] */
#define LF_NL_UPCALL_MAX_NS	(1000 * 1000 * 1000) /* UPCALL_BENCH: one request starts no
						 * round trip after this, ns */

enum lf_cmd {
	LF_CMD_UNSPEC,
	/*
	 * LIST_APPS: dump (NLM_F_DUMP) lists every app, one message each;
	 * doit needs LF_ATTR_APP_ID and answers for that app.  Per app:
	 * APP_ID, APP_NAME, INPUT_SIZE, OUTPUT_SIZE, QUERIES, ERRORS,
	 * ACTIVE_ID, STANDBY_ID (0 = empty slot), ACTIVE_ORIGIN,
	 * STANDBY_ORIGIN (module name, "hot" for a hot-loaded snapshot, ""
	 * for an empty slot), SAMPLES_SENT, SAMPLES_DROPPED, SAMPLE_EVERY,
	 * SAMPLE_BATCH, SWAPS, IO_COUNT, MAX_MACS, CONTEXT_SIZE, FLUSH_MS,
	 * QUANT_MODE (enum lf_app_quant_mode), and for a FIXED app
	 * INPUT_QUANT and OUTPUT_QUANT; ACTIVE_INPUT_QUANT and
	 * ACTIVE_OUTPUT_QUANT when a snapshot is active.  Unprivileged.
	 */
	LF_CMD_LIST_APPS,
	/*
	 * SET_SAMPLING(APP_ID, SAMPLE_EVERY, SAMPLE_BATCH, FLUSH_MS optional):
	 * sample every Nth query (or lf_record_sample report, for an app with
	 * context) per CPU (0 = off, the default), send batches of
	 * SAMPLE_BATCH pairs (1..LF_NL_SAMPLE_MAX_BATCH, batch * (in + out +
	 * context) <= LF_NL_SAMPLE_MAX_BYTES); a partial batch is sent at
	 * most FLUSH_MS (1..LF_NL_FLUSH_MAX_MS, default LF_NL_FLUSH_MS) after
	 * its first pair, so a quiet CPU's samples are not stale.  Partial
	 * batches of the previous setting are discarded.  CAP_NET_ADMIN.
	 */
	LF_CMD_SET_SAMPLING,
	/*
	 * EVALUATE(APP_ID, INPUTS) -> APP_ID, SNAPSHOT_ID (the active one
	 * used), COUNT (k), OUTPUTS (k * output_size bytes).  INPUTS is
	 * k * input_size bytes, 1 <= k <= LF_NL_EVAL_MAX_VECTORS.  Runs the
	 * kernel's own arithmetic; does not count as queries, never sampled.
	 * -ENOENT without an active snapshot.  CAP_NET_ADMIN (it holds the
	 * core's update lock while it runs).
	 */
	LF_CMD_EVALUATE,
	/*
	 * LOAD_MODEL(APP_ID, SNAPSHOT_ID != 0, BLOB) -> APP_ID, SNAPSHOT_ID,
	 * TOTAL_NS: parse and validate a weight blob (lf_engine.h), install
	 * it in standby and switch it active (hot update).  TOTAL_NS is the
	 * time the kernel spent on it, update lock wait included, so a client
	 * can tell its own share of an update from the kernel's.  -EINVAL
	 * malformed or size mismatch, -EBADMSG bad crc, -E2BIG over the
	 * limits, -EEXIST a snapshot with SNAPSHOT_ID is already loaded (for
	 * any app), -EFBIG the snapshot costs more multiply-accumulates per
	 * query than the app's budget (MAX_MACS), -EPROTO the snapshot's
	 * quantization is not the one the app declared.  CAP_NET_ADMIN.
	 *
	 * A blob over LF_NL_BINARY_MAX goes in chunks: each request carries
	 * BLOB_SIZE (the whole blob, <= LF_NL_BLOB_MAX) and BLOB_OFFSET, and
	 * the chunks come in order from one socket; offset 0 (re)starts the
	 * app's upload.  Every chunk but the last is only acknowledged; the
	 * last one loads the blob and replies as above (TOTAL_NS then covers
	 * that request).  -EINVAL a chunk out of sequence (the upload is
	 * dropped).
	 */
	LF_CMD_LOAD_MODEL,
	/*
	 * BENCH(APP_ID, ITERATIONS) -> APP_ID, SNAPSHOT_ID, ITERATIONS,
	 * TOTAL_NS, NS_PER_QUERY, MACS (per inference).  Runs the active
	 * snapshot up to ITERATIONS (1..LF_NL_BENCH_MAX_ITERS) times on one
	 * random input, each under rcu_read_lock like the fast path, but
	 * stops after about LF_NL_BENCH_MAX_NS: the reply's ITERATIONS says
	 * how many ran, and a client loops for more.  -EINTR on a signal.
	 * CAP_NET_ADMIN.
	 */
	LF_CMD_BENCH,
	/*
	 * UNLOAD_MODEL(APP_ID, SNAPSHOT_ID): drop a hot-loaded snapshot from
	 * the standby slot.  -EBUSY if it is active, -ENOENT if no such
	 * standby, -EPERM if the standby belongs to a module (rmmod it).
	 * CAP_NET_ADMIN.
	 */
	LF_CMD_UNLOAD_MODEL,
	/*
	 * SWAP(APP_ID): make the standby snapshot active and the active one
	 * standby (roll back an update).  -ENOENT if standby is empty.
	 * CAP_NET_ADMIN.
	 */
	LF_CMD_SWAP,
	/*
	 * SAMPLES (kernel -> group "samples" only): APP_ID, SNAPSHOT_ID (the
	 * snapshot that produced every output of the batch), COUNT (k),
	 * INPUTS (k * input_size), OUTPUTS (k * output_size),
	 * SAMPLES_DROPPED (app total so far), and for an app with context
	 * CONTEXT_SIZE and CONTEXTS (k * context_size, pair i's at
	 * i * context_size).  Joining the group needs
	 * CAP_NET_ADMIN (CAP_SYS_ADMIN on kernels with only the older check;
	 * where the kernel has neither, SET_SAMPLING fails with EOPNOTSUPP).
	 */
	LF_CMD_SAMPLES,
	/*
	 * The user-space deployment baseline (core/lf_upcall.c): the kernel
	 * ships each query's features to a user-space agent and waits for
	 * its answer.
	 *
	 * AGENT_REGISTER(APP_ID): the sender's socket (its portid) becomes
	 * the app's agent, replacing any previous one (a query waiting on
	 * that one fails).  The registration ends when the socket closes or
	 * the app unregisters.  -ENOENT no such app.  CAP_NET_ADMIN.
	 */
	LF_CMD_AGENT_REGISTER,
	/*
	 * QUERY (kernel -> agent, unicast): APP_ID, QUERY_SEQ, INPUTS
	 * (input_size bytes).  The agent answers with ANSWER and the same
	 * QUERY_SEQ.  Messages have nlmsg_seq 0 (kernel-initiated).  A
	 * QUERY_SEQ with bit 63 set is an asynchronous post (lf_post_user):
	 * nothing waits for it, and its ANSWER goes to the app.
	 */
	LF_CMD_QUERY,
	/*
	 * ANSWER(APP_ID, QUERY_SEQ, OUTPUTS of output_size bytes) from the
	 * agent.  -ESTALE nobody waits for QUERY_SEQ (it timed out; counted
	 * as a stale answer; an asynchronous answer is never stale, the app
	 * judges its lateness), -EPERM the sender is not the app's agent,
	 * -EINVAL wrong size (the waiting query fails).  Agents send it
	 * without NLM_F_ACK; errors still come back.  CAP_NET_ADMIN.
	 */
	LF_CMD_ANSWER,
	/*
	 * UPCALL_BENCH(APP_ID, ITERATIONS, TIMEOUT_MS optional) -> APP_ID,
	 * ITERATIONS, TOTAL_NS, NS_PER_QUERY, ERRORS, TIMEOUTS,
	 * STALE_ANSWERS.  Runs up to ITERATIONS (1..LF_NL_UPCALL_MAX_ITERS)
	 * round trips through the app's agent on one random input, one at a
	 * time, from the caller's process context; each waits at most
	 * TIMEOUT_MS (1..LF_NL_UPCALL_MAX_TIMEOUT_MS, default
	 * LF_NL_UPCALL_TIMEOUT_MS).  No round trip starts after
	 * LF_NL_UPCALL_MAX_NS: the reply's ITERATIONS says how many were
	 * accounted for, and a client loops for more.  A timeout, a send
	 * failure or a malformed answer counts in ERRORS; the run stops
	 * early, the rest of ITERATIONS counted as ERRORS, when the agent or
	 * the app leaves or after 5 timeouts in a row.  TOTAL_NS includes the
	 * failures.  -ENOTCONN no agent, -EINTR on a signal.  CAP_NET_ADMIN.
	 */
	LF_CMD_UPCALL_BENCH,
	__LF_CMD_MAX
};
#define LF_CMD_MAX (__LF_CMD_MAX - 1)

enum lf_attr {
	LF_ATTR_UNSPEC,
	LF_ATTR_PAD,			/* padding for 64-bit alignment */
	LF_ATTR_APP_ID,			/* u32 */
	LF_ATTR_APP_NAME,		/* NUL-terminated string, < 32 bytes */
	LF_ATTR_INPUT_SIZE,		/* u32, features per query */
	LF_ATTR_OUTPUT_SIZE,		/* u32, outputs per query */
	LF_ATTR_QUERIES,		/* u64, lf_query_model calls (errors included) */
	LF_ATTR_ERRORS,			/* u64, lf_query_model calls that failed
					 * (UPCALL_BENCH: failed round trips) */
	LF_ATTR_ACTIVE_ID,		/* u64, active snapshot id, 0 = none */
	LF_ATTR_STANDBY_ID,		/* u64, standby snapshot id, 0 = none */
	LF_ATTR_ACTIVE_ORIGIN,		/* string: owning module name, "hot" or "" */
	LF_ATTR_STANDBY_ORIGIN,		/* string: owning module name, "hot" or "" */
	LF_ATTR_SAMPLES_SENT,		/* u64, pairs multicast to "samples" */
	LF_ATTR_SAMPLES_DROPPED,	/* u64, pairs dropped (buffer busy or send failed;
					 * batches nobody listened to count in
					 * neither SENT nor DROPPED) */
	LF_ATTR_SAMPLE_EVERY,		/* u32, sample every Nth query per CPU, 0 = off */
	LF_ATTR_SAMPLE_BATCH,		/* u32, pairs per SAMPLES message */
	LF_ATTR_SWAPS,			/* u64, active/standby switches */
	LF_ATTR_SNAPSHOT_ID,		/* u64 */
	LF_ATTR_BLOB,			/* binary, hot-update weight blob */
	LF_ATTR_INPUTS,			/* binary, s8[k][input_size] */
	LF_ATTR_OUTPUTS,		/* binary, s8[k][output_size] */
	LF_ATTR_COUNT,			/* u32, k */
	LF_ATTR_ITERATIONS,		/* u32 */
	LF_ATTR_TOTAL_NS,		/* u64, ktime_get_ns() delta */
	LF_ATTR_NS_PER_QUERY,		/* u64, TOTAL_NS / ITERATIONS (rounded down) */
	LF_ATTR_MACS,			/* u64, multiply-accumulates per inference */
	LF_ATTR_IO_COUNT,		/* u32, io modules registered for the app */
	LF_ATTR_QUERY_SEQ,		/* u64, pairs a QUERY with its ANSWER, != 0 */
	LF_ATTR_TIMEOUT_MS,		/* u32, per-query upcall timeout, ms */
	LF_ATTR_TIMEOUTS,		/* u64, upcalls that got no answer in time */
	LF_ATTR_STALE_ANSWERS,		/* u64, answers whose QUERY_SEQ nobody waited for */
	LF_ATTR_BLOB_SIZE,		/* u32, a chunked blob's whole size */
	LF_ATTR_BLOB_OFFSET,		/* u32, where this chunk goes in the blob */
	LF_ATTR_MAX_MACS,		/* u64, the app's cost budget per query */
	LF_ATTR_CONTEXT_SIZE,		/* u32, bytes of app context per sample */
	LF_ATTR_CONTEXTS,		/* binary, u8[k][context_size] */
	LF_ATTR_FLUSH_MS,		/* u32, a partial sample batch's flush delay */
	LF_ATTR_QUANT_MODE,		/* u32, enum lf_app_quant_mode */
	LF_ATTR_INPUT_QUANT,		/* binary, struct lf_quant (3 x s32) */
	LF_ATTR_OUTPUT_QUANT,		/* binary, struct lf_quant */
	LF_ATTR_ACTIVE_INPUT_QUANT,	/* binary, struct lf_quant of the active snapshot */
	LF_ATTR_ACTIVE_OUTPUT_QUANT,	/* binary, struct lf_quant of the active snapshot */
	__LF_ATTR_MAX
};
#define LF_ATTR_MAX (__LF_ATTR_MAX - 1)

#endif /* _UAPI_LF_NETLINK_H */
