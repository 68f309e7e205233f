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

/* Flags that describe the model. With --resume the checkpoint decides them:
 * a flag is accepted beside it only with the checkpoint's value. */
static const char *const model_flags[] = {"--model", "--adapter", "--gate", "--emb", "--hidden", "--lora-reduce",
                                          "--lora-r", "--experts-per-domain", "--dropout", "--lr", "--lazy-adam",
                                          "--seed", "--threads", "--paper"};
enum { N_MODEL_FLAGS = sizeof model_flags / sizeof model_flags[0] };

typedef struct opts {
    const char *data, *results, *save, *resume, *export_path, *paper;
    int quiet, tty, set_reduce, set_patience, set_threads, set_batch, set_epochs;
    unsigned model_given;    /* bit k: model_flags[k] was given */
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
        "model:\n"
        "  --model NAME            mlp|wdl|deepfm|nfm|pnn|dcn|xdeepfm|autoint|fibinet (mlp)\n"
        "  --adapter NAME          none|mlora|moe (moe)\n"
        "  --gate NAME             domain|input: MoE gate on the domain (paper) or the tower input (domain)\n"
        "  --emb N                 embedding dim (8; pretrained data: their dim)\n"
        "  --hidden A,B,C          tower units (256,128,64)\n"
        "  --lora-reduce N         adapter rank = d_out / N (16)\n"
        "  --lora-r N              fixed adapter rank (overrides --lora-reduce)\n"
        "  --paper NAME            movielens|taobao: the paper's per-model --lora-reduce (and,\n"
        "                          for Taobao PNN, --patience 5); explicit flags win\n"
        "  --experts-per-domain N  MoE experts per domain (1)\n"
        "  --dropout P             dropout on the base layers (0.5)\n"
        "training:\n"
        "  --lr X                  Adam learning rate (0.001)\n"
        "  --lazy-adam             embedding rows move only when seen in a batch\n"
        "  --batch N               batch size (1024)\n"
        "  --epochs N              max epochs per phase (50)\n"
        "  --patience N            early stopping patience (3)\n"
        "  --seed N                model and shuffle seed (123)\n"
        "  --threads N             worker threads (default: the cores, shared among the MPI\n"
        "                          processes of moemlora-train-mpi, at most 2)\n"
        "output:\n"
        "  --results FILE          write the results as JSON (atomically)\n"
        "  --save CKPT             checkpoint after every epoch and at the end (atomic)\n"
        "  --resume CKPT           continue the run saved in CKPT (a --save checkpoint) on the\n"
        "                          same data (other data is refused). The model flags (the\n"
        "                          model: section, --lr, --lazy-adam, --seed, --threads) come\n"
        "                          from the checkpoint: one given beside --resume must have\n"
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
        "Environment: MOEMLORA_ISA=scalar|avx2|avx512|neon forces the kernel set.\n");
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

static int parse_float(const char *flag, const char *v, double lo, double hi, double *out) {
    char *end;
    double x = strtod(v, &end);
    if (!*v || *end || !(x >= lo && x <= hi)) {
        fprintf(stderr, "moemlora-train: %s expects a number in [%g, %g], got \"%s\"\n", flag, lo, hi, v);
        return -1;
    }
    *out = x;
    return 0;
}

static int parse_hidden(const char *v, mml_config_t *c) {
    int n = 0;
    const char *p = v;
    while (*p) {
        char *end;
        long x = strtol(p, &end, 10);
        if (end == p || x < 1 || x > 8192 || n >= MML_MAX_HIDDEN) {
            fprintf(stderr, "moemlora-train: --hidden expects up to %d comma-separated sizes, got \"%s\"\n",
                    MML_MAX_HIDDEN, v);
            return -1;
        }
        c->hidden[n++] = (int32_t)x;
        p = end;
        if (*p == ',') p++;
        else if (*p) { fprintf(stderr, "moemlora-train: bad --hidden \"%s\"\n", v); return -1; }
    }
    if (!n) { fprintf(stderr, "moemlora-train: empty --hidden\n"); return -1; }
    c->n_hidden = n;
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
        if (reduce[i].model == o->cfg.model && !o->set_reduce)
            o->cfg.lora_reduce = taobao ? reduce[i].taobao : reduce[i].movielens;
    if (taobao && o->cfg.model == MML_MODEL_PNN && !o->set_patience) o->fit.patience = 5;
}

static int parse_args(int argc, char **argv, opts *o) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        long iv;
        double fv;
        for (int k = 0; k < N_MODEL_FLAGS; k++)
            if (!strcmp(a, model_flags[k])) o->model_given |= 1u << k;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 1; }
        if (!strcmp(a, "--quiet")) { o->quiet = 1; continue; }
        if (!strcmp(a, "--lazy-adam")) { o->cfg.lazy_adam = 1; continue; }
        if (i + 1 >= argc) { fprintf(stderr, "moemlora-train: unknown option or missing value: %s\n", a); return -1; }
        const char *v = argv[++i];
#define INT_OPT(name, lo, hi, dst) \
    if (!strcmp(a, name)) { if (parse_int(a, v, lo, hi, &iv)) return -1; dst = iv; continue; }
#define FLT_OPT(name, lo, hi, dst) \
    if (!strcmp(a, name)) { if (parse_float(a, v, lo, hi, &fv)) return -1; dst = (float)fv; continue; }
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
        if (!strcmp(a, "--lora-reduce")) o->set_reduce = 1;
        if (!strcmp(a, "--threads")) o->set_threads = 1;
        if (!strcmp(a, "--patience")) o->set_patience = 1;
        if (!strcmp(a, "--batch")) o->set_batch = 1;
        if (!strcmp(a, "--epochs")) o->set_epochs = 1;
        if (!strcmp(a, "--model")) {
            if (mml_model_kind_from_name(v, &o->cfg.model)) { fprintf(stderr, "moemlora-train: unknown model \"%s\"\n", v); return -1; }
            continue;
        }
        if (!strcmp(a, "--adapter")) {
            if (mml_adapter_from_name(v, &o->cfg.adapter)) { fprintf(stderr, "moemlora-train: unknown adapter \"%s\" (none|mlora|moe)\n", v); return -1; }
            continue;
        }
        if (!strcmp(a, "--gate")) {
            if (!strcmp(v, "domain")) o->cfg.gate = MML_GATE_DOMAIN;
            else if (!strcmp(v, "input")) o->cfg.gate = MML_GATE_INPUT;
            else { fprintf(stderr, "moemlora-train: unknown gate \"%s\" (domain|input)\n", v); return -1; }
            continue;
        }
        if (!strcmp(a, "--hidden")) { if (parse_hidden(v, &o->cfg)) return -1; continue; }
        INT_OPT("--syn-domains", 1, MML_MAX_DOMAINS, o->syn.n_domains)
        INT_OPT("--syn-users", 1, 100000000, o->syn.n_users)
        INT_OPT("--syn-items", 2, 100000000, o->syn.n_items)
        INT_OPT("--syn-samples", 10, 2000000000, o->syn.n_samples)
        INT_OPT("--syn-seed", 0, 0x7fffffff, o->syn.seed)
        INT_OPT("--emb", 1, 1024, o->cfg.emb_dim)
        INT_OPT("--lora-reduce", 1, 4096, o->cfg.lora_reduce)
        INT_OPT("--lora-r", 1, 1024, o->cfg.lora_r)
        INT_OPT("--experts-per-domain", 1, 256, o->cfg.experts_per_domain)
        FLT_OPT("--dropout", 0.0, 0.99, o->cfg.dropout)
        FLT_OPT("--lr", 1e-9, 10.0, o->cfg.lr)
        INT_OPT("--batch", 1, 1 << 20, o->fit.batch)
        INT_OPT("--epochs", 1, 100000, o->fit.max_epochs)
        INT_OPT("--patience", 1, 100000, o->fit.patience)
        INT_OPT("--seed", 0, 0x7fffffff, o->cfg.seed)
        INT_OPT("--threads", 1, 256, o->cfg.threads)
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
static void fmt_float(float x, char *buf, size_t n) {
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(buf, n, "%.*g", digits, (double)x);
        if (strtof(buf, NULL) == x) return;
    }
}

/* The value model flag k stands for in c, as text (equal text, equal value). */
static void model_flag_value(int k, const mml_config_t *c, char *buf, size_t n) {
    switch (k) {
    case 0: snprintf(buf, n, "%s", mml_model_kind_name(c->model)); break;
    case 1: snprintf(buf, n, "%s", mml_adapter_name(c->adapter)); break;
    case 2: snprintf(buf, n, "%s", c->gate == MML_GATE_DOMAIN ? "domain" : "input"); break;
    case 3: snprintf(buf, n, "%d", c->emb_dim); break;
    case 4: {
        size_t w = 0;
        buf[0] = 0;
        for (int i = 0; i < c->n_hidden && w < n; i++) w += (size_t)snprintf(buf + w, n - w, i ? ",%d" : "%d", c->hidden[i]);
        break;
    }
    case 5: snprintf(buf, n, "%d", c->lora_reduce); break;
    case 6: snprintf(buf, n, "%d", c->lora_r); break;
    case 7: snprintf(buf, n, "%d", c->experts_per_domain); break;
    case 8: fmt_float(c->dropout, buf, n); break;
    case 9: fmt_float(c->lr, buf, n); break;
    case 10: snprintf(buf, n, "%s", c->lazy_adam ? "on" : "off"); break;
    case 11: snprintf(buf, n, "%llu", (unsigned long long)c->seed); break;
    case 12: snprintf(buf, n, "%d", c->threads); break;
    default: snprintf(buf, n, "(set by the model)"); break; /* --paper */
    }
}

/* Model flags beside --resume: the checkpoint's value or nothing. */
static int check_model_flags(const opts *o, const mml_config_t *ck) {
    int bad = 0;
    for (int k = 0; k < N_MODEL_FLAGS; k++) {
        if (!(o->model_given & (1u << k))) continue;
        char given[160], saved[160];
        model_flag_value(k, &o->cfg, given, sizeof given);
        model_flag_value(k, ck, saved, sizeof saved);
        if (strcmp(model_flags[k], "--paper") && !strcmp(given, saved)) continue;
        fprintf(stderr, "moemlora-train: %s comes from the checkpoint %s (%s); drop it\n", model_flags[k], o->resume,
                saved);
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
    printf("data: %s | %d users, %d items, %d domains | train %lld, val %lld, test %lld\n"
           "model: %s + %s%s | %lld parameters | kernels: %s | %d thread%s%s\n",
           o->data ? o->data : "synthetic", data->n_users, data->n_items, data->n_domains,
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
    if (!o.set_threads) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN) / o.world;
        o.cfg.threads = cores >= 2 ? 2 : 1;
    }
    if (o.rank > 0) { /* rank 0 speaks and writes for all */
        o.quiet = 1;
        o.results = o.save = o.export_path = NULL;
        if (!freopen("/dev/null", "w", stdout)) return finish(&o, 1);
    }
    o.tty = isatty(2);
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
