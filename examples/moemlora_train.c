/* moemlora-train: trains a multi-domain CTR model (base / MLoRA / MoE-MLoRA)
 * on prepared data or on the built-in synthetic data, and prints per-domain
 * AUC and log loss after each phase plus the final mean and weighted AUC.
 *
 *   moemlora-train                       # MoE-MLoRA on synthetic data
 *   moemlora-train --adapter mlora       # MLoRA
 *   moemlora-train --data DIR --model deepfm --adapter moe --results out.json
 *
 * Built with MOEMLORA_TRAIN_MPI (CMake makes moemlora-train-mpi when it finds
 * MPI), it trains data-parallel over the processes of mpirun: every process
 * loads the same data and computes its share of every batch; rank 0 prints
 * and writes the files.
 *   mpirun -np 2 moemlora-train-mpi --data DIR --adapter moe
 */
#define _XOPEN_SOURCE 700 /* realpath, mkstemp */
#define MOEMLORA_IMPLEMENTATION
#include "../moemlora.h"
#ifdef MOEMLORA_TRAIN_MPI
#include <limits.h>
#include <mpi.h>
#endif

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The model's flags, made from the library's description of its config
 * (MML_CONFIG_FIELDS): flag, setting, takes no value, help. With --resume the
 * checkpoint decides them: a flag is accepted beside it only with the
 * checkpoint's value. */
typedef struct cfg_flag { const char *flag, *key, *metavar, *help; } cfg_flag; /* metavar "": a switch */
static const cfg_flag cfg_flags[] = {
#define CFG_FLAG(type, name, def, lo, hi, flag, help) {flag, #name, CFG_METAVAR_##type, help},
#define CFG_METAVAR_MODEL "NAME"
#define CFG_METAVAR_ADAPTER "NAME"
#define CFG_METAVAR_GATE "NAME"
#define CFG_METAVAR_PREC "NAME"
#define CFG_METAVAR_I32 "N"
#define CFG_METAVAR_BOOL ""
#define CFG_METAVAR_F32 "X"
#define CFG_METAVAR_U64 "N"
#define CFG_METAVAR_HIDDEN "A,B,C"
    MML_CONFIG_FIELDS(CFG_FLAG)};

/* A setting as a reader wants it: floats (stored exactly, as C99 hex) in
 * their shortest decimal form. */
static void cfg_text(const mml_config_t *c, const char *key, char *buf, size_t n) {
    mml_config_get(c, key, buf, n);
    if (strncmp(buf, "0x", 2)) return;
    float x = strtof(buf, NULL);
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(buf, n, "%.*g", digits, (double)x);
        if (strtof(buf, NULL) == x) return;
    }
}
enum { N_CFG = sizeof cfg_flags / sizeof cfg_flags[0] };

static int cfg_index(const char *key) {
    for (int k = 0; k < N_CFG; k++)
        if (!strcmp(cfg_flags[k].key, key)) return k;
    return -1;
}

typedef struct opts {
    const char *data, *results, *save, *resume, *export_path, *paper;
    int quiet, tty, set_patience, set_batch, set_epochs;
    char cfg_given[N_CFG];   /* cfg_flags[k] was given */
    int rank, world;         /* MPI: this process, all of them (1 without MPI) */
    char warned[48];         /* the last stage warned about its validation criterion */
    mml_config_t cfg;
    mml_fit_opts_t fit;
    mml_synth_config_t syn;
} opts;

static void usage(FILE *f) {
    fprintf(f,
        "usage: moemlora-train [options]\n"
        "Trains a multi-domain CTR model and prints per-domain AUC and weighted AUC.\n\n"
        "data:\n"
        "  --data DIR              prepared dataset (moemlora-prepare output); default: synthetic\n"
        "  --syn-domains N         synthetic: domains (10)\n"
        "  --syn-users N           synthetic: users (20000)\n"
        "  --syn-items N           synthetic: items (4000)\n"
        "  --syn-samples N         synthetic: samples (400000)\n"
        "  --syn-seed N            synthetic: generator seed (2025)\n"
        "model (the default in brackets):\n");
    mml_config_t d;
    mml_config_default(&d);
    for (int k = 0; k < N_CFG; k++) {
        char def[64], flag[64];
        if (!cfg_flags[k].flag[0]) continue;
        cfg_text(&d, cfg_flags[k].key, def, sizeof def);
        snprintf(flag, sizeof flag, "%s %s", cfg_flags[k].flag, cfg_flags[k].metavar);
        fprintf(f, "  %-22s  %s [%s]\n", flag, cfg_flags[k].help, def);
    }
    fprintf(f,
        "  --paper NAME            movielens|taobao: the paper's per-model --lora-reduce (and,\n"
        "                          for Taobao PNN, --patience 5); explicit flags win\n"
        "training:\n"
        "  --batch N               batch size (1024)\n"
        "  --epochs N              max epochs per phase (50)\n"
        "  --patience N            early stopping patience (3)\n"
        "  (--threads: by default the cores, shared among the MPI processes of\n"
        "  moemlora-train-mpi, at most 2; not the idle cores, so that a command\n"
        "  gives the same results on any load: it says when --threads 1 may be\n"
        "  faster)\n"
        "output:\n"
        "  --results FILE          write the results as JSON (atomically)\n"
        "  --save CKPT             checkpoint after every epoch and at the end (atomic)\n"
        "  --resume CKPT           continue the run saved in CKPT (a --save checkpoint) on the\n"
        "                          same data (other data is refused). The model flags (the\n"
        "                          model: section) come from the checkpoint: one given\n"
        "                          beside --resume must have\n"
        "                          the checkpoint's value (--paper is refused). --batch must\n"
        "                          match the run's; --epochs and --patience may change (said\n"
        "                          on stderr); omitted, they are the run's. A finished run\n"
        "                          trains no more: \"already finished\", its test metrics and\n"
        "                          the outputs asked for, exit 0\n"
        "  --export FILE           write an inference-only model file at the end\n"
        "  --quiet                 no progress line and no per-phase tables: only the final line\n"
        "  --help                  this text\n"
        "Output paths are checked before anything is loaded: not a directory, a writable\n"
        "directory, no two of --results, --save, --export naming one file (nor --resume\n"
        "and --results or --export; --resume and --save may be the same checkpoint).\n"
        "Exit status: 0 done, 1 the run failed (data, checkpoint, I/O), 2 bad arguments\n"
        "(refused before anything trains).\n"
        "Environment: MOEMLORA_ISA=scalar|avx2|avx512|neon forces the kernel set;\n"
        "MOEMLORA_BF16=emulate|native: --precision bf16 without or only with the CPU's\n"
        "bf16 dot products.\n");
}

static int parse_int(const char *flag, const char *v, long lo, long hi, long *out) {
    char *end;
    long x = strtol(v, &end, 10);
    if (!*v || *end || x < lo || x > hi) {
        fprintf(stderr, "moemlora-train: %s expects an integer in %ld..%ld, got \"%s\"\n", flag, lo, hi, v);
        return -1;
    }
    *out = x;
    return 0;
}

/* The paper's configurations (MoE-MLoRA, arXiv 2506.07563): lora_reduce per
 * model for MovieLens and for Taobao-10; the plain MLP is not in the paper and
 * keeps 16. Patience 3, except 5 for PNN on Taobao. */
static void apply_paper(opts *o) {
    static const struct { mml_model_kind model; int movielens, taobao; } reduce[] = {
        {MML_MODEL_WDL, 16, 16},     {MML_MODEL_NFM, 4, 16},     {MML_MODEL_AUTOINT, 4, 16},
        {MML_MODEL_DEEPFM, 32, 256}, {MML_MODEL_DCN, 16, 16},    {MML_MODEL_XDEEPFM, 32, 16},
        {MML_MODEL_FIBINET, 32, 256}, {MML_MODEL_PNN, 16, 16},
    };
    int taobao = !strcmp(o->paper, "taobao");
    for (size_t i = 0; i < sizeof reduce / sizeof reduce[0]; i++)
        if (reduce[i].model == o->cfg.model && !o->cfg_given[cfg_index("lora_reduce")])
            o->cfg.lora_reduce = taobao ? reduce[i].taobao : reduce[i].movielens;
    if (taobao && o->cfg.model == MML_MODEL_PNN && !o->set_patience) o->fit.patience = 5;
}

/* A model flag: its setting from the argument (or "1" for a switch). 1 if a
 * is none, 0 done, -1 bad. */
static int parse_cfg_flag(opts *o, int argc, char **argv, int *i) {
    for (int k = 0; k < N_CFG; k++) {
        const cfg_flag *c = &cfg_flags[k];
        if (!c->flag[0] || strcmp(argv[*i], c->flag)) continue;
        int is_switch = !c->metavar[0];
        if (!is_switch && *i + 1 >= argc) {
            fprintf(stderr, "moemlora-train: %s needs a value\n", c->flag);
            return -1;
        }
        const char *v = is_switch ? "1" : argv[++*i];
        if (mml_config_set(&o->cfg, c->key, v)) {
            fprintf(stderr, "moemlora-train: %s: %s\n", c->flag, mml_last_error());
            return -1;
        }
        o->cfg_given[k] = 1;
        return 0;
    }
    return 1;
}

static int parse_args(int argc, char **argv, opts *o) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        long iv;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 1; }
        if (!strcmp(a, "--quiet")) { o->quiet = 1; continue; }
        int c = parse_cfg_flag(o, argc, argv, &i);
        if (c <= 0) {
            if (c < 0) return -1;
            continue;
        }
        if (i + 1 >= argc) { fprintf(stderr, "moemlora-train: unknown option or missing value: %s\n", a); return -1; }
        const char *v = argv[++i];
#define INT_OPT(name, lo, hi, dst) \
    if (!strcmp(a, name)) { if (parse_int(a, v, lo, hi, &iv)) return -1; dst = iv; continue; }
        if (!strcmp(a, "--data")) { o->data = v; continue; }
        if (!strcmp(a, "--results")) { o->results = v; continue; }
        if (!strcmp(a, "--save")) { o->save = v; continue; }
        if (!strcmp(a, "--resume")) { o->resume = v; continue; }
        if (!strcmp(a, "--export")) { o->export_path = v; continue; }
        if (!strcmp(a, "--paper")) {
            if (strcmp(v, "movielens") && strcmp(v, "taobao")) {
                fprintf(stderr, "moemlora-train: unknown --paper \"%s\" (movielens|taobao)\n", v);
                return -1;
            }
            o->paper = v;
            continue;
        }
        if (!strcmp(a, "--patience")) o->set_patience = 1;
        if (!strcmp(a, "--batch")) o->set_batch = 1;
        if (!strcmp(a, "--epochs")) o->set_epochs = 1;
        INT_OPT("--syn-domains", 1, MML_MAX_DOMAINS, o->syn.n_domains)
        INT_OPT("--syn-users", 1, 100000000, o->syn.n_users)
        INT_OPT("--syn-items", 2, 100000000, o->syn.n_items)
        INT_OPT("--syn-samples", 10, 2000000000, o->syn.n_samples)
        INT_OPT("--syn-seed", 0, 0x7fffffff, o->syn.seed)
        INT_OPT("--batch", 1, 1 << 20, o->fit.batch)
        INT_OPT("--epochs", 1, 100000, o->fit.max_epochs)
        INT_OPT("--patience", 1, 100000, o->fit.patience)
        fprintf(stderr, "moemlora-train: unknown option %s (see --help)\n", a);
        return -1;
    }
    o->fit.seed = o->cfg.seed;
    if (o->fit.batch > o->cfg.max_batch) o->cfg.max_batch = o->fit.batch;
    if (o->paper) apply_paper(o);
    return 0;
}

/* ---- outputs and --resume: checked before anything trains ---- */

#ifndef PATH_MAX
#define PATH_MAX 4096
#endif

/* The identity of the file at path (which need not exist): its real path, or
 * the real path of its directory plus its name. With must_write, the
 * directory must take a new file (a probe is made and removed). 0, or -1
 * after saying what is wrong. */
static int path_key(const char *flag, const char *path, int must_write, char *key, size_t key_size) {
    size_t len = strlen(path);
    struct stat sb;
    if (!len || path[len - 1] == '/' || (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))) {
        fprintf(stderr, "moemlora-train: %s %s is a directory, not a file\n", flag, path);
        return -1;
    }
    const char *slash = strrchr(path, '/');
    char dir[PATH_MAX], real[PATH_MAX];
    snprintf(dir, sizeof dir, "%.*s", slash ? (slash == path ? 1 : (int)(slash - path)) : 1, slash ? path : ".");
    if (!realpath(dir, real)) {
        fprintf(stderr, "moemlora-train: %s %s: directory %s: %s\n", flag, path, dir, strerror(errno));
        return -1;
    }
    if (must_write) {
        char probe[PATH_MAX + 32];
        snprintf(probe, sizeof probe, "%s/.moemlora-train-probe-XXXXXX", real);
        int fd = mkstemp(probe);
        if (fd < 0) {
            fprintf(stderr, "moemlora-train: %s %s: cannot write in %s: %s\n", flag, path, real, strerror(errno));
            return -1;
        }
        close(fd);
        unlink(probe);
    }
    char file[PATH_MAX];
    if (access(path, F_OK) == 0 && realpath(path, file)) { /* links to one file are one file */
        snprintf(key, key_size, "%s", file);
        return 0;
    }
    snprintf(key, key_size, "%s/%s", strcmp(real, "/") ? real : "", slash ? slash + 1 : path);
    return 0;
}

/* A run that cannot write its results fails at its end and loses them, so
 * every output path is checked first. 0, or -1 after saying why. */
static int check_outputs(const opts *o) {
    enum { RESULTS, SAVE, EXPORT, RESUME, N };
    const char *flag[N] = {"--results", "--save", "--export", "--resume"};
    const char *path[N] = {o->results, o->save, o->export_path, o->resume};
    static char key[N][2 * PATH_MAX];
    for (int i = 0; i < N; i++)
        if (path[i] && path_key(flag[i], path[i], i != RESUME, key[i], sizeof key[i])) return -1;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < i; j++) {
            if (!path[i] || !path[j] || strcmp(key[i], key[j]) || (i == RESUME && j == SAVE)) continue;
            fprintf(stderr, "moemlora-train: %s %s and %s %s name the same file\n", flag[j], path[j], flag[i], path[i]);
            return -1;
        }
    return 0;
}

/* The shortest decimal that reads back as x. */
/* Model flags beside --resume: the checkpoint's value or nothing (--paper:
 * nothing). */
static int check_model_flags(const opts *o, const mml_config_t *ck) {
    int bad = 0;
    for (int k = 0; k < N_CFG; k++) {
        if (!o->cfg_given[k]) continue;
        char given[160], saved[160];
        cfg_text(&o->cfg, cfg_flags[k].key, given, sizeof given);
        cfg_text(ck, cfg_flags[k].key, saved, sizeof saved);
        if (!strcmp(given, saved)) continue;
        fprintf(stderr, "moemlora-train: %s comes from the checkpoint %s (%s); drop it\n", cfg_flags[k].flag, o->resume,
                saved);
        bad = 1;
    }
    if (o->paper) {
        fprintf(stderr, "moemlora-train: --paper comes from the checkpoint %s (set by the model); drop it\n", o->resume);
        bad = 1;
    }
    return bad ? -1 : 0;
}

/* The run options of a resumed run: the checkpoint's unless given; --batch
 * must stay, --epochs and --patience may change (and are said to). */
static int take_run_options(opts *o, const mml_fit_opts_t *run) {
    if (run->batch == 0) return 0; /* an older checkpoint, without them: the command line's */
    if (o->set_batch && o->fit.batch != run->batch) {
        fprintf(stderr, "moemlora-train: --batch %d differs from the run in %s (batch %d): the batch cannot change on "
                "resume; drop --batch\n", o->fit.batch, o->resume, run->batch);
        return -1;
    }
    o->fit.batch = run->batch;
    o->fit.seed = run->seed;
    const char *flag[2] = {"--epochs", "--patience"};
    int32_t *mine[2] = {&o->fit.max_epochs, &o->fit.patience};
    const int32_t theirs[2] = {run->max_epochs, run->patience}, given[2] = {o->set_epochs, o->set_patience};
    for (int i = 0; i < 2; i++) {
        if (!given[i]) *mine[i] = theirs[i];
        else if (*mine[i] != theirs[i] && o->rank == 0)
            fprintf(stderr, "moemlora-train: resume: %s %d from the command line (the run in %s had %d)\n", flag[i],
                    *mine[i], o->resume, theirs[i]);
    }
    return 0;
}

/* Loads the checkpoint of --resume; the model and the run options come from
 * it. 0, or the exit code after saying why it does not resume. */
static int open_resume(opts *o, mml_model_t **out) {
    mml_model_t *m = NULL;
    if (mml_model_load(o->resume, &m)) {
        fprintf(stderr, "moemlora-train: %s\n", mml_last_error());
        return 1;
    }
    mml_fit_opts_t run;
    mml_fit_state state = mml_model_fit_state(m, &run);
    int rc = 0;
    if (state == MML_FIT_EXPORT) {
        fprintf(stderr, "moemlora-train: %s is an inference-only export, not a training checkpoint\n", o->resume);
        rc = 2;
    } else if (state == MML_FIT_NONE) {
        fprintf(stderr, "moemlora-train: %s holds no run to resume (saved outside a fit, or a finished run of an "
                "older version)\n", o->resume);
        rc = 2;
    } else if (check_model_flags(o, mml_model_config(m)) | take_run_options(o, &run)) { /* say every refusal */
        rc = 2;
    }
    if (rc) {
        mml_model_free(m);
        return rc;
    }
    o->cfg = *mml_model_config(m);
    *out = m;
    return 0;
}

/* ---- MPI ---- */

#ifdef MOEMLORA_TRAIN_MPI
/* The library's gradient and prediction sums, over MPI_COMM_WORLD. */
static mml_status mpi_sum(float *buf, int64_t n, void *user) {
    (void)user;
    for (int64_t i = 0; i < n; i += INT_MAX / 2) {
        int c = (int)(n - i < INT_MAX / 2 ? n - i : INT_MAX / 2);
        if (MPI_Allreduce(MPI_IN_PLACE, buf + i, c, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS) return MML_ERR_IO;
    }
    return MML_OK;
}
#endif

/* Ends the run with code rc; with several MPI processes a failure ends them
 * all (the others would wait in a collective forever). */
static int finish(const opts *o, int rc) {
#ifdef MOEMLORA_TRAIN_MPI
    if (rc && o->world > 1) MPI_Abort(MPI_COMM_WORLD, rc);
    MPI_Finalize();
#else
    (void)o;
#endif
    return rc;
}

/* ---- output ---- */

static const mml_data_t *g_data;

static double now_s(void) {
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void print_table(const char *title, const mml_metrics_t *t) {
    printf("\n%s\n", title);
    printf("  %-16s %9s %8s %9s\n", "domain", "n_test", "AUC", "logloss");
    for (int d = 0; d < t->n_domains; d++) {
        char name[32];
        if (g_data->domain_names && g_data->domain_names[d]) snprintf(name, sizeof name, "%s", g_data->domain_names[d]);
        else snprintf(name, sizeof name, "%d", d);
        printf("  %-16s %9lld %8.4f %9.4f\n", name, (long long)t->n[d], t->auc[d], t->logloss[d]);
    }
    printf("  mean AUC %.4f   weighted AUC %.4f   logloss %.4f\n", t->mean_auc, t->weighted_auc, t->logloss_all);
    fflush(stdout);
}

static void fmt_count(double x, char *buf, size_t n) {
    if (x >= 1e6) snprintf(buf, n, "%.2fM", x / 1e6);
    else if (x >= 1e3) snprintf(buf, n, "%.1fk", x / 1e3);
    else snprintf(buf, n, "%.0f", x);
}

/* Once per stage, on stderr: why a stage stops on the validation log loss
 * instead of the AUC. */
static void warn_criterion(opts *o, const mml_progress_t *p) {
    char stage[48];
    snprintf(stage, sizeof stage, p->expert >= 0 ? "%s %d" : "%s", p->phase_name, p->expert);
    if (strcmp(p->val_metric, "logloss") || o->rank > 0 || !strcmp(o->warned, stage)) return;
    snprintf(o->warned, sizeof o->warned, "%s", stage);
    if (o->tty) fprintf(stderr, "\r\033[K");
    const mml_split_t *v = &g_data->split[MML_VAL];
    if (p->expert < 0) {
        fprintf(stderr, "moemlora-train: warning: stage '%s': the validation labels of every domain are of one class: "
                "early stopping on validation log loss\n", stage);
        return;
    }
    int d = p->expert % g_data->n_domains;
    if (v->dom_start[d + 1] == v->dom_start[d])
        fprintf(stderr, "moemlora-train: warning: stage '%s': domain %d has no validation rows: nothing to stop on\n",
                stage, d);
    else
        fprintf(stderr, "moemlora-train: warning: stage '%s': validation labels of domain %d are all %d: early stopping "
                "on validation log loss\n", stage, d, v->label[v->dom_start[d]] > 0.5f);
}

static void on_progress(const mml_progress_t *p, void *user) {
    opts *o = (opts *)user;
    char title[96];
    if (p->event == MML_EV_EPOCH_END) warn_criterion(o, p);
    if (p->event == MML_EV_PHASE_END) {
        if (o->quiet) return;
        if (o->tty) fprintf(stderr, "\r\033[K");
        snprintf(title, sizeof title, "test metrics after phase '%s':", p->phase_name);
        print_table(title, p->test);
        return;
    }
    if (o->quiet || !o->tty) return;
    char who[32] = "";
    if (p->expert >= 0) snprintf(who, sizeof who, " %d", p->expert);
    if (p->event == MML_EV_PROGRESS) {
        char done[16], tot[16], rate[16];
        fmt_count((double)p->done, done, sizeof done);
        fmt_count((double)p->total, tot, sizeof tot);
        fmt_count(p->samples_per_s, rate, sizeof rate);
        fprintf(stderr, "\r\033[K%s%s | epoch %d | domain %d | %s/%s | %s samples/s | loss %.4f | ETA %.1fs",
                p->phase_name, who, p->epoch, p->domain, done, tot, rate, p->loss, p->eta_s);
    } else {
        fprintf(stderr, "\r\033[K%s%s | epoch %d | loss %.4f | val %s %.4f%s | %.0f samples/s\n", p->phase_name, who,
                p->epoch, p->loss, strcmp(p->val_metric, "auc") ? "logloss" : "AUC", p->val_score,
                p->improved ? " *" : "", p->samples_per_s);
    }
}

static int write_results(const opts *o, const mml_metrics_t *t, double seconds, const mml_model_t *m) {
    size_t cap = 4096 + (size_t)t->n_domains * 160, n = 0;
    char *buf = (char *)malloc(cap);
    if (!buf) return -1;
#define OUT(...) n += (size_t)snprintf(buf + n, cap - n, __VA_ARGS__)
    OUT("{\n  \"model\": \"%s\",\n  \"adapter\": \"%s\",\n", mml_model_kind_name(o->cfg.model), mml_adapter_name(o->cfg.adapter));
    OUT("  \"data\": \"%s\",\n  \"isa\": \"%s\",\n  \"params\": %lld,\n", o->data ? o->data : "synthetic",
        mml_model_isa(m), (long long)mml_model_param_count(m, 0));
    OUT("  \"seconds\": %.3f,\n  \"mean_auc\": %.6f,\n  \"weighted_auc\": %.6f,\n  \"logloss\": %.6f,\n  \"domains\": [\n",
        seconds, t->mean_auc, t->weighted_auc, t->logloss_all);
    int nd = t->n_domains;
    for (int d = 0; d < nd; d++)
        OUT("    {\"domain\": %d, \"n_test\": %lld, \"auc\": %.6f, \"logloss\": %.6f}%s\n", d, (long long)t->n[d],
            t->auc[d] == t->auc[d] ? t->auc[d] : -1.0, t->logloss[d] == t->logloss[d] ? t->logloss[d] : -1.0,
            d + 1 < nd ? "," : "");
    OUT("  ]\n}\n");
#undef OUT
    int rc = 0;
    if (n >= cap || mml_write_atomic(o->results, buf, n)) {
        fprintf(stderr, "moemlora-train: cannot write %s: %s\n", o->results, mml_last_error());
        rc = -1;
    }
    free(buf);
    return rc;
}

static void print_header(const opts *o, const mml_data_t *data, const mml_model_t *m) {
    char rank[48] = "";
    if (o->cfg.adapter != MML_ADAPTER_NONE)
        snprintf(rank, sizeof rank, o->cfg.lora_r > 0 ? " (rank %d)" : " (lora_reduce %d)",
                 o->cfg.lora_r > 0 ? o->cfg.lora_r : o->cfg.lora_reduce);
    char procs[48] = "";
    if (o->world > 1) snprintf(procs, sizeof procs, " | %d processes", o->world);
    char sizes[64];
    if (data->schema) snprintf(sizes, sizeof sizes, "%d fields", data->schema->n_fields);
    else snprintf(sizes, sizeof sizes, "%d users, %d items", data->n_users, data->n_items);
    printf("data: %s | %s, %d domains | train %lld, val %lld, test %lld\n"
           "model: %s + %s%s | %lld parameters | kernels: %s | %d thread%s%s\n",
           o->data ? o->data : "synthetic", sizes, data->n_domains,
           (long long)data->split[0].n, (long long)data->split[1].n, (long long)data->split[2].n,
           mml_model_kind_name(o->cfg.model), mml_adapter_name(o->cfg.adapter), rank,
           (long long)mml_model_param_count(m, 0), mml_model_isa(m), o->cfg.threads, o->cfg.threads > 1 ? "s" : "",
           procs);
}

/* The model trained, or the model given: a (new or resumed) run of mml_fit,
 * or, for a finished run, the test metrics of its model as it stands. */
static mml_status train(opts *o, mml_model_t *m, const mml_data_t *data, mml_metrics_t *test) {
    o->fit.progress = on_progress;
    o->fit.checkpoint_path = o->save;
    o->fit.user = o;
    mml_status st = mml_fit(m, data, &o->fit, test);
    if (st != MML_ERR_FINISHED) return st;
    printf("already finished: nothing to resume\n");
    st = mml_evaluate(m, &data->split[MML_TEST], data->n_domains, test);
    if (!st && !o->quiet) print_table("test metrics of the finished run:", test);
    return st;
}

/* Per-core busy and total time from /proc/stat (user, nice, system, idle,
 * iowait, irq, softirq, steal): busy counts the time at normal priority, as
 * niced work yields to us. The number of cores read, 0 without /proc. */
enum { MAX_CORES = 1024 };
static int read_core_times(unsigned long long *busy, unsigned long long *total) {
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return 0;
    char line[512];
    int n = 0;
    while (n < MAX_CORES && fgets(line, sizeof line, f)) {
        unsigned long long v[8] = {0};
        int id;
        if (strncmp(line, "cpu", 3) || line[3] < '0' || line[3] > '9') continue;
        if (sscanf(line, "cpu%d %llu %llu %llu %llu %llu %llu %llu %llu", &id, &v[0], &v[1], &v[2], &v[3], &v[4],
                   &v[5], &v[6], &v[7]) < 5)
            continue;
        busy[n] = v[0] + v[2] + v[5] + v[6] + v[7];
        total[n] = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
        n++;
    }
    fclose(f);
    return n;
}

/* Online cores minus those other programs keep busy (more than half of 0.1
 * s at normal priority): the threads that can run without waiting for
 * another program's time slices. At least 1. Only for a notice: a default
 * thread count that followed the load would change a command's results. */
static long idle_cores(void) {
    static unsigned long long b0[MAX_CORES], t0[MAX_CORES], b1[MAX_CORES], t1[MAX_CORES];
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int n = read_core_times(b0, t0);
    struct timespec nap = {0, 100000000};
    nanosleep(&nap, NULL);
    if (n == 0 || read_core_times(b1, t1) != n) return cores > 0 ? cores : 1;
    long busy = 0;
    for (int i = 0; i < n; i++) busy += t1[i] > t0[i] && 2 * (b1[i] - b0[i]) > t1[i] - t0[i];
    return n - busy > 1 ? n - busy : 1;
}

int main(int argc, char **argv) {
    opts o;
    memset(&o, 0, sizeof o);
    o.world = 1;
#ifdef MOEMLORA_TRAIN_MPI
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &o.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &o.world);
#endif
    mml_config_default(&o.cfg);
    mml_fit_opts_default(&o.fit);
    mml_synth_default(&o.syn);
    int pa = parse_args(argc, argv, &o); /* 1: --help, -1: bad arguments */
    if (pa) return finish(&o, pa > 0 ? 0 : 2);
    if (!o.cfg_given[cfg_index("threads")]) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN) / o.world;
        o.cfg.threads = cores >= 2 ? 2 : 1;
    }
    if (o.rank > 0) { /* rank 0 speaks and writes for all */
        o.quiet = 1;
        o.results = o.save = o.export_path = NULL;
        if (!freopen("/dev/null", "w", stdout)) return finish(&o, 1);
    }
    o.tty = isatty(2);
    if (!o.quiet && o.cfg.threads > 1 && idle_cores() < (long)o.cfg.threads * o.world)
        fprintf(stderr, "moemlora-train: other programs keep some of the cores busy: each step waits for its slowest "
                        "thread, so --threads 1 may be faster (results depend on the thread count, not on the load)\n");
    if (check_outputs(&o)) return finish(&o, 2);
    mml_model_t *m = NULL;
    int rc = o.resume ? open_resume(&o, &m) : 0;
    if (rc) return finish(&o, rc);

    mml_data_t data;
    double t0 = now_s();
    mml_status st = o.data ? mml_data_load(o.data, &data) : mml_data_synthetic(&o.syn, &data);
    if (st) {
        fprintf(stderr, "moemlora-train: %s\n", mml_last_error());
        mml_model_free(m);
        return finish(&o, 1);
    }
    g_data = &data;
    if (!m) {
        o.cfg.n_users = data.n_users;
        o.cfg.n_items = data.n_items;
        o.cfg.n_domains = data.n_domains;
        o.cfg.schema = data.schema; /* NULL: the paper's fields; --emb: the dim of fields without their own */
        if (data.pretrained_dim > 0) {
            o.cfg.pretrained = 1;
            o.cfg.emb_dim = data.pretrained_dim;
        }
        st = mml_model_create(&o.cfg, &m);
    }
#ifdef MOEMLORA_TRAIN_MPI
    if (!st && o.world > 1) st = mml_model_set_distributed(m, o.rank, o.world, mpi_sum, NULL);
#endif
    if (st) {
        fprintf(stderr, "moemlora-train: %s\n", mml_last_error());
        mml_model_free(m);
        mml_data_free(&data);
        return finish(&o, 1);
    }
    if (!o.quiet) print_header(&o, &data, m);
    mml_metrics_t test;
    st = train(&o, m, &data, &test);
    if (st) {
        fprintf(stderr, "moemlora-train: %s\n", mml_last_error());
        rc = 1;
    } else {
        double secs = now_s() - t0;
        printf("\nfinal: %s + %s  mean AUC %.4f  weighted AUC %.4f  (%.1f s)\n", mml_model_kind_name(o.cfg.model),
               mml_adapter_name(o.cfg.adapter), test.mean_auc, test.weighted_auc, secs);
        if (o.results && write_results(&o, &test, secs, m)) rc = 1;
        if (o.save && mml_model_save(m, o.save)) {
            fprintf(stderr, "moemlora-train: %s\n", mml_last_error());
            rc = 1;
        }
        if (o.export_path && mml_model_export(m, o.export_path)) {
            fprintf(stderr, "moemlora-train: %s\n", mml_last_error());
            rc = 1;
        }
    }
    mml_model_free(m);
    mml_data_free(&data);
    return finish(&o, rc);
}
