/* SPDX-License-Identifier: GPL-2.0 */
/*
 * LiteFlow kernel compatibility layer: one place that absorbs the API drift
 * between the kernels we build for (Debian 5.10, 6.1, 6.12; 4.15, the
 * kernel of the original LiteFlow code, kept reachable).
 *
 * Rules: prefer a preprocessor probe of the feature itself (a macro the
 * feature defines) over a version check, because stable lines backport
 * things; fall back to LINUX_VERSION_CODE where nothing can be probed.
 * Every helper has an lf_ name of its own so it never collides with a
 * backported kernel helper of the same purpose.
 */
#ifndef _LF_COMPAT_H
#define _LF_COMPAT_H

#include <linux/version.h>
#include <linux/types.h>
#include <linux/random.h>
#include <net/genetlink.h>
#include <net/netlink.h>
#include <net/sock.h>
#include <net/tcp.h>

/* ---- generic netlink ------------------------------------------------ */

/*
 * Attribute policy: per operation before 5.2, per family from 5.2 (where a
 * per-op policy would still work from 5.10 on, but one policy for the
 * family is the documented way).  Use both macros; one of them expands to
 * nothing.
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 2, 0)
#define LF_GENL_FAMILY_POLICY(pol)	.policy = (pol),
#define LF_GENL_OP_POLICY(pol)
#else
#define LF_GENL_FAMILY_POLICY(pol)
#define LF_GENL_OP_POLICY(pol)		.policy = (pol),
#endif

/*
 * Samples carry flows' features and decisions: only a privileged
 * collector may join their multicast group.  Three kernels to cover:
 *  - GENL_MCAST_CAP_NET_ADMIN (6.7, back in some stable lines: Debian's
 *    6.1 has it): genetlink checks CAP_NET_ADMIN on bind.  Probed by macro.
 *  - genl_multicast_group.cap_sys_admin (the first form of that check,
 *    the only one some stable lines got: Debian's 5.10 has it): genetlink
 *    checks CAP_SYS_ADMIN on bind, stricter than we need but never
 *    looser.  A bitfield cannot be probed by the preprocessor, so Kbuild
 *    greps the kernel's header and defines LF_HAVE_MCGRP_CAP_SYS_ADMIN.
 *  - neither, but genl_family.mcast_bind (3.19 until its removal; 4.15,
 *    the paper's kernel): the family's own callback runs in the joining
 *    process and refuses it without CAP_NET_ADMIN.  Kbuild greps for it
 *    and defines LF_HAVE_GENL_MCAST_BIND.
 *  - none of these: there is no hook to refuse a join, so the core refuses
 *    to sample at all (SET_SAMPLING fails with EOPNOTSUPP) rather than
 *    multicast to anyone.
 */
#if defined(GENL_MCAST_CAP_NET_ADMIN)
#define LF_GENL_MCGRP_ADMIN_FLAGS	.flags = GENL_MCAST_CAP_NET_ADMIN,
#define LF_SAMPLES_PRIVATE		1
#define LF_SAMPLES_GUARD		"CAP_NET_ADMIN"
#elif defined(LF_HAVE_MCGRP_CAP_SYS_ADMIN)
#define LF_GENL_MCGRP_ADMIN_FLAGS	.cap_sys_admin = 1,
#define LF_SAMPLES_PRIVATE		1
#define LF_SAMPLES_GUARD		"CAP_SYS_ADMIN"
#elif defined(LF_HAVE_GENL_MCAST_BIND)
#define LF_GENL_MCGRP_ADMIN_FLAGS
#define LF_GENL_MCAST_BIND_CHECK	1
#define LF_SAMPLES_PRIVATE		1
#define LF_SAMPLES_GUARD		"CAP_NET_ADMIN (mcast_bind)"
#else
#define LF_GENL_MCGRP_ADMIN_FLAGS
#define LF_SAMPLES_PRIVATE		0
#define LF_SAMPLES_GUARD		"nothing: sampling disabled"
#endif

/* Extended ACK messages (4.12+); on older kernels they vanish. */
#ifndef NL_SET_ERR_MSG
#define NL_SET_ERR_MSG(extack, msg)	do { (void)(extack); } while (0)
#endif
#ifndef NL_SET_ERR_MSG_ATTR
#define NL_SET_ERR_MSG_ATTR(extack, attr, msg) NL_SET_ERR_MSG(extack, msg)
#endif

/* ---- randomness ----------------------------------------------------- */

/* prandom_u32() is gone in 6.1; get_random_u32() exists from 4.11. */
static inline u32 lf_random_u32(void)
{
	return get_random_u32();
}

/* Uniform in [0, ceil) without a division (Lemire's multiply-shift). */
static inline u32 lf_random_u32_below(u32 ceil)
{
	return (u32)(((u64)get_random_u32() * ceil) >> 32);
}

/* ---- TCP congestion control (used by the lf_cc app) ----------------- */

/*
 * cong_control gained (ack, flag) in 6.10.  Declare the hook with
 * LF_CONG_CONTROL_FN(name) { ... } and use rs inside; ack/flag exist only
 * on 6.10+ and must not be used by portable code.
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 10, 0)
#define LF_CONG_CONTROL_FN(fn) \
	void fn(struct sock *sk, u32 ack, int flag, const struct rate_sample *rs)
#else
#define LF_CONG_CONTROL_FN(fn) \
	void fn(struct sock *sk, const struct rate_sample *rs)
#endif

/* tcp_snd_cwnd()/tcp_snd_cwnd_set() from 5.19 (backported to some 5.15.y). */
static inline u32 lf_tcp_snd_cwnd(const struct tcp_sock *tp)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 19, 0)
	return tcp_snd_cwnd(tp);
#else
	return tp->snd_cwnd;
#endif
}

static inline void lf_tcp_snd_cwnd_set(struct tcp_sock *tp, u32 cwnd)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 19, 0)
	tcp_snd_cwnd_set(tp, cwnd);
#else
	WARN_ON_ONCE((int)cwnd <= 0);
	tp->snd_cwnd = cwnd;
#endif
}

/*
 * Per-socket private area of a congestion-control module: 88 bytes
 * (11 u64) in 4.15, 104 (13 u64) from 4.20.  A module's state must fit
 * the smallest: declare it with LF_CA_PRIV_ASSERT(struct my_state) in a
 * function (BUILD_BUG_ON needs one), which fails on every kernel if the
 * state outgrows 4.15's area, not only when building for 4.15.
 */
#define LF_CA_PRIV_MIN_SIZE	(11 * sizeof(u64))
#define LF_CA_PRIV_ASSERT(type) \
	BUILD_BUG_ON(sizeof(type) > LF_CA_PRIV_MIN_SIZE || \
		     sizeof(type) > ICSK_CA_PRIV_SIZE)

/*
 * struct rate_sample: is_ack_delayed came with 4.16, snd_interval_us and
 * rcv_interval_us with 4.19.  Read them through these helpers: on older
 * kernels an ACK is never reported delayed and both intervals fall back
 * to interval_us (the max of the two, which is what they refine).
 */
static inline bool lf_rs_is_ack_delayed(const struct rate_sample *rs)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(4, 16, 0)
	return rs->is_ack_delayed;
#else
	return false;
#endif
}

static inline long lf_rs_snd_interval_us(const struct rate_sample *rs)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(4, 19, 0)
	return rs->snd_interval_us;
#else
	return rs->interval_us;
#endif
}

static inline long lf_rs_rcv_interval_us(const struct rate_sample *rs)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(4, 19, 0)
	return rs->rcv_interval_us;
#else
	return rs->interval_us;
#endif
}

/*
 * sk_pacing_rate is u32 in 4.15 and unsigned long later (bytes per
 * second).  Compute in u64, clamp to sk_max_pacing_rate (the socket's
 * SO_MAX_PACING_RATE, ~0 when unlimited), store once for lockless readers
 * (fq, the TCP stack's TSO autosizing).
 */
static inline void lf_set_pacing_rate(struct sock *sk, u64 bytes_per_sec)
{
	u64 max_rate = (u64)READ_ONCE(sk->sk_max_pacing_rate);

	if (bytes_per_sec > max_rate)
		bytes_per_sec = max_rate;
	WRITE_ONCE(sk->sk_pacing_rate,
		   (typeof(sk->sk_pacing_rate))bytes_per_sec);
}

#endif /* _LF_COMPAT_H */
