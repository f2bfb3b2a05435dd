/* iotrace.c -- an LD_PRELOAD shim that records, kills at, or fails the file writes and syncs
 * of one directory (a database directory), for the crash and power-loss tools in tools/stress.
 *
 * Built by tools/stress/iotrace.py (gcc -shared -fPIC -O2 iotrace.c -ldl); loaded with
 * LD_PRELOAD. Without configuration it only forwards calls: every intercepted function calls
 * the real libc one (dlsym(RTLD_NEXT)).
 *
 * Configuration (environment at load time, or the exported functions at run time, which a
 * forked child uses through ctypes):
 *   IOTRACE_DIR=/abs/dir      track files whose path starts with this prefix
 *   IOTRACE_LOG=/path/log     append one record per tracked open, write and sync (format below)
 *   IOTRACE_KILL_AT=N         raise SIGKILL just before the N-th tracked operation (1-based);
 *                             -N: just after the N-th one completed (its data is in the
 *                             page cache; the caller never learns it returned)
 *   IOTRACE_FAIL_AT=N         fail the N-th tracked operation with IOTRACE_FAIL_ERRNO (default
 *                             EIO) without performing it; IOTRACE_FAIL_FOREVER=1 fails every
 *                             later one too
 * A "tracked operation" is a write (write, pwrite, writev, pwritev), fsync, fdatasync or
 * ftruncate on a descriptor opened on a tracked path (sync_file_range is not intercepted: it
 * is no durability barrier, and LMDB does not call it).
 *
 * Log format: a sequence of records, little-endian, each
 *   u8 type, u8 flags, u16 file, u32 pad, i64 offset, u64 length, then `length` bytes
 *   type 1 OPEN   file = index given to the path, length = path length, bytes = the path
 *                 (at each open of a tracked path, and for each tracked file at a config)
 *   type 2 WRITE  offset, length, bytes = the data written (only the bytes the call wrote);
 *                 flags bit 0 = the descriptor was opened O_DSYNC/O_SYNC (durable on return)
 *   type 3 SYNC   fsync / fdatasync of the file (all its earlier writes are durable)
 *   type 4 MARK   offset = the value passed to iotrace_mark() (e.g. an acknowledged batch)
 *   type 5 TRUNC  offset = the new size
 * Records are written after the real call returned successfully, so the log holds completed
 * operations in the order they completed; the log is written with write(2) and survives a
 * SIGKILL of the process (the page cache keeps it).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FD 4096
#define MAX_FILES 256

enum { R_OPEN = 1, R_WRITE = 2, R_SYNC = 3, R_MARK = 4, R_TRUNC = 5 };

#pragma pack(push, 1)
struct rec {
    uint8_t type, flags;
    uint16_t file;
    uint32_t pad;
    int64_t offset;
    uint64_t length;
};
#pragma pack(pop)

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static char dir[4096];
static size_t dir_len;
static int log_fd = -1;
static long long kill_at, fail_at, ops;
static volatile int kill_pending; /* kill_at < 0: SIGKILL once the op has completed */
static int fail_errno = EIO, fail_forever;
static int fd_file[MAX_FD]; /* 0 = untracked, else file index + 1 */
static unsigned char fd_dsync[MAX_FD];
static char *files[MAX_FILES];
static int n_files;

#define REAL(name) static __typeof__(name) *real_##name
REAL(open); REAL(open64); REAL(openat); REAL(openat64); REAL(close);
REAL(write); REAL(pwrite); REAL(pwrite64); REAL(writev); REAL(pwritev); REAL(pwritev64);
REAL(fsync); REAL(fdatasync); REAL(ftruncate); REAL(ftruncate64);
REAL(lseek);

static void resolve(void) {
#define R(name) if (!real_##name) real_##name = dlsym(RTLD_NEXT, #name)
    R(open); R(open64); R(openat); R(openat64); R(close); R(write); R(pwrite); R(pwrite64);
    R(writev); R(pwritev); R(pwritev64); R(fsync); R(fdatasync); R(ftruncate); R(ftruncate64);
    R(lseek);
#undef R
}

static long long env_ll(const char *name) {
    const char *v = getenv(name);
    return v && *v ? atoll(v) : 0;
}

__attribute__((constructor)) static void init(void) {
    resolve();
    const char *d = getenv("IOTRACE_DIR");
    if (d && *d && strlen(d) < sizeof dir) {
        strcpy(dir, d);
        dir_len = strlen(dir);
    }
    const char *l = getenv("IOTRACE_LOG");
    if (l && *l)
        log_fd = real_open(l, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    kill_at = env_ll("IOTRACE_KILL_AT");
    fail_at = env_ll("IOTRACE_FAIL_AT");
    if (env_ll("IOTRACE_FAIL_ERRNO")) fail_errno = (int)env_ll("IOTRACE_FAIL_ERRNO");
    fail_forever = env_ll("IOTRACE_FAIL_FOREVER") != 0;
}

static void put_all(const void *p, size_t n) {
    const char *c = p;
    while (n) {
        ssize_t w = real_write(log_fd, c, n);
        if (w <= 0) { if (w < 0 && errno == EINTR) continue; return; }
        c += w; n -= (size_t)w;
    }
}

/* Append one record (header + payload pieces); the caller holds mu. */
static void emit(int type, int flags, int file, int64_t off, const struct iovec *iov, int cnt,
                 size_t total) {
    if (log_fd < 0) return;
    struct rec r = {(uint8_t)type, (uint8_t)flags, (uint16_t)file, 0, off, total};
    put_all(&r, sizeof r);
    for (int i = 0; i < cnt && total; i++) {
        size_t n = iov[i].iov_len < total ? iov[i].iov_len : total;
        put_all(iov[i].iov_base, n);
        total -= n;
    }
}

/* --- run-time configuration (ctypes) ------------------------------------------------------ */

int iotrace_config(const char *d, const char *logpath, long long kill_n, long long fail_n,
                   int err, int forever) {
    resolve();
    pthread_mutex_lock(&mu);
    dir[0] = 0; dir_len = 0;
    if (d && *d && strlen(d) < sizeof dir) { strcpy(dir, d); dir_len = strlen(dir); }
    if (log_fd >= 0) real_close(log_fd);
    log_fd = logpath && *logpath
        ? real_open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600) : -1;
    kill_at = kill_n; fail_at = fail_n; fail_errno = err ? err : EIO; fail_forever = forever;
    ops = 0;
    /* descriptors already open: keep those on paths under the new prefix (and name their
     * files in the new log), forget the others */
    unsigned char named[MAX_FILES] = {0};
    for (int fd = 0; fd < MAX_FD; fd++) {
        int idx = fd_file[fd] - 1;
        if (idx < 0) continue;
        if (!dir_len || strncmp(files[idx], dir, dir_len) != 0) { fd_file[fd] = 0; continue; }
        if (!named[idx]) {
            named[idx] = 1;
            struct iovec v = {files[idx], strlen(files[idx])};
            emit(R_OPEN, 0, idx, 0, &v, 1, v.iov_len);
        }
    }
    int bad = logpath && *logpath && log_fd < 0;
    pthread_mutex_unlock(&mu);
    return bad ? -1 : 0;
}

void iotrace_mark(long long value) {
    pthread_mutex_lock(&mu);
    emit(R_MARK, 0, 0, value, NULL, 0, 0);
    pthread_mutex_unlock(&mu);
}

long long iotrace_ops(void) { return ops; }

/* --- tracking ----------------------------------------------------------------------------- */

static int tracked_path(const char *p) {
    return dir_len && p && strncmp(p, dir, dir_len) == 0;
}

static void on_open(int fd, const char *path, int flags) {
    if (fd < 0 || fd >= MAX_FD) return;
    pthread_mutex_lock(&mu);
    fd_file[fd] = 0;
    if (tracked_path(path)) {
        int idx = -1;
        for (int i = 0; i < n_files; i++) if (strcmp(files[i], path) == 0) idx = i;
        if (idx < 0 && n_files < MAX_FILES) {
            idx = n_files++;
            files[idx] = strdup(path);
        }
        if (idx >= 0) {
            struct iovec v = {(void *)path, strlen(path)};
            emit(R_OPEN, 0, idx, 0, &v, 1, v.iov_len);
            fd_file[fd] = idx + 1;
            fd_dsync[fd] = (flags & (O_DSYNC | O_SYNC)) != 0;
        }
    }
    pthread_mutex_unlock(&mu);
}

static void check_kill_after(void) {
    if (kill_pending) raise(SIGKILL);
}

/* Before a tracked operation: count it; kill or fail it as configured. Returns 0 to go on, -1
 * to fail the call (errno set). */
static int before_op(int fd) {
    if (fd < 0 || fd >= MAX_FD || !fd_file[fd]) return 0;
    pthread_mutex_lock(&mu);
    long long n = ++ops;
    int kill_now = kill_at > 0 && n == kill_at;
    if (kill_at < 0 && n == -kill_at) kill_pending = 1;
    int fail = fail_at && (n == fail_at || (fail_forever && n > fail_at));
    pthread_mutex_unlock(&mu);
    if (kill_now) raise(SIGKILL);
    if (fail) { errno = fail_errno; return -1; }
    return 0;
}

static void after_write(int fd, int64_t off, const struct iovec *iov, int cnt, ssize_t done) {
    if (done <= 0 || fd < 0 || fd >= MAX_FD || !fd_file[fd]) return;
    pthread_mutex_lock(&mu);
    emit(R_WRITE, fd_dsync[fd], fd_file[fd] - 1, off, iov, cnt, (size_t)done);
    pthread_mutex_unlock(&mu);
}

static void after_simple(int type, int fd, int64_t off) {
    if (fd < 0 || fd >= MAX_FD || !fd_file[fd]) return;
    pthread_mutex_lock(&mu);
    emit(type, 0, fd_file[fd] - 1, off, NULL, 0, 0);
    pthread_mutex_unlock(&mu);
}

/* --- interposed functions ----------------------------------------------------------------- */

static mode_t mode_arg(int flags, va_list ap) {
    return (flags & O_CREAT) || (flags & __O_TMPFILE) == __O_TMPFILE ? va_arg(ap, mode_t) : 0;
}

int open(const char *path, int flags, ...) {
    va_list ap; va_start(ap, flags); mode_t m = mode_arg(flags, ap); va_end(ap);
    resolve();
    int fd = real_open(path, flags, m);
    on_open(fd, path, flags);
    return fd;
}

int open64(const char *path, int flags, ...) {
    va_list ap; va_start(ap, flags); mode_t m = mode_arg(flags, ap); va_end(ap);
    resolve();
    int fd = real_open64(path, flags, m);
    on_open(fd, path, flags);
    return fd;
}

int openat(int dfd, const char *path, int flags, ...) {
    va_list ap; va_start(ap, flags); mode_t m = mode_arg(flags, ap); va_end(ap);
    resolve();
    int fd = real_openat(dfd, path, flags, m);
    on_open(fd, path[0] == '/' ? path : NULL, flags);
    return fd;
}

int openat64(int dfd, const char *path, int flags, ...) {
    va_list ap; va_start(ap, flags); mode_t m = mode_arg(flags, ap); va_end(ap);
    resolve();
    int fd = real_openat64(dfd, path, flags, m);
    on_open(fd, path[0] == '/' ? path : NULL, flags);
    return fd;
}

int close(int fd) {
    resolve();
    if (fd >= 0 && fd < MAX_FD) {
        pthread_mutex_lock(&mu);
        fd_file[fd] = 0;
        pthread_mutex_unlock(&mu);
    }
    return real_close(fd);
}

static ssize_t do_pwrite(__typeof__(pwrite) *fn, int fd, const void *buf, size_t n, off_t off) {
    if (before_op(fd)) return -1;
    ssize_t r = fn(fd, buf, n, off);
    struct iovec v = {(void *)buf, n};
    after_write(fd, off, &v, 1, r);
    check_kill_after();
    return r;
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    resolve();
    return do_pwrite(real_pwrite, fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
    resolve();
    return do_pwrite(real_pwrite64, fd, buf, n, off);
}

static int64_t cur_offset(int fd) {
    return fd >= 0 && fd < MAX_FD && fd_file[fd] ? (int64_t)real_lseek(fd, 0, SEEK_CUR) : 0;
}

ssize_t write(int fd, const void *buf, size_t n) {
    resolve();
    if (before_op(fd)) return -1;
    int64_t off = cur_offset(fd);
    ssize_t r = real_write(fd, buf, n);
    struct iovec v = {(void *)buf, n};
    after_write(fd, off, &v, 1, r);
    check_kill_after();
    return r;
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    resolve();
    if (before_op(fd)) return -1;
    int64_t off = cur_offset(fd);
    ssize_t r = real_writev(fd, iov, cnt);
    after_write(fd, off, iov, cnt, r);
    check_kill_after();
    return r;
}

static ssize_t do_pwritev(__typeof__(pwritev) *fn, int fd, const struct iovec *iov, int cnt,
                          off_t off) {
    if (before_op(fd)) return -1;
    ssize_t r = fn(fd, iov, cnt, off);
    after_write(fd, off, iov, cnt, r);
    check_kill_after();
    return r;
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    resolve();
    return do_pwritev(real_pwritev, fd, iov, cnt, off);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off) {
    resolve();
    return do_pwritev(real_pwritev64, fd, iov, cnt, off);
}

/* fsync, fdatasync (type R_SYNC) and ftruncate (R_TRUNC): a call on fd, logged on success. */
static int do_simple(int (*call)(int, off_t), int type, int fd, off_t size) {
    if (before_op(fd)) return -1;
    int r = call(fd, size);
    if (r == 0) after_simple(type, fd, size);
    check_kill_after();
    return r;
}

static int call_fsync(int fd, off_t unused) { (void)unused; return real_fsync(fd); }
static int call_fdatasync(int fd, off_t unused) { (void)unused; return real_fdatasync(fd); }
static int call_ftruncate(int fd, off_t size) { return real_ftruncate(fd, size); }
static int call_ftruncate64(int fd, off_t size) { return real_ftruncate64(fd, size); }

int fsync(int fd) { resolve(); return do_simple(call_fsync, R_SYNC, fd, 0); }
int fdatasync(int fd) { resolve(); return do_simple(call_fdatasync, R_SYNC, fd, 0); }
int ftruncate(int fd, off_t size) {
    resolve();
    return do_simple(call_ftruncate, R_TRUNC, fd, size);
}
int ftruncate64(int fd, off_t size) {
    resolve();
    return do_simple(call_ftruncate64, R_TRUNC, fd, size);
}
