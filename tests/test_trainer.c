/* moemlora-train refuses, before it trains, what would waste or lose a run:
 *   --resume: a finished run says "already finished", prints its test metrics
 *     and leaves the weights as they are; other data (another generator seed,
 *     fewer users), another --batch, a model flag that differs from the
 *     checkpoint and an inference-only export are refused with a message
 *     naming the problem; --epochs may change and is said to; model flags
 *     with the checkpoint's values are accepted; a checkpoint of a model with
 *     a schema brings the schema, and data without it is refused naming it;
 *   outputs: --results in a missing directory, --export naming a directory,
 *     --save and --export (or --resume and --export, or two spellings of one
 *     path) naming one file: exit 2, nothing loaded, nothing written;
 *   a stage whose validation labels are of one class says so on stderr, once.
 * The trainer is BUILD/examples/moemlora-train, found from this program's own
 * path (/proc/self/exe); skipped (77) when it is not built. */
#define _POSIX_C_SOURCE 200809L
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

static char trainer[1100], dir[512];

static void dpath(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", dir, name); }

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* The trainer with args (NULL-terminated), stdout and stderr to DIR/out.txt
 * and DIR/err.txt. */
static pid_t spawn(const char *const *args) {
    const char *argv[48];
    int n = 0;
    argv[n++] = trainer;
    for (int i = 0; args[i] && n < 47; i++) argv[n++] = args[i];
    argv[n] = NULL;
    char out[1024], err[1024];
    dpath(out, sizeof out, "out.txt");
    dpath(err, sizeof err, "err.txt");
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644), fe = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fo >= 0) dup2(fo, 1);
        if (fe >= 0) dup2(fe, 2);
        execv(trainer, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* Runs the trainer to its end (at most 300 s); its exit code, or -1. */
static int run(const char *const *args) {
    pid_t pid = spawn(args);
    int status = 0;
    for (int i = 0; i < 30000; i++) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        if (r < 0) return -1;
        sleep_s(0.01);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

/* What the last run printed on stdout (err = 0) or stderr (err = 1). */
static char *output(int err) {
    char p[1024];
    dpath(p, sizeof p, err ? "err.txt" : "out.txt");
    char *t = (char *)mmlt_read_file(p, NULL);
    return t ? t : strdup("");
}

static int count(const char *text, const char *word) {
    int n = 0;
    for (const char *p = strstr(text, word); p; p = strstr(p + 1, word)) n++;
    return n;
}

/* Runs args and checks the exit code and that stderr holds each of words. */
static void expect_run(const char *what, const char *const *args, int want_rc, const char *const *words) {
    int rc = run(args);
    char *err = output(1), *out = output(0);
    int named = 1;
    for (int i = 0; words[i]; i++) named &= strstr(err, words[i]) != NULL;
    CHECK(rc == want_rc && named, "%s: exit %d (want %d), stderr lacks \"%s\"...:\n%s", what, rc, want_rc,
          words[0] ? words[0] : "", err);
    if (want_rc == 2) CHECK(!strstr(out, "data:") && !strstr(out, "final:"), "%s: it loaded or trained:\n%s", what, out);
    free(err);
    free(out);
}

static int same_bytes(const char *a, const char *b) {
    size_t na = 0, nb = 0;
    unsigned char *x = mmlt_read_file(a, &na), *y = mmlt_read_file(b, &nb);
    int same = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

#define DATA "--syn-samples", "6000", "--syn-users", "300", "--syn-items", "100", "--syn-domains", "3"
#define MODEL "--adapter", "mlora", "--hidden", "32,16", "--threads", "1"

/* A run stopped midway: the trainer killed once its first checkpoint exists
 * (written atomically, so it is whole). 0 on success. */
static int stopped_run(const char *ck) {
    unlink(ck);
    const char *a[] = {DATA, MODEL, "--batch", "256", "--epochs", "1000", "--patience", "1000", "--quiet", "--save", ck,
                       NULL};
    pid_t pid = spawn(a);
    for (int i = 0; i < 12000 && access(ck, F_OK) != 0; i++) sleep_s(0.01);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    return access(ck, R_OK);
}

static void test_resume(void) {
    char fin[1024], exp[1024], again[1024], mid[1024], mid2[1024];
    dpath(fin, sizeof fin, "finished.mml");
    dpath(exp, sizeof exp, "export.mml");
    dpath(again, sizeof again, "again.mml");
    dpath(mid, sizeof mid, "stopped.mml");
    dpath(mid2, sizeof mid2, "resumed.mml");
    mmlt_ctx = "finished run";
    const char *first[] = {DATA, MODEL, "--batch", "256", "--epochs", "2", "--patience", "2", "--quiet", "--save", fin,
                           "--export", exp, NULL};
    int rc = run(first);
    CHECK(rc == 0, "the first run: exit %d", rc);
    if (rc) return;
    const char *finished[] = {DATA, "--quiet", "--resume", fin, "--export", again, NULL};
    rc = run(finished);
    char *out = output(0);
    CHECK(rc == 0 && strstr(out, "already finished: nothing to resume") && strstr(out, "final:"),
          "exit %d, stdout:\n%s", rc, out);
    free(out);
    mml_model_t *a = NULL, *b = NULL;
    CHECK_OK(mml_model_load(fin, &a));
    CHECK_OK(mml_model_load(again, &b));
    if (a && b)
        CHECK(a->a.n_floats == b->a.n_floats && !memcmp(a->P, b->P, (size_t)a->a.n_floats * sizeof(float)),
              "resuming the finished run changed the weights");
    mml_model_free(a);
    mml_model_free(b);

    mmlt_ctx = "export";
    expect_run("--resume of an export", (const char *[]){DATA, "--resume", exp, NULL}, 2,
               (const char *[]){"is an inference-only export, not a training checkpoint", NULL});

    mmlt_ctx = "stopped run";
    CHECK(stopped_run(mid) == 0, "no checkpoint of a stopped run");
    expect_run("other generator seed", (const char *[]){DATA, "--syn-seed", "99", "--quiet", "--resume", mid, NULL}, 1,
               (const char *[]){"the checkpoint was written for other data", NULL});
    expect_run("fewer users", (const char *[]){DATA, "--syn-users", "250", "--quiet", "--resume", mid, NULL}, 1,
               (const char *[]){"the checkpoint was written for other data: sizes differ", NULL});
    expect_run("another batch", (const char *[]){DATA, "--batch", "128", "--quiet", "--resume", mid, NULL}, 2,
               (const char *[]){"--batch 128", "256", NULL});
    expect_run("another model", (const char *[]){DATA, "--model", "deepfm", "--quiet", "--resume", mid, NULL}, 2,
               (const char *[]){"--model comes from the checkpoint", "drop it", NULL});
    expect_run("another learning rate", (const char *[]){DATA, "--lr", "0.01", "--quiet", "--resume", mid, NULL}, 2,
               (const char *[]){"--lr comes from the checkpoint", NULL});
    expect_run("--paper", (const char *[]){DATA, "--paper", "movielens", "--quiet", "--resume", mid, NULL}, 2,
               (const char *[]){"--paper comes from the checkpoint", NULL});
    /* the same model flags, fewer epochs: resumed, and the change is said */
    expect_run("same model flags, --epochs 2",
               (const char *[]){DATA, MODEL, "--epochs", "2", "--quiet", "--resume", mid, "--save", mid2, NULL}, 0,
               (const char *[]){"--epochs 2 from the command line", NULL});
    mml_model_t *m = NULL;
    CHECK_OK(mml_model_load(mid2, &m));
    mml_fit_opts_t run_opts;
    if (m) CHECK(mml_model_fit_state(m, &run_opts) == MML_FIT_FINISHED && run_opts.batch == 256 &&
                 run_opts.patience == 1000 && run_opts.max_epochs == 2,
                 "the resumed run: state %d, batch %d, patience %d, epochs %d", (int)mml_model_fit_state(m, NULL),
                 run_opts.batch, run_opts.patience, run_opts.max_epochs);
    mml_model_free(m);

    /* a stopped run of a model with a schema: the model and its schema come
     * from the checkpoint (format version 2); data of the paper's layout is
     * refused naming the schema */
    mmlt_ctx = "stopped run with a schema";
    mml_schema_t sc;
    static const char *const names[3] = {"viewer", "tags", "site"};
    static const mml_field_kind kinds[3] = {MML_FIELD_CATEGORICAL, MML_FIELD_MULTI_HOT, MML_FIELD_CATEGORICAL};
    static const int vocab[3] = {50, 50, 10};
    mmlt_schema(&sc, 3, 2, names, kinds, vocab, 0.0f);
    sc.field[1].max_len = 4;
    mml_config_t c;
    mml_config_default(&c);
    c.schema = &sc;
    c.n_hidden = 1;
    c.hidden[0] = 8;
    char sch[1024];
    dpath(sch, sizeof sch, "schema_stopped.mml");
    m = make_model(&c);
    m->fit.active = 1; /* as mml_fit leaves its checkpoint after an epoch */
    CHECK_OK(mml_model_save(m, sch));
    mml_model_free(m);
    expect_run("schema model, paper-layout data", (const char *[]){DATA, "--quiet", "--resume", sch, NULL}, 1,
               (const char *[]){"does not fit the model's schema (3 fields: viewer,tags,site)", NULL});
    expect_run("schema model, a model flag", (const char *[]){DATA, "--model", "nfm", "--quiet", "--resume", sch, NULL},
               2, (const char *[]){"--model comes from the checkpoint", NULL});
    mmlt_ctx = "";
}

static void test_outputs(void) {
    mmlt_ctx = "outputs";
    char x[1024], x2[1024], sub[1024], fin[1024], copy[1024];
    dpath(x, sizeof x, "x.mml");
    dpath(x2, sizeof x2, "./x.mml");
    dpath(sub, sizeof sub, "sub");
    dpath(fin, sizeof fin, "finished.mml");
    dpath(copy, sizeof copy, "finished_copy.mml");
    mkdir(sub, 0755);
    unlink(x);
    expect_run("--results in a missing directory", (const char *[]){DATA, "--results", "/nonexistent/r.json", NULL}, 2,
               (const char *[]){"/nonexistent", NULL});
    expect_run("--export naming a directory", (const char *[]){DATA, "--export", sub, NULL}, 2,
               (const char *[]){"is a directory", NULL});
    expect_run("--save and --export the same", (const char *[]){DATA, "--save", x, "--export", x, NULL}, 2,
               (const char *[]){"name the same file", NULL});
    CHECK(access(x, F_OK) != 0, "%s was written", x);
    expect_run("--save and --results, two spellings", (const char *[]){DATA, "--save", x, "--results", x2, NULL}, 2,
               (const char *[]){"name the same file", NULL});
    /* the checkpoint --resume reads must survive the run */
    FILE *f = fopen(fin, "rb");
    int have = f != NULL;
    if (f) fclose(f);
    if (have) {
        char cmd[2200];
        snprintf(cmd, sizeof cmd, "cp '%s' '%s'", fin, copy);
        CHECK(system(cmd) == 0, "cp");
        expect_run("--resume and --export the same", (const char *[]){DATA, "--resume", fin, "--export", fin, NULL}, 2,
                   (const char *[]){"name the same file", NULL});
        CHECK(same_bytes(fin, copy), "the checkpoint given to --resume was overwritten");
    }
    mmlt_ctx = "";
}

/* Prepared data whose domain 1 has validation labels of one class. */
static void test_one_class_warning(void) {
    mmlt_ctx = "one-class warning";
    char data_dir[1024];
    dpath(data_dir, sizeof data_dir, "oneclass");
    mml_synth_config_t sc;
    mmlt_synth3(&sc, 300, 100, 6000);
    mml_data_t d;
    CHECK_OK(mml_data_synthetic(&sc, &d));
    const mml_split_t *v = &d.split[MML_VAL];
    for (int64_t i = v->dom_start[1]; i < v->dom_start[2]; i++) v->label[i] = 0.0f;
    CHECK_OK(mml_data_save_dir(&d, data_dir));
    mml_data_free(&d);
    const char *args[] = {"--data", data_dir, "--adapter", "moe", "--hidden", "32,16", "--threads", "1", "--epochs",
                          "2", "--patience", "1", "--quiet", NULL};
    int rc = run(args);
    char *err = output(1);
    const char *want = "stage 'expert 1': validation labels of domain 1 are all 0: early stopping on validation log loss";
    CHECK(rc == 0 && count(err, want) == 1, "exit %d, %d warnings \"%s\", stderr:\n%s", rc, count(err, want), want, err);
    CHECK(count(err, "warning") == 1, "other warnings:\n%s", err);
    free(err);
    mmlt_ctx = "";
}

int main(void) {
    char self[1024];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        printf("skipped: /proc/self/exe unreadable\n");
        return MMLT_SKIP;
    }
    self[n] = 0;
    char *slash = strrchr(self, '/');
    *slash = 0;
    snprintf(trainer, sizeof trainer, "%s/../examples/moemlora-train", self);
    if (access(trainer, X_OK) != 0) {
        printf("skipped: trainer not found at %s (build the examples: MOEMLORA_BUILD_EXAMPLES=ON)\n", trainer);
        return MMLT_SKIP;
    }
    const char *td = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/mml_trainer_XXXXXX", td && *td ? td : "/tmp");
    if (!mkdtemp(dir)) {
        fprintf(stderr, "test_trainer: mkdtemp %s: %s\n", dir, strerror(errno));
        return 1;
    }
    test_resume();
    test_outputs();
    test_one_class_warning();
    mmlt_rm_tree(dir);
    return mmlt_finish("test_trainer");
}
