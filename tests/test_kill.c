/* Crash safety of checkpoints, end to end: the trainer (moemlora-train
 * --save) is killed with SIGKILL at seeded random moments, many of them while
 * a checkpoint is being written; after every kill the checkpoint at the path,
 * if there is one, must load and predict finite values. Then:
 *   - the trainer resumes (--resume) one of those checkpoints and completes;
 *   - a short run killed midway and resumed exports the same bytes as the
 *     same run left alone.
 * Skips (77) if the trainer binary is not next to the tests
 * (BUILD/examples/moemlora-train). MOEMLORA_TEST_QUICK=1: fewer kills. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MOEMLORA_IMPLEMENTATION
#include "../moemlora.h"
#include "mml_test.h"

static char trainer[1024];
static char dir[512];

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

static uint64_t krng = 0xC0FFEE5EEDull;
static double kuniform(void) {
    uint64_t z = (krng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (double)((z ^ (z >> 31)) >> 11) * 0x1.0p-53;
}

/* The trainer's synthetic data: the same flags on every run. */
#define SYN "--syn-samples", "20000", "--syn-users", "500", "--syn-items", "200"

/* Starts the trainer with args (NULL-terminated); its output goes to log. */
static pid_t spawn(const char *const *args, const char *log) {
    const char *argv[40];
    int n = 0;
    argv[n++] = trainer;
    for (int i = 0; args[i] && n < 39; i++) argv[n++] = args[i];
    argv[n] = NULL;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log ? log : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) { dup2(fd, 1); dup2(fd, 2); close(fd); }
        execv(trainer, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* Waits up to timeout seconds; returns the wait status, or -1 after killing
 * a child that overran. */
static int wait_for(pid_t pid, double timeout) {
    double t0 = now_s();
    int status = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) return status;
        if (r < 0) return -1;
        if (now_s() - t0 > timeout) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        sleep_s(0.01);
    }
}

static void dpath(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", dir, name); }

/* Removes the temporaries a killed writer leaves (name.tmp.PID); returns how
 * many there were. */
static int remove_temporaries(void) {
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    char p[1024];
    while (d && (e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
            n++;
        }
    if (d) closedir(d);
    return n;
}

static void print_log(const char *log) {
    FILE *f = fopen(log, "r");
    char line[512];
    int n = 0;
    while (f && fgets(line, sizeof line, f) && n++ < 40) fprintf(stderr, "  | %s", line);
    if (f) fclose(f);
}

/* The checkpoint must load and give finite predictions for known and
 * unknown ids; returns 1 if it does. */
static int checkpoint_usable(const char *path, const char *what) {
    mml_model_t *m = NULL;
    mml_status st = mml_model_load(path, &m);
    CHECK(st == MML_OK, "%s: %s does not load: %s", what, path, mml_last_error());
    if (st) return 0;
    const mml_config_t *c = mml_model_config(m);
    int32_t u[8], p[8], d[8];
    float prob[8];
    for (int i = 0; i < 8; i++) {
        u[i] = i < 6 ? (i * 37) % c->n_users : c->n_users + i;
        p[i] = i < 6 ? (i * 11) % c->n_items : -i;
        d[i] = i % c->n_domains;
    }
    mml_batch_t b = mml_batch_paper(8, u, p, d, NULL);
    int ok = mml_predict(m, &b, prob) == MML_OK;
    for (int i = 0; ok && i < 8; i++) ok = prob[i] >= 0.0f && prob[i] <= 1.0f;
    CHECK(ok, "%s: %s predicts non-finite or out-of-range values", what, path);
    mml_model_free(m);
    return ok;
}

static int files_equal(const char *a, const char *b) {
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa && fb;
    while (same) {
        int x = fgetc(fa), y = fgetc(fb);
        if (x != y) same = 0;
        if (x == EOF || y == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

/* ---- SIGKILL at random moments ------------------------------------------- */

static void test_random_kills(int n_kills) {
    mmlt_ctx = "kills";
    char ck[1024], log[1024];
    dpath(ck, sizeof ck, "ck.mml");
    dpath(log, sizeof log, "kill.log");
    const char *args[] = {SYN, "--adapter", "moe", "--epochs", "50", "--patience", "50", "--quiet", "--save", ck, NULL};
    int with_ckpt = 0, usable = 0, finished = 0, temporaries = 0;
    double t0 = now_s();
    for (int i = 0; i < n_kills; i++) {
        /* every fourth run starts without a checkpoint and is killed around
         * its first write (~50 ms in); the others overwrite one at ~10 Hz */
        int fresh = i % 4 == 0;
        if (fresh) unlink(ck);
        double delay = fresh ? 0.01 + 0.09 * kuniform() : 0.05 + 1.45 * kuniform();
        pid_t pid = spawn(args, NULL);
        CHECK(pid > 0, "fork: %s", strerror(errno));
        if (pid <= 0) return;
        sleep_s(delay);
        kill(pid, SIGKILL);
        int status = wait_for(pid, 10.0);
        if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) {
            finished++;
            CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "run %d ended on its own with status 0x%x", i,
                  status);
        }
        temporaries += remove_temporaries();
        if (access(ck, F_OK) == 0) {
            char what[64];
            snprintf(what, sizeof what, "kill %d after %.3f s", i, delay);
            with_ckpt++;
            usable += checkpoint_usable(ck, what);
        }
    }
    printf("kills: %d SIGKILLs (%.1f s), %d left a checkpoint, %d of those loaded and predicted, "
           "%d temporaries left by killed writers, %d runs finished first\n",
           n_kills, now_s() - t0, with_ckpt, usable, temporaries, finished);
    CHECK(with_ckpt >= n_kills / 2, "only %d of %d kills came after a checkpoint", with_ckpt, n_kills);
}

/* ---- resume after a kill --------------------------------------------------- */

static void test_resume_killed(void) {
    mmlt_ctx = "resume";
    char ck[1024], log[1024], fin[1024];
    dpath(ck, sizeof ck, "ck.mml");
    dpath(log, sizeof log, "resume.log");
    dpath(fin, sizeof fin, "final.mml");
    if (access(ck, F_OK) != 0) {
        /* the last kill came early: make a checkpoint first */
        const char *args[] = {SYN, "--adapter", "moe", "--epochs", "50", "--patience", "50", "--quiet", "--save", ck, NULL};
        pid_t pid = spawn(args, NULL);
        for (int i = 0; i < 300 && access(ck, F_OK) != 0; i++) sleep_s(0.01);
        kill(pid, SIGKILL);
        wait_for(pid, 10.0);
        remove_temporaries();
    }
    /* fewer epochs than the killed run planned: the stage it was in ends at
     * once, the remaining stages train briefly */
    const char *args[] = {SYN, "--epochs", "2", "--patience", "1", "--quiet", "--resume", ck, "--save", ck,
                          "--export", fin, NULL};
    double t0 = now_s();
    int status = wait_for(spawn(args, log), 120.0);
    int ok = status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    CHECK(ok, "resumed trainer: status 0x%x (log below)", status);
    if (!ok) print_log(log);
    checkpoint_usable(fin, "export after resume");
    mml_model_t *m = NULL;
    if (mml_model_load(ck, &m) == MML_OK) {
        CHECK(m->fit.active == 0, "the final checkpoint still says a fit is running");
        mml_model_free(m);
    }
    printf("resume of a killed checkpoint: exit %d in %.1f s\n", ok ? 0 : status, now_s() - t0);
}

/* A short run, killed midway and resumed, exports what the same run left
 * alone exports, byte for byte. */
static void test_kill_resume_identical(void) {
    mmlt_ctx = "identical";
    char ck[1024], straight[1024], resumed[1024], log[1024];
    dpath(ck, sizeof ck, "short.mml");
    dpath(straight, sizeof straight, "straight.mml");
    dpath(resumed, sizeof resumed, "resumed.mml");
    dpath(log, sizeof log, "short.log");
#define SHORT SYN, "--syn-domains", "3", "--adapter", "moe", "--epochs", "3", "--patience", "2", "--quiet"
    const char *a_straight[] = {SHORT, "--export", straight, NULL};
    double t0 = now_s();
    int status = wait_for(spawn(a_straight, log), 120.0);
    double run_s = now_s() - t0;
    CHECK(status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0, "straight run: status 0x%x", status);
    if (status < 0 || !WIFEXITED(status) || WEXITSTATUS(status)) { print_log(log); return; }

    const char *a_killed[] = {SHORT, "--save", ck, NULL};
    const char *a_resume[] = {SHORT, "--resume", ck, "--save", ck, "--export", resumed, NULL};
    int compared = 0, same = 0;
    for (int attempt = 0; attempt < 3; attempt++) {
        unlink(ck);
        pid_t pid = spawn(a_killed, NULL);
        /* kill once a few checkpoints exist, well before the end */
        for (int i = 0; i < 1000 && access(ck, F_OK) != 0; i++) sleep_s(0.005);
        sleep_s(run_s * (0.2 + 0.2 * attempt));
        kill(pid, SIGKILL);
        status = wait_for(pid, 10.0);
        remove_temporaries();
        if (!(WIFSIGNALED(status) && access(ck, F_OK) == 0)) continue; /* finished first: try again */
        status = wait_for(spawn(a_resume, log), 120.0);
        int ok = status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
        CHECK(ok, "resume: status 0x%x", status);
        if (!ok) { print_log(log); continue; }
        compared++;
        int eq = files_equal(straight, resumed);
        CHECK(eq, "attempt %d: the resumed run exports different bytes than the straight run", attempt);
        same += eq;
    }
    CHECK(compared > 0, "no run could be killed midway (straight run %.2f s)", run_s);
    printf("kill + resume: %d of %d resumed runs export the straight run's bytes (straight run %.2f s)\n", same,
           compared, run_s);
#undef SHORT
}

int main(int argc, char **argv) {
    (void)argc;
    int quick = mmlt_quick();
    /* the trainer sits in BUILD/examples, the tests in BUILD/tests */
    const char *slash = strrchr(argv[0], '/');
    int dn = slash ? (int)(slash - argv[0]) : 1;
    snprintf(trainer, sizeof trainer, "%.*s/../examples/moemlora-train", dn, slash ? argv[0] : ".");
    if (access(trainer, X_OK) != 0) {
        printf("skipped: trainer not found at %s (build the examples: MOEMLORA_BUILD_EXAMPLES=ON)\n", trainer);
        return MMLT_SKIP;
    }
    const char *td = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/mml_kill_XXXXXX", td && *td ? td : "/tmp");
    if (!mkdtemp(dir)) {
        fprintf(stderr, "test_kill: mkdtemp %s: %s\n", dir, strerror(errno));
        return 1;
    }
    double t0 = now_s();
    test_random_kills(quick ? 8 : 40);
    test_resume_killed();
    test_kill_resume_identical();
    printf("total %.1f s\n", now_s() - t0);
    mmlt_rm_tree(dir);
    return mmlt_finish("test_kill");
}
