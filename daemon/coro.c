/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * coro.c - context switch and coroutine stacks.
 *
 * The switch follows the platform ABI's callee-saved set: what a function
 * call may not clobber is all that has to survive a switch, because
 * coro_switch is an ordinary call for both sides.
 *   x86-64 SysV: rbx rbp r12-r15, rsp, and the control words MXCSR and
 *     x87 CW (rounding mode and exception masks are callee-saved too).
 *   AAPCS64: x19-x28, x29 (fp), x30 (lr), sp, d8-d15, and FPCR (rounding
 *     mode), which the switch keeps per context as it does on x86-64.
 * A new coroutine's stack is laid out as if it had been switched out just
 * before entering coro_entry, which moves fn/arg into place and calls fn.
 */
#include "coro.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CORO_ASAN 1
#endif
#if __has_feature(thread_sanitizer)
#define CORO_TSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define CORO_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#define CORO_TSAN 1
#endif

#ifdef CORO_ASAN
void __asan_unpoison_memory_region(void const volatile *addr, size_t size);
void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom, size_t size);
void __sanitizer_finish_switch_fiber(void *fake_stack_save, const void **bottom_old,
                                     size_t *size_old);
#endif
#ifdef CORO_TSAN
void *__tsan_get_current_fiber(void);
void *__tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void *fiber);
void __tsan_switch_to_fiber(void *fiber, unsigned flags);
#endif

/* Tells the sanitizers which stack we are on (no-ops otherwise). */
static _Thread_local struct coro *switching_from;

static void after_switch(void *fake)
{
#ifdef CORO_ASAN
    struct coro *prev = switching_from;
    __sanitizer_finish_switch_fiber(fake, prev ? &prev->stack_lo : NULL,
                                    prev ? &prev->stack_len : NULL);
#else
    (void)fake;
#endif
}

#if defined(CORO_UCONTEXT)
/* no assembly */
#elif defined(__x86_64__)
void coro_switch_ctx(void **save_sp, void *load_sp);
void coro_entry(void);
__asm__(".text\n"
        ".globl coro_switch_ctx\n"
        ".hidden coro_switch_ctx\n"
        ".type coro_switch_ctx,@function\n"
        "coro_switch_ctx:\n"
        "  pushq %rbp\n"
        "  pushq %rbx\n"
        "  pushq %r12\n"
        "  pushq %r13\n"
        "  pushq %r14\n"
        "  pushq %r15\n"
        "  subq $8, %rsp\n"
        "  stmxcsr (%rsp)\n"
        "  fnstcw 4(%rsp)\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  ldmxcsr (%rsp)\n"
        "  fldcw 4(%rsp)\n"
        "  addq $8, %rsp\n"
        "  popq %r15\n"
        "  popq %r14\n"
        "  popq %r13\n"
        "  popq %r12\n"
        "  popq %rbx\n"
        "  popq %rbp\n"
        "  ret\n"
        ".size coro_switch_ctx,.-coro_switch_ctx\n"
        ".globl coro_entry\n"
        ".hidden coro_entry\n"
        ".type coro_entry,@function\n"
        "coro_entry:\n"
        "  movq %r13, %rdi\n" /* the struct coro */
        "  callq *%r12\n"     /* coro_start(c): never returns */
        "  ud2\n"
        ".size coro_entry,.-coro_entry\n");
#elif defined(__aarch64__)
void coro_switch_ctx(void **save_sp, void *load_sp);
void coro_entry(void);
__asm__(".text\n"
        ".globl coro_switch_ctx\n"
        ".hidden coro_switch_ctx\n"
        ".type coro_switch_ctx,%function\n"
        "coro_switch_ctx:\n"
        "  sub sp, sp, #176\n"
        "  stp x19, x20, [sp, #0]\n"
        "  stp x21, x22, [sp, #16]\n"
        "  stp x23, x24, [sp, #32]\n"
        "  stp x25, x26, [sp, #48]\n"
        "  stp x27, x28, [sp, #64]\n"
        "  stp x29, x30, [sp, #80]\n"
        "  stp d8, d9, [sp, #96]\n"
        "  stp d10, d11, [sp, #112]\n"
        "  stp d12, d13, [sp, #128]\n"
        "  stp d14, d15, [sp, #144]\n"
        "  mrs x10, fpcr\n"
        "  str x10, [sp, #160]\n"
        "  mov x9, sp\n"
        "  str x9, [x0]\n"
        "  mov sp, x1\n"
        "  ldp x19, x20, [sp, #0]\n"
        "  ldp x21, x22, [sp, #16]\n"
        "  ldp x23, x24, [sp, #32]\n"
        "  ldp x25, x26, [sp, #48]\n"
        "  ldp x27, x28, [sp, #64]\n"
        "  ldp x29, x30, [sp, #80]\n"
        "  ldp d8, d9, [sp, #96]\n"
        "  ldp d10, d11, [sp, #112]\n"
        "  ldp d12, d13, [sp, #128]\n"
        "  ldp d14, d15, [sp, #144]\n"
        "  ldr x10, [sp, #160]\n"
        "  msr fpcr, x10\n"
        "  add sp, sp, #176\n"
        "  ret\n"
        ".size coro_switch_ctx,.-coro_switch_ctx\n"
        ".globl coro_entry\n"
        ".hidden coro_entry\n"
        ".type coro_entry,%function\n"
        "coro_entry:\n"
        "  mov x0, x20\n" /* the struct coro */
        "  blr x19\n"     /* coro_start(c): never returns */
        "  brk #0\n"
        ".size coro_entry,.-coro_entry\n");
#endif

/* First code on a new stack. */
static void coro_start(struct coro *c)
{
    after_switch(NULL);
    c->fn(c->arg);
    __builtin_trap(); /* fn must switch away for good, never return */
}

#ifdef CORO_UCONTEXT
static void coro_start_uc(unsigned hi, unsigned lo)
{
    coro_start((struct coro *)(((uintptr_t)hi << 32) | (uintptr_t)lo));
}
#endif

void coro_main(struct coro *main)
{
    memset(main, 0, sizeof(*main));
#ifdef CORO_TSAN
    main->fiber = __tsan_get_current_fiber();
#endif
}

int coro_create(struct coro *c, size_t stack_size, void (*fn)(void *), void *arg)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t len = (stack_size + page - 1) / page * page + page;

    memset(c, 0, sizeof(*c));
    void *map =
        mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (map == MAP_FAILED)
        return -1;
    /* Stacks grow down: the guard page is the lowest one. */
    if (mprotect(map, page, PROT_NONE) < 0) {
        int e = errno;
        munmap(map, len);
        errno = e;
        return -1;
    }
    c->map = map;
    c->map_len = len;
    c->stack_lo = (char *)map + page;
    c->stack_len = len - page;
#ifdef CORO_TSAN
    c->fiber = __tsan_create_fiber(0);
#endif
    coro_reset(c, fn, arg);
    return 0;
}

void coro_reset(struct coro *c, void (*fn)(void *), void *arg)
{
    char *top = (char *)c->map + c->map_len;

    c->fn = fn;
    c->arg = arg;
#if defined(CORO_UCONTEXT)
    (void)top;
    getcontext(&c->uc);
    c->uc.uc_stack.ss_sp = (void *)c->stack_lo;
    c->uc.uc_stack.ss_size = c->stack_len;
    c->uc.uc_link = NULL;
    uintptr_t p = (uintptr_t)c;
    makecontext(&c->uc, (void (*)(void))coro_start_uc, 2, (unsigned)(p >> 32), (unsigned)p);
#elif defined(__x86_64__)
    /* As coro_switch_ctx leaves it: control words, r15..r12, rbx, rbp,
     * then the return address in the top slot, so that coro_entry runs
     * with rsp 16-byte aligned and its call gives fn the ABI's entry
     * alignment (rsp = 8 mod 16). */
    uint64_t *sp = (uint64_t *)top;
    *--sp = (uint64_t)coro_entry; /* ret target */
    *--sp = 0;                    /* rbp */
    *--sp = 0;                    /* rbx */
    *--sp = (uint64_t)coro_start; /* r12 */
    *--sp = (uint64_t)c;          /* r13 */
    *--sp = 0;                    /* r14 */
    *--sp = 0;                    /* r15 */
    *--sp = 0x037f00001f80ull;    /* MXCSR default, x87 CW default */
    c->sp = sp;
#elif defined(__aarch64__)
    uint64_t *sp = (uint64_t *)(top - 176);
    memset(sp, 0, 176);            /* FPCR 0: round to nearest, no traps */
    sp[0] = (uint64_t)coro_start;  /* x19 */
    sp[1] = (uint64_t)c;           /* x20 */
    sp[11] = (uint64_t)coro_entry; /* x30: ret target */
    c->sp = sp;
#endif
}

void coro_destroy(struct coro *c)
{
#ifdef CORO_TSAN
    if (c->fiber)
        __tsan_destroy_fiber(c->fiber);
#endif
    if (c->map) {
#ifdef CORO_ASAN
        /* Frames that never returned leave their redzones poisoned; the
         * next mapping at these addresses (a file, another stack) must
         * not inherit them. */
        __asan_unpoison_memory_region(c->map, c->map_len);
#endif
        munmap(c->map, c->map_len);
    }
    memset(c, 0, sizeof(*c));
}

void coro_switch(struct coro *from, struct coro *to)
{
    void *fake = NULL;
#ifdef CORO_ASAN
    __sanitizer_start_switch_fiber(&fake, to->stack_lo, to->stack_len);
#endif
#ifdef CORO_TSAN
    __tsan_switch_to_fiber(to->fiber, 0);
#endif
    switching_from = from;
#ifdef CORO_UCONTEXT
    swapcontext(&from->uc, &to->uc);
#else
    coro_switch_ctx(&from->sp, to->sp);
#endif
    after_switch(fake);
}
