/*
 * Levelled, timestamped logging to stderr and an optional size-rotated
 * file. Owns the log file descriptor and its rotation; knows nothing of
 * what is logged. A mutex makes it safe to call from the AMQP thread.
 */
#include "util/log.h"
#include "ess.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static struct {
    ess_log_level_t level;
    int fd;
    char *path;
    size_t max_bytes;
    size_t written;
    int keep;
    pthread_mutex_t mu;
} L = {ESS_LOG_INFO, -1, NULL, 0, 0, 0, PTHREAD_MUTEX_INITIALIZER};

static const char *names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

int ess_log_level_parse(const char *s)
{
    static const char *lower[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, lower[i]) == 0)
            return i;
    return -1;
}

static int open_file(void)
{
    L.fd = open(L.path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (L.fd < 0)
        return ESS_EIO;
    struct stat st;
    L.written = fstat(L.fd, &st) == 0 ? (size_t)st.st_size : 0;
    return ESS_OK;
}

int ess_log_init(ess_log_level_t level, const char *dir, size_t max_bytes, int keep)
{
    pthread_mutex_lock(&L.mu);
    L.level = level;
    if (L.fd >= 0)
        close(L.fd);
    L.fd = -1;
    free(L.path);
    L.path = NULL;
    int rc = ESS_OK;
    if (dir != NULL && dir[0] != '\0') {
        mkdir(dir, 0755);
        size_t n = strlen(dir) + sizeof("/essd.log");
        L.path = ess_xmalloc(n);
        snprintf(L.path, n, "%s/essd.log", dir);
        L.max_bytes = max_bytes ? max_bytes : 10 * 1024 * 1024;
        L.keep = keep > 0 ? keep : 1;
        rc = open_file();
    }
    pthread_mutex_unlock(&L.mu);
    return rc;
}

void ess_log_shutdown(void)
{
    pthread_mutex_lock(&L.mu);
    if (L.fd >= 0)
        close(L.fd);
    L.fd = -1;
    pthread_mutex_unlock(&L.mu);
}

int ess_log_enabled(ess_log_level_t level)
{
    return level >= L.level;
}

/* Shift name.log.N-1 to name.log.N, down to name.log -> name.log.1. */
static void rotate(void)
{
    size_t n = strlen(L.path) + 16;
    char from[n], to[n];
    close(L.fd);
    L.fd = -1;
    for (int i = L.keep; i >= 1; i--) {
        if (i == 1)
            snprintf(from, n, "%s", L.path);
        else
            snprintf(from, n, "%s.%d", L.path, i - 1);
        snprintf(to, n, "%s.%d", L.path, i);
        rename(from, to);
    }
    open_file();
}

void ess_log(ess_log_level_t level, const char *fmt, ...)
{
    if (level < L.level)
        return;
    char line[4096];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';

    pthread_mutex_lock(&L.mu);
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
    if (L.fd >= 0) {
        if (L.written + len > L.max_bytes)
            rotate();
        if (L.fd >= 0 && write(L.fd, line, len) > 0)
            L.written += len;
    }
    pthread_mutex_unlock(&L.mu);
}
