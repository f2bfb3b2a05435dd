/*
 * tests/crash/faultshim.c -- an LD_PRELOAD shim that makes the Nth write or sync of a
 * database's data.mdb fail (the I/O-error loop of SQLite's test suite, RELIABILITY.md §4.5).
 *
 * Built by tests/crash/test_fault_matrix.py with `gcc -shared -fPIC -O1 -o faultshim.so
 * faultshim.c -ldl` into a temporary directory, and preloaded into a child Python process
 * only. Disarmed it passes every call through; armed with faultshim_arm(nth, forever, errnum,
 * mask) (called through ctypes) it counts the calls of the kinds in mask on file
 * descriptors whose path ends in "/data.mdb" and fails the nth with errnum -- once, or that
 * one and every later one when forever is non-zero. Nothing is written by a failed call.
 *
 * mask: 1 = write, pwrite, pwrite64, writev, pwritev; 2 = fsync, fdatasync; 4 = open,
 * open64, openat, openat64 for writing (O_WRONLY, O_RDWR, O_CREAT) of data.mdb, lock.mdb or
 * llmdsdb.lock: every such open fails (a read-only filesystem: EROFS, or EACCES), nth and
 * forever are ignored for it.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static int armed, forever_, errnum_, mask_, fired;
static long nth_, calls;

void faultshim_arm(long nth, int forever, int errnum, int mask) {
    nth_ = nth;
    forever_ = forever;
    errnum_ = errnum;
    mask_ = mask;
    calls = 0;
    fired = 0;
    armed = 1;
}

void faultshim_disarm(void) { armed = 0; }
long faultshim_calls(void) { return calls; }
int faultshim_fired(void) { return fired; }

static int is_data_file(int fd) {
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 9)
        return 0;
    path[n] = 0;
    return strcmp(path + n - 9, "/data.mdb") == 0;
}

/* 1 when this call must fail (errno set). */
static int fail_now(int kind, int fd) {
    if (!armed || !(mask_ & kind) || !is_data_file(fd))
        return 0;
    calls++;
    if ((fired && forever_) || calls == nth_) {
        fired = 1;
        errno = errnum_;
        return 1;
    }
    return 0;
}

typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*writev_fn)(int, const struct iovec *, int);
typedef ssize_t (*pwritev_fn)(int, const struct iovec *, int, off_t);
typedef int (*sync_fn)(int);

#define REAL(name, type)                                                                   \
    static type real_##name;                                                               \
    if (!real_##name)                                                                      \
    real_##name = (type)dlsym(RTLD_NEXT, #name)

ssize_t write(int fd, const void *buf, size_t n) {
    REAL(write, write_fn);
    return fail_now(1, fd) ? -1 : real_write(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    REAL(pwrite, pwrite_fn);
    return fail_now(1, fd) ? -1 : real_pwrite(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
    REAL(pwrite64, pwrite_fn);
    return fail_now(1, fd) ? -1 : real_pwrite64(fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    REAL(writev, writev_fn);
    return fail_now(1, fd) ? -1 : real_writev(fd, iov, cnt);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    REAL(pwritev, pwritev_fn);
    return fail_now(1, fd) ? -1 : real_pwritev(fd, iov, cnt, off);
}

int fsync(int fd) {
    REAL(fsync, sync_fn);
    return fail_now(2, fd) ? -1 : real_fsync(fd);
}

int fdatasync(int fd) {
    REAL(fdatasync, sync_fn);
    return fail_now(2, fd) ? -1 : real_fdatasync(fd);
}

typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);

static int deny_open(const char *path, int flags) {
    if (!armed || !(mask_ & 4) || !(flags & (O_WRONLY | O_RDWR | O_CREAT)) || !path)
        return 0;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (strcmp(base, "data.mdb") && strcmp(base, "lock.mdb") && strcmp(base, "llmdsdb.lock"))
        return 0;
    calls++;
    fired = 1;
    errno = errnum_;
    return 1;
}

#define OPEN_BODY(call)                                                                    \
    mode_t mode = 0;                                                                       \
    if (flags & (O_CREAT | O_TMPFILE)) {                                                   \
        va_list ap;                                                                        \
        va_start(ap, flags);                                                               \
        mode = (mode_t)va_arg(ap, int);                                                    \
        va_end(ap);                                                                        \
    }                                                                                      \
    if (deny_open(path, flags))                                                            \
        return -1;                                                                         \
    return call

int open(const char *path, int flags, ...) {
    REAL(open, open_fn);
    OPEN_BODY(real_open(path, flags, mode));
}

int open64(const char *path, int flags, ...) {
    REAL(open64, open_fn);
    OPEN_BODY(real_open64(path, flags, mode));
}

int openat(int dirfd, const char *path, int flags, ...) {
    REAL(openat, openat_fn);
    OPEN_BODY(real_openat(dirfd, path, flags, mode));
}

int openat64(int dirfd, const char *path, int flags, ...) {
    REAL(openat64, openat_fn);
    OPEN_BODY(real_openat64(dirfd, path, flags, mode));
}
