// SPDX-License-Identifier: GPL-2.0
/*
 * lf_test: a synthetic LiteFlow app for tests (Zhang et al., SIGCOMM 2022:
 * any datapath function plugs in as an app with an input collector and an
 * output enforcer; this one has neither a datapath nor real features).
 *
 * It registers app "lf_test" with input_size / output_size, its cost
 * budget (max_macs) and context_size from module parameters, plus an
 * lf_io with the same sizes.  By default it takes any quantization
 * (LF_APP_QUANT_ANY: it passes raw int8 and never interprets it); with
 * quant_fixed=1 it declares the quantization given by the in_* / out_*
 * parameters (LF_APP_QUANT_FIXED), so tests can see a snapshot quantized
 * otherwise refused.  It exposes in debugfs (liteflow_test/):
 *
 *   app_id   read: the app id, decimal.
 *   query    write input_size raw s8 bytes: runs lf_query_model();
 *            read: the output_size bytes of the last query, or the last
 *            query's errno as the read error (-ENODATA before any query).
 *   record   (context_size > 0 only) write input_size raw s8 bytes then
 *            context_size context bytes: runs lf_query_model_ex() and
 *            reports the pair with that context (lf_record_sample), both
 *            inside local_bh_disable()/local_bh_enable() as a congestion
 *            controller's ACK processing would; read: as query, for the
 *            last record.
 *   stress   write "<queries_per_cpu>": one kthread per online CPU, bound
 *            to it, runs that many queries on random inputs, each inside
 *            local_bh_disable()/local_bh_enable() (softirq-like context),
 *            cond_resched() every LF_TEST_RESCHED_EVERY; -EBUSY while a run
 *            is going; write "0": stop the current run (counters stay).
 *            read: "running=<0|1> queries=<n> errors=<n>\n" (counters of
 *            the last run).
 *
 * No snapshot is bundled: tests hot-load one over netlink or insmod a
 * generated snapshot module for app "lf_test".
 */
#define pr_fmt(fmt) "lf_test: " fmt

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/uaccess.h>
#include <linux/kthread.h>
#include <linux/cpu.h>
#include <linux/slab.h>
#include <linux/mutex.h>
#include <linux/atomic.h>
#include <linux/random.h>
#include <linux/bottom_half.h>
#include "liteflow.h"
#include "compat.h"

#define LF_TEST_NAME		"lf_test"
#define LF_TEST_DIR		"liteflow_test"
#define LF_TEST_RESCHED_EVERY	1024	/* queries between cond_resched() */
#define LF_TEST_NUM_LEN		24	/* bytes for a decimal u64 and '\n' */
/*
 * Half the engine's largest network (8 x 256 x 256): room for every
 * network the experiments run, yet a bound on one query's cost.
 */
#define LF_TEST_DEFAULT_MAX_MACS	(1UL << 18)

static ushort input_size = 30;
module_param(input_size, ushort, 0444);
MODULE_PARM_DESC(input_size, "features per query (1..256, default 30)");

static ushort output_size = 1;
module_param(output_size, ushort, 0444);
MODULE_PARM_DESC(output_size, "outputs per query (1..256, default 1)");

static ulong max_macs = LF_TEST_DEFAULT_MAX_MACS;
module_param(max_macs, ulong, 0444);
MODULE_PARM_DESC(max_macs, "cost budget: multiply-accumulates per query (> 0, default 262144)");

static ushort context_size;
module_param(context_size, ushort, 0444);
MODULE_PARM_DESC(context_size, "bytes of context per sample (0..64, default 0: queries are sampled)");

/* A FIXED app's declared quantization (a zero multiplier is refused). */
static bool quant_fixed;
module_param(quant_fixed, bool, 0444);
MODULE_PARM_DESC(quant_fixed, "declare the in_* / out_* quantization (LF_APP_QUANT_FIXED; default: any)");

static int in_zp, in_mult, in_shift, out_zp, out_mult, out_shift;
module_param(in_zp, int, 0444);
MODULE_PARM_DESC(in_zp, "quant_fixed: input zero point");
module_param(in_mult, int, 0444);
MODULE_PARM_DESC(in_mult, "quant_fixed: input scale multiplier (Q31, > 0)");
module_param(in_shift, int, 0444);
MODULE_PARM_DESC(in_shift, "quant_fixed: input scale shift");
module_param(out_zp, int, 0444);
MODULE_PARM_DESC(out_zp, "quant_fixed: output zero point");
module_param(out_mult, int, 0444);
MODULE_PARM_DESC(out_mult, "quant_fixed: output scale multiplier (Q31, > 0)");
module_param(out_shift, int, 0444);
MODULE_PARM_DESC(out_shift, "quant_fixed: output scale shift");

static uint app_id;
module_param(app_id, uint, 0444);
MODULE_PARM_DESC(app_id, "read-only: the app id LiteFlow assigned");

static struct dentry *lf_test_dir;

static struct lf_io lf_test_io = {
	.name	= LF_TEST_NAME,
	.owner	= THIS_MODULE,
};

/* ---- query ------------------------------------------------------------ */

static DEFINE_MUTEX(lf_test_query_lock);
static s8 lf_test_last_out[LF_MAX_UNITS];	/* lf_test_query_lock */
static int lf_test_last_err = -ENODATA;		/* lf_test_query_lock */

static ssize_t lf_test_query_write(struct file *file, const char __user *ubuf,
				   size_t count, loff_t *ppos)
{
	s8 in[LF_MAX_UNITS];

	if (count != input_size)
		return -EINVAL;
	if (copy_from_user(in, ubuf, count))
		return -EFAULT;

	mutex_lock(&lf_test_query_lock);
	lf_test_last_err = lf_query_model(app_id, in, lf_test_last_out);
	mutex_unlock(&lf_test_query_lock);
	return count;
}

static ssize_t lf_test_query_read(struct file *file, char __user *ubuf,
				  size_t count, loff_t *ppos)
{
	s8 out[LF_MAX_UNITS];
	int err;

	mutex_lock(&lf_test_query_lock);
	err = lf_test_last_err;
	memcpy(out, lf_test_last_out, output_size);
	mutex_unlock(&lf_test_query_lock);
	if (err)
		return err;
	return simple_read_from_buffer(ubuf, count, ppos, out, output_size);
}

static const struct file_operations lf_test_query_fops = {
	.owner	= THIS_MODULE,
	.open	= simple_open,
	.read	= lf_test_query_read,
	.write	= lf_test_query_write,
	.llseek	= default_llseek,
};

/* ---- record ----------------------------------------------------------- */

static ssize_t lf_test_record_write(struct file *file, const char __user *ubuf,
				    size_t count, loff_t *ppos)
{
	u8 buf[LF_MAX_UNITS + LF_MAX_CONTEXT];
	s8 out[LF_MAX_UNITS];
	u64 snapshot_id = 0;
	int err;

	if (count != (size_t)input_size + context_size)
		return -EINVAL;
	if (copy_from_user(buf, ubuf, count))
		return -EFAULT;

	mutex_lock(&lf_test_query_lock);
	local_bh_disable();
	err = lf_query_model_ex(app_id, (s8 *)buf, out, &snapshot_id, NULL,
				NULL);
	if (!err)
		lf_record_sample(app_id, snapshot_id, (s8 *)buf, out,
				 buf + input_size);
	local_bh_enable();
	lf_test_last_err = err;
	if (!err)
		memcpy(lf_test_last_out, out, output_size);
	mutex_unlock(&lf_test_query_lock);
	return count;
}

static const struct file_operations lf_test_record_fops = {
	.owner	= THIS_MODULE,
	.open	= simple_open,
	.read	= lf_test_query_read,
	.write	= lf_test_record_write,
	.llseek	= default_llseek,
};

/* ---- stress ----------------------------------------------------------- */

static DEFINE_MUTEX(lf_test_stress_lock);
static struct task_struct **lf_test_threads;	/* [nr_cpu_ids], stress_lock */
static atomic_t lf_test_running = ATOMIC_INIT(0);
static atomic64_t lf_test_queries = ATOMIC64_INIT(0);
static atomic64_t lf_test_errors = ATOMIC64_INIT(0);

/* xorshift32: cheap per-thread random inputs, seeded from get_random_u32 */
static u32 lf_test_xorshift(u32 *state)
{
	u32 x = *state;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	*state = x;
	return x;
}

static void lf_test_fill_random(s8 *in, u32 *state)
{
	unsigned int i;

	for (i = 0; i < input_size; i++)
		in[i] = (s8)lf_test_xorshift(state);
}

static int lf_test_stress_fn(void *arg)
{
	unsigned long n, todo = (unsigned long)arg;
	s8 in[LF_MAX_UNITS], out[LF_MAX_UNITS];
	u64 queries = 0, errors = 0;
	u32 state = lf_random_u32() | 1;
	int err;

	for (n = 0; n < todo && !kthread_should_stop(); n++) {
		lf_test_fill_random(in, &state);
		local_bh_disable();
		err = lf_query_model(app_id, in, out);
		local_bh_enable();
		queries++;
		if (err)
			errors++;
		if ((n + 1) % LF_TEST_RESCHED_EVERY == 0) {
			atomic64_add(queries, &lf_test_queries);
			atomic64_add(errors, &lf_test_errors);
			queries = 0;
			errors = 0;
			cond_resched();
		}
	}
	atomic64_add(queries, &lf_test_queries);
	atomic64_add(errors, &lf_test_errors);
	atomic_dec(&lf_test_running);

	/* Stay around until reaped, so kthread_stop() is always valid. */
	set_current_state(TASK_INTERRUPTIBLE);
	while (!kthread_should_stop()) {
		schedule();
		set_current_state(TASK_INTERRUPTIBLE);
	}
	__set_current_state(TASK_RUNNING);
	return 0;
}

/* stress_lock held: stop (or reap) every thread of the previous run. */
static void lf_test_stress_reap(void)
{
	unsigned int cpu;

	for (cpu = 0; cpu < nr_cpu_ids; cpu++) {
		if (!lf_test_threads[cpu])
			continue;
		kthread_stop(lf_test_threads[cpu]);
		lf_test_threads[cpu] = NULL;
	}
	/* A thread stopped before it ever ran never decremented the count. */
	atomic_set(&lf_test_running, 0);
}

static int lf_test_stress_start(unsigned long per_cpu)
{
	struct task_struct *t;
	unsigned int cpu;
	int err = 0;

	lf_test_stress_reap();
	atomic64_set(&lf_test_queries, 0);
	atomic64_set(&lf_test_errors, 0);

	cpus_read_lock();
	for_each_online_cpu(cpu) {
		t = kthread_create(lf_test_stress_fn, (void *)per_cpu,
				   "lf_test_stress/%u", cpu);
		if (IS_ERR(t)) {
			err = PTR_ERR(t);
			break;
		}
		kthread_bind(t, cpu);
		lf_test_threads[cpu] = t;
		atomic_inc(&lf_test_running);
		wake_up_process(t);
	}
	cpus_read_unlock();
	return err;
}

static ssize_t lf_test_stress_write(struct file *file, const char __user *ubuf,
				    size_t count, loff_t *ppos)
{
	unsigned long per_cpu;
	int err;

	err = kstrtoul_from_user(ubuf, count, 0, &per_cpu);
	if (err)
		return err;

	mutex_lock(&lf_test_stress_lock);
	if (!per_cpu)
		lf_test_stress_reap();
	else if (atomic_read(&lf_test_running))
		err = -EBUSY;
	else
		err = lf_test_stress_start(per_cpu);
	mutex_unlock(&lf_test_stress_lock);
	return err ? err : count;
}

static ssize_t lf_test_stress_read(struct file *file, char __user *ubuf,
				   size_t count, loff_t *ppos)
{
	char buf[3 * LF_TEST_NUM_LEN + 32];
	int len;

	len = scnprintf(buf, sizeof(buf), "running=%d queries=%llu errors=%llu\n",
			atomic_read(&lf_test_running) ? 1 : 0,
			(unsigned long long)atomic64_read(&lf_test_queries),
			(unsigned long long)atomic64_read(&lf_test_errors));
	return simple_read_from_buffer(ubuf, count, ppos, buf, len);
}

static const struct file_operations lf_test_stress_fops = {
	.owner	= THIS_MODULE,
	.open	= simple_open,
	.read	= lf_test_stress_read,
	.write	= lf_test_stress_write,
	.llseek	= default_llseek,
};

/* ---- app_id ----------------------------------------------------------- */

static ssize_t lf_test_app_id_read(struct file *file, char __user *ubuf,
				   size_t count, loff_t *ppos)
{
	char buf[LF_TEST_NUM_LEN];
	int len;

	len = scnprintf(buf, sizeof(buf), "%u\n", app_id);
	return simple_read_from_buffer(ubuf, count, ppos, buf, len);
}

static const struct file_operations lf_test_app_id_fops = {
	.owner	= THIS_MODULE,
	.open	= simple_open,
	.read	= lf_test_app_id_read,
	.llseek	= default_llseek,
};

/* ---- module ----------------------------------------------------------- */

static void lf_test_desc(struct lf_app_desc *desc)
{
	memset(desc, 0, sizeof(*desc));
	desc->name = LF_TEST_NAME;
	desc->input_size = input_size;
	desc->output_size = output_size;
	desc->context_size = context_size;
	desc->max_macs = max_macs;
	desc->quant_mode = quant_fixed ? LF_APP_QUANT_FIXED : LF_APP_QUANT_ANY;
	desc->input_quant.zero_point = in_zp;
	desc->input_quant.scale_multiplier = in_mult;
	desc->input_quant.scale_shift = in_shift;
	desc->output_quant.zero_point = out_zp;
	desc->output_quant.scale_multiplier = out_mult;
	desc->output_quant.scale_shift = out_shift;
}

static int __init lf_test_init(void)
{
	struct lf_app_desc desc;
	int err;

	if (!input_size || input_size > LF_MAX_UNITS ||
	    !output_size || output_size > LF_MAX_UNITS ||
	    context_size > LF_MAX_CONTEXT)
		return -EINVAL;

	lf_test_threads = kcalloc(nr_cpu_ids, sizeof(*lf_test_threads),
				  GFP_KERNEL);
	if (!lf_test_threads)
		return -ENOMEM;

	lf_test_desc(&desc);
	err = lf_register_app(&desc, &app_id);
	if (err)
		goto free_threads;

	lf_test_io.app_id = app_id;
	lf_test_io.input_size = input_size;
	lf_test_io.output_size = output_size;
	err = lf_register_io(&lf_test_io);
	if (err)
		goto unregister_app;

	/* debugfs failures are not fatal (debugfs may be disabled) */
	lf_test_dir = debugfs_create_dir(LF_TEST_DIR, NULL);
	debugfs_create_file("app_id", 0444, lf_test_dir, NULL,
			    &lf_test_app_id_fops);
	debugfs_create_file("query", 0600, lf_test_dir, NULL,
			    &lf_test_query_fops);
	debugfs_create_file("stress", 0600, lf_test_dir, NULL,
			    &lf_test_stress_fops);
	if (context_size)
		debugfs_create_file("record", 0600, lf_test_dir, NULL,
				    &lf_test_record_fops);
	return 0;

unregister_app:
	lf_unregister_app(app_id);
free_threads:
	kfree(lf_test_threads);
	return err;
}

static void __exit lf_test_exit(void)
{
	debugfs_remove_recursive(lf_test_dir);	/* waits for open files' ops */

	mutex_lock(&lf_test_stress_lock);
	lf_test_stress_reap();
	mutex_unlock(&lf_test_stress_lock);
	kfree(lf_test_threads);

	lf_unregister_io(&lf_test_io);
	lf_unregister_app(app_id);
}

module_init(lf_test_init);
module_exit(lf_test_exit);

MODULE_AUTHOR("LiteFlow Testbed");
MODULE_DESCRIPTION("LiteFlow synthetic test app");
MODULE_LICENSE("GPL");
