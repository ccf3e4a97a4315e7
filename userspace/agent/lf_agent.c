// SPDX-License-Identifier: GPL-2.0
/*
 * lf_agent: the user-space agent of the "NN deployed in user space"
 * baseline.
 *
 * LiteFlow (Zhang et al., SIGCOMM 2022) runs the datapath's NN snapshot in
 * the kernel because the alternative, an NN in user space, pays a
 * cross-space round trip per decision: the kernel ships the features to an
 * agent, the agent infers, the kernel waits for the answer.  This program
 * is that agent.  It runs the very same integer engine as the kernel
 * (kernel/engine/lf_engine.c, compiled in with the kernel's no-SIMD flags)
 * on the same weight blob, so a comparison with the in-kernel fast path
 * measures the crossing and nothing else.
 *
 *   lf_agent APP_ID BLOB
 *
 * It loads BLOB (a hot-update weight blob, lf_engine.h), resolves the
 * generic netlink family "liteflow", checks the app's sizes against the
 * blob, registers its socket as the app's agent (LF_CMD_AGENT_REGISTER,
 * needs CAP_NET_ADMIN), prints "lf_agent: ready app=N portid=P" on stdout,
 * then answers every LF_CMD_QUERY with an LF_CMD_ANSWER until SIGTERM or
 * SIGINT.  On SIGHUP it reads BLOB again and, if the new weights parse,
 * validate and fit the app, answers with them from the next query on (how
 * a slow path updates the user-space deployment; a bad blob is reported
 * and the old weights stay).  The kernel forgets the agent when its socket
 * closes.  Queries whose QUERY_SEQ has bit 63 set (asynchronous posts,
 * lf_post_user) are answered the same way.  When queries come faster than
 * it reads them its socket overflows: the kernel drops what did not fit
 * (lf_cc counts those posts as failed) and the next receive reports
 * ENOBUFS, which the agent counts and serves on; the queries that did fit
 * are still there, and a later post supersedes a dropped one.  Exit
 * status: 0 after a signal, 1 usage, 2 bad blob, 3 no family / no app /
 * sizes mismatch / registration refused, 4 netlink failure while serving.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <netlink/netlink.h>
#include <netlink/genl/genl.h>
#include <netlink/genl/ctrl.h>

#include "lf_engine.h"
#include "lf_netlink.h"

#define LF_AGENT_BLOB_MAX	(4 << 20)	/* bytes; real blobs are KiB */

enum lf_agent_exit {
	LF_EXIT_OK	= 0,
	LF_EXIT_USAGE	= 1,
	LF_EXIT_BLOB	= 2,
	LF_EXIT_SETUP	= 3,
	LF_EXIT_SERVE	= 4,
};

struct lf_agent {
	struct nl_sock *sk;
	int family;
	uint32_t app_id;
	struct lf_snapshot_spec spec;
	void *blob;
	const char *blob_path;		/* reread on SIGHUP */
	uint64_t reloads;		/* blobs swapped in on SIGHUP */
	/* LIST_APPS answer while checking sizes */
	int app_found;
	uint32_t app_input_size;
	uint32_t app_output_size;
	/* counters, printed at exit */
	uint64_t sent;		/* ANSWERs sent */
	uint64_t refused;	/* of those, rejected by the kernel (e.g. stale) */
	uint64_t send_failed;
	uint64_t bad_queries;
	uint64_t overruns;	/* receives that reported ENOBUFS: queries dropped */
};

static volatile sig_atomic_t lf_stop;
static volatile sig_atomic_t lf_reload;

static void lf_on_signal(int sig)
{
	if (sig == SIGHUP)
		lf_reload = 1;
	else
		lf_stop = 1;
}

/* ---- blob ------------------------------------------------------------- */

static const char *lf_blob_strerror(int err)
{
	switch (err) {
	case -EBADMSG:
		return "crc32 mismatch (corrupt blob)";
	case -E2BIG:
		return "network exceeds the engine's limits";
	case -EINVAL:
		return "malformed blob (bad magic, version or lengths)";
	}
	return strerror(-err);
}

static int lf_read_file(const char *path, void **data, size_t *len)
{
	FILE *f = fopen(path, "rb");
	size_t n;
	void *buf;

	if (!f)
		return -errno;
	buf = malloc(LF_AGENT_BLOB_MAX);	/* malloc: aligned for the parser */
	if (!buf) {
		fclose(f);
		return -ENOMEM;
	}
	n = fread(buf, 1, LF_AGENT_BLOB_MAX, f);
	if (ferror(f) || !feof(f)) {
		int err = ferror(f) ? -EIO : -EFBIG;

		fclose(f);
		free(buf);
		return err;
	}
	fclose(f);
	*data = buf;
	*len = n;
	return 0;
}

static int lf_load_blob(struct lf_agent *a, const char *path)
{
	size_t len = 0;
	int err;

	err = lf_read_file(path, &a->blob, &len);
	if (err) {
		fprintf(stderr, "lf_agent: cannot read blob %s: %s\n", path,
			strerror(-err));
		return err;
	}
	err = lf_engine_parse_blob(a->blob, len, &a->spec);
	if (!err)
		err = lf_engine_validate(&a->spec);
	if (err)
		fprintf(stderr, "lf_agent: %s is not a usable weight blob: %s\n",
			path, lf_blob_strerror(err));
	return err;
}

/*
 * SIGHUP: the blob file again.  Between two queries, so an answer always
 * comes from one whole snapshot; on any error the old one stays.
 */
static void lf_reload_blob(struct lf_agent *a)
{
	struct lf_agent fresh;

	lf_reload = 0;
	memset(&fresh, 0, sizeof(fresh));
	if (lf_load_blob(&fresh, a->blob_path)) {
		free(fresh.blob);
		fprintf(stderr, "lf_agent: reload refused, old weights stay\n");
		return;
	}
	if (fresh.spec.input_size != a->spec.input_size ||
	    fresh.spec.output_size != a->spec.output_size) {
		fprintf(stderr, "lf_agent: reload refused: %u inputs and %u outputs, the app takes %u and %u\n",
			fresh.spec.input_size, fresh.spec.output_size,
			a->spec.input_size, a->spec.output_size);
		free(fresh.blob);
		return;
	}
	free(a->blob);
	a->blob = fresh.blob;
	a->spec = fresh.spec;
	a->reloads++;
	fprintf(stderr, "lf_agent: reloaded %s\n", a->blob_path);
}

/* ---- netlink setup ---------------------------------------------------- */

static struct nl_msg *lf_msg_new(struct lf_agent *a, uint8_t cmd)
{
	struct nl_msg *msg = nlmsg_alloc();

	if (msg && !genlmsg_put(msg, NL_AUTO_PORT, NL_AUTO_SEQ, a->family, 0,
				0, cmd, LF_GENL_VERSION)) {
		nlmsg_free(msg);
		msg = NULL;
	}
	return msg;
}

static int lf_connect(struct lf_agent *a)
{
	int err;

	a->sk = nl_socket_alloc();
	if (!a->sk)
		return -NLE_NOMEM;
	err = genl_connect(a->sk);
	if (err) {
		fprintf(stderr, "lf_agent: cannot open a generic netlink socket: %s\n",
			nl_geterror(err));
		return err;
	}
	a->family = genl_ctrl_resolve(a->sk, LF_GENL_NAME);
	if (a->family < 0) {
		fprintf(stderr, "lf_agent: generic netlink family \"%s\" not found (%s): is liteflow.ko loaded?\n",
			LF_GENL_NAME, nl_geterror(a->family));
		return a->family;
	}
	return 0;
}

static int lf_on_app(struct nl_msg *msg, void *arg)
{
	struct nlattr *tb[LF_ATTR_MAX + 1];
	struct lf_agent *a = arg;

	if (genlmsg_parse(nlmsg_hdr(msg), 0, tb, LF_ATTR_MAX, NULL) ||
	    !tb[LF_ATTR_APP_ID] || !tb[LF_ATTR_INPUT_SIZE] ||
	    !tb[LF_ATTR_OUTPUT_SIZE] ||
	    nla_get_u32(tb[LF_ATTR_APP_ID]) != a->app_id)
		return NL_SKIP;
	a->app_found = 1;
	a->app_input_size = nla_get_u32(tb[LF_ATTR_INPUT_SIZE]);
	a->app_output_size = nla_get_u32(tb[LF_ATTR_OUTPUT_SIZE]);
	return NL_OK;
}

/* LIST_APPS(APP_ID): the app exists and takes the blob's sizes. */
static int lf_check_app(struct lf_agent *a)
{
	struct nl_msg *msg = lf_msg_new(a, LF_CMD_LIST_APPS);
	int err;

	if (!msg || nla_put_u32(msg, LF_ATTR_APP_ID, a->app_id)) {
		nlmsg_free(msg);
		return -NLE_NOMEM;
	}
	nl_socket_modify_cb(a->sk, NL_CB_VALID, NL_CB_CUSTOM, lf_on_app, a);
	err = nl_send_sync(a->sk, msg);		/* frees msg; waits for the ack */
	if (err || !a->app_found) {
		fprintf(stderr, "lf_agent: no LiteFlow app with id %" PRIu32 " (%s)\n",
			a->app_id, err ? nl_geterror(err) : "no answer");
		return err ? err : -NLE_OBJ_NOTFOUND;
	}
	if (a->app_input_size != a->spec.input_size ||
	    a->app_output_size != a->spec.output_size) {
		fprintf(stderr, "lf_agent: app %" PRIu32 " takes %" PRIu32 " inputs and %" PRIu32
			" outputs, the blob has %u and %u\n", a->app_id,
			a->app_input_size, a->app_output_size,
			a->spec.input_size, a->spec.output_size);
		return -NLE_INVAL;
	}
	return 0;
}

static int lf_register(struct lf_agent *a)
{
	struct nl_msg *msg = lf_msg_new(a, LF_CMD_AGENT_REGISTER);
	int err;

	if (!msg || nla_put_u32(msg, LF_ATTR_APP_ID, a->app_id)) {
		nlmsg_free(msg);
		return -NLE_NOMEM;
	}
	err = nl_send_sync(a->sk, msg);
	if (err)
		fprintf(stderr, "lf_agent: AGENT_REGISTER for app %" PRIu32 " refused: %s%s\n",
			a->app_id, nl_geterror(err),
			err == -NLE_PERM ? " (needs CAP_NET_ADMIN)" : "");
	return err;
}

/* ---- serving ---------------------------------------------------------- */

static int lf_send_answer(struct lf_agent *a, uint64_t seq, const s8 *out)
{
	struct nl_msg *msg = lf_msg_new(a, LF_CMD_ANSWER);
	int err;

	if (!msg || nla_put_u32(msg, LF_ATTR_APP_ID, a->app_id) ||
	    nla_put_u64(msg, LF_ATTR_QUERY_SEQ, seq) ||
	    nla_put(msg, LF_ATTR_OUTPUTS, a->spec.output_size, out)) {
		nlmsg_free(msg);
		return -NLE_NOMEM;
	}
	err = nl_send_auto(a->sk, msg);		/* no ack: errors still come back */
	nlmsg_free(msg);
	return err < 0 ? err : 0;
}

static int lf_on_query(struct nl_msg *msg, void *arg)
{
	struct nlmsghdr *nlh = nlmsg_hdr(msg);
	struct nlattr *tb[LF_ATTR_MAX + 1];
	struct lf_agent *a = arg;
	s8 out[LF_MAX_UNITS];
	struct nlattr *in;

	if (nlh->nlmsg_type != a->family ||
	    genlmsg_hdr(nlh)->cmd != LF_CMD_QUERY)
		return NL_SKIP;
	if (genlmsg_parse(nlh, 0, tb, LF_ATTR_MAX, NULL) ||
	    !tb[LF_ATTR_APP_ID] || !tb[LF_ATTR_QUERY_SEQ] ||
	    !(in = tb[LF_ATTR_INPUTS]) ||
	    nla_get_u32(tb[LF_ATTR_APP_ID]) != a->app_id ||
	    nla_len(in) != a->spec.input_size ||
	    lf_engine_infer(&a->spec, nla_data(in), out)) {
		a->bad_queries++;
		return NL_SKIP;
	}
	if (lf_send_answer(a, nla_get_u64(tb[LF_ATTR_QUERY_SEQ]), out))
		a->send_failed++;
	else
		a->sent++;
	return NL_OK;
}

/* An ANSWER the kernel refused (stale seq, ...): count it, keep serving. */
static int lf_on_error(struct sockaddr_nl *nla, struct nlmsgerr *err, void *arg)
{
	struct lf_agent *a = arg;

	(void)nla;
	(void)err;
	a->refused++;
	return NL_SKIP;
}

/*
 * Answer queries until a signal.  SIGTERM/SIGINT stay blocked except
 * inside ppoll, so a signal can never slip in between the check of
 * lf_stop and the wait.
 */
static int lf_serve(struct lf_agent *a, const sigset_t *waitmask)
{
	struct pollfd pfd = { .fd = nl_socket_get_fd(a->sk), .events = POLLIN };
	int err;

	nl_socket_disable_seq_check(a->sk);
	nl_socket_disable_auto_ack(a->sk);
	nl_socket_set_nonblocking(a->sk);
	nl_socket_modify_cb(a->sk, NL_CB_VALID, NL_CB_CUSTOM, lf_on_query, a);
	nl_socket_modify_err_cb(a->sk, NL_CB_CUSTOM, lf_on_error, a);

	while (!lf_stop) {
		if (lf_reload)
			lf_reload_blob(a);
		if (ppoll(&pfd, 1, NULL, waitmask) < 0) {
			if (errno == EINTR)
				continue;
			perror("lf_agent: ppoll");
			return -NLE_FAILURE;
		}
		err = nl_recvmsgs_default(a->sk);
		if (err == -NLE_NOMEM) {	/* libnl's name for ENOBUFS */
			a->overruns++;
			continue;
		}
		if (err < 0 && err != -NLE_AGAIN && err != -NLE_INTR) {
			fprintf(stderr, "lf_agent: receiving queries failed: %s\n",
				nl_geterror(err));
			return err;
		}
	}
	return 0;
}

/* ---- main ------------------------------------------------------------- */

static int lf_parse_app_id(const char *text, uint32_t *app_id)
{
	unsigned long value;
	char *end;

	errno = 0;
	value = strtoul(text, &end, 0);
	if (errno || !*text || *end || !value || value > UINT32_MAX)
		return -EINVAL;
	*app_id = value;
	return 0;
}

/* Block SIGTERM/SIGINT/SIGHUP; @waitmask gets the mask to wait with (unblocked). */
static void lf_setup_signals(sigset_t *waitmask)
{
	struct sigaction sa;
	sigset_t block;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = lf_on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGHUP);
	sigprocmask(SIG_BLOCK, &block, waitmask);
	sigdelset(waitmask, SIGTERM);
	sigdelset(waitmask, SIGINT);
	sigdelset(waitmask, SIGHUP);
}

int main(int argc, char **argv)
{
	struct lf_agent a;
	sigset_t waitmask;
	int status;

	memset(&a, 0, sizeof(a));
	if (argc != 3 || lf_parse_app_id(argv[1], &a.app_id)) {
		fprintf(stderr, "usage: %s APP_ID BLOB\n", argv[0]);
		return LF_EXIT_USAGE;
	}
	lf_setup_signals(&waitmask);
	a.blob_path = argv[2];
	if (lf_load_blob(&a, argv[2])) {
		status = LF_EXIT_BLOB;
		goto out;
	}
	if (lf_connect(&a) || lf_check_app(&a) || lf_register(&a)) {
		status = LF_EXIT_SETUP;
		goto out;
	}
	printf("lf_agent: ready app=%" PRIu32 " portid=%" PRIu32 "\n", a.app_id,
	       nl_socket_get_local_port(a.sk));
	fflush(stdout);

	status = lf_serve(&a, &waitmask) ? LF_EXIT_SERVE : LF_EXIT_OK;
	fprintf(stderr, "lf_agent: sent %" PRIu64 " answers (%" PRIu64
		" refused by the kernel), %" PRIu64 " send failures, %" PRIu64
		" bad queries, %" PRIu64 " reloads, %" PRIu64 " overruns\n",
		a.sent, a.refused, a.send_failed, a.bad_queries, a.reloads,
		a.overruns);
out:
	if (a.sk)
		nl_socket_free(a.sk);	/* closes: the kernel forgets the agent */
	free(a.blob);
	return status;
}
