/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * test_stack.c - stack.c: a thread's own stack, named, from a signal
 * handler, as the slow log takes it.
 */
#include "fcgate.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

static char text[STACK_TEXT];
static size_t text_len;

static void on_signal(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)si;
    text_len = stack_capture(text, sizeof(text), uc);
}

/* Static: in .symtab only, as a module's hidden functions are. */
__attribute__((noinline)) static void stack_test_inner_frame(void)
{
    raise(SIGUSR2);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) static void stack_test_outer_frame(void)
{
    stack_test_inner_frame();
    __asm__ volatile("" ::: "memory");
}

static void test_stack_names_static_functions_from_the_handler(void **state)
{
    (void)state;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGUSR2, &sa, NULL);
    stack_load(NULL);
    stack_test_outer_frame();
    assert_true(text_len > 0);
    assert_int_equal(strlen(text), text_len);
    print_message("%s", text);
    const char *inner = strstr(text, " stack_test_inner_frame+0x");
    const char *outer = strstr(text, " stack_test_outer_frame+0x");
    assert_non_null(inner);
    assert_non_null(outer);
    assert_true(inner < outer); /* innermost first */
    assert_non_null(strstr(text, "(test_stack)\n"));
    assert_null(strstr(text, "on_signal")); /* starts at the interrupted code */
    assert_true(strncmp(text, "#0 0x", 5) == 0);
}

/* A buffer too small is cut, still a string. */
static void test_stack_capture_respects_the_buffer(void **state)
{
    (void)state;
    char small[24];
    memset(small, 'x', sizeof(small));
    size_t n = stack_capture(small, sizeof(small), NULL);
    assert_true(n < sizeof(small));
    assert_int_equal(small[n], '\0');
    assert_int_equal(stack_capture(small, 0, NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stack_names_static_functions_from_the_handler),
        cmocka_unit_test(test_stack_capture_respects_the_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
