/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * engine.c - the modes, chosen once from a table (nginx's event modules
 * and gunicorn's worker classes work the same way): nothing else in the
 * daemon asks which mode it runs in, only what the mode's descriptor says.
 */
#include "fcgate.h"

const struct engine *engine_for(enum config_mode mode)
{
    static const struct engine *const table[] = {
        [MODE_SYNC] = &engine_sync,
        [MODE_THREADS] = &engine_threads,
        [MODE_ASYNC] = &engine_async,
    };
    return table[mode];
}

struct codec_limits engine_codec_limits(const struct config *cfg)
{
    unsigned per = engine_for(cfg->mode)->concurrency(cfg);
    struct codec_limits lim = {
        .max_params_bytes = cfg->max_params_bytes,
        .max_conns = per * (unsigned)cfg->workers,
        .max_reqs = per * (unsigned)cfg->workers,
    };
    return lim;
}
