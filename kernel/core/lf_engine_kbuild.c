// SPDX-License-Identifier: GPL-2.0
/*
 * Build the shared inference engine (../engine/lf_engine.c, also built as
 * a user-space library) into liteflow.ko.  Kbuild with M= only compiles
 * sources under the module directory, hence this one-line wrapper.
 */
#include "../engine/lf_engine.c"
