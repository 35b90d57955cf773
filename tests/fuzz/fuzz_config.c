/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * fuzz_config.c - libFuzzer target for config.c: arbitrary text through
 * config_load_string over the defaults, one command-line override and
 * config_check, then everything freed (LeakSanitizer checks the rest).
 *
 * @include is turned into a comment: an include would read whatever file
 * the fuzzer names (results then depend on the machine), and the @include
 * pre-scan is covered by the unit tests.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
const char *__lsan_default_suppressions(void);

/* libconfig 1.5 leaks a string token when a syntax error is found with a
 * string as the look-ahead (`mode "x"`, `a = { "x" };`): its bison grammar
 * has no %destructor. The token is allocated by strbuf_append, or inside
 * libconfig_yylex for "". Only those two allocation sites are excused: a
 * missing config_destroy() would still show up through the setting nodes
 * libconfig allocates elsewhere, and fcgate's own allocations are checked.
 * The supervisor loses those few bytes once per rejected reload. */
const char *__lsan_default_suppressions(void)
{
    return "leak:strbuf_append\n"
           "leak:libconfig_yylex\n";
}

static const char *const override_keys[] = {
    "listen",   "app",     "mode",    "workers", "threads", "worker-connections",
    "database", "pidfile", "unknown",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct config c;
    struct config_errors e = {0};
    char *text, *p;
    size_t i;

    text = malloc(size + 1);
    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    for (p = text; (p = strstr(p, "@include")) != NULL; p++)
        *p = '#';

    if (config_defaults(&c) < 0) {
        free(text);
        return 0;
    }
    config_load_string(&c, text, "fuzz.conf", &e);

    /* The first line, at most 64 bytes, also goes through an override. */
    if (size > 0) {
        char *value = strndup(text, 64);

        if (value != NULL) {
            value[strcspn(value, "\n")] = '\0';
            i = data[0] % (sizeof(override_keys) / sizeof(override_keys[0]));
            config_override(&c, override_keys[i], value, &e);
            free(value);
        }
    }
    config_check(&c, &e);
    for (i = 0; i < c.nsettings; i++)
        (void)config_setting(&c, c.settings[i].name);
    (void)config_mode_name(c.mode);

    config_errors_free(&e);
    config_free(&c);
    free(text);
    return 0;
}
