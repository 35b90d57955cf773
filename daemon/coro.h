/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * coro.h - stackful coroutines for the async engine.
 *
 * A switch saves the callee-saved registers on the current stack and
 * loads the other stack pointer: no syscall (swapcontext makes an
 * rt_sigprocmask call per switch). Hand-written for x86-64 and aarch64;
 * ucontext elsewhere. Stacks are mmap'ed read-write, never executable,
 * with a PROT_NONE guard page below them, so an overflow faults at once
 * instead of corrupting a neighbour.
 */
#ifndef FCGATE_CORO_H
#define FCGATE_CORO_H

#include <stddef.h>

/* CORO_FORCE_UCONTEXT builds the fallback on any machine (tests use it). */
#if defined(CORO_FORCE_UCONTEXT) || (!defined(__x86_64__) && !defined(__aarch64__))
#define CORO_UCONTEXT 1
#include <ucontext.h>
#endif

struct coro {
    void *sp; /* saved stack pointer while switched out */
#ifdef CORO_UCONTEXT
    ucontext_t uc;
#endif
    void *map; /* the mapping: guard page + stack */
    size_t map_len;
    void (*fn)(void *);
    void *arg;
    void *fiber; /* sanitizer bookkeeping */
    const void *stack_lo;
    size_t stack_len;
};

/* The thread's own context, to switch back to. */
void coro_main(struct coro *main);

/* A coroutine that will run fn(arg) on a stack of stack_size bytes (rounded
 * up to pages). fn must not return: it ends by switching away for good.
 * 0, or -1 (errno) when the stack cannot be mapped. */
int coro_create(struct coro *c, size_t stack_size, void (*fn)(void *), void *arg);

/* Makes a finished coroutine (or one never run) start fn(arg) afresh on
 * the same stack: stacks are reused, not mapped per connection. */
void coro_reset(struct coro *c, void (*fn)(void *), void *arg);

/* Frees the stack; c must not be running. */
void coro_destroy(struct coro *c);

/* Saves the current context into from and runs to. */
void coro_switch(struct coro *from, struct coro *to);

#endif
