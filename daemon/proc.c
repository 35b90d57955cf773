/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * proc.c - what /proc says of another process: its state letter and its
 * resident size, or its proportional set size. Each is one read of one
 * file; a process that is gone reads as 0.
 */
#include "fcgate.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static ssize_t read_proc(pid_t pid, const char *what, char *buf, size_t len)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, what);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, len - 1);
    close(fd);
    if (n > 0)
        buf[n] = '\0';
    return n;
}

char proc_state(pid_t pid)
{
    char buf[512];
    if (read_proc(pid, "stat", buf, sizeof(buf)) <= 0)
        return 0;
    const char *end = strrchr(buf, ')'); /* the name may hold anything */
    return end && end[1] == ' ' ? end[2] : 0;
}

uint64_t proc_rss(pid_t pid)
{
    char buf[128];
    unsigned long long size = 0, resident = 0;
    if (read_proc(pid, "statm", buf, sizeof(buf)) <= 0 ||
        sscanf(buf, "%llu %llu", &size, &resident) != 2)
        return 0;
    return resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* smaps_rollup sums every mapping: the kernel walks the page tables, a
 * millisecond or so for a large process, so it is read once a second at
 * most. Reading another user's needs ptrace access; without it, RSS. */
uint64_t proc_memory(pid_t pid, int *pss)
{
    char buf[2048];
    *pss = 0;
    if (read_proc(pid, "smaps_rollup", buf, sizeof(buf)) > 0) {
        const char *line = strstr(buf, "\nPss:");
        unsigned long long kb;
        if (line && sscanf(line + 5, "%llu", &kb) == 1) {
            *pss = 1;
            return kb * 1024u;
        }
    }
    return proc_rss(pid);
}
