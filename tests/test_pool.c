/* The worker pool when a worker does not run: the scheduler can keep a
 * thread off its core for whole time slices (another program busy there).
 * The parts of a job go to whichever thread claims them first, so a step must
 * finish without the held worker, and give the same bits as a step whose
 * worker ran: parameters, both Adam moments, predictions. The worker is held
 * inside a signal handler (SIGUSR1, sent to that thread) until released.
 * Checked: dense Adam (the deferred rows' replays run on the pool too) and
 * lazy Adam, MoE-MLoRA and the base model; the worker held from the start,
 * released halfway, held again. An alarm fails the test if a step waits for
 * the held worker. Needs two threads (skipped under MOEMLORA_TEST_ONE_THREAD).
 * Also checked: a worker's move off the caller's CPU (test_move_off_cpu).
 * Not in the ThreadSanitizer step: it delivers signals at its own interception
 * points, one of them inside pthread_cond_wait with the pool's mutex held, so
 * a held worker would hold the mutex too, which a real stop does not. */
#define MOEMLORA_IMPLEMENTATION
#include "../moemlora.h"
#include "mml_test.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

/* Set and read across threads (and in the handler): lock-free atomics. */
static int g_held, g_release;
#define GET(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define SET(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELEASE)

static void hold_here(int sig) {
    (void)sig;
    SET(g_held, 1);
    struct timespec ms = {0, 1000000};
    while (!GET(g_release)) nanosleep(&ms, NULL);
    SET(g_held, 0);
}

static void release_worker(void) {
    SET(g_release, 1);
    struct timespec ms = {0, 1000000};
    for (int i = 0; i < 10000 && GET(g_held); i++) nanosleep(&ms, NULL);
}

/* Holds worker thread 1 of m until release_worker. A held worker must not
 * hold the pool's mutex: the signal can land in the few instructions where
 * the worker has it locked, and a held mutex stops the caller for ever where
 * the scheduler would stop it for a time slice (the one way a step can wait
 * for a held worker; a valgrind run, which delivers signals when a thread
 * next runs, once hit this test's alarm). So the hold is taken again until
 * the mutex is free while the worker is held. */
static int hold_worker(mml_model_t *m) {
    struct timespec ms = {0, 1000000};
    for (int attempt = 0; attempt < 100; attempt++) {
        SET(g_release, 0);
        if (pthread_kill(m->rt.pool->th[0], SIGUSR1) != 0) return 0;
        for (int i = 0; i < 10000 && !GET(g_held); i++) nanosleep(&ms, NULL);
        if (!GET(g_held)) return 0;
        if (pthread_mutex_trylock(&m->rt.pool->mu) == 0) {
            pthread_mutex_unlock(&m->rt.pool->mu);
            return 1;
        }
        release_worker();
    }
    return 0;
}

static int same(const float *a, const float *b, int64_t n) { return memcmp(a, b, (size_t)n * sizeof(float)) == 0; }

#define NB 256
#define STEPS 24

static void run_case(mml_adapter adapter, int lazy) {
    char ctx[96];
    snprintf(ctx, sizeof ctx, "adapter %d lazy %d", (int)adapter, lazy);
    mmlt_ctx = ctx;
    mml_config_t c;
    mml_config_default(&c);
    c.adapter = adapter;
    c.n_users = 3000;
    c.n_items = 500;
    c.n_domains = 3;
    c.emb_dim = 32;
    c.threads = 2;
    c.max_batch = NB;
    c.lazy_adam = lazy;
    mmlt_tower(&c, 32, 16);
    mml_model_t *a, *b; /* a: its worker held for parts of the run; b: never */
    CHECK_OK(mml_model_create(&c, &a));
    CHECK_OK(mml_model_create(&c, &b));
    if (!a || !b || !a->rt.pool) {
        CHECK(0, "models with two threads not created");
        mml_model_free(a);
        mml_model_free(b);
        return;
    }
    uint64_t s = 7;
    int32_t u[NB], p[NB], d[NB];
    float y[NB], pa[NB], pb[NB];
    int held = 0, ok = 1;
    for (int step = 0; step < STEPS && ok; step++) {
        if (step == 0 || step == 2 * STEPS / 3) {
            CHECK(hold_worker(a), "step %d: the worker did not enter the hold", step);
            held = 1;
        }
        if (step == STEPS / 3) { release_worker(); held = 0; }
        for (int i = 0; i < NB; i++) {
            u[i] = (int32_t)(mml__rng_next(&s) % (uint64_t)c.n_users);
            p[i] = (int32_t)(mml__rng_next(&s) % (uint64_t)c.n_items);
            d[i] = (int32_t)(mml__rng_next(&s) % 3);
            y[i] = (float)(mml__rng_next(&s) & 1);
        }
        mml_batch_t bt = mml_batch_paper(NB, u, p, d, y);
        float la = 0.0f, lb = 0.0f;
        alarm(60); /* a step that waits for the held worker never ends */
        CHECK_OK(mml_train_step(a, &bt, &la));
        CHECK_OK(mml_train_step(b, &bt, &lb));
        CHECK_OK(mml_predict(a, &bt, pa));
        CHECK_OK(mml_predict(b, &bt, pb));
        alarm(0);
        CHECK(memcmp(&la, &lb, sizeof la) == 0, "step %d (worker held %d): loss %.9g against %.9g", step, held, la, lb);
        ok = same(pa, pb, NB);
        CHECK(ok, "step %d (worker held %d): predictions differ", step, held);
    }
    mml__catch_up_all(a);
    mml__catch_up_all(b);
    int64_t n = a->a.n_floats;
    CHECK(same(a->P, b->P, n), "parameters differ");
    CHECK(same(a->opt.M, b->opt.M, n), "first moments differ");
    CHECK(same(a->opt.V, b->opt.V, n), "second moments differ");
    if (held) release_worker();
    CHECK(!GET(g_held), "the worker did not leave the hold");
    mml_model_free(a);
    mml_model_free(b);
    mmlt_ctx = "";
}

/* A worker woken on the caller's CPU moves itself off it (mml__move_off_cpu):
 * it lands on another CPU of its affinity mask and keeps the mask; with a
 * mask of one CPU it stays where it is. Linux with two CPUs or more. */
static void test_move_off_cpu(void) {
    mmlt_ctx = "move off a CPU";
#if defined(__linux__) && defined(SYS_sched_getaffinity) && defined(SYS_sched_setaffinity)
    enum { W = 1024 / (8 * sizeof(unsigned long)) };
    const int bits = 8 * (int)sizeof(unsigned long);
    unsigned long all[W], one[W], now[W];
    long n = syscall(SYS_sched_getaffinity, 0L, sizeof all, all);
    int c0 = -1, count = 0;
    for (int c = 0; n > 0 && c < 8 * n; c++)
        if (all[c / bits] >> (c % bits) & 1ul) {
            if (c0 < 0) c0 = c;
            count++;
        }
    memset(one, 0, sizeof one);
    if (c0 >= 0) one[c0 / bits] = 1ul << (c0 % bits);
    if (count < 2 || mml__cpu_now() < 0 || syscall(SYS_sched_setaffinity, 0L, (size_t)n, one) != 0) {
        printf("test_pool: move off a CPU: skipped (needs two CPUs in the affinity mask and getcpu)\n");
        mmlt_ctx = "";
        return;
    }
    CHECK(mml__cpu_now() == c0, "pinned to CPU %d, runs on %d", c0, mml__cpu_now());
    CHECK(!mml__move_off_cpu(c0), "moved off the only CPU of its mask");
    CHECK(mml__cpu_now() == c0, "left CPU %d, the only one of its mask, for %d", c0, mml__cpu_now());
    CHECK(syscall(SYS_sched_setaffinity, 0L, (size_t)n, all) == 0, "cannot restore the affinity mask");
    CHECK(mml__move_off_cpu(c0), "did not move off CPU %d", c0);
    CHECK(mml__cpu_now() != c0, "still on CPU %d after the move", c0);
    CHECK(syscall(SYS_sched_getaffinity, 0L, sizeof now, now) == n && memcmp(now, all, (size_t)n) == 0,
          "the move changed the affinity mask");
#else
    printf("test_pool: move off a CPU: skipped (Linux only)\n");
#endif
    mmlt_ctx = "";
}

int main(void) {
    test_move_off_cpu();
    if (mmlt_max_threads() < 2) {
        printf("test_pool: skipped (MOEMLORA_TEST_ONE_THREAD: no worker threads)\n");
        return MMLT_SKIP;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = hold_here;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    run_case(MML_ADAPTER_MOE, 0);
    run_case(MML_ADAPTER_MOE, 1);
    run_case(MML_ADAPTER_NONE, 0);
    return mmlt_finish("test_pool");
}
