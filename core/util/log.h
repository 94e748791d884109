/*
 * Logging: levelled, timestamped lines to stderr and, when a directory is
 * configured, to a size-rotated file there. Safe to call before
 * ess_log_init (it then writes to stderr at INFO). Single-threaded except
 * where noted: calls from other threads are serialised by a mutex.
 */
#ifndef ESS_LOG_H
#define ESS_LOG_H

#include <stddef.h>

typedef enum {
    ESS_LOG_DEBUG = 0,
    ESS_LOG_INFO = 1,
    ESS_LOG_WARN = 2,
    ESS_LOG_ERROR = 3,
} ess_log_level_t;

/**
 * Configure logging. dir may be NULL or "" for console only; the file is
 * dir/name.log, rotated to name.log.1 .. name.log.<keep> when it passes
 * max_bytes. Returns ESS_OK or ESS_EIO (the directory cannot be written).
 */
int ess_log_init(ess_log_level_t level, const char *dir, size_t max_bytes, int keep);

/** Parse "debug", "info", "warn" or "error"; returns -1 for anything else. */
int ess_log_level_parse(const char *s);

/** Close the log file. Later calls log to stderr only. */
void ess_log_shutdown(void);

int ess_log_enabled(ess_log_level_t level);

void ess_log(ess_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define ess_log_debug(...)                                                                         \
    do {                                                                                           \
        if (ess_log_enabled(ESS_LOG_DEBUG))                                                        \
            ess_log(ESS_LOG_DEBUG, __VA_ARGS__);                                                   \
    } while (0)
#define ess_log_info(...) ess_log(ESS_LOG_INFO, __VA_ARGS__)
#define ess_log_warn(...) ess_log(ESS_LOG_WARN, __VA_ARGS__)
#define ess_log_error(...) ess_log(ESS_LOG_ERROR, __VA_ARGS__)

#endif
