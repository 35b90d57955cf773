/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * stack.c - the C stack of a running thread, taken from inside it.
 *
 * The slow log and the timeout report need the stack of a thread that is
 * busy in application code, without ptrace and without stopping the
 * worker's other threads. The supervisor sends the thread a signal
 * (tgkill); its handler walks its own stack with backtrace() and writes
 * the frames, named, into shared memory. Everything the handler does is
 * async-signal-safe: backtrace() is warmed up first (its first call loads
 * libgcc_s), and the names come from tables built beforehand: the
 * supervisor reads its own objects once, before it forks (a few
 * milliseconds; the workers inherit the table), and a worker adds only
 * what it loaded itself, the module.
 *
 * dladdr() cannot name most of the functions worth seeing: modules are
 * built with hidden visibility, so their functions are only in the ELF
 * .symtab, which the dynamic linker never maps. The table reads .symtab
 * (else .dynsym) of every object loaded when the worker booted.
 */
#include "fcgate.h"

#include <elf.h>
#include <execinfo.h>
#include <fcntl.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <ucontext.h>
#include <unistd.h>

#define STACK_FRAMES 48

struct sym {
    uintptr_t lo, hi; /* [lo, hi) in this process */
    const char *name;
    unsigned obj;
};

struct obj {
    uintptr_t lo, hi; /* its loaded segments */
    char name[64];    /* basename, as shown */
};

/* Sorted by lo. One per stack_load: the supervisor's objects, read once
 * before any fork and shared by every worker; then each worker's own (the
 * module and what it brought). */
struct table {
    struct sym *syms;
    size_t nsyms, cap;
};
#define LAYERS 4

static struct {
    struct table layer[LAYERS];
    size_t nlayers;
    struct table *filling;
    struct obj objs[64];
    size_t nobjs;
    const char *module; /* the app module's path, for its memfd */
} T;

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static int add_sym(uintptr_t lo, uintptr_t hi, const char *name, unsigned obj)
{
    struct table *t = T.filling;
    if (t->nsyms == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 1024;
        struct sym *s = realloc(t->syms, cap * sizeof(*s));
        if (!s)
            return -1;
        t->syms = s;
        t->cap = cap;
    }
    t->syms[t->nsyms++] = (struct sym){lo, hi, name, obj};
    return 0;
}

/* The function symbols of the ELF image at map (size bytes) loaded at
 * bias: .symtab when the file has one, else .dynsym, unless dynsym_ok is
 * 0. Names stay in a private copy of the string table. 1 when it found a
 * table, 0 when not. */
static int read_symbols(const unsigned char *map, size_t size, uintptr_t bias, unsigned obj,
                        int dynsym_ok)
{
    const Elf64_Ehdr *eh = (const void *)map;
    if (size < sizeof(*eh) || memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 ||
        eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_shentsize != sizeof(Elf64_Shdr) ||
        eh->e_shoff > size || (size - eh->e_shoff) / sizeof(Elf64_Shdr) < eh->e_shnum)
        return 0;
    const Elf64_Shdr *sh = (const void *)(map + eh->e_shoff);
    const Elf64_Shdr *tab = NULL;
    for (unsigned i = 0; i < eh->e_shnum; i++)
        if (sh[i].sh_type == SHT_SYMTAB || (sh[i].sh_type == SHT_DYNSYM && !tab))
            tab = &sh[i];
    if (!tab || (tab->sh_type == SHT_DYNSYM && !dynsym_ok) || tab->sh_link >= eh->e_shnum ||
        tab->sh_entsize != sizeof(Elf64_Sym))
        return 0;
    const Elf64_Shdr *str = &sh[tab->sh_link];
    if (tab->sh_offset > size || tab->sh_size > size - tab->sh_offset || str->sh_offset > size ||
        str->sh_size > size - str->sh_offset || str->sh_size == 0)
        return 0;
    char *names = malloc(str->sh_size + 1);
    if (!names)
        return 0;
    memcpy(names, map + str->sh_offset, str->sh_size);
    names[str->sh_size] = '\0';
    const Elf64_Sym *sym = (const void *)(map + tab->sh_offset);
    size_t n = tab->sh_size / sizeof(*sym), kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (ELF64_ST_TYPE(sym[i].st_info) != STT_FUNC || sym[i].st_value == 0 ||
            sym[i].st_shndx == SHN_UNDEF || sym[i].st_name >= str->sh_size)
            continue;
        uintptr_t lo = bias + sym[i].st_value;
        if (add_sym(lo, lo + (sym[i].st_size ? sym[i].st_size : 1), names + sym[i].st_name, obj) <
            0)
            break;
        kept++;
    }
    if (!kept)
        free(names);
    return 1;
}

static int load_object(const char *path, uintptr_t bias, unsigned obj, int dynsym_ok)
{
    int found = 0, fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
        void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map != MAP_FAILED) {
            found = read_symbols(map, (size_t)st.st_size, bias, obj, dynsym_ok);
            munmap(map, (size_t)st.st_size);
        }
    }
    close(fd);
    return found;
}

/* A stripped object's full symbol table, where Debian's -dbgsym packages
 * put it: /usr/lib/debug/.build-id/xx/yyyy.debug, named by the build ID
 * note of the object as loaded. */
static int load_debug_file(const struct dl_phdr_info *info, unsigned obj)
{
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_NOTE)
            continue;
        const unsigned char *p = (const void *)(info->dlpi_addr + ph->p_vaddr);
        const unsigned char *end = p + ph->p_memsz;
        while (p + sizeof(ElfW(Nhdr)) <= end) {
            const ElfW(Nhdr) *nh = (const void *)p;
            const unsigned char *desc = p + sizeof(*nh) + ((nh->n_namesz + 3) & ~3u);
            const unsigned char *next = desc + ((nh->n_descsz + 3) & ~3u);
            if (next > end)
                break;
            if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 &&
                memcmp(p + sizeof(*nh), "GNU", 4) == 0 && nh->n_descsz >= 2 &&
                nh->n_descsz <= 64) {
                char path[200] = "/usr/lib/debug/.build-id/";
                size_t n = strlen(path);
                for (unsigned b = 0; b < nh->n_descsz; b++) {
                    path[n++] = "0123456789abcdef"[desc[b] >> 4];
                    path[n++] = "0123456789abcdef"[desc[b] & 15];
                    if (b == 0)
                        path[n++] = '/';
                }
                memcpy(path + n, ".debug", 7);
                return load_object(path, info->dlpi_addr, obj, 0);
            }
            p = next;
        }
    }
    return 0;
}

static int each_object(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    (void)arg;
    if (T.nobjs == sizeof(T.objs) / sizeof(T.objs[0]))
        return 1;
    const char *path = info->dlpi_name && info->dlpi_name[0] ? info->dlpi_name : "/proc/self/exe";
    if (strncmp(path, "linux-vdso", 10) == 0)
        return 0;
    struct obj *o = &T.objs[T.nobjs];
    o->lo = UINTPTR_MAX;
    o->hi = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD)
            continue;
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        if (lo < o->lo)
            o->lo = lo;
        if (lo + ph->p_memsz > o->hi)
            o->hi = lo + ph->p_memsz;
    }
    if (o->lo >= o->hi)
        return 0;
    for (size_t i = 0; i < T.nobjs; i++)
        if (T.objs[i].lo == o->lo)
            return 0; /* read by an earlier stack_load */
    /* The app module is loaded from a memfd snapshot (app_loader.c). */
    char exe[256];
    const char *shown = path;
    if (strncmp(path, "/proc/self/fd/", 14) == 0 && T.module) {
        shown = T.module;
    } else if (strcmp(path, "/proc/self/exe") == 0) {
        ssize_t n = readlink(path, exe, sizeof(exe) - 1);
        exe[n > 0 ? n : 0] = '\0';
        shown = n > 0 ? exe : "(executable)";
    }
    size_t len = strlen(base_name(shown));
    if (len >= sizeof(o->name))
        len = sizeof(o->name) - 1;
    memcpy(o->name, base_name(shown), len);
    o->name[len] = '\0';
    if (!load_object(path, info->dlpi_addr, (unsigned)T.nobjs, 0) &&
        !load_debug_file(info, (unsigned)T.nobjs))
        load_object(path, info->dlpi_addr, (unsigned)T.nobjs, 1);
    T.nobjs++;
    return 0;
}

static int by_address(const void *a, const void *b)
{
    const struct sym *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

void stack_load(const char *module_path)
{
    void *warm[2];
    backtrace(warm, 2); /* loads the unwinder now, not in a handler */
    if (module_path)
        T.module = module_path;
    if (T.nlayers == LAYERS)
        return;
    struct table *t = &T.layer[T.nlayers];
    T.filling = t;
    dl_iterate_phdr(each_object, NULL);
    if (t->nsyms)
        qsort(t->syms, t->nsyms, sizeof(*t->syms), by_address);
    T.nlayers++;
}

/* ---- in the signal handler: no locks, no allocation ---- */

static const struct sym *find_in(const struct table *t, uintptr_t pc)
{
    size_t lo = 0, hi = t->nsyms;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (t->syms[mid].lo <= pc)
            lo = mid + 1;
        else
            hi = mid;
    }
    /* lo: the first above pc. Sized symbols may nest or overlap (aliases):
     * look back a little for one that covers pc. */
    for (size_t i = lo, k = 0; i-- > 0 && k < 8; k++)
        if (pc < t->syms[i].hi)
            return &t->syms[i];
    return NULL;
}

static const struct sym *find_sym(uintptr_t pc)
{
    for (size_t l = 0; l < T.nlayers; l++) {
        const struct sym *s = find_in(&T.layer[l], pc);
        if (s)
            return s;
    }
    return NULL;
}

static const struct obj *find_obj(uintptr_t pc)
{
    for (size_t i = 0; i < T.nobjs; i++)
        if (pc >= T.objs[i].lo && pc < T.objs[i].hi)
            return &T.objs[i];
    return NULL;
}

struct out {
    char *p;
    size_t n, cap;
};

static void put(struct out *o, const char *s)
{
    while (*s && o->n + 1 < o->cap)
        o->p[o->n++] = *s++;
    o->p[o->n] = '\0';
}

static void put_num(struct out *o, uintmax_t v, unsigned base)
{
    char buf[24], *e = buf + sizeof(buf) - 1;
    *e = '\0';
    do
        *--e = "0123456789abcdef"[v % base];
    while ((v /= base) && e > buf);
    put(o, e);
}

/* The interrupted instruction, from the signal's context. */
static uintptr_t context_pc(const void *ucv)
{
    const ucontext_t *uc = ucv;
    if (!uc)
        return 0;
#if defined(__x86_64__)
    return (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
#elif defined(__aarch64__)
    return (uintptr_t)uc->uc_mcontext.pc;
#else
    return 0;
#endif
}

size_t stack_capture(char *buf, size_t cap, const void *ucontext)
{
    void *frames[STACK_FRAMES];
    struct out o = {buf, 0, cap};
    int n = backtrace(frames, STACK_FRAMES), first = 0;
    uintptr_t pc = context_pc(ucontext);

    if (cap == 0)
        return 0;
    buf[0] = '\0';
    /* Start at the interrupted instruction: the frames before it are this
     * handler's. */
    for (int i = 0; i < n; i++)
        if ((uintptr_t)frames[i] == pc) {
            first = i;
            break;
        }
    for (int i = first; i < n; i++) {
        uintptr_t a = (uintptr_t)frames[i];
        /* A return address points after the call: look it up one byte
         * back, so a call ending a function names that function. */
        uintptr_t at = i == first ? a : a - 1;
        const struct sym *s = find_sym(at);
        const struct obj *ob = s ? &T.objs[s->obj] : find_obj(at);
        put(&o, "#");
        put_num(&o, (uintmax_t)(i - first), 10);
        put(&o, " 0x");
        put_num(&o, a, 16);
        put(&o, " ");
        if (s) {
            put(&o, s->name);
            put(&o, "+0x");
            put_num(&o, a - s->lo, 16);
        } else if (ob) {
            put(&o, "?? +0x");
            put_num(&o, a - ob->lo, 16);
        } else {
            put(&o, "??");
        }
        if (ob) {
            put(&o, " (");
            put(&o, ob->name);
            put(&o, ")");
        }
        put(&o, "\n");
    }
    return o.n;
}
