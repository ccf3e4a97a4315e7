// SPDX-License-Identifier: GPL-2.0
/*
 * User-space-only entry points of libliteflow_engine.so.
 *
 * The toolchain checks bit-exactness on thousands of inputs and the engine
 * benchmark times the kernel's arithmetic; a ctypes call per vector would
 * measure Python, not the engine.  So the library adds a batch entry point
 * and a timing loop around lf_engine_infer(), plus the sizes of the shared
 * structs so the Python side can check that its ctypes mirror matches this
 * compiler's layout.  Nothing here is built into the kernel.
 */
#include <time.h>

#include "lf_engine.h"

#define LF_NSEC_PER_SEC	1000000000ULL

int lf_engine_infer_batch(const struct lf_snapshot_spec *spec, const s8 *input,
			  size_t n, s8 *output)
{
	size_t k;
	int err;

	for (k = 0; k < n; k++) {
		err = lf_engine_infer(spec, input + k * spec->input_size,
				      output + k * spec->output_size);
		if (err)
			return err;
	}
	return 0;
}

/*
 * CPU time of the calling thread, not wall time: on a shared machine wall
 * time also counts every moment another process held the CPU, which is
 * noise, not the engine's cost.
 */
static u64 lf_cpu_time_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (u64)ts.tv_sec * LF_NSEC_PER_SEC + ts.tv_nsec;
}

/*
 * Run the snapshot `iterations` times on one input; total CPU time in ns,
 * or 0 if the spec is malformed.  The output feeds back into nothing but is
 * read through a volatile sink so the loop cannot be optimised away.
 */
u64 lf_engine_bench(const struct lf_snapshot_spec *spec, const s8 *input,
		    u64 iterations)
{
	s8 out[LF_MAX_UNITS];
	volatile s8 sink;
	u64 start, i;

	if (lf_engine_validate(spec))
		return 0;
	start = lf_cpu_time_ns();
	for (i = 0; i < iterations; i++) {
		lf_engine_infer(spec, input, out);
		sink = out[0];
	}
	(void)sink;
	return lf_cpu_time_ns() - start;
}

size_t lf_engine_sizeof(int what)
{
	switch (what) {
	case 0:
		return sizeof(struct lf_snapshot_spec);
	case 1:
		return sizeof(struct lf_layer);
	case 2:
		return sizeof(struct lf_blob_header);
	case 3:
		return sizeof(struct lf_blob_layer);
	case 4:
		return sizeof(struct lf_quant);
	}
	return 0;
}
