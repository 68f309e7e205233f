/* Crash safety of checkpoints, end to end: the trainer (moemlora-train
 * --save) is killed with SIGKILL, most often while it writes a checkpoint.
 * No kill waits a fixed time: the test polls the directory for the writer's
 * temporary (<ckpt>.tmp.<pid>.<n>), stops the trainer (SIGSTOP) and, if the
 * temporary is still there, kills it: that kill landed mid-write by
 * construction, on any CPU and under any forced ISA. Asserted:
 *   - every kill leaves a checkpoint that loads and predicts finite values
 *     (the previous one when killed mid-write), or, killed in its very first
 *     write, nothing at the path; every planned mid-write kill landed
 *     mid-write (its temporary is left behind);
 *   - some kills land at other moments (a seeded delay after the trainer's
 *     own first checkpoint): the same must hold;
 *   - the trainer resumes (--resume) one of those checkpoints and completes;
 *   - a short run killed in its second, third or fourth checkpoint write and
 *     resumed exports the same bytes as the same run left alone.
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
#include "mml_run.h"

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
static pid_t spawn(const char *const *args, const char *log) { return mmlt_spawn(trainer, args, NULL, log, log); }

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

/* ---- SIGKILL mid-write and at other moments ------------------------------ */

/* Hang guard for one kill: the trainer's first checkpoint comes after one
 * epoch (well under a second here); this only stops a test that would wait
 * forever. */
#define GUARD_S 300.0

/* Is pid writing the checkpoint named base (in dir), through a temporary
 * with write counter >= min_n? Its name goes to tmp. */
static int find_tmp(pid_t pid, const char *base, unsigned min_n, char *tmp, size_t cap) {
    char prefix[256];
    int pn = snprintf(prefix, sizeof prefix, "%s.tmp.%ld.", base, (long)pid);
    DIR *d = opendir(dir);
    struct dirent *e;
    int found = 0;
    while (d && !found && (e = readdir(d)))
        if (strncmp(e->d_name, prefix, (size_t)pn) == 0 && strtoul(e->d_name + pn, NULL, 10) >= min_n) {
            snprintf(tmp, cap, "%s/%s", dir, e->d_name);
            found = 1;
        }
    if (d) closedir(d);
    return found;
}

/* How waiting for a trainer's checkpoint ended. */
enum { W_REACHED, W_ENDED, W_HUNG, W_UNSEEN };
static const char *const w_what[] = {"reached", "ended", "hung",
                                     "wrote checkpoints without a temporary the test could see"};

/* Kills and reaps pid (it overran); returns why. */
static int give_up(pid_t pid, int why) {
    int status;
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return why;
}

/* The checkpoint at path changed since *sig (rename: new inode; an in-place
 * write: new time or size); updates *sig. */
typedef struct file_sig { ino_t ino; int64_t ns; off_t size; } file_sig;
static int file_changed(const char *path, file_sig *sig) {
    struct stat st;
    file_sig now = {0, 0, 0};
    if (stat(path, &st) == 0)
        now = (file_sig){st.st_ino, (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec, st.st_size};
    int changed = now.ino != sig->ino || now.ns != sig->ns || now.size != sig->size;
    *sig = now;
    return changed;
}

/* Polls until pid writes checkpoint base with counter >= min_n and stops it
 * (SIGSTOP) while its temporary exists: W_REACHED with pid stopped mid-write
 * (the temporary's path in tmp). Else W_ENDED (pid reaped, its wait status
 * in *status), W_HUNG (the guard ran out) or W_UNSEEN (20 checkpoints came
 * and went and not one through a temporary the test saw: the writer is not
 * atomic, or it is far faster than polling): pid killed. */
static int writes_missed; /* seen in progress, finished before the stop: for the log */

static int stop_mid_write(pid_t pid, const char *base, unsigned min_n, char *tmp, size_t cap, int *status) {
    char path[1024];
    dpath(path, sizeof path, base);
    file_sig sig = {0, 0, 0};
    file_changed(path, &sig);
    double t0 = now_s();
    int unseen = 0;
    for (;;) {
        if (find_tmp(pid, base, min_n, tmp, cap)) {
            kill(pid, SIGSTOP);
            if (waitpid(pid, status, WUNTRACED) != pid) return give_up(pid, W_HUNG);
            if (!WIFSTOPPED(*status)) return W_ENDED;
            if (access(tmp, F_OK) == 0) return W_REACHED;
            kill(pid, SIGCONT); /* it finished that write first: wait for the next */
            writes_missed++;
        }
        if (waitpid(pid, status, WNOHANG) == pid) return W_ENDED;
        if (now_s() - t0 > GUARD_S) return give_up(pid, W_HUNG);
        if (file_changed(path, &sig) && ++unseen >= 20) return give_up(pid, W_UNSEEN);
        sleep_s(1e-4);
    }
}

/* Polls until pid has replaced the checkpoint at path (its inode differs
 * from old_ino): W_REACHED; else as stop_mid_write. */
static int wait_new_checkpoint(pid_t pid, const char *path, ino_t old_ino, int *status) {
    double t0 = now_s();
    struct stat st;
    while (stat(path, &st) != 0 || st.st_ino == old_ino) {
        if (waitpid(pid, status, WNOHANG) == pid) return W_ENDED;
        if (now_s() - t0 > GUARD_S) return give_up(pid, W_HUNG);
        sleep_s(1e-3);
    }
    return W_REACHED;
}

/* Kill i of a series: run kinds in turn, 0: fresh (no checkpoint before),
 * killed in its first write; 1: a seeded 0-0.3 s after its first checkpoint
 * is in place; 2: killed in its first write over that checkpoint; 3: in its
 * second or third write. */
typedef struct kill_tally { int mid_planned, mid_landed, left_ckpt, usable, temporaries; } kill_tally;

static void kill_once(int i, const char *const *args, const char *ck, kill_tally *t) {
    int kind = i % 4, fresh = kind == 0, mid = kind != 1, status = 0;
    unsigned min_n = kind == 3 ? 1 + (unsigned)(i / 4) % 2 : 0;
    struct stat st;
    if (fresh) unlink(ck);
    ino_t old_ino = stat(ck, &st) == 0 ? st.st_ino : 0;
    pid_t pid = spawn(args, NULL);
    CHECK(pid > 0, "fork: %s", strerror(errno));
    if (pid <= 0) return;
    char tmp[1024] = "";
    int how;
    if (mid) {
        t->mid_planned++;
        how = stop_mid_write(pid, "ck.mml", min_n, tmp, sizeof tmp, &status);
    } else {
        how = wait_new_checkpoint(pid, ck, old_ino, &status);
        if (how == W_REACHED) sleep_s(0.3 * kuniform());
    }
    CHECK(how == W_REACHED, "kill %d: the trainer %s (status 0x%x)", i, w_what[how], status);
    if (how != W_REACHED) return;
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "kill %d: status 0x%x", i, status);
    if (mid) t->mid_landed += access(tmp, F_OK) == 0;
    int first_write = mid && strtoul(strrchr(tmp, '.') + 1, NULL, 10) == 0;
    t->temporaries += remove_temporaries();
    char what[96];
    snprintf(what, sizeof what, "kill %d (kind %d)", i, kind);
    if (fresh && first_write) {
        CHECK(access(ck, F_OK) != 0, "%s: killed in its first write, yet a file is at %s", what, ck);
    } else {
        int there = access(ck, F_OK) == 0;
        CHECK(there, "%s: no checkpoint at %s", what, ck);
        t->left_ckpt += there;
        if (there) t->usable += checkpoint_usable(ck, what);
    }
}

static void test_kills(int n_kills) {
    mmlt_ctx = "kills";
    char ck[1024];
    dpath(ck, sizeof ck, "ck.mml");
    const char *args[] = {SYN, "--adapter", "moe", "--epochs", "50", "--patience", "50", "--quiet", "--save", ck, NULL};
    kill_tally t = {0, 0, 0, 0, 0};
    double t0 = now_s();
    for (int i = 0; i < n_kills; i++) kill_once(i, args, ck, &t);
    printf("kills: %d SIGKILLs (%.1f s): %d of %d planned mid-write landed mid-write (%d writes ended before "
           "the stop); %d left a checkpoint, %d of those loaded and predicted; %d temporaries left by killed "
           "writers\n",
           n_kills, now_s() - t0, t.mid_landed, t.mid_planned, writes_missed, t.left_ckpt, t.usable, t.temporaries);
    CHECK(t.mid_landed == t.mid_planned && t.mid_planned >= n_kills / 2,
          "%d of %d kills planned mid-write (of %d) landed during a checkpoint write", t.mid_landed, t.mid_planned,
          n_kills);
    CHECK(t.temporaries >= t.mid_landed, "%d temporaries left by %d writers killed mid-write", t.temporaries,
          t.mid_landed);
}

/* ---- resume after a kill --------------------------------------------------- */

static void test_resume_killed(void) {
    mmlt_ctx = "resume";
    char ck[1024], log[1024], fin[1024];
    dpath(ck, sizeof ck, "ck.mml");
    dpath(log, sizeof log, "resume.log");
    dpath(fin, sizeof fin, "final.mml");
    if (access(ck, F_OK) != 0) {
        /* the last kill came in a first write: make a checkpoint first */
        const char *args[] = {SYN, "--adapter", "moe", "--epochs", "50", "--patience", "50", "--quiet", "--save", ck, NULL};
        pid_t pid = spawn(args, NULL);
        int status = 0;
        int how = wait_new_checkpoint(pid, ck, 0, &status);
        CHECK(how == W_REACHED, "no checkpoint to resume: the trainer %s (status 0x%x)", w_what[how], status);
        if (how == W_REACHED) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
        }
        remove_temporaries();
    }
    /* fewer epochs than the killed run planned: the stage it was in ends at
     * once, the remaining stages train briefly */
    const char *args[] = {SYN, "--epochs", "2", "--patience", "1", "--quiet", "--resume", ck, "--save", ck,
                          "--export", fin, NULL};
    double t0 = now_s();
    int status = wait_for(spawn(args, log), GUARD_S);
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

/* A short run, killed in its second, third or fourth checkpoint write (of
 * at least seven: backbone, three experts and gate, one per epoch) and
 * resumed, exports what the same run left alone exports, byte for byte. */
static void test_kill_resume_identical(void) {
    mmlt_ctx = "identical";
    char ck[1024], straight[1024], resumed[1024], log[1024], tmp[1024];
    dpath(ck, sizeof ck, "short.mml");
    dpath(straight, sizeof straight, "straight.mml");
    dpath(resumed, sizeof resumed, "resumed.mml");
    dpath(log, sizeof log, "short.log");
#define SHORT SYN, "--syn-domains", "3", "--adapter", "moe", "--epochs", "3", "--patience", "2", "--quiet"
    const char *a_straight[] = {SHORT, "--export", straight, NULL};
    double t0 = now_s();
    int status = wait_for(spawn(a_straight, log), GUARD_S);
    double run_s = now_s() - t0;
    CHECK(status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0, "straight run: status 0x%x", status);
    if (status < 0 || !WIFEXITED(status) || WEXITSTATUS(status)) { print_log(log); return; }

    const char *a_killed[] = {SHORT, "--save", ck, NULL};
    const char *a_resume[] = {SHORT, "--resume", ck, "--save", ck, "--export", resumed, NULL};
    int compared = 0, same = 0;
    for (int attempt = 0; attempt < 3; attempt++) {
        unlink(ck);
        pid_t pid = spawn(a_killed, NULL);
        int how = stop_mid_write(pid, "short.mml", 1 + (unsigned)attempt, tmp, sizeof tmp, &status);
        int reached = how == W_REACHED;
        CHECK(reached, "attempt %d, waiting for checkpoint write %d: the run %s (status 0x%x)", attempt,
              2 + attempt, w_what[how], status);
        if (reached) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
        }
        remove_temporaries();
        if (!reached) continue;
        CHECK(access(ck, F_OK) == 0, "attempt %d: no checkpoint after a kill in write %d", attempt, 2 + attempt);
        status = wait_for(spawn(a_resume, log), GUARD_S);
        int ok = status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
        CHECK(ok, "resume: status 0x%x", status);
        if (!ok) { print_log(log); continue; }
        compared++;
        int eq = files_equal(straight, resumed);
        CHECK(eq, "attempt %d: the resumed run exports different bytes than the straight run", attempt);
        same += eq;
    }
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
    test_kills(quick ? 8 : 40);
    test_resume_killed();
    test_kill_resume_identical();
    printf("total %.1f s\n", now_s() - t0);
    mmlt_rm_tree(dir);
    return mmlt_finish("test_kill");
}
