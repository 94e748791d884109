/*
 * A minimal unit-test harness: CHECK records a failure and carries on,
 * ESS_TEST_MAIN runs the listed tests and prints the plain closing line
 * "N passed, N failed" that CI reads. Exit status is non-zero on failure.
 */
#ifndef ESS_TEST_H
#define ESS_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static int ess_test_failures;
static int ess_test_checks;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        ess_test_checks++;                                                                         \
        if (!(cond)) {                                                                             \
            ess_test_failures++;                                                                   \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long ess_a_ = (long long)(a), ess_b_ = (long long)(b);                                \
        ess_test_checks++;                                                                         \
        if (ess_a_ != ess_b_) {                                                                    \
            ess_test_failures++;                                                                   \
            fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, #a, #b,  \
                    ess_a_, ess_b_);                                                               \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_STR(a, b)                                                                         \
    do {                                                                                           \
        const char *ess_a_ = (a), *ess_b_ = (b);                                                   \
        ess_test_checks++;                                                                         \
        if (ess_a_ == NULL || ess_b_ == NULL || strcmp(ess_a_, ess_b_) != 0) {                     \
            ess_test_failures++;                                                                   \
            fprintf(stderr, "%s:%d: %s == %s failed: \"%s\" != \"%s\"\n", __FILE__, __LINE__, #a,  \
                    #b, ess_a_ ? ess_a_ : "(null)", ess_b_ ? ess_b_ : "(null)");                   \
        }                                                                                          \
    } while (0)

typedef struct {
    const char *name;
    void (*fn)(void);
} ess_test_case_t;

#define ESS_TEST(fn)                                                                               \
    {                                                                                              \
#fn, fn                                                                                    \
    }

static inline int ess_test_run(const ess_test_case_t *cases, size_t n)
{
    int passed = 0, failed = 0;
    for (size_t i = 0; i < n; i++) {
        int before = ess_test_failures;
        cases[i].fn();
        if (ess_test_failures == before) {
            passed++;
        } else {
            failed++;
            fprintf(stderr, "FAIL %s\n", cases[i].name);
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

#define ESS_TEST_MAIN(...)                                                                         \
    int main(void)                                                                                 \
    {                                                                                              \
        static const ess_test_case_t cases[] = {__VA_ARGS__};                                      \
        return ess_test_run(cases, sizeof(cases) / sizeof(cases[0]));                              \
    }

#endif
