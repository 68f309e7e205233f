/* moemlora.h - multi-domain CTR prediction with MLoRA / MoE-MLoRA adapters.
 * Version 0.7.6. License: MIT (see LICENSE).
 *
 * One click model serves several domains (scenarios, user groups, themes).
 * Each hidden layer of the DNN tower carries low-rank adapters: one per domain
 * (MLoRA), or a mixture of experts weighted by a softmax gate (MoE-MLoRA),
 * trained in three phases: backbone, each expert alone on its own domain, the
 * gate. Eight standard CTR models (WDL, DeepFM, NFM, PNN, DCN, xDeepFM,
 * AutoInt, FiBiNET) and a plain MLP take the adapters in their towers.
 * Kernels: moemlora_simd.h (scalar, AVX2, AVX-512, NEON; chosen at run time).
 *
 * USAGE (one file defines the implementation; link -lsleef -lm -lpthread)
 *
 *     #define MOEMLORA_IMPLEMENTATION
 *     #include "moemlora.h"
 *
 *     mml_data_t d;                       // or mml_data_load("prepared/", &d)
 *     mml_synth_config_t sc; mml_synth_default(&sc);
 *     if (mml_data_synthetic(&sc, &d)) die(mml_last_error());
 *     mml_config_t c; mml_config_default(&c);          // MoE-MLoRA, MLP tower
 *     c.n_users = d.n_users; c.n_items = d.n_items; c.n_domains = d.n_domains;
 *     mml_model_t *m;
 *     if (mml_model_create(&c, &m)) die(mml_last_error());
 *     mml_fit_opts_t o; mml_fit_opts_default(&o);
 *     mml_metrics_t test;
 *     if (mml_fit(m, &d, &o, &test)) die(mml_last_error());  // all phases
 *     printf("weighted AUC %.4f\n", test.weighted_auc);
 *     mml_model_save(m, "model.mml");                    // atomic
 *     mml_model_fold(m);                                 // cheap inference
 *     mml_predict(m, &(mml_batch_t){1, &uid, &pid, &dom, NULL}, &p);
 *     mml_model_free(m); mml_data_free(&d);
 *
 * ANY FEATURE SCHEMA. Besides the paper's (user, item, domain) triples, a
 * model takes any fields: set cfg.schema to an mml_schema_t (categorical,
 * multi-hot and numeric fields; one categorical field is the domain; the
 * model keeps its own copy) and hand batches field-major in the schema's
 * order; a prepared set with a schema brings its own (d.schema):
 *
 *     mml_schema_t s = {0};  s.n_fields = 3;  s.domain = 0;
 *     s.field[0] = (mml_field_t){.name = "page", .kind = MML_FIELD_CATEGORICAL, .vocab = 3};
 *     s.field[1] = (mml_field_t){.name = "tags", .kind = MML_FIELD_MULTI_HOT, .vocab = 500, .max_len = 8};
 *     s.field[2] = (mml_field_t){.name = "price", .kind = MML_FIELD_NUMERIC, .shift = 20, .scale = 0.1f};
 *     c.schema = &s;                                     // then mml_model_create
 *     const int32_t *ids[3] = {page, tags, NULL};        // tags: [n*8], lists padded with -1
 *     const float *values[3] = {NULL, NULL, price};
 *     mml_batch_t b = {.n = n, .label = y, .ids = ids, .values = values};
 *
 * mml_fit, mml_predict, sessions, folding, checkpoints (format version 2)
 * and the data files all carry the schema; mml_batch_paper builds the
 * three-field batch.
 *
 * PRECISION. cfg.precision = MML_PRECISION_BF16 (moemlora-train --precision
 * bf16) runs training steps' tower GEMMs (each layer's base and adapter
 * products, forward and backward) on bf16-rounded inputs with fp32 sums:
 * AMX tiles (tdpbf16ps) where the CPU has AMX-BF16, else vdpbf16ps where it
 * has AVX512_BF16 (not on Intel's cores, where it is the slower choice),
 * bfdot on aarch64 with BF16, else the fp32 kernels on rounded copies. Weights, gradients, Adam, embedding tables and the interaction parts
 * stay fp32; checkpoints keep the setting for a resume.
 * cfg.infer_precision = MML_PRECISION_BF16 (--infer-precision bf16,
 * moemlora-serve --infer-precision bf16, or mml_model_set_precision on a
 * loaded model) does the same for predictions' tower GEMMs; a fold then
 * packs the folded weights once as bf16 (AMX tiles where the CPU has them).
 * Probabilities move by about 1e-3 against fp32 inference (the default).
 *
 * CONFIGURATION MACROS (define before including)
 *     MOEMLORA_IMPLEMENTATION   emit the implementation in this file
 *     MOEMLORA_STATIC           make every public function static
 *     MOEMLORA_API              linkage of public functions (default extern)
 *     MOEMLORA_MALLOC(sz), MOEMLORA_FREE(p)   the allocator (both or neither)
 * Environment: MOEMLORA_ISA=scalar|avx2|avx512|neon forces the kernel set (an
 * ISA the CPU lacks is an error). MOEMLORA_BF16=emulate runs the bf16 GEMMs
 * on the fp32 kernels even where the CPU has bf16 dot products; =native makes
 * their absence an error. Each model keeps the kernels it was made with.
 *
 * ERRORS. Functions return mml_status (MML_OK = 0). mml_last_error() gives a
 * thread-local message naming the file, line and problem for data errors. The
 * library never prints, never exits and never aborts on bad input.
 *
 * THREADING. A model is used by one thread at a time (its training step may
 * itself use cfg.threads workers; fixed thread count = deterministic results).
 * For concurrent serving, give each thread an mml_session_t on one model.
 * Workers spin 50 us after a job before they sleep.
 *
 * PROCESSES. mml_model_set_distributed makes training data-parallel over
 * processes (MPI, or any transport that can sum a float buffer): every
 * process computes its share of each batch and the gradients are summed every
 * step, so the run follows the one-process schedule. examples/moemlora_train.c
 * shows it with MPI (moemlora-train-mpi).
 *
 * SPEED NOTES. When a row's expert mixture depends on its domain alone (MLoRA,
 * MoE-MLoRA with the domain gate), a training step sorts the batch by domain
 * and, in layers where it costs less (a narrow input next to E*r), folds each
 * domain's adapters into one dense matrix for the step; the loss and the
 * gradients are the same up to rounding. Dense Adam (PyTorch semantics) moves
 * every embedding and linear-logit row every step; rows are brought up to date
 * when next read, replaying the missed zero-gradient steps bit for bit. Lazy
 * Adam moves only the rows a batch holds, in both kinds of table (PyTorch's
 * SparseAdam on sparse embeddings). mml_model_fold packs
 * the folded weights once for the GEMM (the base model's too: one copy). Subnormal floats are flushed to zero
 * while the library computes (FTZ/DAZ, Arm FZ: worker threads always, the
 * caller's thread during a step, prediction or fold, restored after it): a
 * training run that met them in its GEMMs and Adam ran at half speed.
 *
 * MEMORY. Parameters, gradients, Adam state and activations (sized for
 * cfg.max_batch) are allocated once at creation, 64-byte aligned. Training
 * steps and predictions allocate nothing.
 *
 * DATA. mml_data_load reads a prepared set (docs/DATA.md); mml_data_split
 * and mml_data_save_prepared make one from samples in memory. A set may carry
 * a feature schema (mml_data_t.schema: its fields in meta.txt, every column in
 * the CSVs and the cache); mml_data_synthetic makes one of any schema, with
 * the domain-specific signal in chosen fields (mml_synth_config_t.schema,
 * .signal_fields). A set made from raw values carries their vocabulary
 * (vocab.txt; >>vocab), so a server maps raw request values to ids exactly
 * as the preparation did (mml_vocab_load, mml_vocab_map). The recipes
 * that read public raw data sets (MovieLens-1M/-100K, Tianchi Taobao theme
 * data, a Taobao-format generator) are not part of the library: they live in
 * examples/mml_recipes.h, included after the implementation by
 * moemlora-prepare, the tests and the fuzzers.
 *
 * FILES. Every write is atomic (temp file, fsync, rename, directory fsync), so
 * a crash or a full disk never loses an existing file. Checkpoints carry CRC32C
 * per section and are validated before use (docs/FORMAT.md). A model made
 * with a schema is saved as format version 2, which carries the schema (a
 * loaded model has it back); the paper's layout stays version 1, byte for
 * byte, and files of both versions load.
 *
 * DIFFERENCES FROM THE PAPER'S PUBLIC CODE (deliberate): the gate's domain
 * embedding is a trained, saved parameter; frozen groups really receive no
 * update; each phase keeps its own best validation score and checkpoint;
 * domain ids are dense; AUC is exact (rank statistic with tied ranks averaged).
 *
 * CHAPTERS (grep the banners "// >>name"), in this order in both halves;
 * the declarations have those marked *, the rest is implementation only:
 *     >>errors*      status codes, mml_last_error, mml__fail
 *     >>memory       64-byte aligned allocation
 *     >>schema*      feature schemas: fields, kinds, mml_schema_check
 *     >>io*          atomic writes, the one whole-file reader, dirname
 *     >>rng          splitmix64 seeds and shuffles
 *     >>layers       the CTR models' interaction layers, forward/backward
 *     >>data*        prepared sets: key=value and CSV readers, split, cache
 *     >>vocab*       raw values: cells, numbers, hashes; vocab.txt
 *     >>model*       the config, a model's parts, creation
 *     >>kinds        the model-kind table mml__kinds
 *     >>forward      a batch's forward and backward passes
 *     >>optimizer    Adam (dense with deferred rows, lazy), replays
 *     >>steps        mml_train_step, mml_predict
 *     >>threads      the worker pool of a step
 *     >>distributed  data-parallel processes
 *     >>sessions     concurrent serving
 *     >>folding      adapters folded into per-domain dense layers
 *     >>metrics*     AUC, log loss, mml_evaluate
 *     >>schedules*   mml_fit: phases, early stopping, resuming
 *     >>synthetic*   mml_data_synthetic
 *     >>checkpoints* the container (docs/FORMAT.md), model save and load
 *
 * VERSION HISTORY
 *     0.7.6  Replays of narrow rows (emb 8) ask ahead per row, 16 rows on into
 *            L1 and 64 into L2: dense Adam emb 8, 1 thread, +6-9% (Zen 5).
 *            The prefetch helpers keep their requests under GCC 12, which
 *            dropped calls to a function that only prefetched.
 *     0.7.5  Dense Adam's catch-up replays ask for the row 16 on into L2 and
 *            the row two on into L1, line by line across parameters and
 *            moments: MoE-MLoRA emb 128, 1 thread, 71-77k -> 82-84k
 *            samples/s (Zen 5). adam_rows sets up Adam's constants once per
 *            call, not once per row. Results unchanged, bit for bit.
 *     0.7.4  bf16 GEMMs on vdpbf16ps: A's rows (nn, nt) rounded into pairs in
 *            place and read by row-mode micro-kernels instead of turned by
 *            a transpose (bench_kernels, Zen 5: 1.04-1.28x at most of the
 *            model's shapes). gemm_run and gemm_pair_run share one k-block
 *            loop; NEON's gemm_pair_bf16 rounds each sliver of x once for both
 *            products where the CPU has bfdot. Results unchanged, bit for bit.
 *     0.7.3  Worker threads on Linux: a worker woken on the calling thread's
 *            CPU moves to another CPU of its affinity mask (the mask stays),
 *            so beside a program busy on one core the two threads no longer
 *            share the other: 2 threads against 1 there went from 0.92-0.97x
 *            to 1.13-1.28x (moemlora-bench --hog, Zen 5). Results unchanged,
 *            bit for bit.
 *     0.7.2  bf16 GEMMs on vdpbf16ps (AVX-512 without AMX): rows read along k
 *            packed into pairs by a 16 x 16 register transpose, and
 *            gemm_pair_bf16 rounds each sliver of x once for both products.
 *            Results unchanged, bit for bit.
 *     0.7.1  gemm_packed_bf16 on AVX-512 without AMX packs B once into the
 *            panels of the bf16 GEMM that runs there (vdpbf16ps pairs, or
 *            rounded fp32 panels): batch-1 bf16 predictions about 3x faster
 *            there; the fold's layout follows cfg.infer_precision. Kernel
 *            entries gemm_pair and gemm_pair_bf16 (two products on one left
 *            operand): on the AMX tiles a mixture layer's x is converted
 *            once for x W and x A_all, and once for x^T dz and x^T dT.
 *     0.7.0  bf16 inference: cfg.infer_precision (moemlora-train
 *            --infer-precision, moemlora-serve --infer-precision),
 *            mml_model_set_precision, kernel entries gemm_pack_size_bf16,
 *            gemm_pack_b_bf16 and gemm_packed_bf16 (B packed once into AMX
 *            tiles); mml_model_fold packs the base model's weights once
 *            (it was an error); about 2-3x the fp32 inference rate on a Xeon
 *            with AMX.
 *     0.6.3  bf16 GEMMs run on the AMX tiles (tdpbf16ps) where the CPU has
 *            AMX-BF16 and Linux grants them: about 2.5x the fp32 training
 *            rate at emb 128 on such a Xeon; MOEMLORA_BF16=amx forces them.
 *     0.6.2  AVX-512 replays of narrow rows stop masking lanes once every row
 *            of the block has joined; the workers' gradient-row owner is a
 *            multiply and shifts instead of two divisions per id; Adam clears
 *            the gradients it steps as it reads them (no separate pass).
 *     0.6.1  blocks of 4 MiB and more (parameters, moments, gradients) ask
 *            Linux for transparent huge pages (MADV_HUGEPAGE).
 *     0.6.0  bf16 mixed-precision training (cfg.precision: the tower's GEMMs on
 *            bf16 inputs with fp32 sums; vdpbf16ps, bfdot or the fp32 kernels
 *            on rounded copies, by CPU; MOEMLORA_BF16); vocab.txt and
 *            moemlora-serve --vocab for raw values; domain-folded training
 *            folds the base weight too when no dropout masks it; the worker
 *            pool's parts are claimed by any thread (a busy core does not
 *            hold a step up); lazy Adam steps only the linear-logit rows a
 *            batch holds, dense Adam defers the others with the embedding
 *            rows; subnormals flushed to zero while the library computes;
 *            one elementwise pass each way per tower layer (kernel entries
 *            bias_dropout_relu, dropout_relu_bwd); moemlora-bench --hog and
 *            --only, bench/profile_rows.sh.
 *     0.5.0  any feature schema (mml_schema_t: categorical, multi-hot and
 *            numeric fields, cfg.schema, field-major batches) for every model
 *            and adapter; prepared sets with a schema (meta.txt format
 *            moemlora-data-2, cache version 4); checkpoint format version 2
 *            (section SCHM) for schema models; moemlora-prepare csv with a
 *            schema file; moemlora-serve in the model's schema; the
 *            generator for any schema; one key=value reader for meta.txt and
 *            checkpoint text, the data cache on CRC32C.
 *     0.4.0  the model as parts with one job each (docs/ARCHITECTURE.md): the
 *            tensor table, a table of model kinds, passes for workers and
 *            sessions; the config described once (MML_CONFIG_FIELDS,
 *            mml_config_set/get); one GEMM driver for every ISA; mml_crc32c;
 *            the data cache checked with it too (cache version 3); the
 *            dropout/scale/vexp/vlog kernels removed (no caller); dataset
 *            recipes moved to examples/mml_recipes.h; the data cache knows its
 *            sources; prepared sets swap in whole; --resume checks its run and
 *            data; one-class validation falls back to log loss; metrics over
 *            every domain; moemlora-serve answers one request at a time.
 *     0.3.0  data-parallel training over processes (mml_model_set_distributed,
 *            moemlora-train-mpi); worker threads: embedding rows scattered by
 *            owner in batch order (the same sums as one thread), replays in
 *            chunks oldest first, gradients cleared in parallel, worker
 *            gradient arenas without the embedding tables; Adam prefetches;
 *            cheaper zero-gradient replays; moemlora-train --paper.
 *     0.2.0  domain-folded training; packed GEMM with a bias/ReLU epilogue for
 *            folded inference; deferred dense Adam for every row width with
 *            block replays (adam_steps); dropout masks kept for backward;
 *            spinning thread pool; fix: replays run without the pool covered
 *            only part of the rows when cfg.threads > 1.
 *     0.1.0  first release: kernels, nine models x three adapters, three-phase
 *            training, data preparation, checkpoints, serving, benchmarks.
 */
#ifndef MOEMLORA_H
#define MOEMLORA_H

/* The implementation uses POSIX calls (open, fsync, rename, kill,
 * clock_gettime). This define is enough when moemlora.h comes first; after
 * another header under -std=c11 it is too late, and the implementation
 * declares what glibc left out (below its #includes). */
#if defined(MOEMLORA_IMPLEMENTATION) && !defined(_POSIX_C_SOURCE) && !defined(_GNU_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include <stddef.h>
#include <stdint.h>

/* The kernel API (mml_isa, mml_kernels_t) and the MOEMLORA_API linkage macro. */
#include "moemlora_simd.h"

#ifdef __cplusplus
extern "C" {
#endif

/* // >>errors ------------------------------------------------------------- */

typedef enum mml_status {
    MML_OK = 0,
    MML_ERR_ARG = 1,      /* bad argument or configuration */
    MML_ERR_NOMEM = 2,    /* allocation failed */
    MML_ERR_IO = 3,       /* open/read/write/rename failed */
    MML_ERR_FORMAT = 4,   /* malformed input file (error names file:line) */
    MML_ERR_ISA = 5,      /* forced ISA not supported by this CPU */
    MML_ERR_STATE = 6,    /* call not valid in the current state */
    MML_ERR_FINISHED = 7  /* mml_fit: the model's fit has already run to its end */
} mml_status;

/* The reason for the last failing call on this thread ("" if none). */
MOEMLORA_API const char *mml_last_error(void);

/* // >>schema -------------------------------------------------------------- */

/* A feature schema: the input fields of every row, of three kinds.
 *   categorical  one id per row, 0..vocab-1 (any other id reads the field's
 *                out-of-vocabulary row), embedded in dim floats; optionally a
 *                pretrained table, frozen;
 *   multi-hot    up to max_len ids per row (a list, padded with -1), their
 *                embeddings pooled by mean or sum (genres, tags);
 *   numeric      a float; the model reads (x - shift) * scale, with shift and
 *                scale set from the training split (min-max, z-score or none).
 * One categorical field is the domain. Embedded fields meet in the feature
 * interactions (FM, CIN, attention, ...) and, flattened, in the tower; numeric
 * fields join the tower input and the linear (wide) part, as DeepCTR feeds
 * dense features. Interaction models need one dim for every embedded field;
 * MLP, WDL and DCN take a dim per field. */
typedef enum mml_field_kind {
    MML_FIELD_CATEGORICAL = 0,
    MML_FIELD_MULTI_HOT = 1,
    MML_FIELD_NUMERIC = 2
} mml_field_kind;

typedef enum mml_pooling { MML_POOL_MEAN = 0, MML_POOL_SUM = 1 } mml_pooling;
typedef enum mml_norm { MML_NORM_NONE = 0, MML_NORM_MINMAX = 1, MML_NORM_ZSCORE = 2 } mml_norm;

#define MML_MAX_FIELDS 128
#define MML_FIELD_NAME_MAX 48

typedef struct mml_field_t {
    char name[MML_FIELD_NAME_MAX];  /* [A-Za-z0-9_.-]+, unique in the schema */
    mml_field_kind kind;
    int32_t vocab;          /* categorical, multi-hot: ids 0..vocab-1 */
    int32_t dim;            /* embedding dim; 0: the config's emb_dim */
    int32_t max_len;        /* multi-hot: ids per row at most */
    mml_pooling pooling;    /* multi-hot */
    int32_t hash_buckets;   /* > 0: raw ids were hashed into vocab == hash_buckets buckets */
    int32_t frozen;         /* categorical: pretrained embeddings, never trained */
    mml_norm norm;          /* numeric: how shift and scale were set */
    float shift, scale;     /* numeric: the model reads (x - shift) * scale */
} mml_field_t;

typedef struct mml_schema_t {
    int32_t n_fields;
    int32_t domain;                   /* index of the categorical field holding the domain */
    mml_field_t field[MML_MAX_FIELDS];
} mml_schema_t;

/* The paper's layout: categorical user (n_users), item (n_items) and domain
 * (n_domains), in that order. */
MOEMLORA_API void mml_schema_paper(mml_schema_t *s, int32_t n_users, int32_t n_items, int32_t n_domains);
/* Checks names, kinds, sizes and the domain field; 0 or MML_ERR_ARG with a message. */
MOEMLORA_API mml_status mml_schema_check(const mml_schema_t *s);
/* Index of the field named name, or -1. */
MOEMLORA_API int32_t mml_schema_find(const mml_schema_t *s, const char *name);

/* // >>io ------------------------------------------------------------------ */

/* Every file the library writes goes through an atomic writer: a temporary file
 * in the same directory, fsync, rename over the target, fsync of the directory.
 * The write hook (tests use it to simulate a full disk) replaces write(2): it
 * gets the bytes and `file`, a pointer to the int file descriptor, and returns
 * the number of bytes written; fewer than asked is an error. */
typedef size_t (*mml_write_hook)(const void *buf, size_t size, void *file, void *user);
MOEMLORA_API void mml_set_write_hook(mml_write_hook hook, void *user);
/* Writes a whole buffer to path atomically (temp file, fsync, rename). */
MOEMLORA_API mml_status mml_write_atomic(const char *path, const void *buf, size_t n);

/* // >>data ---------------------------------------------------------------- */

enum { MML_TRAIN = 0, MML_VAL = 1, MML_TEST = 2 };

/* One split, rows grouped by domain: rows of domain d are
 * [dom_start[d], dom_start[d+1]). */
typedef struct mml_split_t {
    int64_t n;
    int32_t *uid, *pid, *dom;  /* the paper's layout; with a schema, dom is its domain column */
    float *label;          /* 0 or 1 */
    int64_t *dom_start;    /* n_domains + 1 entries */
    int32_t **ids;         /* with a schema: per field, as in mml_batch_t (NULL: the paper's layout) */
    float **values;
} mml_split_t;

typedef struct mml_vocab_t mml_vocab_t;   /* raw values -> ids (>>vocab) */

typedef struct mml_data_t {
    mml_schema_t *schema;                  /* the fields (NULL: the paper's layout) */
    int32_t n_users, n_items, n_domains;   /* vocab sizes (ids are 0..n-1) */
    char **domain_names;                   /* n_domains strings (may be NULL) */
    mml_split_t split[3];                  /* MML_TRAIN, MML_VAL, MML_TEST */
    int32_t pretrained_dim;                /* 0 = none */
    float *user_emb, *item_emb;            /* [n_users, dim], [n_items, dim] or NULL */
    mml_vocab_t *vocab;                    /* the raw values behind the ids, or NULL (written, not loaded) */
} mml_data_t;

/* Loads a prepared dataset: DIR/data.mmlc (binary cache) when it is current,
 * else the CSV layout DIR/meta.txt + DIR/domain_<k>/{train,val,test}.csv.
 * The cache records the size and mtime of each file it was built from; if
 * any differs or is gone, or the cache is of an older version, the CSVs are
 * loaded (reporting their own errors) and the cache is rewritten from them;
 * an older cache with no CSV layout beside it is refused (MML_ERR_FORMAT). */
MOEMLORA_API mml_status mml_data_load(const char *dir, mml_data_t *out);
/* Frees what d holds (with a schema: the schema and every split's columns). */
MOEMLORA_API void mml_data_free(mml_data_t *d);
/* Per-domain stratified (by label) random 60/20/20 split of raw samples. */
MOEMLORA_API mml_status mml_data_split(int64_t n, const int32_t *uid, const int32_t *pid,
                                       const int32_t *dom, const float *label,
                                       int32_t n_users, int32_t n_items, int32_t n_domains,
                                       uint64_t seed, mml_data_t *out);

/* Data chapter, public half.
 *
 * On-disk layout written by mml_data_save_dir (the MLoRA paper repo's layout
 * plus a meta file):
 *   DIR/meta.txt                        key=value lines (see docs/DATA.md)
 *   DIR/domain_<k>/{train,val,test}.csv header "uid,pid,domain,label"
 *   DIR/user_emb.bin, DIR/item_emb.bin  pretrained embeddings, when present
 *   DIR/data.mmlc                       binary cache (mml_data_save_prepared)
 * mml_data_load prefers a current DIR/data.mmlc and rebuilds a stale one.
 *
 * With d->schema, meta.txt carries the schema (format moemlora-data-2,
 * "field.<i>.<attribute>=value" lines) and the CSVs every column: a header
 * of the field names and "label"; dense ids, multi-hot lists "a|b|c", raw
 * floats. Such data has n_users = n_items = pretrained_dim = 0, and splits of
 * dom, label, dom_start and ids[f] / values[f] per field (as in mml_batch_t;
 * no uid, pid); val and test may hold the id vocab (out of vocabulary).
 * mml_data_free frees every array and the schema (all from the library's
 * allocator). Ids, list lengths and numbers (finite) are checked on load
 * (file:line) and before a write.
 *
 * All functions fill *out only on success (it is zeroed on failure) and report
 * the reason through mml_last_error(), naming file:line for malformed input. */

/* Writes the CSV layout of d as the folder dir (created if missing). The set
 * is built in a sibling folder "<dir>.tmp.<pid>.<n>" and swapped in as a
 * whole (an atomic exchange on Linux), so dir holds the whole old set or the
 * whole new one, never a mix, whatever fails or crashes midway. A dir that
 * holds anything but a prepared set is refused (MML_ERR_IO, nothing
 * changed); so is a set the free space cannot hold. */
MOEMLORA_API mml_status mml_data_save_dir(const mml_data_t *d, const char *dir);
/* The same, with the binary cache DIR/data.mmlc in the set when with_cache. */
MOEMLORA_API mml_status mml_data_save_prepared(const mml_data_t *d, const char *dir, int with_cache);
/* Loads only the CSV layout (ignores DIR/data.mmlc). Without meta.txt, reads
 * the paper repo's layout: consecutive domain_0, domain_1, ... folders, vocab
 * sizes inferred as max id + 1. */
MOEMLORA_API mml_status mml_data_load_csv(const char *dir, mml_data_t *out);
/* Binary cache: magic, version, byte-order marker, sizes, arrays, CRC32C.
 * Written alone it records no source files: mml_data_load then trusts it
 * only in a folder without a CSV layout (else the CSVs win and the cache is
 * rebuilt). mml_data_load_cache reads one without looking at its folder. */
MOEMLORA_API mml_status mml_data_save_cache(const mml_data_t *d, const char *path);
MOEMLORA_API mml_status mml_data_load_cache(const char *path, mml_data_t *out);

/* // >>vocab --------------------------------------------------------------- */

/* Serving raw values. moemlora-prepare csv re-indexes raw values (any text)
 * on the training split; the set it writes holds DIR/vocab.txt, the raw
 * values of every re-indexed field in id order and how the input was read
 * (delimiter, quotes, list separators, missing numbers; docs/DATA.md). With
 * it a raw input line maps to a batch row exactly as preparation mapped the
 * validation and test rows: a value not seen in training gets the id vocab
 * (the out-of-vocabulary row), hashed fields the same bucket, numbers the
 * same float (the model normalises them). A set made by mml_data_save_*
 * with d->vocab set holds the file; mml_data_load does not read it. */

/* Loads DIR/vocab.txt for schema (a model's: every field, kind, hash size
 * and vocabulary size must match, else MML_ERR_FORMAT naming file:line). */
MOEMLORA_API mml_status mml_vocab_load(const char *dir, const mml_schema_t *schema, mml_vocab_t **out);
MOEMLORA_API void mml_vocab_free(mml_vocab_t *v);
/* Splits the raw line[0, n) (no newline) into cells as the input was read:
 * at its delimiter, a cell in double quotes may hold it ("" is a quote);
 * quotes are removed in place. Stores the first max cells; returns how many
 * there are, or -1 when a quote is not closed. */
MOEMLORA_API int mml_vocab_cells(const mml_vocab_t *v, char *line, size_t n, const char **cell, size_t *len, int max);
/* The input's column name of field f (its header cell). */
MOEMLORA_API const char *mml_vocab_column(const mml_vocab_t *v, int32_t f);
/* One raw cell of field f: categorical -> ids[0]; multi-hot -> ids[0..max_len)
 * padded with -1; numeric -> *value. MML_ERR_FORMAT ("field price: ...")
 * for a cell preparation would refuse, and for a domain it never saw. */
MOEMLORA_API mml_status mml_vocab_map(const mml_vocab_t *v, int32_t f, const char *cell, size_t n, int32_t *ids,
                                      float *value);

/* // >>model --------------------------------------------------------------- */

typedef enum mml_adapter {
    MML_ADAPTER_NONE = 0,   /* base model: shared tower only */
    MML_ADAPTER_MLORA = 1,  /* one low-rank adapter per domain */
    MML_ADAPTER_MOE = 2     /* experts mixed by a softmax gate */
} mml_adapter;

typedef enum mml_model_kind {
    MML_MODEL_MLP = 0, MML_MODEL_WDL, MML_MODEL_DEEPFM, MML_MODEL_NFM, MML_MODEL_PNN,
    MML_MODEL_DCN, MML_MODEL_XDEEPFM, MML_MODEL_AUTOINT, MML_MODEL_FIBINET,
    MML_MODEL_COUNT
} mml_model_kind;

typedef enum mml_gate_kind {
    MML_GATE_DOMAIN = 0,    /* the paper's gate: softmax over a domain embedding */
    MML_GATE_INPUT = 1      /* input-aware gate on the tower input (extension) */
} mml_gate_kind;

typedef enum mml_precision {
    MML_PRECISION_FP32 = 0, /* every product in fp32 */
    MML_PRECISION_BF16 = 1  /* the tower layers' GEMMs take bf16-rounded inputs, sum in fp32 */
} mml_precision;

#define MML_MAX_HIDDEN 8
/* Most domains a config, a data set (synthetic or split) or a metrics record holds. */
#define MML_MAX_DOMAINS 1024

/* The config, described once: X(type, name, default, min, max, flag, help).
 *   type     MODEL, ADAPTER, GATE, PREC (enums, written by name), I32, BOOL (0/1),
 *            F32, U64, HIDDEN (the tower: n_hidden and hidden[], "256,128,64")
 *   name     the member of mml_config_t, and its key in checkpoints
 *   default  the value mml_config_default sets (HIDDEN: its text)
 *   min,max  the valid range (checked by mml_model_create and mml_config_set)
 *   flag     moemlora-train's flag ("" = none: set from the data)
 * The struct, the defaults, the checks, the checkpoint keys and the
 * trainer's flags and help are all made from this list; a new setting is
 * one line here. */
#define MML_CONFIG_FIELDS(X)                                                                                       \
    X(MODEL, model, MML_MODEL_MLP, 0, MML_MODEL_COUNT - 1, "--model",                                               \
      "mlp|wdl|deepfm|nfm|pnn|dcn|xdeepfm|autoint|fibinet: the base CTR model")                                   \
    X(ADAPTER, adapter, MML_ADAPTER_MOE, 0, 2, "--adapter", "none|mlora|moe: the multi-domain adapter")              \
    X(GATE, gate, MML_GATE_DOMAIN, 0, 1, "--gate", "domain|input: what the MoE gate sees (the paper's: domain)")    \
    X(I32, n_users, 0, 0, 1 << 30, "", "users: ids 0..n_users-1")                                                   \
    X(I32, n_items, 0, 0, 1 << 30, "", "items: ids 0..n_items-1")                                                   \
    X(I32, n_domains, 0, 0, MML_MAX_DOMAINS, "", "domains: ids 0..n_domains-1")                                     \
    X(I32, emb_dim, 8, 1, 1024, "--emb", "embedding dim (pretrained data: their dim)")                             \
    X(BOOL, pretrained, 0, 0, 1, "", "user and item embeddings are given (mml_model_set_pretrained) and frozen")   \
    X(I32, lora_reduce, 16, 0, 4096, "--lora-reduce", "adapter rank = max(d_out / lora_reduce, 1)")                 \
    X(I32, lora_r, 0, 0, 1024, "--lora-r", "> 0: a fixed adapter rank instead")                                    \
    X(I32, experts_per_domain, 1, 1, 256, "--experts-per-domain", "MoE experts per domain")                        \
    X(I32, gate_dim, 4, 1, 256, "--gate-dim", "the domain gate's embedding size")                                  \
    X(F32, dropout, 0.5f, 0.0f, 0.999f, "--dropout", "dropout on the base layers' output (training)")              \
    X(F32, lr, 1e-3f, 1e-9f, 10.0f, "--lr", "Adam's learning rate")                                                \
    X(F32, beta1, 0.9f, 0.0f, 0.999999f, "--beta1", "Adam's beta1")                                                \
    X(F32, beta2, 0.999f, 0.0f, 0.999999f, "--beta2", "Adam's beta2")                                              \
    X(F32, eps, 1e-7f, 1e-30f, 1.0f, "--eps", "Adam's epsilon")                                                    \
    X(F32, weight_decay, 0.0f, 0.0f, 1.0f, "--weight-decay", "Adam's L2 weight decay")                             \
    X(BOOL, lazy_adam, 0, 0, 1, "--lazy-adam", "embedding and linear-logit rows move only when a batch holds them")\
    X(I32, max_batch, 1024, 1, 1 << 20, "", "rows a step or a prediction chunk holds at most")                     \
    X(I32, threads, 1, 1, 256, "--threads", "worker threads of a step")                                            \
    X(U64, seed, 123, 0, 0, "--seed", "initialisation, dropout and shuffle seed")                                  \
    X(HIDDEN, hidden, "256,128,64", 1, 8192, "--hidden", "the tower's units, comma-separated")                     \
    X(PREC, precision, MML_PRECISION_FP32, 0, 1, "--precision",                                                      \
      "fp32|bf16: training steps' tower GEMMs on bf16 inputs with fp32 sums (weights, gradients, Adam: fp32)")        \
    X(PREC, infer_precision, MML_PRECISION_FP32, 0, 1, "--infer-precision",                                          \
      "fp32|bf16: predictions' tower GEMMs (folded or not) on bf16 inputs with fp32 sums")

#define MML__CFG_MEMBER(type, name, def, lo, hi, flag, help) MML__CFG_MEMBER_##type(name)
#define MML__CFG_MEMBER_MODEL(name) mml_model_kind name;
#define MML__CFG_MEMBER_ADAPTER(name) mml_adapter name;
#define MML__CFG_MEMBER_GATE(name) mml_gate_kind name;
#define MML__CFG_MEMBER_PREC(name) mml_precision name;
#define MML__CFG_MEMBER_I32(name) int32_t name;
#define MML__CFG_MEMBER_BOOL(name) int32_t name;
#define MML__CFG_MEMBER_F32(name) float name;
#define MML__CFG_MEMBER_U64(name) uint64_t name;
#define MML__CFG_MEMBER_HIDDEN(name) int32_t n_##name; int32_t name[MML_MAX_HIDDEN];


typedef struct mml_config_t {
    MML_CONFIG_FIELDS(MML__CFG_MEMBER)
    const mml_schema_t *schema; /* the input fields; NULL: the paper's layout from n_users, n_items, n_domains */
} mml_config_t;

/* The defaults of MML_CONFIG_FIELDS: MLP, MoE-MLoRA, domain gate, emb 8,
 * tower 256-128-64, lora_reduce 16, 1 expert per domain, gate_dim 4, dropout
 * 0.5, Adam 1e-3 (0.9, 0.999, 1e-7), max_batch 1024, 1 thread, seed 123.
 * Vocab sizes must be set by the caller. */
MOEMLORA_API void mml_config_default(mml_config_t *c);
/* Sets the setting named key (a name of MML_CONFIG_FIELDS) from its text,
 * checked against its type and range; MML_ERR_ARG names the key, the value
 * and what is valid. */
MOEMLORA_API mml_status mml_config_set(mml_config_t *c, const char *key, const char *value);
/* The setting named key as text (as a checkpoint stores it and
 * mml_config_set reads it); the length, or -1 for an unknown key or a short buf. */
MOEMLORA_API int mml_config_get(const mml_config_t *c, const char *key, char *buf, size_t n);
MOEMLORA_API const char *mml_model_kind_name(mml_model_kind k);
MOEMLORA_API int mml_model_kind_from_name(const char *s, mml_model_kind *out);
MOEMLORA_API const char *mml_adapter_name(mml_adapter a);
MOEMLORA_API int mml_adapter_from_name(const char *s, mml_adapter *out);
MOEMLORA_API const char *mml_gate_name(mml_gate_kind g);
MOEMLORA_API int mml_gate_from_name(const char *s, mml_gate_kind *out);
MOEMLORA_API const char *mml_precision_name(mml_precision p);
MOEMLORA_API int mml_precision_from_name(const char *s, mml_precision *out);

typedef struct mml_model_t mml_model_t;

MOEMLORA_API mml_status mml_model_create(const mml_config_t *c, mml_model_t **out);
MOEMLORA_API void mml_model_free(mml_model_t *m);
MOEMLORA_API const mml_config_t *mml_model_config(const mml_model_t *m);
/* All parameters, or only those the current phase trains. */
MOEMLORA_API int64_t mml_model_param_count(const mml_model_t *m, int trainable_only);
MOEMLORA_API const char *mml_model_isa(const mml_model_t *m);
/* Copies pretrained user/item embeddings ([n_users, dim], [n_items, dim]). */
MOEMLORA_API mml_status mml_model_set_pretrained(mml_model_t *m, const float *user_emb,
                                                 const float *item_emb, int32_t dim);

/* What the next training steps update and what the forward pass uses. */
typedef enum mml_phase {
    MML_PHASE_ALL = 0,      /* base / MLoRA: everything (MLoRA: the batch domain's adapter) */
    MML_PHASE_BACKBONE = 1, /* MoE phase 1: experts and gate unused and frozen */
    MML_PHASE_EXPERT = 2,   /* MoE phase 2: one expert alone, everything else frozen */
    MML_PHASE_GATE = 3      /* MoE phase 3 and inference: all experts mixed, gate trained */
} mml_phase;
/* Starting a phase also starts a fresh optimizer state (moments and step). */
MOEMLORA_API mml_status mml_model_set_phase(mml_model_t *m, mml_phase p, int32_t expert);
/* Which expert belongs to which domain: expert e serves domain e % n_domains. */
MOEMLORA_API int32_t mml_model_n_experts(const mml_model_t *m);

/* A batch. Any schema hands its columns field-major, in the schema's order:
 * ids[f] for categorical fields ([n]) and multi-hot fields ([n * max_len],
 * each row's list padded with -1), values[f] for numeric fields ([n], as read:
 * the model normalises), NULL for the other kind. With ids == NULL the batch
 * is in the paper's layout: uid, pid, dom. */
typedef struct mml_batch_t {
    int32_t n;
    const int32_t *uid, *pid, *dom;
    const float *label;                /* training only */
    const int32_t *const *ids;
    const float *const *values;
} mml_batch_t;

/* A batch in the paper's layout (the three-field convenience). */
MOEMLORA_API mml_batch_t mml_batch_paper(int32_t n, const int32_t *uid, const int32_t *pid, const int32_t *dom,
                                         const float *label);

/* One step of Adam on the mean BCE of the batch (n <= max_batch). */
MOEMLORA_API mml_status mml_train_step(mml_model_t *m, const mml_batch_t *b, float *loss);
/* Click probabilities. Ids outside the vocab use a reserved out-of-vocabulary
 * row (trained never, zero-initialised), so unknown users or items get a
 * defined prediction. Any n: batches above max_batch are processed in chunks. */
MOEMLORA_API mml_status mml_predict(mml_model_t *m, const mml_batch_t *b, float *prob);

/* Folds each domain's adapters (MLoRA, or MoE-MLoRA with the domain gate) into
 * per-domain dense layers, so inference costs what the base model costs; the
 * base model's fold packs its weights once. Predictions use the folded
 * weights until the next training step. */
MOEMLORA_API mml_status mml_model_fold(mml_model_t *m);

/* Sets cfg.precision (training steps) and cfg.infer_precision (predictions)
 * of a live model, say a checkpoint loaded for serving; a fold is undone
 * (fold again). Not while other threads use the model. */
MOEMLORA_API mml_status mml_model_set_precision(mml_model_t *m, mml_precision training, mml_precision inference);

/* Data-parallel training across processes (MPI or any other transport).
 * Every process holds the same model (same config and seed, same data) and
 * makes the same calls; each computes the gradients of its share of every
 * batch, and sum() adds a float buffer over all processes in place (with MPI:
 * MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_FLOAT, MPI_SUM, comm), in pieces
 * of at most INT_MAX). The sum must give every process the same bits, as
 * MPI's reductions do, so the replicas stay equal. Once set, mml_train_step,
 * mml_evaluate and mml_fit are collective (every process calls them with the
 * same arguments; a process whose batch differs gets an error); mml_fit
 * writes its checkpoint from rank 0 only. mml_predict stays local. Training
 * is the single-process schedule (same batches, dropout masks and steps) up
 * to the rounding of the sums. world 1 turns it off. */
typedef mml_status (*mml_allreduce_fn)(float *buf, int64_t n, void *user);
MOEMLORA_API mml_status mml_model_set_distributed(mml_model_t *m, int32_t rank, int32_t world,
                                                  mml_allreduce_fn sum, void *user);

/* Concurrent serving: mml_predict uses the model's own workspace (one caller
 * at a time). A session owns a workspace for one thread; any number of
 * sessions may predict concurrently on one model that is not being trained.
 * Predicting allocates nothing. */
typedef struct mml_session_t mml_session_t;
MOEMLORA_API mml_status mml_session_create(const mml_model_t *m, mml_session_t **out);
MOEMLORA_API void mml_session_free(mml_session_t *s);
MOEMLORA_API mml_status mml_session_predict(mml_session_t *s, const mml_batch_t *b, float *prob);

/* // >>metrics ------------------------------------------------------------- */

/* Exact ROC AUC (rank statistic, ties averaged). NaN if one class is absent. */
MOEMLORA_API double mml_auc(int64_t n, const float *score, const float *label);
MOEMLORA_API double mml_logloss(int64_t n, const float *prob, const float *label);

typedef struct mml_metrics_t {
    int32_t n_domains;
    int64_t n[MML_MAX_DOMAINS];  /* per domain: rows, AUC (NaN: one class), log loss (NaN: no rows) */
    double auc[MML_MAX_DOMAINS], logloss[MML_MAX_DOMAINS];
    double mean_auc;            /* mean of per-domain AUCs (domains with both classes) */
    double weighted_auc;        /* sum_d n_d AUC_d / sum_d n_d over the same domains */
    double logloss_all;
    int64_t n_all;
} mml_metrics_t;
#define MML_METRICS_MAX_DOMAINS MML_MAX_DOMAINS /* the former name */

/* Metrics of the model on a split of n_domains (1..MML_MAX_DOMAINS) domains;
 * MML_ERR_ARG for a split whose dom_start is not 0 = dom_start[0] <= ... <=
 * dom_start[n_domains] = s->n, MML_ERR_NOMEM when the AUC of a domain cannot
 * get its sort buffer (never a silently missing domain). */
MOEMLORA_API mml_status mml_evaluate(mml_model_t *m, const mml_split_t *s, int32_t n_domains,
                                     mml_metrics_t *out);

/* // >>schedules ----------------------------------------------------------- */

typedef enum mml_event {
    MML_EV_PROGRESS = 0,     /* inside an epoch */
    MML_EV_EPOCH_END = 1,    /* val metric known */
    MML_EV_PHASE_END = 2     /* test metrics of the restored best model */
} mml_event;

typedef struct mml_progress_t {
    mml_event event;
    const char *phase_name;  /* "base", "mlora", "backbone", "expert", "gate" */
    int32_t expert;          /* phase 2: expert index, else -1 */
    int32_t epoch;           /* 1-based */
    int32_t domain;          /* domain of the current batch */
    int64_t done, total;     /* samples this epoch */
    double samples_per_s;
    double eta_s;            /* this epoch */
    double loss;             /* running mean training loss this epoch */
    /* EPOCH_END: the stage's early-stopping criterion, chosen once per stage:
     * "auc", the mean validation AUC over the domains (an expert: its own
     * domain) where it is defined, when one of them has both classes; else
     * "logloss", the validation log loss of the same rows (lower is better). */
    const char *val_metric;
    double val_score;        /* EPOCH_END: the criterion's value */
    double val_auc;          /* EPOCH_END: the mean validation AUC (NaN if undefined) */
    int32_t improved;        /* EPOCH_END: best so far */
    const mml_metrics_t *test; /* PHASE_END */
} mml_progress_t;

typedef void (*mml_progress_fn)(const mml_progress_t *p, void *user);

typedef struct mml_fit_opts_t {
    int32_t batch;           /* 1024 */
    int32_t max_epochs;      /* per phase (and per expert), 50 */
    int32_t patience;        /* 3 */
    uint64_t seed;           /* epoch shuffles */
    mml_progress_fn progress;
    void *user;
    double progress_every_s; /* min seconds between MML_EV_PROGRESS calls, 0.25 */
    const char *checkpoint_path; /* if set: saved (atomically) after every epoch */
} mml_fit_opts_t;

MOEMLORA_API void mml_fit_opts_default(mml_fit_opts_t *o);

/* Runs the schedule of the model's adapter: base, MLoRA, or the three MoE
 * phases (backbone, each expert on its own domain, gate), each with early
 * stopping on its validation criterion (mml_progress_t.val_metric) and the
 * best parameters restored. *test receives the final test metrics.
 * A model loaded from a checkpoint written during a fit continues that fit
 * where it stopped (same data and options give the same weights, bit for bit,
 * as an uninterrupted run). The checkpoint holds a fingerprint of the data
 * (sizes and every row of the three splits; with a schema, every column) and
 * the run options: other data,
 * or another batch or seed, is MML_ERR_STATE naming the difference;
 * max_epochs and patience may change (the stage in progress ends by the new
 * ones). After a fit has run to its end, mml_fit on the model (or on a model
 * loaded from its final checkpoint) is MML_ERR_FINISHED "already finished".
 * Older checkpoints, written before the fingerprint, resume unchecked. */
MOEMLORA_API mml_status mml_fit(mml_model_t *m, const mml_data_t *d, const mml_fit_opts_t *o,
                                mml_metrics_t *test);

typedef enum mml_fit_state {
    MML_FIT_NONE = 0,      /* no fit recorded: a new model, or saved outside mml_fit */
    MML_FIT_STOPPED = 1,   /* a fit stopped midway (a checkpoint written by mml_fit) */
    MML_FIT_FINISHED = 2,  /* a fit ran to its end */
    MML_FIT_EXPORT = 3     /* loaded from an inference-only export: no training state */
} mml_fit_state;

/* What the model holds of mml_fit. For STOPPED and FINISHED, *opts (if not
 * NULL) receives the defaults overwritten by the fit's batch, max_epochs,
 * patience and seed (each 0 for an older checkpoint, which lacks them). */
MOEMLORA_API mml_fit_state mml_model_fit_state(const mml_model_t *m, mml_fit_opts_t *opts);

/* // >>synthetic ----------------------------------------------------------- */

typedef struct mml_synth_config_t {
    int32_t n_domains, n_users, n_items;
    int64_t n_samples;
    float ctr;               /* target mean click rate */
    float domain_signal;     /* weight of the domain-specific part (0 = domains identical) */
    float noise;             /* logit noise */
    float item_zipf;         /* item popularity exponent (0 = uniform): sparsity */
    float domain_skew;       /* domain sizes ~ (d+1)^-skew */
    uint64_t seed;
    const mml_schema_t *schema;   /* NULL: the paper's fields user, item, domain */
    const char *signal_fields;    /* with a schema: the fields whose effect depends on the
                                     domain, names separated by ','; NULL: every field */
} mml_synth_config_t;

MOEMLORA_API void mml_synth_default(mml_synth_config_t *c);
/* Deterministic multi-domain data: each user belongs to one domain; the click
 * logit is a shared user-item affinity plus a domain-specific one, so a shared
 * model learns the common part and per-domain adapters the rest.
 * With c->schema, rows of that schema instead (n_domains, n_users and
 * n_items unused: the fields' vocabularies say): the domain drawn by
 * domain_skew, ids Zipf(item_zipf) over each vocabulary, lists of 1..max_len
 * ids, numbers that the field's shift and scale map to N(0,1). The logit is
 * a shared part (a bias per id and a factorisation-machine interaction of
 * all fields) plus domain_signal times a part that only signal_fields carry,
 * different in every domain (a taste per domain and field, and that field's
 * interactions reweighted per domain). Split as mml_data_split does. */
MOEMLORA_API mml_status mml_data_synthetic(const mml_synth_config_t *c, mml_data_t *out);

/* // >>checkpoints --------------------------------------------------------- */

/* Saves everything needed to resume training (parameters, Adam moments, the
 * early-stopping snapshot, progress) atomically: a crash never loses the
 * previous file at path. Format: docs/FORMAT.md: version 1 for the paper's
 * layout, version 2 (with a section holding the schema) for a model made
 * with cfg.schema. */
MOEMLORA_API mml_status mml_model_save(const mml_model_t *m, const char *path);
/* Saves an inference-only file (config and parameters). */
MOEMLORA_API mml_status mml_model_export(const mml_model_t *m, const char *path);
/* Loads either kind, of either format version; every field is validated
 * before use (clear errors for foreign, truncated, corrupt or inconsistent
 * files). A model saved with a schema comes back with it:
 * mml_model_config(m)->schema (the model's copy; for the paper's layout, its
 * three fields user, item, domain). */
MOEMLORA_API mml_status mml_model_load(const char *path, mml_model_t **out);

#ifdef __cplusplus
}
#endif
#endif /* MOEMLORA_H */

/* ======================================================================== */
#ifdef MOEMLORA_IMPLEMENTATION
#ifndef MOEMLORA_IMPLEMENTED
#define MOEMLORA_IMPLEMENTED

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/syscall.h>
#endif

#include "moemlora_simd.h"

/* Strict ISO modes (-std=c11, -std=c17) hide the POSIX declarations unless a
 * feature macro precedes the first system header, so the _POSIX_C_SOURCE at
 * the top of this file comes too late when the including file put <stdio.h>
 * first. glibc records what it left out in its __USE_* macros: for that case
 * alone, here are the POSIX prototypes of the hidden calls used below. A C
 * library that hides them another way stops at the #error. */
#if defined(__GLIBC__)
#ifdef __cplusplus
extern "C" {
#endif
#if !defined(__USE_POSIX)
int kill(pid_t pid, int sig);
#endif
#if !defined(__USE_POSIX199309) && !defined(__USE_TIME_BITS64)
int clock_gettime(clockid_t clock_id, struct timespec *tp);
#define MML__CLOCK_MONOTONIC 1 /* glibc's CLOCK_MONOTONIC on every target */
#endif
#if !defined(__USE_XOPEN_EXTENDED) && !defined(__USE_XOPEN2K)
int lstat(const char *path, struct stat *st);
ssize_t readlink(const char *path, char *buf, size_t n);
#endif
#if !defined(__USE_MISC)
long syscall(long number, ...);
#endif
#ifdef __cplusplus
}
#endif
#endif
/* A file's modification time (struct stat spells it per system and mode). */
#if defined(__APPLE__)
#define MML__MTIME_S(st) ((int64_t)(st).st_mtimespec.tv_sec)
#define MML__MTIME_NS(st) ((int64_t)(st).st_mtimespec.tv_nsec)
#elif defined(__GLIBC__) && !defined(__USE_XOPEN2K8)
#define MML__MTIME_S(st) ((int64_t)(st).st_mtime)
#define MML__MTIME_NS(st) ((int64_t)(st).st_mtimensec)
#else
#define MML__MTIME_S(st) ((int64_t)(st).st_mtim.tv_sec)
#define MML__MTIME_NS(st) ((int64_t)(st).st_mtim.tv_nsec)
#endif
#if defined(__linux__) && !defined(AT_FDCWD)
#define AT_FDCWD -100 /* Linux's, hidden from <fcntl.h> in strict ISO modes */
#endif
#if !defined(MML__CLOCK_MONOTONIC) && defined(CLOCK_MONOTONIC)
#define MML__CLOCK_MONOTONIC CLOCK_MONOTONIC
#endif
#ifndef MML__CLOCK_MONOTONIC
#error "moemlora.h: <time.h> hides clock_gettime in this mode: define _POSIX_C_SOURCE 200809L before the first #include"
#endif


#if defined(__GNUC__)
#define MML__UNUSED __attribute__((unused))
#else
#define MML__UNUSED
#endif

#ifndef MOEMLORA_MALLOC
#define MOEMLORA_MALLOC(sz) malloc(sz)
#define MOEMLORA_FREE(p) free(p)
#endif

// >>errors -----------------------------------------------------------------

static MML__TLS char mml__errbuf[512];

const char *mml_last_error(void) { return mml__errbuf; }

/* Records the reason for a failure and returns the status, so call sites read
 * `return mml__fail(MML_ERR_FORMAT, "%s:%lld: ...", file, line);`. */
static mml_status mml__fail(mml_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static mml_status mml__fail(mml_status st, const char *fmt, ...) {
    /* formatted aside first: the arguments may quote the previous message */
    char buf[sizeof mml__errbuf];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    memcpy(mml__errbuf, buf, sizeof buf);
    return st;
}

// >>memory -----------------------------------------------------------------

/* Blocks of 4 MiB and more (parameters, moments, gradients: embedding tables
 * whose rows are read at random ids) ask Linux for transparent huge pages,
 * which most systems leave to the program ("madvise" mode): with 4 KiB pages
 * nearly every row read at a random id also misses the TLB. A hint only,
 * given before the block is first touched; its 2 MiB-aligned inside. */
static void mml__huge_pages(void *p, size_t bytes) {
#if defined(__linux__) && defined(SYS_madvise) && (defined(__x86_64__) || defined(__aarch64__))
    const uintptr_t h = (uintptr_t)2 << 20;
    uintptr_t lo = ((uintptr_t)p + h - 1) & ~(h - 1), hi = ((uintptr_t)p + bytes) & ~(h - 1);
    if (bytes >= 2 * h && hi > lo) /* 14: MADV_HUGEPAGE, by number as the syscall is */
        (void)syscall(SYS_madvise, (long)lo, (long)(hi - lo), 14L);
#else
    (void)p, (void)bytes;
#endif
}

/* 64-byte aligned, zeroed from byte zero_from on (the bytes before it are
 * left as the allocator gives them: never touched, they cost no memory where
 * large blocks come from the OS on demand); sizes checked for overflow by the
 * caller via mml__mul_ok. The original pointer sits just before the block. */
static void *mml__alloc_from(size_t bytes, size_t zero_from) {
    size_t total = bytes + 64 + sizeof(void *);
    if (total < bytes) return NULL;
    unsigned char *raw = (unsigned char *)MOEMLORA_MALLOC(total);
    if (!raw) return NULL;
    uintptr_t a = ((uintptr_t)(raw + sizeof(void *)) + 63) & ~(uintptr_t)63;
    ((void **)a)[-1] = raw;
    mml__huge_pages((void *)a, bytes);
    if (zero_from < bytes) memset((unsigned char *)a + zero_from, 0, bytes - zero_from);
    return (void *)a;
}
static void *mml__alloc(size_t bytes) { return mml__alloc_from(bytes, 0); }
static void mml__free(void *p) {
    if (p) MOEMLORA_FREE(((void **)p)[-1]);
}
/* *out = a * b, 0 on overflow past limit. */
static int mml__mul_ok(uint64_t a, uint64_t b, uint64_t limit, uint64_t *out) {
    if (a != 0 && b > limit / a) return 0;
    *out = a * b;
    return *out <= limit;
}

// >>schema -----------------------------------------------------------------

/* The names of the field kinds, poolings and normalisations in text. */
static const char *const mml__kind_names[3] = {"categorical", "multi_hot", "numeric"};
static const char *const mml__pool_names[2] = {"mean", "sum"};
static const char *const mml__norm_names[3] = {"none", "minmax", "zscore"};

void mml_schema_paper(mml_schema_t *s, int32_t n_users, int32_t n_items, int32_t n_domains) {
    static const char *const names[3] = {"user", "item", "domain"};
    const int32_t vocab[3] = {n_users, n_items, n_domains};
    memset(s, 0, sizeof *s);
    s->n_fields = 3;
    s->domain = 2;
    for (int f = 0; f < 3; f++) {
        snprintf(s->field[f].name, sizeof s->field[f].name, "%s", names[f]);
        s->field[f].kind = MML_FIELD_CATEGORICAL;
        s->field[f].vocab = vocab[f];
    }
}

int32_t mml_schema_find(const mml_schema_t *s, const char *name) {
    for (int32_t f = 0; f < s->n_fields; f++)
        if (!strcmp(s->field[f].name, name)) return f;
    return -1;
}

static int mml__name_ok(const char *s) {
    const char *end = (const char *)memchr(s, 0, MML_FIELD_NAME_MAX);
    size_t n = end ? (size_t)(end - s) : 0;
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
              c == '-'))
            return 0;
    }
    return 1;
}

mml_status mml_schema_check(const mml_schema_t *s) {
    if (!s || s->n_fields < 1 || s->n_fields > MML_MAX_FIELDS)
        return mml__fail(MML_ERR_ARG, "schema: %d fields (1..%d)", s ? s->n_fields : 0, MML_MAX_FIELDS);
    int embedded = 0;
    for (int f = 0; f < s->n_fields; f++) {
        const mml_field_t *fd = &s->field[f];
        if (!mml__name_ok(fd->name))
            return mml__fail(MML_ERR_ARG, "schema: field %d: bad name (1..%d of A-Za-z0-9_.-)", f, MML_FIELD_NAME_MAX - 1);
        for (int g = 0; g < f; g++)
            if (!strcmp(s->field[g].name, fd->name))
                return mml__fail(MML_ERR_ARG, "schema: field name \"%s\" given twice", fd->name);
        if ((unsigned)fd->kind > MML_FIELD_NUMERIC)
            return mml__fail(MML_ERR_ARG, "schema: field %s: unknown kind %d", fd->name, (int)fd->kind);
        if (fd->kind == MML_FIELD_NUMERIC) {
            if (!(fd->scale == fd->scale) || !(fd->shift == fd->shift) || fabsf(fd->scale) > 3e38f || fabsf(fd->shift) > 3e38f)
                return mml__fail(MML_ERR_ARG, "schema: field %s: shift and scale must be finite", fd->name);
            continue;
        }
        embedded++;
        if (fd->vocab < 1 || fd->vocab > (1 << 30))
            return mml__fail(MML_ERR_ARG, "schema: field %s: vocab %d outside 1..2^30", fd->name, fd->vocab);
        if (fd->dim < 0 || fd->dim > 1024)
            return mml__fail(MML_ERR_ARG, "schema: field %s: dim %d outside 0..1024", fd->name, fd->dim);
        if (fd->hash_buckets < 0 || (fd->hash_buckets > 0 && fd->hash_buckets != fd->vocab))
            return mml__fail(MML_ERR_ARG, "schema: field %s: hash_buckets %d must be 0 or the vocab (%d)", fd->name,
                             fd->hash_buckets, fd->vocab);
        if (fd->kind == MML_FIELD_MULTI_HOT) {
            if (fd->max_len < 1 || fd->max_len > 4096)
                return mml__fail(MML_ERR_ARG, "schema: field %s: max_len %d outside 1..4096", fd->name, fd->max_len);
            if ((unsigned)fd->pooling > MML_POOL_SUM)
                return mml__fail(MML_ERR_ARG, "schema: field %s: unknown pooling %d", fd->name, (int)fd->pooling);
            if (fd->frozen) return mml__fail(MML_ERR_ARG, "schema: field %s: only categorical fields can be frozen", fd->name);
        }
    }
    if (s->domain < 0 || s->domain >= s->n_fields || s->field[s->domain].kind != MML_FIELD_CATEGORICAL)
        return mml__fail(MML_ERR_ARG, "schema: the domain must be a categorical field (domain = %d)", s->domain);
    if (s->field[s->domain].frozen) return mml__fail(MML_ERR_ARG, "schema: the domain field cannot be frozen");
    if (embedded < 1) return mml__fail(MML_ERR_ARG, "schema: no embedded field");
    return MML_OK;
}

// >>io ---------------------------------------------------------------------

#define MML__PATH_MAX 1024 /* the longest path a file of the library may have */

static mml_write_hook mml__whook;
static void *mml__whook_user;

void mml_set_write_hook(mml_write_hook hook, void *user) {
    mml__whook = hook;
    mml__whook_user = user;
}

typedef struct mml__afile {
    int fd;
    int failed;
    size_t used;
    char path[MML__PATH_MAX];
    char tmp[MML__PATH_MAX + 76];
    unsigned char buf[1 << 16];
} mml__afile;

/* 1 if s is ".tmp.<pid>.<n>" (the suffix of a temporary) and that process
 * is gone. */
static int mml__tmp_of_gone(const char *s) {
    char *end;
    long pid;
    if (strncmp(s, ".tmp.", 5) != 0) return 0;
    pid = strtol(s + 5, &end, 10);
    if (end == s + 5 || pid <= 0 || (*end && *end != '.')) return 0;
    return pid != (long)getpid() && kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

/* The folder of path into dir (MML__PATH_MAX bytes): "a/b" -> "a", "b" ->
 * ".", "/b" -> "/". Returns the name after the folder ("b"), or NULL when
 * the folder's name does not fit. */
static const char *mml__dir_of(const char *path, char *dir) {
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 0;
    if (n >= MML__PATH_MAX) return NULL;
    if (!slash) strcpy(dir, ".");
    else if (n == 0) strcpy(dir, "/");
    else {
        memcpy(dir, path, n);
        dir[n] = 0;
    }
    return slash ? slash + 1 : path;
}

/* Temporary files are "<path>.tmp.<pid>.<n>". A writer killed mid-write
 * leaves one behind; the next writer of the same path removes those whose
 * process is gone. */
static void mml__remove_stale_tmps(const char *path) {
    char dir[MML__PATH_MAX];
    const char *base = mml__dir_of(path, dir);
    DIR *dh = base ? opendir(dir) : NULL;
    if (!dh) return;
    size_t bn = strlen(base);
    struct dirent *e;
    while ((e = readdir(dh)) != NULL) {
        const char *n = e->d_name;
        if (strncmp(n, base, bn) != 0 || !mml__tmp_of_gone(n + bn)) continue;
        char full[2300];
        snprintf(full, sizeof full, "%s/%s", dir, n);
        unlink(full);
    }
    closedir(dh);
}

static mml_status mml__afile_open(mml__afile *w, const char *path) {
    static unsigned mml__tmp_counter;
    w->fd = -1;
    w->failed = 0;
    w->used = 0;
    w->tmp[0] = 0;
    if (strlen(path) >= sizeof w->path) return mml__fail(MML_ERR_ARG, "%s: path too long", path);
    strcpy(w->path, path);
    mml__remove_stale_tmps(path);
    unsigned n = __atomic_fetch_add(&mml__tmp_counter, 1u, __ATOMIC_RELAXED);
    snprintf(w->tmp, sizeof w->tmp, "%s.tmp.%ld.%u", path, (long)getpid(), n);
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (w->fd < 0) {
        w->tmp[0] = 0;
        return mml__fail(MML_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    }
    return MML_OK;
}

/* Default sink: write(2) until done or an error. */
static size_t mml__write_fd(const void *buf, size_t n, void *file, void *user) {
    (void)user;
    int fd = *(int *)file;
    size_t done = 0;
    while (done < n) {
        ssize_t k = write(fd, (const char *)buf + done, n - done);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        done += (size_t)k;
    }
    return done;
}

static mml_status mml__afile_flush(mml__afile *w) {
    if (w->failed) return MML_ERR_IO;
    if (!w->used) return MML_OK;
    errno = 0;
    size_t k = mml__whook ? mml__whook(w->buf, w->used, &w->fd, mml__whook_user)
                          : mml__write_fd(w->buf, w->used, &w->fd, NULL);
    if (k != w->used) {
        w->failed = 1;
        return mml__fail(MML_ERR_IO, "%s: write failed: %s", w->path, errno ? strerror(errno) : "short write (disk full?)");
    }
    w->used = 0;
    return MML_OK;
}

static mml_status mml__afile_write(mml__afile *w, const void *buf, size_t n) {
    const unsigned char *p = (const unsigned char *)buf;
    while (n) {
        if (w->failed) return MML_ERR_IO;
        size_t room = sizeof w->buf - w->used, k = n < room ? n : room;
        memcpy(w->buf + w->used, p, k);
        w->used += k; p += k; n -= k;
        if (w->used == sizeof w->buf && mml__afile_flush(w)) return MML_ERR_IO;
    }
    return MML_OK;
}

/* Writes n bytes and folds them into *crc (mml_crc32c, chained): the
 * binary formats end their parts in the CRC of what came before. */
static mml_status mml__afile_put(mml__afile *w, uint32_t *crc, const void *p, size_t n) {
    *crc = mml_crc32c(*crc, p, n);
    return mml__afile_write(w, p, n);
}

static mml_status mml__afile_printf(mml__afile *w, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3), unused))
#endif
    ;
static mml_status mml__afile_printf(mml__afile *w, const char *fmt, ...) {
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf) {
        w->failed = 1;
        return mml__fail(MML_ERR_ARG, "%s: formatted line too long", w->path);
    }
    return mml__afile_write(w, buf, (size_t)n);
}

static void mml__afile_abort(mml__afile *w) {
    if (w->fd >= 0) close(w->fd);
    w->fd = -1;
    if (w->tmp[0]) unlink(w->tmp);
    w->tmp[0] = 0;
}

static void mml__fsync_dir_of(const char *path) {
    char dir[MML__PATH_MAX];
    int fd = mml__dir_of(path, dir) ? open(dir, O_RDONLY) : -1;
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* Flushes, syncs and renames over the target; on any failure the temporary is
 * removed and the previous file at the target path is untouched. */
static mml_status mml__afile_commit(mml__afile *w) {
    if (mml__afile_flush(w) != MML_OK) {
        mml__afile_abort(w);
        return MML_ERR_IO;
    }
    if (fsync(w->fd) != 0) {
        int err = errno;
        mml__afile_abort(w);
        return mml__fail(MML_ERR_IO, "%s: fsync failed: %s", w->path, strerror(err));
    }
    close(w->fd);
    w->fd = -1;
    if (rename(w->tmp, w->path) != 0) {
        int err = errno;
        mml__afile_abort(w);
        return mml__fail(MML_ERR_IO, "%s: rename failed: %s", w->path, strerror(err));
    }
    w->tmp[0] = 0;
    mml__fsync_dir_of(w->path);
    return MML_OK;
}

mml_status mml_write_atomic(const char *path, const void *buf, size_t n) {
    mml__afile w;
    mml_status st = mml__afile_open(&w, path);
    if (st) return st;
    if (mml__afile_write(&w, buf, n) != MML_OK) { mml__afile_abort(&w); return MML_ERR_IO; }
    return mml__afile_commit(&w);
}

/* ---- whole-file reads ---- */

typedef struct mml__buf {
    char *p;   /* n bytes + a NUL, 64-byte aligned (mml__alloc) */
    size_t n;
} mml__buf;

static void mml__buf_free(mml__buf *b) {
    mml__free(b->p);
    b->p = NULL;
    b->n = 0;
}

/* path opened for reading once it is known to be a regular file (opening a
 * FIFO would wait for a writer), its status in *st; -1 with the reason set.
 * what names the kind of file expected in messages (NULL: any file). */
static int mml__open_regular(const char *path, const char *what, struct stat *st) {
    int fd = -1;
    if (stat(path, st) != 0) mml__fail(MML_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    else if (S_ISDIR(st->st_mode)) mml__fail(MML_ERR_IO, "%s: is a directory, not a %s", path, what ? what : "file");
    else if (!S_ISREG(st->st_mode))
        mml__fail(MML_ERR_IO, "%s: is not a regular file%s%s", path, what ? ", not a " : "", what ? what : "");
    else if ((fd = open(path, O_RDONLY)) < 0) /* not fopen: fileno is hidden in strict ISO modes */
        mml__fail(MML_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    else if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) { /* replaced since the stat */
        close(fd);
        fd = -1;
        mml__fail(MML_ERR_IO, "%s: is not a regular file", path);
    }
    return fd;
}

/* The one whole-file reader (data files, checkpoints, raw data sets): one
 * buffer is the fastest way to feed the pointer-loop parsers (files of a
 * few GB fit in RAM on target boxes). *st_out (may be NULL) gets the file's
 * status as of the read; what is as for mml__open_regular. */
static mml_status mml__read_file_st(const char *path, const char *what, mml__buf *b, struct stat *st_out) {
    struct stat st;
    size_t n, got = 0;
    int fd, err = 0;
    b->p = NULL;
    b->n = 0;
    if ((fd = mml__open_regular(path, what, &st)) < 0) return MML_ERR_IO;
    if ((uint64_t)st.st_size >= SIZE_MAX / 2) {
        close(fd);
        return mml__fail(MML_ERR_NOMEM, "%s: too large to read into memory (%lld bytes)", path, (long long)st.st_size);
    }
    n = (size_t)st.st_size;
    b->p = (char *)mml__alloc_from(n + 1, n + 1); /* not zeroed: the read fills it */
    if (!b->p) {
        close(fd);
        return mml__fail(MML_ERR_NOMEM, "%s: out of memory (cannot allocate %zu bytes)", path, n + 1);
    }
    while (got < n) {
        ssize_t k = read(fd, b->p + got, n - got);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            err = k < 0 ? errno : 0;
            break;
        }
        got += (size_t)k;
    }
    close(fd);
    if (got != n) {
        mml__buf_free(b);
        return mml__fail(MML_ERR_IO, "%s: read failed after %zu of %zu bytes: %s", path, got, n,
                         err ? strerror(err) : "the file shrank (truncated meanwhile)");
    }
    b->p[n] = 0;
    b->n = n;
    if (st_out) *st_out = st;
    return MML_OK;
}
static mml_status mml__read_file(const char *path, mml__buf *b) { return mml__read_file_st(path, NULL, b, NULL); }

// >>rng --------------------------------------------------------------------

/* splitmix64's finalizer, the library's one 64-bit mixer (a bijection that
 * spreads every input bit over the output): random streams, the processes'
 * check words, the recipes' id maps. */
static uint64_t mml__mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* splitmix64: seeds and shuffles (all host-side, ISA independent). */
static uint64_t mml__rng_next(uint64_t *s) { return mml__mix64(*s += 0x9E3779B97F4A7C15ull); }
static double mml__rng_uniform(uint64_t *s) { return (double)(mml__rng_next(s) >> 11) * 0x1.0p-53; }
static uint64_t mml__rng_below(uint64_t *s, uint64_t n) { return n ? mml__rng_next(s) % n : 0; }
static float mml__rng_normal(uint64_t *s) {
    double u1 = mml__rng_uniform(s), u2 = mml__rng_uniform(s);
    if (u1 < 1e-300) u1 = 1e-300;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
static void mml__shuffle_i64(int64_t *a, int64_t n, uint64_t *s) {
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)mml__rng_below(s, (uint64_t)i + 1);
        int64_t t = a[i]; a[i] = a[j]; a[j] = t;
    }
}

// >>layers -----------------------------------------------------------------
/* Feature-interaction layers of the eight base CTR models (DeepCTR semantics).
 *
 * Included inside moemlora.h's implementation half after moemlora_simd.h; needs
 * only that header and libc. Every layer is a forward/backward pair over flat,
 * batch-major float arrays with the shapes in the comment above it:
 *   - parameters are passed as pointers (the caller owns them in one arena);
 *   - backward ACCUMULATES (+=) into every gradient it is given, parameter and
 *     input gradients alike (callers zero them), so several consumers of the same
 *     embeddings add up;
 *   - forward saves what backward needs in a caller-provided activation buffer of
 *     mml__<layer>_act_floats(...) floats, and uses scratch of
 *     mml__<layer>_ws_floats(...) floats where it needs any; backward must get
 *     the same act (and, where listed, the same forward inputs and outputs);
 *   - no allocation; matmul-heavy parts run on the kernel table K.
 * Pair order everywhere: (0,1), (0,2), ..., (0,F-1), (1,2), ..., (F-2,F-1), as
 * itertools.combinations, so P = F(F-1)/2 pairs. */


#define MML__IX(a, b) ((int64_t)(a) * (int64_t)(b))

static MML__UNUSED int mml__n_pairs(int F) { return F * (F - 1) / 2; }

/* ---- linear (wide) logit ------------------------------------------------ */

/* The wide part over F id fields and J numeric inputs.
 * ids[f]: [B, len[f]] int32 (field f's ids into its table w[f]: [vocab_f];
 * len[f] > 1: a multi-hot list, negative ids are empty slots, pooled by sum,
 * or by mean where mean[f])  num: [B, J]  wn: [J]  bias: [1] (NULL: none)
 * -> out: [B] (the [B,1] logit, overwritten). No act, no ws. */
typedef struct mml__wide {
    int F, J;
    const int32_t *const *ids;
    const int *len, *mean;
    const float *num;
} mml__wide;

/* Sum of the weights of row b's valid ids in a list of n, and their count. */
static MML__UNUSED float mml__list_sum(const int32_t *ids, int n, const float *w, int *count) {
    float s = 0.0f;
    int c = 0;
    for (int j = 0; j < n; j++)
        if (ids[j] >= 0) { s += w[ids[j]]; c++; }
    *count = c;
    return s;
}

static MML__UNUSED void mml__linear_forward(int B, const mml__wide *in, const float *const *w, const float *wn,
                                    const float *bias, float *out) {
    for (int b = 0; b < B; b++) {
        float s = bias ? bias[0] : 0.0f;
        for (int f = 0; f < in->F; f++) {
            int n = in->len[f], c;
            if (n == 1) { s += w[f][in->ids[f][b]]; continue; }
            float t = mml__list_sum(in->ids[f] + MML__IX(b, n), n, w[f], &c);
            s += in->mean[f] && c ? t / (float)c : t;
        }
        for (int j = 0; j < in->J; j++) s += in->num[MML__IX(b, in->J) + j] * wn[j];
        out[b] = s;
    }
}

/* dout: [B] -> dw[f][id] += (sparse, samples in order), dwn +=, dbias[0] +=
 * sum dout. dwn and dbias may be NULL (not trained / no bias). */
static MML__UNUSED void mml__linear_backward(int B, const mml__wide *in, const float *dout, float *const *dw, float *dwn,
                                     float *dbias) {
    float db = 0.0f;
    for (int b = 0; b < B; b++) {
        for (int f = 0; f < in->F; f++) {
            int n = in->len[f], c = 0;
            const int32_t *ids = in->ids[f] + MML__IX(b, n);
            if (n == 1) { dw[f][ids[0]] += dout[b]; continue; }
            for (int j = 0; j < n; j++) c += ids[j] >= 0;
            float g = in->mean[f] && c ? dout[b] / (float)c : dout[b];
            for (int j = 0; j < n; j++)
                if (ids[j] >= 0) dw[f][ids[j]] += g;
        }
        if (dwn)
            for (int j = 0; j < in->J; j++) dwn[j] += in->num[MML__IX(b, in->J) + j] * dout[b];
        db += dout[b];
    }
    if (dbias) dbias[0] += db;
}

/* ---- FM second order and bi-interaction pooling -------------------------- */

/* s[b, :] = sum_f emb[b, f, :] */
static MML__UNUSED void mml__field_sum(int B, int F, int k, const float *emb, float *s) {
    for (int b = 0; b < B; b++) {
        float *sb = s + MML__IX(b, k);
        const float *e = emb + MML__IX(b, F) * k;
        for (int d = 0; d < k; d++) sb[d] = 0.0f;
        for (int f = 0; f < F; f++)
            for (int d = 0; d < k; d++) sb[d] += e[MML__IX(f, k) + d];
    }
}

static MML__UNUSED size_t mml__bi_act_floats(int B, int k) { return (size_t)B * (size_t)k; }
static MML__UNUSED size_t mml__fm_act_floats(int B, int k) { return (size_t)B * (size_t)k; }

/* Bi-interaction pooling (NFM).
 * emb: [B, F, k] -> out: [B, k] with row stride ldo >= k (the tower input may
 * hold more after it), out[b,d] = 0.5*((sum_f e)^2 - sum_f e^2)
 * act: [B, k] (field sums). */
static MML__UNUSED void mml__bi_forward(int B, int F, int k, const float *emb, float *out, int ldo, float *act) {
    mml__field_sum(B, F, k, emb, act);
    for (int b = 0; b < B; b++) {
        const float *e = emb + MML__IX(b, F) * k, *s = act + MML__IX(b, k);
        float *o = out + MML__IX(b, ldo);
        for (int d = 0; d < k; d++) o[d] = s[d] * s[d];
        for (int f = 0; f < F; f++)
            for (int d = 0; d < k; d++) o[d] -= e[MML__IX(f, k) + d] * e[MML__IX(f, k) + d];
        for (int d = 0; d < k; d++) o[d] *= 0.5f;
    }
}

/* dout: [B, k] (row stride ldo) -> demb: [B, F, k] +=  (d e_fd = dout_d * (s_d - e_fd)) */
static MML__UNUSED void mml__bi_backward(int B, int F, int k, const float *emb, const float *act,
                                 const float *dout, int ldo, float *demb) {
    for (int b = 0; b < B; b++) {
        const float *s = act + MML__IX(b, k), *g = dout + MML__IX(b, ldo);
        for (int f = 0; f < F; f++) {
            const float *e = emb + (MML__IX(b, F) + f) * k;
            float *de = demb + (MML__IX(b, F) + f) * k;
            for (int d = 0; d < k; d++) de[d] += g[d] * (s[d] - e[d]);
        }
    }
}

/* FM second-order term (DeepFM).
 * emb: [B, F, k] -> out: [B] (the [B,1] term) = sum_d of bi-interaction
 * act: [B, k] (field sums). */
static MML__UNUSED void mml__fm_forward(int B, int F, int k, const float *emb, float *out, float *act) {
    mml__field_sum(B, F, k, emb, act);
    for (int b = 0; b < B; b++) {
        const float *e = emb + MML__IX(b, F) * k, *s = act + MML__IX(b, k);
        float sq = 0.0f, q = 0.0f;
        for (int d = 0; d < k; d++) sq += s[d] * s[d];
        for (int i = 0; i < F * k; i++) q += e[i] * e[i];
        out[b] = 0.5f * (sq - q);
    }
}

/* dout: [B] -> demb: [B, F, k] += */
static MML__UNUSED void mml__fm_backward(int B, int F, int k, const float *emb, const float *act,
                                 const float *dout, float *demb) {
    for (int b = 0; b < B; b++) {
        const float *s = act + MML__IX(b, k);
        for (int f = 0; f < F; f++) {
            const float *e = emb + (MML__IX(b, F) + f) * k;
            float *de = demb + (MML__IX(b, F) + f) * k;
            for (int d = 0; d < k; d++) de[d] += dout[b] * (s[d] - e[d]);
        }
    }
}

/* ---- inner product layer (PNN) ------------------------------------------- */

/* emb: [B, F, k] -> out: [B, P] with row stride ldo >= P (so the products can
 * land right after the flattened embeddings in the tower input).
 * out[b, p] = <e_i, e_j> for the p-th pair (i<j). No act, no ws. */
static MML__UNUSED void mml__inner_forward(const mml_kernels_t *K, int B, int F, int k, const float *emb,
                                   float *out, int ldo) {
    for (int b = 0; b < B; b++) {
        const float *e = emb + MML__IX(b, F) * k;
        int p = 0;
        for (int i = 0; i < F - 1; i++)
            for (int j = i + 1; j < F; j++, p++)
                out[MML__IX(b, ldo) + p] = K->dot(k, e + MML__IX(i, k), e + MML__IX(j, k));
    }
}

/* dout: [B, P] (row stride ldo) -> demb: [B, F, k] += */
static MML__UNUSED void mml__inner_backward(const mml_kernels_t *K, int B, int F, int k, const float *emb,
                                    const float *dout, int ldo, float *demb) {
    for (int b = 0; b < B; b++) {
        const float *e = emb + MML__IX(b, F) * k;
        float *de = demb + MML__IX(b, F) * k;
        int p = 0;
        for (int i = 0; i < F - 1; i++)
            for (int j = i + 1; j < F; j++, p++) {
                float g = dout[MML__IX(b, ldo) + p];
                K->axpy(k, g, e + MML__IX(j, k), de + MML__IX(i, k));
                K->axpy(k, g, e + MML__IX(i, k), de + MML__IX(j, k));
            }
    }
}

/* ---- cross network (DCN, vector parameterization) ------------------------ */

/* act: x_1 .. x_{L-1} [L-1, B, D], then s_l = x_l . w_l [L, B] */
static MML__UNUSED size_t mml__cross_act_floats(int B, int D, int L) {
    return (size_t)(L - 1) * (size_t)B * (size_t)D + (size_t)L * (size_t)B;
}
static MML__UNUSED size_t mml__cross_ws_floats(int B, int D) { return (size_t)B * (size_t)D; }

/* x0: [B, D]  w: [L, D]  bias: [L, D]  -> out: [B, D] = x_L, where
 * x_{l+1} = x_0 * (x_l . w_l) + bias_l + x_l. L >= 1. No ws. */
static MML__UNUSED void mml__cross_forward(const mml_kernels_t *K, int B, int D, int L, const float *x0,
                                   const float *w, const float *bias, float *out, float *act) {
    float *s = act + MML__IX(L - 1, B) * D;
    for (int l = 0; l < L; l++) {
        const float *xl = l == 0 ? x0 : act + MML__IX(l - 1, B) * D;
        float *xn = l == L - 1 ? out : act + MML__IX(l, B) * D;
        const float *wl = w + MML__IX(l, D), *bl = bias + MML__IX(l, D);
        for (int b = 0; b < B; b++) {
            const float *xb = xl + MML__IX(b, D), *x0b = x0 + MML__IX(b, D);
            float *xnb = xn + MML__IX(b, D);
            float sb = K->dot(D, xb, wl);
            s[MML__IX(l, B) + b] = sb;
            for (int d = 0; d < D; d++) xnb[d] = x0b[d] * sb + bl[d] + xb[d];
        }
    }
}

/* dout: [B, D] -> dx0: [B, D] +=, dw: [L, D] +=, dbias: [L, D] +=
 * ws: [B, D] (the running gradient of x_l). */
static MML__UNUSED void mml__cross_backward(const mml_kernels_t *K, int B, int D, int L, const float *x0,
                                    const float *w, const float *act, const float *dout,
                                    float *dx0, float *dw, float *dbias, float *ws) {
    const float *s = act + MML__IX(L - 1, B) * D;
    float *g = ws;
    memcpy(g, dout, sizeof(float) * (size_t)B * (size_t)D);
    for (int l = L - 1; l >= 0; l--) {
        const float *xl = l == 0 ? x0 : act + MML__IX(l - 1, B) * D;
        const float *wl = w + MML__IX(l, D);
        K->colsum_add(B, D, g, D, dbias + MML__IX(l, D));
        for (int b = 0; b < B; b++) {
            float *gb = g + MML__IX(b, D);
            float ds = K->dot(D, gb, x0 + MML__IX(b, D));
            K->axpy(D, s[MML__IX(l, B) + b], gb, dx0 + MML__IX(b, D));
            K->axpy(D, ds, xl + MML__IX(b, D), dw + MML__IX(l, D));
            K->axpy(D, ds, wl, gb); /* the residual path keeps gb itself */
        }
    }
    K->axpy(MML__IX(B, D), 1.0f, g, dx0);
}

/* ---- CIN (xDeepFM) ------------------------------------------------------- */
/* Feature maps are kept as [B*k, H] matrices (row b*k+d, one column per map) so
 * the 1x1 convolution over Z [B*k, H_prev*F] is one gemm. Z's column for
 * (field j of X^0, map i of X^{h-1}) is j*H_prev + i, as DeepCTR's reshape.
 * Parameters, one packed block: for each layer h, W_h [H_h, H_{h-1}*F] then
 * bias_h [H_h]; then w_out [fmap_sum] (Dense(1, use_bias=False)); H_{-1} = F.
 * split_half: every layer but the last passes maps [0, H_h/2) on and sends
 * [H_h/2, H_h) to the output (H_h must be even there); the last sends all.
 * Without split_half every layer passes all maps on and sends all. */

typedef struct mml__cin_layer {
    int hp;       /* maps coming in (H_{h-1}; F for h = 0) */
    int h;        /* maps produced */
    int n_next;   /* maps passed to the next layer: [0, n_next) */
    int d0;       /* maps sent to the output: [d0, h) */
    int64_t w_off, b_off, y_off, pool_off;
} mml__cin_layer;

/* Layer h's geometry: parameter offsets, its Y offset in act (after X0t) and
 * its first column in the pooled output. */
static MML__UNUSED mml__cin_layer mml__cin_geom(int B, int F, int k, int L, const int *sizes,
                                    int split_half, int h) {
    mml__cin_layer g = {F, 0, 0, 0, 0, 0, MML__IX(B, k) * F, 0};
    for (int i = 0;; i++) {
        int last = i == L - 1;
        g.h = sizes[i];
        g.n_next = last ? 0 : split_half ? sizes[i] / 2 : sizes[i];
        g.d0 = split_half && !last ? sizes[i] / 2 : 0;
        g.b_off = g.w_off + MML__IX(g.h, g.hp) * F;
        if (i == h) return g;
        g.w_off = g.b_off + g.h;
        g.y_off += MML__IX(B, k) * g.h;
        g.pool_off += g.h - g.d0;
        g.hp = g.n_next;
    }
}

/* Width of the pooled output (64 + 128 = 192 for (128,128) split half). */
static MML__UNUSED int mml__cin_fmap_sum(int L, const int *sizes, int split_half) {
    mml__cin_layer g = mml__cin_geom(1, 1, 1, L, sizes, split_half, L - 1);
    return (int)g.pool_off + g.h - g.d0;
}
/* Offset of W_h (bias_h follows it at + H_h*H_{h-1}*F) in the packed block;
 * h = L gives the offset of w_out. */
static MML__UNUSED size_t mml__cin_param_offset(int F, int L, const int *sizes, int split_half, int h) {
    if (h >= L) {
        mml__cin_layer g = mml__cin_geom(1, F, 1, L, sizes, split_half, L - 1);
        return (size_t)(g.b_off + g.h);
    }
    return (size_t)mml__cin_geom(1, F, 1, L, sizes, split_half, h).w_off;
}
static MML__UNUSED size_t mml__cin_param_floats(int F, int L, const int *sizes, int split_half) {
    return mml__cin_param_offset(F, L, sizes, split_half, L) +
           (size_t)mml__cin_fmap_sum(L, sizes, split_half);
}
/* act: X0t [B*k, F], Y_h [B*k, H_h] for each layer (after ReLU), pooled [B, fmap_sum] */
static MML__UNUSED size_t mml__cin_act_floats(int B, int F, int k, int L, const int *sizes,
                                      int split_half) {
    mml__cin_layer g = mml__cin_geom(B, F, k, L, sizes, split_half, L - 1);
    return (size_t)(g.y_off + MML__IX(B, k) * g.h) +
           (size_t)B * (size_t)mml__cin_fmap_sum(L, sizes, split_half);
}
/* ws: Z/dZ [B*k, max C], dY [B*k, max H], dH [B*k, max H], dX0t [B*k, F],
 * dpooled [B, fmap_sum] (forward uses only Z). */
static MML__UNUSED size_t mml__cin_ws_floats(int B, int F, int k, int L, const int *sizes,
                                     int split_half) {
    int64_t cmax = 0, hmax = 0;
    for (int h = 0; h < L; h++) {
        mml__cin_layer g = mml__cin_geom(B, F, k, L, sizes, split_half, h);
        if (MML__IX(g.hp, F) > cmax) cmax = MML__IX(g.hp, F);
        if (g.h > hmax) hmax = g.h;
    }
    return (size_t)(MML__IX(B, k) * (cmax + 2 * hmax + F) +
                    MML__IX(B, mml__cin_fmap_sum(L, sizes, split_half)));
}

/* Z[r, j*hp + i] = X0t[r, j] * Xp[r, i] for every row r of B*k. */
static MML__UNUSED void mml__cin_outer(int64_t rows, int F, int hp, const float *x0t, const float *xp,
                           int ldp, float *z) {
    int64_t C = MML__IX(hp, F);
    for (int64_t r = 0; r < rows; r++) {
        const float *a = x0t + r * F, *x = xp + r * ldp;
        float *zr = z + r * C;
        for (int j = 0; j < F; j++)
            for (int i = 0; i < hp; i++) zr[MML__IX(j, hp) + i] = a[j] * x[i];
    }
}

/* emb: [B, F, k]  params: packed (above) -> out: [B] (the CIN logit, [B,1])
 * act: see mml__cin_act_floats; ws: see mml__cin_ws_floats. */
static MML__UNUSED void mml__cin_forward(const mml_kernels_t *K, int B, int F, int k, int L,
                                 const int *sizes, int split_half, const float *emb,
                                 const float *params, float *out, float *act, float *ws) {
    int64_t rows = MML__IX(B, k);
    int fs = mml__cin_fmap_sum(L, sizes, split_half);
    float *x0t = act, *pooled = act + mml__cin_act_floats(B, F, k, L, sizes, split_half) -
                                MML__IX(B, fs);
    for (int b = 0; b < B; b++)
        for (int f = 0; f < F; f++)
            for (int d = 0; d < k; d++)
                x0t[(MML__IX(b, k) + d) * F + f] = emb[(MML__IX(b, F) + f) * k + d];
    memset(pooled, 0, sizeof(float) * (size_t)MML__IX(B, fs));
    const float *xp = x0t;
    int ldp = F;
    for (int h = 0; h < L; h++) {
        mml__cin_layer g = mml__cin_geom(B, F, k, L, sizes, split_half, h);
        int C = g.hp * F;
        float *y = act + g.y_off;
        mml__cin_outer(rows, F, g.hp, x0t, xp, ldp, ws);
        K->gemm_nt((int)rows, g.h, C, ws, C, params + g.w_off, C, y, g.h, 0);
        K->add_bias((int)rows, g.h, params + g.b_off, y, g.h);
        K->relu_fwd(rows * g.h, y, y);
        for (int b = 0; b < B; b++)
            K->colsum_add(k, g.h - g.d0, y + MML__IX(b, k) * g.h + g.d0, g.h,
                          pooled + MML__IX(b, fs) + g.pool_off);
        xp = y;
        ldp = g.h;
    }
    const float *w_out = params + mml__cin_param_offset(F, L, sizes, split_half, L);
    for (int b = 0; b < B; b++) out[b] = K->dot(fs, pooled + MML__IX(b, fs), w_out);
}

/* dY of layer h before the ReLU: dH (from layer h+1) on the passed-on maps plus
 * dpooled broadcast over k on the output maps, then masked by Y > 0. */
static MML__UNUSED void mml__cin_dy(const mml_kernels_t *K, int B, int k, mml__cin_layer g, int fs,
                        const float *y, const float *dh, const float *dpooled, float *dy) {
    int64_t rows = MML__IX(B, k);
    for (int64_t r = 0; r < rows; r++) {
        float *o = dy + r * g.h;
        const float *dp = dpooled + (r / k) * fs + g.pool_off; /* maps [d0, h) */
        for (int m = 0; m < g.h; m++) o[m] = m >= g.d0 ? dp[m - g.d0] : 0.0f;
        for (int m = 0; m < g.n_next; m++) o[m] += dh[r * g.n_next + m];
    }
    K->relu_bwd(rows * g.h, y, dy, dy);
}

/* dout: [B] -> demb: [B, F, k] +=, dparams (packed like params) += */
static MML__UNUSED void mml__cin_backward(const mml_kernels_t *K, int B, int F, int k, int L,
                                  const int *sizes, int split_half, const float *params,
                                  const float *act, const float *dout, float *demb,
                                  float *dparams, float *ws) {
    int64_t rows = MML__IX(B, k), cmax = 0, hmax = 0;
    int fs = mml__cin_fmap_sum(L, sizes, split_half);
    for (int h = 0; h < L; h++) {
        mml__cin_layer g = mml__cin_geom(B, F, k, L, sizes, split_half, h);
        if (MML__IX(g.hp, F) > cmax) cmax = MML__IX(g.hp, F);
        if (g.h > hmax) hmax = g.h;
    }
    float *z = ws, *dy = z + rows * cmax, *dh = dy + rows * hmax, *dx0t = dh + rows * hmax;
    float *dpooled = dx0t + rows * F;
    const float *x0t = act;
    const float *pooled = act + mml__cin_act_floats(B, F, k, L, sizes, split_half) - MML__IX(B, fs);
    size_t wo = mml__cin_param_offset(F, L, sizes, split_half, L);
    for (int b = 0; b < B; b++) {
        for (int m = 0; m < fs; m++) dpooled[MML__IX(b, fs) + m] = dout[b] * params[wo + m];
        K->axpy(fs, dout[b], pooled + MML__IX(b, fs), dparams + wo);
    }
    memset(dx0t, 0, sizeof(float) * (size_t)(rows * F));
    for (int h = L - 1; h >= 0; h--) {
        mml__cin_layer g = mml__cin_geom(B, F, k, L, sizes, split_half, h);
        int C = g.hp * F;
        const float *y = act + g.y_off;
        const float *xp =
            h == 0 ? x0t : act + mml__cin_geom(B, F, k, L, sizes, split_half, h - 1).y_off;
        int ldp = h == 0 ? F : sizes[h - 1];
        mml__cin_dy(K, B, k, g, fs, y, dh, dpooled, dy);
        K->colsum_add((int)rows, g.h, dy, g.h, dparams + g.b_off);
        mml__cin_outer(rows, F, g.hp, x0t, xp, ldp, z);
        K->gemm_tn(g.h, C, (int)rows, dy, g.h, z, C, dparams + g.w_off, C, 1);
        K->gemm_nn((int)rows, C, g.h, dy, g.h, params + g.w_off, C, z, C, 0); /* z := dZ */
        for (int64_t r = 0; r < rows; r++) {
            const float *dz = z + r * C, *a = x0t + r * F, *x = xp + r * ldp;
            float *da = dx0t + r * F, *dx = h == 0 ? dx0t + r * F : dh + r * g.hp;
            if (h > 0)
                for (int i = 0; i < g.hp; i++) dx[i] = 0.0f;
            for (int j = 0; j < F; j++) {
                const float *dzj = dz + MML__IX(j, g.hp);
                da[j] += K->dot(g.hp, dzj, x);
                for (int i = 0; i < g.hp; i++) dx[i] += dzj[i] * a[j];
            }
        }
    }
    for (int b = 0; b < B; b++)
        for (int f = 0; f < F; f++)
            for (int d = 0; d < k; d++)
                demb[(MML__IX(b, F) + f) * k + d] += dx0t[(MML__IX(b, k) + d) * F + f];
}

/* ---- interacting layer (AutoInt) ----------------------------------------- */
/* One layer of multi-head self-attention over the F fields, DeepCTR's
 * InteractingLayer with use_res=True, scaling=False: per head h (columns
 * [h*A, (h+1)*A) of Q, K, V), P = softmax_rows(Q_h K_h^T) over the keys,
 * O_h = P V_h; out = relu(concat_h O_h + x Wr). HA = H*A. */

/* act: Q, K, V [B*F, HA] each, then P [B, H, F, F] */
static MML__UNUSED size_t mml__autoint_act_floats(int B, int F, int H, int A) {
    return (size_t)(3 * MML__IX(B, F) * H * A + MML__IX(B, H) * F * F);
}
/* ws: forward: scores [B, H, F, F]; backward: dpre, dQ, dK, dV [B*F, HA], dP [F, F] */
static MML__UNUSED size_t mml__autoint_ws_floats(int B, int F, int H, int A) {
    int64_t fwd = MML__IX(B, H) * F * F, bwd = 4 * MML__IX(B, F) * H * A + F * F;
    return (size_t)(fwd > bwd ? fwd : bwd);
}

/* x: [B, F, d_in]  Wq, Wk, Wv, Wr: [d_in, H*A] -> out: [B, F, H*A]
 * (backward needs x and out unchanged). */
static MML__UNUSED void mml__autoint_forward(const mml_kernels_t *K, int B, int F, int d_in, int H,
                                     int A, const float *x, const float *Wq, const float *Wk,
                                     const float *Wv, const float *Wr, float *out, float *act,
                                     float *ws) {
    int HA = H * A, BF = B * F;
    float *q = act, *kk = q + MML__IX(BF, HA), *v = kk + MML__IX(BF, HA);
    float *p = v + MML__IX(BF, HA);
    K->gemm_nn(BF, HA, d_in, x, d_in, Wq, HA, q, HA, 0);
    K->gemm_nn(BF, HA, d_in, x, d_in, Wk, HA, kk, HA, 0);
    K->gemm_nn(BF, HA, d_in, x, d_in, Wv, HA, v, HA, 0);
    K->gemm_nn(BF, HA, d_in, x, d_in, Wr, HA, out, HA, 0);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            int64_t o = MML__IX(b, F) * HA + MML__IX(h, A);
            K->gemm_nt(F, F, A, q + o, HA, kk + o, HA, ws + (MML__IX(b, H) + h) * F * F, F, 0);
        }
    K->softmax_rows(B * H * F, F, ws, F, p, F);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            int64_t o = MML__IX(b, F) * HA + MML__IX(h, A);
            K->gemm_nn(F, A, F, p + (MML__IX(b, H) + h) * F * F, F, v + o, HA, out + o, HA, 1);
        }
    K->relu_fwd(MML__IX(BF, HA), out, out);
}

/* dS = P ⊙ (dP - rowsum(P ⊙ dP)), in place over dP [F, F] */
static MML__UNUSED void mml__softmax_rows_bwd(int F, const float *p, float *dp) {
    for (int i = 0; i < F; i++) {
        const float *pi = p + MML__IX(i, F);
        float *gi = dp + MML__IX(i, F), s = 0.0f;
        for (int j = 0; j < F; j++) s += pi[j] * gi[j];
        for (int j = 0; j < F; j++) gi[j] = pi[j] * (gi[j] - s);
    }
}

/* dout: [B, F, H*A] -> dx: [B, F, d_in] +=, dWq, dWk, dWv, dWr: [d_in, H*A] += */
static MML__UNUSED void mml__autoint_backward(const mml_kernels_t *K, int B, int F, int d_in, int H,
                                      int A, const float *x, const float *Wq, const float *Wk,
                                      const float *Wv, const float *Wr, const float *out,
                                      const float *act, const float *dout, float *dx,
                                      float *dWq, float *dWk, float *dWv, float *dWr,
                                      float *ws) {
    int HA = H * A, BF = B * F;
    int64_t n = MML__IX(BF, HA);
    const float *q = act, *kk = q + n, *v = kk + n, *p = v + n;
    float *dpre = ws, *dq = dpre + n, *dk = dq + n, *dv = dk + n, *dp = dv + n;
    K->relu_bwd(n, out, dout, dpre);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            int64_t o = MML__IX(b, F) * HA + MML__IX(h, A);
            const float *ph = p + (MML__IX(b, H) + h) * F * F;
            K->gemm_nt(F, F, A, dpre + o, HA, v + o, HA, dp, F, 0);
            K->gemm_tn(F, A, F, ph, F, dpre + o, HA, dv + o, HA, 0);
            mml__softmax_rows_bwd(F, ph, dp);
            K->gemm_nn(F, A, F, dp, F, kk + o, HA, dq + o, HA, 0);
            K->gemm_tn(F, A, F, dp, F, q + o, HA, dk + o, HA, 0);
        }
    const float *g[4] = {dq, dk, dv, dpre}, *W[4] = {Wq, Wk, Wv, Wr};
    float *dW[4] = {dWq, dWk, dWv, dWr};
    for (int t = 0; t < 4; t++) {
        K->gemm_tn(d_in, HA, BF, x, d_in, g[t], HA, dW[t], HA, 1);
        K->gemm_nt(BF, d_in, HA, g[t], HA, W[t], HA, dx, d_in, 1);
    }
}

/* ---- SENET (FiBiNET) ----------------------------------------------------- */

/* R = max(1, F / reduction_ratio) */
static MML__UNUSED int mml__senet_r(int F, int ratio) {
    int r = ratio > 0 ? F / ratio : F;
    return r > 1 ? r : 1;
}
/* act: Z [B, F], A1 [B, R], A2 [B, F] */
static MML__UNUSED size_t mml__senet_act_floats(int B, int F, int R) {
    return (size_t)B * (size_t)(2 * F + R);
}
/* ws (backward): dA2 [B, F], dA1 [B, R], dZ [B, F] */
static MML__UNUSED size_t mml__senet_ws_floats(int B, int F, int R) {
    return (size_t)B * (size_t)(2 * F + R);
}

/* emb: [B, F, k]  W1: [F, R]  W2: [R, F] -> out: [B, F, k]
 * Z = mean_k(emb); A1 = relu(Z W1); A2 = relu(A1 W2); out = emb * A2 per field. */
static MML__UNUSED void mml__senet_forward(const mml_kernels_t *K, int B, int F, int k, int R,
                                   const float *emb, const float *W1, const float *W2,
                                   float *out, float *act) {
    float *z = act, *a1 = z + MML__IX(B, F), *a2 = a1 + MML__IX(B, R);
    float inv = 1.0f / (float)k;
    for (int64_t bf = 0; bf < MML__IX(B, F); bf++) {
        const float *e = emb + bf * k;
        float s = 0.0f;
        for (int d = 0; d < k; d++) s += e[d];
        z[bf] = s * inv;
    }
    K->gemm_nn(B, R, F, z, F, W1, R, a1, R, 0);
    K->relu_fwd(MML__IX(B, R), a1, a1);
    K->gemm_nn(B, F, R, a1, R, W2, F, a2, F, 0);
    K->relu_fwd(MML__IX(B, F), a2, a2);
    for (int64_t bf = 0; bf < MML__IX(B, F); bf++)
        for (int d = 0; d < k; d++) out[bf * k + d] = emb[bf * k + d] * a2[bf];
}

/* dout: [B, F, k] -> demb: [B, F, k] +=, dW1: [F, R] +=, dW2: [R, F] += */
static MML__UNUSED void mml__senet_backward(const mml_kernels_t *K, int B, int F, int k, int R,
                                    const float *emb, const float *W1, const float *W2,
                                    const float *act, const float *dout, float *demb,
                                    float *dW1, float *dW2, float *ws) {
    const float *z = act, *a1 = z + MML__IX(B, F), *a2 = a1 + MML__IX(B, R);
    float *da2 = ws, *da1 = da2 + MML__IX(B, F), *dz = da1 + MML__IX(B, R);
    for (int64_t bf = 0; bf < MML__IX(B, F); bf++) {
        da2[bf] = a2[bf] > 0.0f ? K->dot(k, dout + bf * k, emb + bf * k) : 0.0f;
        K->axpy(k, a2[bf], dout + bf * k, demb + bf * k);
    }
    K->gemm_tn(R, F, B, a1, R, da2, F, dW2, F, 1);
    K->gemm_nt(B, R, F, da2, F, W2, F, da1, R, 0);
    K->relu_bwd(MML__IX(B, R), a1, da1, da1);
    K->gemm_tn(F, R, B, z, F, da1, R, dW1, R, 1);
    K->gemm_nt(B, F, R, da1, R, W1, R, dz, F, 0);
    float inv = 1.0f / (float)k;
    for (int64_t bf = 0; bf < MML__IX(B, F); bf++)
        for (int d = 0; d < k; d++) demb[bf * k + d] += dz[bf] * inv;
}

/* ---- bilinear interaction, type "interaction" (FiBiNET) ------------------ */

/* act: T [B, P, k], T_p = e_i W_p */
static MML__UNUSED size_t mml__bilinear_act_floats(int B, int F, int k) {
    return (size_t)B * (size_t)mml__n_pairs(F) * (size_t)k;
}
/* ws (backward): dT [B, k] */
static MML__UNUSED size_t mml__bilinear_ws_floats(int B, int k) { return (size_t)B * (size_t)k; }

/* emb: [B, F, k]  W: [P, k, k] (one matrix per pair) -> out: [B, P, k] with row
 * stride ldo >= P*k (FiBiNET's two branches write into one tower input),
 * out[b, p, :] = (e_i W_p) ⊙ e_j. */
static MML__UNUSED void mml__bilinear_forward(const mml_kernels_t *K, int B, int F, int k,
                                      const float *emb, const float *W, float *out, int ldo,
                                      float *act) {
    int P = mml__n_pairs(F), Fk = F * k, Pk = P * k, p = 0;
    for (int i = 0; i < F - 1; i++)
        for (int j = i + 1; j < F; j++, p++) {
            float *t = act + MML__IX(p, k);
            K->gemm_nn(B, k, k, emb + MML__IX(i, k), Fk, W + MML__IX(p, k) * k, k, t, Pk, 0);
            for (int b = 0; b < B; b++)
                K->mul(k, t + MML__IX(b, Pk), emb + MML__IX(b, Fk) + MML__IX(j, k),
                       out + MML__IX(b, ldo) + MML__IX(p, k));
        }
}

/* dout: [B, P, k] (row stride ldo) -> demb: [B, F, k] +=, dW: [P, k, k] += */
static MML__UNUSED void mml__bilinear_backward(const mml_kernels_t *K, int B, int F, int k,
                                       const float *emb, const float *W, const float *act,
                                       const float *dout, int ldo, float *demb, float *dW,
                                       float *ws) {
    int P = mml__n_pairs(F), Fk = F * k, Pk = P * k, p = 0;
    for (int i = 0; i < F - 1; i++)
        for (int j = i + 1; j < F; j++, p++) {
            const float *t = act + MML__IX(p, k);
            for (int b = 0; b < B; b++) {
                const float *g = dout + MML__IX(b, ldo) + MML__IX(p, k);
                const float *ej = emb + MML__IX(b, Fk) + MML__IX(j, k);
                float *dej = demb + MML__IX(b, Fk) + MML__IX(j, k);
                const float *tb = t + MML__IX(b, Pk);
                K->mul(k, g, ej, ws + MML__IX(b, k));
                for (int d = 0; d < k; d++) dej[d] += g[d] * tb[d];
            }
            const float *Wp = W + MML__IX(p, k) * k;
            K->gemm_tn(k, k, B, emb + MML__IX(i, k), Fk, ws, k, dW + MML__IX(p, k) * k, k, 1);
            K->gemm_nt(B, k, k, ws, k, Wp, k, demb + MML__IX(i, k), Fk, 1);
        }
}
/* Data chapter, implementation.
 * Contents: file and line helpers, mml_data_t memory, the stratified split,
 * the CSV layout (meta.txt + domain_<k>/{train,val,test}.csv), the binary
 * cache, the free-space check and the whole-set swap. The dataset recipes
 * (examples/mml_recipes.h) are built on the file, line and field helpers,
 * mml__set_name, mml__check_space and the atomic writer: they are included
 * after this implementation and call those by name. */

// >>data -------------------------------------------------------------------


#define MML__PATH_MAX 1024
#define MML__CACHE_VERSION 4u /* 4: the schema block; 3: CRC32C (mml_crc32c) instead of CRC32 */
#define MML__BOM 0x01020304u
#define MML__META_FORMAT "moemlora-data-1"
#define MML__META_FORMAT_COLS "moemlora-data-2" /* with a schema */
#define MML__VOCAB_FILE "vocab.txt"     /* raw values -> ids (>>vocab) */

static const char *const mml__split_names[3] = {"train", "val", "test"};

/* ---- files and paths ---- */

static int mml__is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}
static int mml__is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* out = a "/" b, refusing paths that do not fit the atomic writer's buffer. */
static mml_status mml__join(char *out, const char *a, const char *b) {
    int n = snprintf(out, MML__PATH_MAX, "%s/%s", a, b);
    if (n < 0 || n >= MML__PATH_MAX) return mml__fail(MML_ERR_ARG, "%s/%s: path too long", a, b);
    return MML_OK;
}

/* mkdir -p */
static mml_status mml__mkdirs(const char *dir) {
    char tmp[MML__PATH_MAX];
    size_t n = strlen(dir), i;
    if (n == 0 || n >= sizeof tmp) return mml__fail(MML_ERR_ARG, "bad directory name \"%s\"", dir);
    memcpy(tmp, dir, n + 1);
    for (i = 1; i <= n; i++) {
        if (tmp[i] == '/' || tmp[i] == 0) {
            char c = tmp[i];
            tmp[i] = 0;
            if (mkdir(tmp, 0777) != 0 && errno != EEXIST)
                return mml__fail(MML_ERR_IO, "%s: cannot create directory: %s", tmp, strerror(errno));
            tmp[i] = c;
        }
    }
    if (!mml__is_dir(dir)) return mml__fail(MML_ERR_IO, "%s: not a directory", dir);
    return MML_OK;
}

static int mml__host_le(void) {
    uint32_t x = 1;
    unsigned char c;
    memcpy(&c, &x, 1);
    return c == 1;
}

/* ---- lines and fields ---- */

typedef struct mml__lines {
    const char *p, *end;
    const char *file;
    long long line;
    int last_unterminated; /* the line just returned had no '\n' */
} mml__lines;

static void mml__lines_init(mml__lines *L, const char *buf, size_t n, const char *file) {
    L->p = buf;
    L->end = buf + n;
    L->file = file;
    L->line = 0;
    L->last_unterminated = 0;
    /* A UTF-8 byte-order mark (spreadsheet exports) is not part of the header. */
    if (n >= 3 && (unsigned char)buf[0] == 0xEF && (unsigned char)buf[1] == 0xBB &&
        (unsigned char)buf[2] == 0xBF)
        L->p += 3;
}

/* Next line as [*s, *e) without its "\n" / "\r\n"; 0 at the end of the buffer. */
static int mml__next_line(mml__lines *L, const char **s, const char **e) {
    const char *nl, *le;
    if (L->p >= L->end) return 0;
    nl = (const char *)memchr(L->p, '\n', (size_t)(L->end - L->p));
    le = nl ? nl : L->end;
    *s = L->p;
    L->p = nl ? nl + 1 : L->end;
    L->last_unterminated = nl == NULL;
    if (le > *s && le[-1] == '\r') le--;
    *e = le;
    L->line++;
    return 1;
}

static int64_t mml__count_lines(const char *buf, size_t n) {
    int64_t c = 1;
    const char *p = buf, *end = buf + n;
    while (p < end && (p = (const char *)memchr(p, '\n', (size_t)(end - p))) != NULL) {
        c++;
        p++;
    }
    return c;
}

/* Splits [s, e) at every sep (1 or 2 chars). Returns the number of fields;
 * only the first max are stored. */
static int mml__fields(const char *s, const char *e, const char *sep, int seplen,
                       const char **fs, const char **fe, int max) {
    int nf = 0;
    for (;;) {
        const char *q = s;
        if (seplen == 1) {
            q = (const char *)memchr(s, sep[0], (size_t)(e - s));
            if (!q) q = e;
        } else {
            while (q + 1 < e && !(q[0] == sep[0] && q[1] == sep[1])) q++;
            if (q + 1 >= e) q = e;
        }
        if (nf < max) {
            fs[nf] = s;
            fe[nf] = q;
        }
        nf++;
        if (q == e) return nf;
        s = q + seplen;
    }
}

/* A field, quoted and shortened for error messages. */
static const char *mml__q(const char *s, const char *e, char *buf, size_t cap) {
    size_t i = 0;
    buf[i++] = '"';
    while (s < e && i + 5 < cap) {
        unsigned char c = (unsigned char)*s++;
        buf[i++] = (c >= 32 && c < 127 && c != '"') ? (char)c : '?';
    }
    if (s < e) {
        buf[i++] = '.';
        buf[i++] = '.';
        buf[i++] = '.';
    }
    buf[i++] = '"';
    buf[i] = 0;
    return buf;
}

/* Whole field as a decimal integer with optional '-'; 0 if it is not one or
 * has more than 18 digits. */
static int mml__to_i64(const char *s, const char *e, int64_t *v) {
    int neg = 0;
    int64_t x = 0;
    if (s < e && *s == '-') {
        neg = 1;
        s++;
    }
    if (s == e || e - s > 18) return 0;
    for (; s < e; s++) {
        unsigned d = (unsigned)(*s - '0');
        if (d > 9) return 0;
        x = x * 10 + (int64_t)d;
    }
    *v = neg ? -x : x;
    return 1;
}

static int mml__all_digits(const char *s, const char *e) {
    if (s == e) return 0;
    for (; s < e; s++)
        if ((unsigned)(*s - '0') > 9) return 0;
    return 1;
}

/* A number as it stands in the file, shortened for messages. */
static const char *mml__num(const char *s, const char *e, char *buf, size_t cap) {
    int n = (int)(e - s) < 30 ? (int)(e - s) : 30;
    snprintf(buf, cap, "%.*s%s", n, s, e - s > 30 ? "..." : "");
    return buf;
}

/* The one key=value reader, for meta.txt and a checkpoint's text sections:
 * calls fn(ctx, key, value) for each line "key=value" of buf[0..n), split
 * at the first '='. Blank lines, '#' comments and leading blanks are
 * skipped; LF or CRLF; a last line without a newline counts. key and value
 * come NUL-terminated (a NUL byte in a line is refused), so callbacks
 * compare with strcmp and use the string parsers. Every error, the
 * reader's or fn's, is prefixed "<where>:<line>: ". */
typedef mml_status (*mml__kv_fn)(void *ctx, const char *key, const char *value);

static mml_status mml__kv_each(const char *buf, size_t n, const char *where, mml__kv_fn fn, void *ctx) {
    mml__lines L;
    const char *s, *e, *eq;
    char q[64], *line = (char *)mml__alloc(n + 1); /* the current line, split in place */
    mml_status st = MML_OK;
    if (!line) return mml__fail(MML_ERR_NOMEM, "%s: out of memory", where);
    mml__lines_init(&L, buf, n, where);
    while (!st && mml__next_line(&L, &s, &e)) {
        while (s < e && (*s == ' ' || *s == '\t')) s++;
        if (s == e || *s == '#') continue;
        eq = (const char *)memchr(s, '=', (size_t)(e - s));
        if (!eq || memchr(s, 0, (size_t)(e - s))) {
            st = mml__fail(MML_ERR_FORMAT, "%s:%lld: expected key=value%s, got %s", where, L.line,
                           eq ? " text without NUL bytes" : "", mml__q(s, e, q, sizeof q));
            break;
        }
        memcpy(line, s, (size_t)(e - s));
        line[e - s] = 0;
        line[eq - s] = 0;
        if ((st = fn(ctx, line, line + (eq - s) + 1)) != MML_OK)
            st = mml__fail(st, "%s:%lld: %s", where, L.line, mml_last_error());
    }
    mml__free(line);
    return st;
}

/* A whole NUL-terminated string as an integer in [lo, hi]; 0 on success. */
static int mml__parse_i64(const char *v, int64_t lo, int64_t hi, int64_t *out) {
    int64_t x;
    if (!mml__to_i64(v, v + strlen(v), &x) || x < lo || x > hi) return -1;
    *out = x;
    return 0;
}

/* A whole string as an unsigned 64-bit decimal; 0 on success. */
static int mml__parse_u64(const char *v, uint64_t *out) {
    uint64_t x = 0;
    if (!*v) return -1;
    for (const char *p = v; *p; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (d > 9 || x > (UINT64_MAX - d) / 10) return -1;
        x = x * 10 + d;
    }
    *out = x;
    return 0;
}

/* A whole string as a finite or infinite number (C99 hex floats too); 0 on success. */
static int mml__parse_dbl(const char *v, double *out) {
    char *e;
    double x = strtod(v, &e);
    if (!*v || *e || x != x) return -1;
    *out = x;
    return 0;
}

/* ---- mml_data_t memory and checks ---- */

static void mml__split_free(mml_split_t *s) {
    mml__free(s->uid);
    mml__free(s->pid);
    mml__free(s->dom);
    mml__free(s->label);
    mml__free(s->dom_start);
    memset(s, 0, sizeof *s);
}

static mml_status mml__split_alloc(mml_split_t *s, int64_t n, int32_t n_domains) {
    size_t rows = (size_t)(n > 0 ? n : 1);
    memset(s, 0, sizeof *s);
    s->n = n;
    s->uid = (int32_t *)mml__alloc(rows * sizeof(int32_t));
    s->pid = (int32_t *)mml__alloc(rows * sizeof(int32_t));
    s->dom = (int32_t *)mml__alloc(rows * sizeof(int32_t));
    s->label = (float *)mml__alloc(rows * sizeof(float));
    s->dom_start = (int64_t *)mml__alloc(((size_t)n_domains + 1) * sizeof(int64_t));
    if (!s->uid || !s->pid || !s->dom || !s->label || !s->dom_start) {
        mml__split_free(s);
        return mml__fail(MML_ERR_NOMEM, "cannot allocate a split of %lld rows", (long long)n);
    }
    return MML_OK;
}

/* The value of a schema field's column in a row: 1 id, a list, or 1 float. */
static int64_t mml__col_width(const mml_field_t *fd) { return fd->kind == MML_FIELD_MULTI_HOT ? fd->max_len : 1; }

/* A split's columns of a schema of nf fields (dom may be ids[domain]: one array). */
static void mml__split_free_cols(mml_split_t *s, int32_t nf) {
    for (int32_t f = 0; f < nf; f++) {
        if (s->ids && s->ids[f] && s->ids[f] != s->dom) mml__free(s->ids[f]);
        if (s->values) mml__free(s->values[f]);
    }
    mml__free(s->ids);
    mml__free(s->values);
    s->ids = NULL;
    s->values = NULL;
}

/* A split of n rows in a schema's columns: dom, label, dom_start, and per
 * field ids (categorical [n], multi-hot [n * max_len]) or values ([n]); no
 * uid or pid. The recipes build schema data sets with it. */
static mml_status mml__split_alloc_cols(mml_split_t *s, int64_t n, int32_t n_domains, const mml_schema_t *sc) {
    size_t rows = (size_t)(n > 0 ? n : 1);
    mml_status st = mml__split_alloc(s, n, n_domains);
    if (st) return st;
    mml__free(s->uid);
    mml__free(s->pid);
    s->uid = s->pid = NULL;
    s->ids = (int32_t **)mml__alloc((size_t)sc->n_fields * sizeof(int32_t *));
    s->values = (float **)mml__alloc((size_t)sc->n_fields * sizeof(float *));
    int ok = s->ids && s->values;
    for (int32_t f = 0; f < sc->n_fields && ok; f++) {
        const mml_field_t *fd = &sc->field[f];
        if (fd->kind == MML_FIELD_NUMERIC) ok = (s->values[f] = (float *)mml__alloc(rows * 4)) != NULL;
        else ok = (s->ids[f] = (int32_t *)mml__alloc(rows * (size_t)mml__col_width(fd) * 4)) != NULL;
    }
    if (ok) return MML_OK;
    mml__split_free_cols(s, sc->n_fields);
    mml__split_free(s);
    return mml__fail(MML_ERR_NOMEM, "cannot allocate a split of %lld rows", (long long)n);
}

void mml_data_free(mml_data_t *d) {
    int k;
    if (!d) return;
    if (d->domain_names) {
        for (k = 0; k < d->n_domains; k++) mml__free(d->domain_names[k]);
        mml__free(d->domain_names);
    }
    for (k = 0; k < 3; k++) mml__split_free_cols(&d->split[k], d->schema ? d->schema->n_fields : 0);
    for (k = 0; k < 3; k++) mml__split_free(&d->split[k]);
    mml__free(d->schema);
    mml__free(d->user_emb);
    mml__free(d->item_emb);
    mml_vocab_free(d->vocab);
    memset(d, 0, sizeof *d);
}

static mml_status mml__set_name(mml_data_t *d, int32_t k, const char *s, size_t len) {
    char *p;
    if (!d->domain_names) {
        d->domain_names = (char **)mml__alloc((size_t)d->n_domains * sizeof(char *));
        if (!d->domain_names) return mml__fail(MML_ERR_NOMEM, "domain names: out of memory");
    }
    p = (char *)mml__alloc(len + 1);
    if (!p) return mml__fail(MML_ERR_NOMEM, "domain names: out of memory");
    memcpy(p, s, len);
    mml__free(d->domain_names[k]);
    d->domain_names[k] = p;
    return MML_OK;
}

/* Row i of split s, field f holds a valid value: an id in 0..vocab-1
 * (val and test may also hold vocab, the out-of-vocabulary id), a list of
 * such ids padded with -1, or a finite number. */
static int mml__cell_ok(const mml_field_t *fd, const mml_split_t *sp, int32_t f, int64_t i, int s) {
    int32_t hi = s == MML_TRAIN ? fd->vocab - 1 : fd->vocab;
    if (fd->kind == MML_FIELD_NUMERIC) return sp->values[f][i] - sp->values[f][i] == 0.0f;
    if (fd->kind == MML_FIELD_CATEGORICAL) return sp->ids[f][i] >= 0 && sp->ids[f][i] <= hi;
    for (int64_t q = 0, w = fd->max_len; q < w; q++) {
        int32_t v = sp->ids[f][i * w + q];
        if (v < -1 || v > hi) return 0;
    }
    return 1;
}

/* mml__data_check for a data set with a schema. */
static mml_status mml__data_check_cols(const mml_data_t *d, const char *what) {
    const mml_schema_t *sc = d->schema;
    if (mml_schema_check(sc) != MML_OK) return mml__fail(MML_ERR_FORMAT, "%s: %s", what, mml_last_error());
    if (d->n_domains != sc->field[sc->domain].vocab || d->pretrained_dim != 0)
        return mml__fail(MML_ERR_FORMAT, "%s: n_domains %d must be the domain field's vocab (%d), pretrained_dim 0 (%d)",
                         what, d->n_domains, sc->field[sc->domain].vocab, d->pretrained_dim);
    if (mml_schema_find(sc, "label") >= 0) return mml__fail(MML_ERR_FORMAT, "%s: a field is named label (the label's column)", what);
    for (int s = 0; s < 3; s++) {
        const mml_split_t *sp = &d->split[s];
        for (int32_t f = 0; f < sc->n_fields; f++)
            if (sp->n > 0 && (!sp->ids || !sp->values || !(sc->field[f].kind == MML_FIELD_NUMERIC ? (void *)sp->values[f] : (void *)sp->ids[f])))
                return mml__fail(MML_ERR_FORMAT, "%s: %s split: no column for field %s", what, mml__split_names[s], sc->field[f].name);
        for (int64_t i = 0; i < sp->n; i++) {
            if (sp->ids[sc->domain][i] != sp->dom[i])
                return mml__fail(MML_ERR_FORMAT, "%s: %s row %lld: domain column %d but dom %d", what, mml__split_names[s],
                                 (long long)i, sp->ids[sc->domain][i], sp->dom[i]);
            for (int32_t f = 0; f < sc->n_fields; f++)
                if (!mml__cell_ok(&sc->field[f], sp, f, i, s))
                    return mml__fail(MML_ERR_FORMAT, "%s: %s row %lld: field %s: %s", what, mml__split_names[s], (long long)i,
                                     sc->field[f].name, sc->field[f].kind == MML_FIELD_NUMERIC ? "value not finite" : "id out of range");
        }
    }
    return MML_OK;
}

/* Every invariant the trainers rely on; what names the data for messages. */
static mml_status mml__data_check(const mml_data_t *d, const char *what) {
    int s, cols = d->schema != NULL;
    int32_t k;
    if ((!cols && (d->n_users < 1 || d->n_items < 1)) || d->n_domains < 1 || d->pretrained_dim < 0)
        return mml__fail(MML_ERR_FORMAT, "%s: bad sizes (n_users=%d n_items=%d n_domains=%d dim=%d)",
                         what, d->n_users, d->n_items, d->n_domains, d->pretrained_dim);
    if (d->pretrained_dim > 0 && (!d->user_emb || !d->item_emb))
        return mml__fail(MML_ERR_FORMAT, "%s: pretrained_dim=%d but embeddings missing", what,
                         d->pretrained_dim);
    for (s = 0; s < 3; s++) {
        const mml_split_t *sp = &d->split[s];
        if (sp->n < 0 || !sp->dom_start || (sp->n > 0 && ((!cols && (!sp->uid || !sp->pid)) || !sp->dom || !sp->label)))
            return mml__fail(MML_ERR_FORMAT, "%s: %s split arrays missing", what, mml__split_names[s]);
        if (sp->dom_start[0] != 0 || sp->dom_start[d->n_domains] != sp->n)
            return mml__fail(MML_ERR_FORMAT, "%s: %s split: dom_start does not span 0..%lld", what,
                             mml__split_names[s], (long long)sp->n);
        for (k = 0; k < d->n_domains; k++) {
            int64_t i, a = sp->dom_start[k], b = sp->dom_start[k + 1];
            if (a > b)
                return mml__fail(MML_ERR_FORMAT, "%s: %s split: dom_start decreases at domain %d", what,
                                 mml__split_names[s], k);
            for (i = a; i < b; i++) {
                int32_t u = cols ? 0 : sp->uid[i], p = cols ? 0 : sp->pid[i];
                if (sp->dom[i] != k || u < 0 || (!cols && u >= d->n_users) || p < 0 ||
                    (!cols && p >= d->n_items) || (sp->label[i] != 0.0f && sp->label[i] != 1.0f))
                    return mml__fail(MML_ERR_FORMAT,
                                     "%s: %s row %lld invalid (uid=%d pid=%d dom=%d in domain %d, label=%g)",
                                     what, mml__split_names[s], (long long)i, u, p, sp->dom[i], k, (double)sp->label[i]);
            }
        }
    }
    return cols ? mml__data_check_cols(d, what) : MML_OK;
}

/* Re-reports the last error under another status (the message is copied
 * first: it lives in the buffer that mml__fail writes). */
static mml_status mml__recode(mml_status st) {
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s", mml_last_error());
    return mml__fail(st, "%s", tmp);
}

/* ---- stratified split ---- */

/* Per domain and per label class: shuffle (splitmix64 from seed, buckets taken
 * in order domain 0 class 0, domain 0 class 1, domain 1 class 0, ...), then the
 * first floor(6n/10) go to train, the next floor(2n/10) to val, the rest to
 * test. Within a (split, domain) the rows keep their input order. */
mml_status mml_data_split(int64_t n, const int32_t *uid, const int32_t *pid, const int32_t *dom,
                          const float *label, int32_t n_users, int32_t n_items, int32_t n_domains,
                          uint64_t seed, mml_data_t *out) {
    int64_t *bstart = NULL, *idx = NULL, *fill = NULL, i, b;
    unsigned char *part = NULL;
    int64_t cnt[3] = {0, 0, 0};
    uint64_t rng = seed;
    int s;
    mml_status st = MML_OK;
    if (!out) return mml__fail(MML_ERR_ARG, "mml_data_split: out is NULL");
    memset(out, 0, sizeof *out);
    if (n < 0 || n_users < 1 || n_items < 1 || n_domains < 1)
        return mml__fail(MML_ERR_ARG, "mml_data_split: bad sizes (n=%lld n_users=%d n_items=%d n_domains=%d)",
                         (long long)n, n_users, n_items, n_domains);
    if (n > 0 && (!uid || !pid || !dom || !label))
        return mml__fail(MML_ERR_ARG, "mml_data_split: NULL input array");
    for (i = 0; i < n; i++) {
        if (uid[i] < 0 || uid[i] >= n_users)
            return mml__fail(MML_ERR_ARG, "mml_data_split: row %lld: uid %d out of range [0,%d)",
                             (long long)i, uid[i], n_users);
        if (pid[i] < 0 || pid[i] >= n_items)
            return mml__fail(MML_ERR_ARG, "mml_data_split: row %lld: pid %d out of range [0,%d)",
                             (long long)i, pid[i], n_items);
        if (dom[i] < 0 || dom[i] >= n_domains)
            return mml__fail(MML_ERR_ARG, "mml_data_split: row %lld: domain %d out of range [0,%d)",
                             (long long)i, dom[i], n_domains);
        if (label[i] != 0.0f && label[i] != 1.0f)
            return mml__fail(MML_ERR_ARG, "mml_data_split: row %lld: label %g is not 0 or 1",
                             (long long)i, (double)label[i]);
    }
    /* bucket b = 2*domain + class, counting sort of row indices */
    bstart = (int64_t *)mml__alloc(((size_t)n_domains * 2 + 1) * sizeof(int64_t));
    fill = (int64_t *)mml__alloc(((size_t)n_domains * 6 + 1) * sizeof(int64_t));
    idx = (int64_t *)mml__alloc((size_t)(n + 1) * sizeof(int64_t));
    part = (unsigned char *)mml__alloc((size_t)(n + 1));
    if (!bstart || !fill || !idx || !part) {
        st = mml__fail(MML_ERR_NOMEM, "mml_data_split: out of memory (%lld rows)", (long long)n);
        goto done;
    }
    for (i = 0; i < n; i++) bstart[2 * (int64_t)dom[i] + (label[i] != 0.0f) + 1]++;
    for (b = 0; b < 2 * (int64_t)n_domains; b++) bstart[b + 1] += bstart[b];
    for (i = 0; i < n; i++) {
        int64_t bb = 2 * (int64_t)dom[i] + (label[i] != 0.0f);
        idx[bstart[bb] + fill[bb]++] = i;
    }
    memset(fill, 0, ((size_t)n_domains * 6 + 1) * sizeof(int64_t));
    for (b = 0; b < 2 * (int64_t)n_domains; b++) {
        int64_t a = bstart[b], c = bstart[b + 1] - a;
        int64_t ntr = c * 6 / 10, nva = c * 2 / 10, j;
        mml__shuffle_i64(idx + a, c, &rng);
        for (j = 0; j < c; j++) {
            int p = j < ntr ? MML_TRAIN : (j < ntr + nva ? MML_VAL : MML_TEST);
            part[idx[a + j]] = (unsigned char)p;
            fill[(b / 2) * 3 + p]++; /* rows of split p in domain b/2 */
        }
    }
    out->n_users = n_users;
    out->n_items = n_items;
    out->n_domains = n_domains;
    for (i = 0; i < n; i++) cnt[part[i]]++;
    for (s = 0; s < 3; s++) {
        mml_split_t *sp = &out->split[s];
        int32_t k;
        if ((st = mml__split_alloc(sp, cnt[s], n_domains)) != MML_OK) goto done;
        for (k = 0; k < n_domains; k++) sp->dom_start[k + 1] = sp->dom_start[k] + fill[k * 3 + s];
    }
    /* fill[] becomes the write cursor of each (domain, split) */
    for (b = 0; b < n_domains; b++)
        for (s = 0; s < 3; s++) fill[b * 3 + s] = out->split[s].dom_start[b];
    for (i = 0; i < n; i++) {
        mml_split_t *sp = &out->split[part[i]];
        int64_t j = fill[(int64_t)dom[i] * 3 + part[i]]++;
        sp->uid[j] = uid[i];
        sp->pid[j] = pid[i];
        sp->dom[j] = dom[i];
        sp->label[j] = label[i];
    }
done:
    mml__free(bstart);
    mml__free(fill);
    mml__free(idx);
    mml__free(part);
    if (st) mml_data_free(out);
    return st;
}

/* mml_data_split's rule for rows in a schema's columns: the same
 * assignment (the paper's split of the row indices), then every column
 * copied. ids and values hold the n rows of every field as in a batch; out
 * takes a copy of the schema. */
static mml_status mml__split_cols(int64_t n, const mml_schema_t *sc, int32_t *const *ids, float *const *values,
                                  const float *label, uint64_t seed, mml_data_t *out) {
    int32_t nd = sc->field[sc->domain].vocab;
    int32_t *row = (int32_t *)mml__alloc((size_t)(n + 1) * 4), *zero = (int32_t *)mml__alloc((size_t)(n + 1) * 4);
    mml_data_t plan; /* rows as (row index, 0, domain): where each one goes */
    mml_status st = row && zero && n < INT32_MAX ? MML_OK : mml__fail(MML_ERR_NOMEM, "split: %lld rows: out of memory", (long long)n);
    memset(&plan, 0, sizeof plan);
    memset(out, 0, sizeof *out);
    for (int64_t i = 0; !st && i < n; i++) {
        row[i] = (int32_t)i;
        zero[i] = 0;
    }
    if (!st) st = mml_data_split(n, row, zero, ids[sc->domain], label, (int32_t)(n > 0 ? n : 1), 1, nd, seed, &plan);
    if (!st && !(out->schema = (mml_schema_t *)mml__alloc(sizeof *sc))) st = mml__fail(MML_ERR_NOMEM, "split: out of memory");
    if (!st) *out->schema = *sc;
    out->n_domains = nd;
    for (int s = 0; s < 3 && !st; s++) {
        mml_split_t *o = &out->split[s];
        const mml_split_t *pl = &plan.split[s];
        if ((st = mml__split_alloc_cols(o, pl->n, nd, sc)) != MML_OK) break;
        memcpy(o->dom_start, pl->dom_start, ((size_t)nd + 1) * 8);
        for (int64_t j = 0; j < pl->n; j++) {
            int64_t i = pl->uid[j];
            o->dom[j] = pl->dom[j];
            o->label[j] = pl->label[j];
            for (int32_t f = 0; f < sc->n_fields; f++) {
                int64_t w = mml__col_width(&sc->field[f]);
                if (sc->field[f].kind == MML_FIELD_NUMERIC) o->values[f][j] = values[f][i];
                else memcpy(o->ids[f] + j * w, ids[f] + i * w, (size_t)w * 4);
            }
        }
    }
    mml__free(row);
    mml__free(zero);
    mml_data_free(&plan);
    if (st) mml_data_free(out);
    return st;
}

/* ---- CSV layout: writer ---- */

static char *mml__put_u64(char *p, uint64_t v) {
    char t[20];
    int n = 0;
    do {
        t[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n) *p++ = t[--n];
    return p;
}

/* A paper-layout row: uid,pid,domain,label. */
static char *mml__put_paper_row(char *p, const mml_schema_t *sc, const mml_split_t *sp, int64_t i, int32_t k) {
    (void)sc;
    p = mml__put_u64(p, (uint64_t)sp->uid[i]);
    *p++ = ',';
    p = mml__put_u64(p, (uint64_t)sp->pid[i]);
    *p++ = ',';
    p = mml__put_u64(p, (uint64_t)k);
    *p++ = ',';
    *p++ = sp->label[i] != 0.0f ? '1' : '0';
    *p++ = '\n';
    return p;
}

/* x in its shortest "%.<n>g" form that reads back as x (at most 9 digits). */
static char *mml__put_f32(char *p, float x) {
    int n = 0;
    for (int digits = 6; digits <= 9; digits++) {
        n = snprintf(p, 24, "%.*g", digits, (double)x);
        if (strtof(p, NULL) == x) break;
    }
    return p + n;
}

/* One row of a schema's columns as CSV: ids, lists "a|b|c", numbers, label. */
static char *mml__put_row(char *p, const mml_schema_t *sc, const mml_split_t *sp, int64_t i, int32_t k) {
    (void)k;
    for (int32_t f = 0; f < sc->n_fields; f++) {
        const mml_field_t *fd = &sc->field[f];
        if (fd->kind == MML_FIELD_NUMERIC) {
            p = mml__put_f32(p, sp->values[f][i]);
        } else {
            int64_t w = mml__col_width(fd), first = 1;
            for (int64_t q = 0; q < w; q++) {
                int32_t v = sp->ids[f][i * w + q];
                if (v < 0) continue; /* a list's padding */
                if (!first) *p++ = '|';
                p = mml__put_u64(p, (uint64_t)v);
                first = 0;
            }
        }
        *p++ = ',';
    }
    *p++ = sp->label[i] != 0.0f ? '1' : '0';
    *p++ = '\n';
    return p;
}

/* Bytes a row of a schema's CSV takes at most, the header line's. */
static size_t mml__row_bytes(const mml_schema_t *sc) {
    size_t n = 8;
    for (int32_t f = 0; f < sc->n_fields; f++)
        n += MML_FIELD_NAME_MAX + (sc->field[f].kind == MML_FIELD_NUMERIC ? 26 : (size_t)mml__col_width(&sc->field[f]) * 12);
    return n;
}

/* The header line of a schema's CSV files (NUL-terminated, in buf of
 * mml__row_bytes(sc) bytes). */
static void mml__cols_header(const mml_schema_t *sc, char *buf) {
    char *p = buf;
    for (int32_t f = 0; f < sc->n_fields; f++) p += sprintf(p, "%s,", sc->field[f].name);
    strcpy(p, "label");
}

/* How domain_<k>/<split>.csv prints: the header line (NUL-terminated, no
 * '\n'; at most row_max bytes), one row a line of at most row_max bytes. */
typedef struct mml__csv_layout {
    const mml_schema_t *sc; /* NULL: the paper layout */
    size_t row_max;
    void (*header)(const mml_schema_t *sc, char *buf);
    char *(*row)(char *p, const mml_schema_t *sc, const mml_split_t *sp, int64_t i, int32_t k);
} mml__csv_layout;

static void mml__paper_header(const mml_schema_t *sc, char *buf) {
    (void)sc;
    strcpy(buf, "uid,pid,domain,label");
}

/* The paper layout: "uid,pid,domain,label"; with a schema: a header naming
 * the fields in the schema's order, then "label". */
static mml__csv_layout mml__csv_layout_of(const mml_schema_t *sc) {
    mml__csv_layout l = {sc, 80, mml__paper_header, mml__put_paper_row}; /* 3 numbers of <= 20 digits, label, 4 separators */
    if (sc) l.row_max = mml__row_bytes(sc), l.header = mml__cols_header, l.row = mml__put_row;
    return l;
}

/* domain_<k>/<split>.csv: the header, then domain k's rows of sp, one a line. */
static mml_status mml__write_split_csv(const char *path, const mml__csv_layout *l, const mml_split_t *sp, int32_t k) {
    size_t row = l->row_max, cap = row * 4 > (1u << 20) ? row * 4 : (1u << 20);
    mml__afile w;
    char *buf = (char *)MOEMLORA_MALLOC(cap), *p;
    mml_status st;
    if (!buf) return mml__fail(MML_ERR_NOMEM, "%s: out of memory", path);
    if ((st = mml__afile_open(&w, path)) != MML_OK) {
        MOEMLORA_FREE(buf);
        return st;
    }
    l->header(l->sc, buf);
    p = buf + strlen(buf);
    *p++ = '\n';
    for (int64_t i = sp->dom_start[k]; i < sp->dom_start[k + 1] && !st; i++) {
        p = l->row(p, l->sc, sp, i, k);
        if ((size_t)(p - buf) > cap - row) {
            st = mml__afile_write(&w, buf, (size_t)(p - buf));
            p = buf;
        }
    }
    if (!st && p > buf) st = mml__afile_write(&w, buf, (size_t)(p - buf));
    MOEMLORA_FREE(buf);
    if (st) {
        mml__afile_abort(&w);
        return st;
    }
    return mml__afile_commit(&w);
}

/* Embedding file: "MMLEMB01", u32 byte-order marker, u32 dim, u64 rows, then
 * rows*dim float32 (little-endian; big-endian hosts are refused). */
static mml_status mml__write_emb(const char *path, const float *emb, int64_t rows, int32_t dim) {
    mml__afile w;
    unsigned char hdr[24];
    uint32_t bom = MML__BOM, d = (uint32_t)dim;
    uint64_t r = (uint64_t)rows;
    mml_status st;
    memcpy(hdr, "MMLEMB01", 8);
    memcpy(hdr + 8, &bom, 4);
    memcpy(hdr + 12, &d, 4);
    memcpy(hdr + 16, &r, 8);
    if ((st = mml__afile_open(&w, path)) != MML_OK) return st;
    st = mml__afile_write(&w, hdr, sizeof hdr);
    if (!st) st = mml__afile_write(&w, emb, (size_t)rows * (size_t)dim * sizeof(float));
    if (st) {
        mml__afile_abort(&w);
        return st;
    }
    return mml__afile_commit(&w);
}

/* ---- the schema as key=value text ----
 * One text for meta.txt (format moemlora-data-2) and a checkpoint's section
 * SCHM: n_fields=N, domain_field=<name>, then for each field f in order
 * "field.<f>.<attribute>=value" for every attribute of mml__field_attrs
 * (the whole mml_field_t: a schema reads back as it was written); floats in
 * the shortest form that reads back exact. The reader (mml__schema_kv, one
 * key at a time, then mml__schema_end) takes the keys in any order, each
 * once; name and kind are required, an attribute not given is 0. */

enum { MML__FA_NAME, MML__FA_KIND, MML__FA_VOCAB, MML__FA_DIM, MML__FA_HASH, MML__FA_FROZEN, MML__FA_MAX_LEN,
       MML__FA_POOLING, MML__FA_NORM, MML__FA_SHIFT, MML__FA_SCALE, MML__FA_COUNT };
static const char *const mml__field_attrs[MML__FA_COUNT] = {"name", "kind", "vocab", "dim", "hash_buckets", "frozen",
                                                              "max_len", "pooling", "norm", "shift", "scale"};
/* The index of the whole string v in names[0..n), or -1. */
static int mml__name_index(const char *const *names, int n, const char *v) {
    for (int i = 0; i < n; i++)
        if (!strcmp(v, names[i])) return i;
    return -1;
}

/* The text of s in a new buffer (*out, to free), its length; -1 without memory. */
static int64_t mml__schema_text(const mml_schema_t *s, char **out) {
    size_t cap = 128 + (size_t)s->n_fields * MML__FA_COUNT * (32 + MML_FIELD_NAME_MAX), n = 0;
    char *b = (char *)mml__alloc(cap), num[24];
    *out = b;
    if (!b) return -1;
    n += (size_t)snprintf(b, cap, "n_fields=%d\ndomain_field=%s\n", s->n_fields, s->field[s->domain].name);
    for (int f = 0; f < s->n_fields; f++) {
        const mml_field_t *fd = &s->field[f];
        for (int a = 0; a < MML__FA_COUNT; a++) {
            const char *v = num;
            switch (a) {
            case MML__FA_NAME: v = fd->name; break;
            case MML__FA_KIND: v = mml__kind_names[fd->kind]; break;
            case MML__FA_POOLING: v = mml__pool_names[fd->pooling]; break;
            case MML__FA_NORM: v = mml__norm_names[fd->norm]; break;
            case MML__FA_SHIFT: case MML__FA_SCALE: *mml__put_f32(num, a == MML__FA_SHIFT ? fd->shift : fd->scale) = 0; break;
            default:
                snprintf(num, sizeof num, "%d", a == MML__FA_VOCAB ? fd->vocab : a == MML__FA_DIM ? fd->dim
                                              : a == MML__FA_HASH ? fd->hash_buckets : a == MML__FA_FROZEN ? fd->frozen
                                              : fd->max_len);
            }
            n += (size_t)snprintf(b + n, cap - n, "field.%d.%s=%s\n", f, mml__field_attrs[a], v);
        }
    }
    return (int64_t)n;
}

/* A schema being read: the fields in place, which keys came. */
typedef struct mml__schema_rd {
    mml_schema_t *s;
    int64_t n_fields;                       /* -1: not given */
    char domain[MML_FIELD_NAME_MAX];        /* domain_field ("": not given) */
    uint16_t seen[MML_MAX_FIELDS];          /* per field: a bit per MML__FA_* */
} mml__schema_rd;

static void mml__schema_rd_init(mml__schema_rd *r, mml_schema_t *s) {
    memset(r, 0, sizeof *r);
    memset(s, 0, sizeof *s);
    r->s = s;
    r->n_fields = -1;
}

/* 1 if k is a key of the schema's text. */
static int mml__schema_key(const char *k) {
    return !strcmp(k, "n_fields") || !strcmp(k, "domain_field") || !strncmp(k, "field.", 6);
}

/* One key=value line of the schema's text. */
static mml_status mml__schema_kv(mml__schema_rd *r, const char *k, const char *v) {
    int64_t x = 0;
    double d = 0.0;
    if (!strcmp(k, "n_fields")) {
        if (r->n_fields >= 0) return mml__fail(MML_ERR_FORMAT, "n_fields given twice");
        if (mml__parse_i64(v, 1, MML_MAX_FIELDS, &x)) return mml__fail(MML_ERR_FORMAT, "bad n_fields \"%s\" (1..%d)", v, MML_MAX_FIELDS);
        r->n_fields = r->s->n_fields = (int32_t)x;
        return MML_OK;
    }
    if (!strcmp(k, "domain_field")) {
        if (r->domain[0]) return mml__fail(MML_ERR_FORMAT, "domain_field given twice");
        if (!*v || strlen(v) >= MML_FIELD_NAME_MAX) return mml__fail(MML_ERR_FORMAT, "bad domain_field \"%s\"", v);
        snprintf(r->domain, sizeof r->domain, "%s", v);
        return MML_OK;
    }
    char *end = NULL;
    long f = strncmp(k, "field.", 6) || k[6] < '0' || k[6] > '9' ? -1 : strtol(k + 6, &end, 10);
    int a = f < 0 || f >= MML_MAX_FIELDS || *end != '.' ? -1 : mml__name_index(mml__field_attrs, MML__FA_COUNT, end + 1);
    if (a < 0) return mml__fail(MML_ERR_FORMAT, "unknown key \"%s\" (field.<0..%d>.<attribute>)", k, MML_MAX_FIELDS - 1);
    if (r->seen[f] & 1u << a) return mml__fail(MML_ERR_FORMAT, "%s given twice", k);
    r->seen[f] |= (uint16_t)(1u << a);
    mml_field_t *fd = &r->s->field[f];
    int e = 0;
    switch (a) {
    case MML__FA_NAME:
        if (!*v || strlen(v) >= MML_FIELD_NAME_MAX) e = -1;
        else snprintf(fd->name, sizeof fd->name, "%s", v);
        break;
    case MML__FA_KIND: fd->kind = (mml_field_kind)(e = mml__name_index(mml__kind_names, 3, v)); break;
    case MML__FA_POOLING: fd->pooling = (mml_pooling)(e = mml__name_index(mml__pool_names, 2, v)); break;
    case MML__FA_NORM: fd->norm = (mml_norm)(e = mml__name_index(mml__norm_names, 3, v)); break;
    case MML__FA_SHIFT: case MML__FA_SCALE:
        if ((e = mml__parse_dbl(v, &d)) == 0 && !(d - d == 0.0)) e = -1; /* finite only */
        *(a == MML__FA_SHIFT ? &fd->shift : &fd->scale) = (float)d;
        break;
    default:
        e = mml__parse_i64(v, 0, 1 << 30, &x);
        *(a == MML__FA_VOCAB ? &fd->vocab : a == MML__FA_DIM ? &fd->dim : a == MML__FA_HASH ? &fd->hash_buckets
          : a == MML__FA_FROZEN ? &fd->frozen : &fd->max_len) = (int32_t)x;
    }
    return e < 0 ? mml__fail(MML_ERR_FORMAT, "bad value \"%s\" for %s", v, k) : MML_OK;
}

/* After the last key: n_fields and domain_field given, fields 0..n_fields-1
 * each with a name and a kind and none beyond, a schema mml_schema_check
 * accepts. */
static mml_status mml__schema_end(mml__schema_rd *r) {
    mml_schema_t *s = r->s;
    if (r->n_fields < 0 || !r->domain[0])
        return mml__fail(MML_ERR_FORMAT, "the schema lacks %s", r->n_fields < 0 ? "n_fields" : "domain_field");
    for (int f = 0; f < MML_MAX_FIELDS; f++) {
        if (f >= s->n_fields && r->seen[f])
            return mml__fail(MML_ERR_FORMAT, "field.%d.* given, but n_fields=%d", f, s->n_fields);
        if (f < s->n_fields && (r->seen[f] & 3u) != 3u)
            return mml__fail(MML_ERR_FORMAT, "field.%d.%s missing", f, r->seen[f] & 1u ? "kind" : "name");
    }
    if ((s->domain = mml_schema_find(s, r->domain)) < 0)
        return mml__fail(MML_ERR_FORMAT, "domain_field=%s names no field", r->domain);
    return mml_schema_check(s) ? mml__fail(MML_ERR_FORMAT, "%s", mml_last_error()) : MML_OK;
}

static mml_status mml__write_meta(const char *path, const mml_data_t *d) {
    mml__afile w;
    int32_t k;
    int s;
    mml_status st;
    if ((st = mml__afile_open(&w, path)) != MML_OK) return st;
    mml__afile_printf(&w, "# moemlora prepared dataset; see docs/DATA.md\nformat=%s\n",
                      d->schema ? MML__META_FORMAT_COLS : MML__META_FORMAT);
    if (d->schema) {
        char *text = NULL;
        int64_t tn = mml__schema_text(d->schema, &text);
        mml__afile_printf(&w, "n_domains=%d\n", d->n_domains);
        if (tn < 0) w.failed = mml__fail(MML_ERR_NOMEM, "%s: out of memory", path) != MML_OK;
        else mml__afile_write(&w, text, (size_t)tn);
        mml__free(text);
    } else {
        mml__afile_printf(&w, "n_users=%d\nn_items=%d\nn_domains=%d\npretrained_dim=%d\n", d->n_users,
                          d->n_items, d->n_domains, d->pretrained_dim);
    }
    for (k = 0; k < d->n_domains; k++)
        mml__afile_printf(&w, "domain.%d=%s\n", k,
                          d->domain_names && d->domain_names[k] ? d->domain_names[k] : "");
    for (s = 0; s < 3; s++) {
        const mml_split_t *sp = &d->split[s];
        for (k = 0; k < d->n_domains; k++) {
            int64_t a = sp->dom_start[k], b = sp->dom_start[k + 1], i;
            double pos = 0;
            for (i = a; i < b; i++) pos += sp->label[i];
            mml__afile_printf(&w, "count.%s.%d=%lld\nctr.%s.%d=%.6f\n", mml__split_names[s], k,
                              (long long)(b - a), mml__split_names[s], k, b > a ? pos / (double)(b - a) : 0.0);
        }
    }
    return mml__afile_commit(&w);
}

static mml_status mml__check_names(const mml_data_t *d) {
    int32_t k;
    if (!d->domain_names) return MML_OK;
    for (k = 0; k < d->n_domains; k++) {
        const char *s = d->domain_names[k];
        if (s && (strchr(s, '\n') || strchr(s, '\r') || strlen(s) > 1000))
            return mml__fail(MML_ERR_ARG, "domain name %d contains a line break or is too long", k);
    }
    return MML_OK;
}

/* The >>vocab chapter's part in a prepared set. */
static mml_status mml__write_vocab(const char *path, const mml_vocab_t *v);
static mml_status mml__vocab_check(const mml_vocab_t *v, const mml_schema_t *s, const char *where);
static double mml__vocab_bytes(const mml_vocab_t *v);

/* The files of d's prepared set, written into the empty folder dir. */
static mml_status mml__write_set(const mml_data_t *d, const char *dir) {
    char path[MML__PATH_MAX], sub[64];
    int32_t k;
    int s;
    mml_status st;
    mml__csv_layout lay = mml__csv_layout_of(d->schema);
    for (k = 0; k < d->n_domains; k++) {
        snprintf(sub, sizeof sub, "domain_%d", k);
        if ((st = mml__join(path, dir, sub)) != MML_OK) return st;
        if ((st = mml__mkdirs(path)) != MML_OK) return st;
        for (s = 0; s < 3; s++) {
            snprintf(sub, sizeof sub, "domain_%d/%s.csv", k, mml__split_names[s]);
            if ((st = mml__join(path, dir, sub)) != MML_OK) return st;
            if ((st = mml__write_split_csv(path, &lay, &d->split[s], k)) != MML_OK) return st;
        }
    }
    if (d->pretrained_dim > 0) {
        if ((st = mml__join(path, dir, "user_emb.bin")) != MML_OK) return st;
        if ((st = mml__write_emb(path, d->user_emb, d->n_users, d->pretrained_dim)) != MML_OK) return st;
        if ((st = mml__join(path, dir, "item_emb.bin")) != MML_OK) return st;
        if ((st = mml__write_emb(path, d->item_emb, d->n_items, d->pretrained_dim)) != MML_OK) return st;
    }
    if (d->vocab) {
        if ((st = mml__join(path, dir, MML__VOCAB_FILE)) != MML_OK) return st;
        if ((st = mml__write_vocab(path, d->vocab)) != MML_OK) return st;
    }
    if ((st = mml__join(path, dir, "meta.txt")) != MML_OK) return st;
    return mml__write_meta(path, d);
}

/* ---- what a cache was built from ---- */

/* A file the cache was built from, named relative to the folder, with its
 * size and mtime when it was read. size -1: a name that must not exist (the
 * paper layout reads "domain_0, 1, ... up to the first missing one" and has
 * no meta.txt, so those absences are part of what was read). */
typedef struct mml__src {
    char name[40];
    int64_t size, mtime_s, mtime_ns;
} mml__src;

/* On disk: name[40] (NUL-padded), i64 size, mtime_s, mtime_ns. */
#define MML__SRC_BYTES 64

typedef struct mml__srcs {
    mml__src *v;
    int64_t n, cap;
    int failed; /* out of memory: the list is incomplete, so no cache is made from it */
} mml__srcs;


static void mml__srcs_free(mml__srcs *l) {
    mml__free(l->v);
    memset(l, 0, sizeof *l);
}

/* Records name as st describes it (st NULL: absent). A NULL list records nothing. */
static void mml__srcs_add(mml__srcs *l, const char *name, const struct stat *st) {
    mml__src *e;
    if (!l || l->failed) return;
    if (strlen(name) >= sizeof e->name) {
        l->failed = 1;
        return;
    }
    if (l->n == l->cap) {
        int64_t cap = l->cap ? l->cap * 2 : 16;
        mml__src *v = (mml__src *)mml__alloc((size_t)cap * sizeof *v);
        if (!v) {
            l->failed = 1;
            return;
        }
        if (l->n) memcpy(v, l->v, (size_t)l->n * sizeof *v);
        mml__free(l->v);
        l->v = v;
        l->cap = cap;
    }
    e = &l->v[l->n++];
    memset(e, 0, sizeof *e);
    strcpy(e->name, name);
    e->size = st ? (int64_t)st->st_size : -1;
    e->mtime_s = st ? MML__MTIME_S(*st) : 0;
    e->mtime_ns = st ? MML__MTIME_NS(*st) : 0;
}

/* Records dir/name as it is now. */
static mml_status mml__src_stat(mml__srcs *l, const char *dir, const char *name) {
    char path[MML__PATH_MAX];
    struct stat st;
    mml_status rc = mml__join(path, dir, name);
    if (rc) return rc;
    if (stat(path, &st) != 0) return mml__fail(MML_ERR_IO, "%s: %s", path, strerror(errno));
    mml__srcs_add(l, name, &st);
    return l->failed ? mml__fail(MML_ERR_NOMEM, "out of memory") : MML_OK;
}

/* Every file of d's prepared set in dir, as it is now. */
static mml_status mml__srcs_of_set(const mml_data_t *d, const char *dir, mml__srcs *l) {
    char sub[64];
    int32_t k;
    int s;
    mml_status st = mml__src_stat(l, dir, "meta.txt");
    for (k = 0; k < d->n_domains && !st; k++)
        for (s = 0; s < 3 && !st; s++) {
            snprintf(sub, sizeof sub, "domain_%d/%s.csv", k, mml__split_names[s]);
            st = mml__src_stat(l, dir, sub);
        }
    if (!st && d->pretrained_dim > 0) st = mml__src_stat(l, dir, "user_emb.bin");
    if (!st && d->pretrained_dim > 0) st = mml__src_stat(l, dir, "item_emb.bin");
    return st;
}

/* An entry read from a cache: a relative name inside the folder, sane numbers. */
static int mml__src_valid(const mml__src *e) {
    const char *nul = (const char *)memchr(e->name, 0, sizeof e->name);
    size_t n = nul ? (size_t)(nul - e->name) : 0, i;
    if (n == 0 || e->name[0] == '/' || strstr(e->name, "..")) return 0;
    for (i = 0; i < n; i++)
        if ((unsigned char)e->name[i] < 32 || (unsigned char)e->name[i] > 126) return 0;
    return e->size >= -1 && e->mtime_ns >= 0 && e->mtime_ns < 1000000000;
}

static void mml__src_get(const unsigned char *p, mml__src *e) {
    memcpy(e->name, p, 40);
    memcpy(&e->size, p + 40, 8);
    memcpy(&e->mtime_s, p + 48, 8);
    memcpy(&e->mtime_ns, p + 56, 8);
}

/* 1 if dir/e->name is what e recorded. */
static int mml__src_same(const char *dir, const mml__src *e) {
    char path[MML__PATH_MAX];
    struct stat st;
    int n = snprintf(path, sizeof path, "%s/%s", dir, e->name);
    if (n < 0 || n >= (int)sizeof path) return 0;
    if (stat(path, &st) != 0) return e->size < 0 && (errno == ENOENT || errno == ENOTDIR);
    return e->size >= 0 && S_ISREG(st.st_mode) && (int64_t)st.st_size == e->size &&
           MML__MTIME_S(st) == e->mtime_s && MML__MTIME_NS(st) == e->mtime_ns;
}

/* ---- CSV layout: reader ---- */

/* Parsed meta.txt; -1 = not given. counts: [3][n_domains]. With a schema
 * (format moemlora-data-2): the fields, read by rd. */
typedef struct mml__meta {
    int64_t n_users, n_items, n_domains, dim;
    int64_t *counts;
    int cols;
    mml_schema_t *schema;
    mml__schema_rd *rd;
} mml__meta;

static int mml__key_is(const char *s, const char *e, const char *key) {
    size_t n = strlen(key);
    return (size_t)(e - s) == n && memcmp(s, key, n) == 0;
}

typedef struct mml__metap {
    mml__meta *m;
    mml_data_t *names;
    int have_format;
} mml__metap;

/* meta.txt's first pass: the format and the sizes. */
static mml_status mml__meta_sizes_kv(void *ctx, const char *k, const char *v) {
    mml__metap *mp = (mml__metap *)ctx;
    mml__meta *m = mp->m;
    int64_t *slot = NULL, x;
    char q[64];
    if (!strcmp(k, "format")) {
        m->cols = !strcmp(v, MML__META_FORMAT_COLS);
        if (strcmp(v, MML__META_FORMAT) && !m->cols)
            return mml__fail(MML_ERR_FORMAT, "unsupported format %s (expected %s or %s)",
                             mml__q(v, v + strlen(v), q, sizeof q), MML__META_FORMAT, MML__META_FORMAT_COLS);
        if (mp->have_format) return mml__fail(MML_ERR_FORMAT, "format given twice");
        mp->have_format = 1;
        return MML_OK;
    }
    if (mml__schema_key(k)) {
        if (!m->rd) {
            m->rd = (mml__schema_rd *)mml__alloc(sizeof *m->rd);
            m->schema = (mml_schema_t *)mml__alloc(sizeof *m->schema);
            if (!m->rd || !m->schema) return mml__fail(MML_ERR_NOMEM, "out of memory");
            mml__schema_rd_init(m->rd, m->schema);
        }
        return mml__schema_kv(m->rd, k, v);
    }
    if (!strcmp(k, "n_users")) slot = &m->n_users;
    else if (!strcmp(k, "n_items")) slot = &m->n_items;
    else if (!strcmp(k, "n_domains")) slot = &m->n_domains;
    else if (!strcmp(k, "pretrained_dim")) slot = &m->dim;
    if (!slot) return MML_OK; /* unknown keys: forward compatibility */
    if (!mml__to_i64(v, v + strlen(v), &x) || x < 0 || x > INT32_MAX || (x == 0 && slot != &m->dim) ||
        (slot == &m->n_domains && x > 1000000) || (slot == &m->dim && x > 65536))
        return mml__fail(MML_ERR_FORMAT, "bad value %s for %s", mml__q(v, v + strlen(v), q, sizeof q), k);
    if (*slot >= 0) return mml__fail(MML_ERR_FORMAT, "%s given twice", k);
    *slot = x;
    return MML_OK;
}

/* "count.<split>.<k>=<rows>" */
static mml_status mml__meta_count(mml__meta *m, const char *k, const char *v) {
    const char *fs[4], *fe[4];
    char q[64], qv[64];
    int nf = mml__fields(k, k + strlen(k), ".", 1, fs, fe, 4), sp = -1, j;
    int64_t dom, rows;
    for (j = 0; j < 3 && nf == 3; j++)
        if (mml__key_is(fs[1], fe[1], mml__split_names[j])) sp = j;
    if (nf != 3 || sp < 0 || !mml__to_i64(fs[2], fe[2], &dom) || dom < 0 || dom >= m->n_domains ||
        !mml__to_i64(v, v + strlen(v), &rows) || rows < 0)
        return mml__fail(MML_ERR_FORMAT, "bad count line %s=%s", mml__q(k, k + strlen(k), q, sizeof q),
                         mml__q(v, v + strlen(v), qv, sizeof qv));
    m->counts[sp * m->n_domains + dom] = rows;
    return MML_OK;
}

/* meta.txt's second pass, once n_domains is known: names and counts. */
static mml_status mml__meta_domains_kv(void *ctx, const char *k, const char *v) {
    mml__metap *mp = (mml__metap *)ctx;
    int64_t dom;
    if (!strncmp(k, "count.", 6) && k[6]) return mml__meta_count(mp->m, k, v);
    if (strncmp(k, "domain.", 7) || !k[7]) return MML_OK;
    if (!mml__to_i64(k + 7, k + strlen(k), &dom) || dom < 0 || dom >= mp->m->n_domains)
        return mml__fail(MML_ERR_FORMAT, "%s: domain index out of range [0,%lld)", k, (long long)mp->m->n_domains);
    if (mp->names->domain_names && mp->names->domain_names[dom])
        return mml__fail(MML_ERR_FORMAT, "%s given twice", k);
    return mml__set_name(mp->names, (int32_t)dom, v, strlen(v));
}

static void mml__meta_free(mml__meta *m) {
    mml__free(m->counts);
    mml__free(m->schema);
    mml__free(m->rd);
    m->counts = NULL;
    m->schema = NULL;
    m->rd = NULL;
}

/* Two passes over meta.txt: scalars first (so domain.<k> may come in any
 * order), then names and counts. Unknown keys are ignored (forward compat). */
static mml_status mml__parse_meta(const char *buf, size_t n, const char *fname, mml__meta *m,
                                  mml_data_t *names_out) {
    mml__metap mp = {m, names_out, 0};
    int64_t i;
    mml_status st;
    memset(m, 0, sizeof *m);
    m->n_users = m->n_items = m->n_domains = m->dim = -1;
    if ((st = mml__kv_each(buf, n, fname, mml__meta_sizes_kv, &mp)) != MML_OK) return st;
    if (!mp.have_format) return mml__fail(MML_ERR_FORMAT, "%s: missing format=%s line", fname, MML__META_FORMAT);
    if (m->n_domains < 1) return mml__fail(MML_ERR_FORMAT, "%s: missing n_domains", fname);
    if (m->rd && !m->cols)
        return mml__fail(MML_ERR_FORMAT, "%s: n_fields, domain_field and field.* need format=%s", fname, MML__META_FORMAT_COLS);
    if (m->cols) {
        mml_schema_t *sc = m->schema;
        if (!m->rd) return mml__fail(MML_ERR_FORMAT, "%s: format %s needs n_fields", fname, MML__META_FORMAT_COLS);
        if ((st = mml__schema_end(m->rd)) != MML_OK) return mml__fail(st, "%s: %s", fname, mml_last_error());
        if (sc->field[sc->domain].vocab != m->n_domains)
            return mml__fail(MML_ERR_FORMAT, "%s: n_domains=%lld but the domain field %s has vocab %d", fname,
                             (long long)m->n_domains, sc->field[sc->domain].name, sc->field[sc->domain].vocab);
        if (mml_schema_find(sc, "label") >= 0)
            return mml__fail(MML_ERR_FORMAT, "%s: a field is named label (the label's column)", fname);
    }
    m->counts = (int64_t *)mml__alloc((size_t)m->n_domains * 3 * sizeof(int64_t));
    if (!m->counts) return mml__fail(MML_ERR_NOMEM, "%s: out of memory", fname);
    for (i = 0; i < m->n_domains * 3; i++) m->counts[i] = -1;
    names_out->n_domains = (int32_t)m->n_domains;
    return mml__kv_each(buf, n, fname, mml__meta_domains_kv, &mp);
}

/* Parses one domain_<k>/<split>.csv buffer into rows starting at *n_rows
 * (capacity checked by the caller with mml__count_lines). n_users / n_items
 * < 0: unknown, track the maximum id instead. */
static mml_status mml__parse_split_csv(const char *buf, size_t n, const char *fname, int32_t domain,
                                       int64_t n_users, int64_t n_items, mml_split_t *sp,
                                       int64_t *max_uid, int64_t *max_pid) {
    static const char *const col[4] = {"uid", "pid", "domain", "label"};
    mml__lines L;
    const char *s, *e, *fs[5], *fe[5];
    char q[64];
    int64_t r = sp->n;
    if (n == 0) return mml__fail(MML_ERR_FORMAT, "%s:1: empty file (expected header uid,pid,domain,label)", fname);
    mml__lines_init(&L, buf, n, fname);
    if (!mml__next_line(&L, &s, &e))
        return mml__fail(MML_ERR_FORMAT, "%s:1: empty file (expected header uid,pid,domain,label)", fname);
    if (!mml__key_is(s, e, "uid,pid,domain,label"))
        return mml__fail(MML_ERR_FORMAT, "%s:1: missing header: expected \"uid,pid,domain,label\", got %s", fname,
                         mml__q(s, e, q, sizeof q));
    while (mml__next_line(&L, &s, &e)) {
        int64_t v[4];
        int nf, j;
        if (s == e)
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: empty line", fname, L.line);
        if (mml__key_is(s, e, "uid,pid,domain,label"))
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: header repeated", fname, L.line);
        nf = mml__fields(s, e, ",", 1, fs, fe, 5);
        if (nf != 4)
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: %s: expected 4 columns uid,pid,domain,label, got %d", fname,
                             L.line, nf < 4 && L.last_unterminated ? "truncated last line" : (nf < 4 ? "missing columns" : "extra columns"), nf);
        for (j = 0; j < 4; j++) {
            if (j == 3 && !(fe[3] - fs[3] == 1 && (fs[3][0] == '0' || fs[3][0] == '1')))
                return mml__fail(MML_ERR_FORMAT, "%s:%lld: label must be 0 or 1, got %s", fname, L.line,
                                 mml__q(fs[3], fe[3], q, sizeof q));
            if (!mml__to_i64(fs[j], fe[j], &v[j])) {
                if (!mml__all_digits(fs[j], fe[j]))
                    return mml__fail(MML_ERR_FORMAT, "%s:%lld: %s is not an integer: %s", fname, L.line, col[j],
                                     mml__q(fs[j], fe[j], q, sizeof q));
                v[j] = INT64_MAX; /* more digits than any id: out of range below */
            }
            if (v[j] < 0)
                return mml__fail(MML_ERR_FORMAT, "%s:%lld: %s must be >= 0, got %s", fname, L.line, col[j],
                                 mml__q(fs[j], fe[j], q, sizeof q));
        }
        for (j = 0; j < 2; j++) {
            /* without meta.txt the largest id + 1 becomes a vocab size */
            int64_t known = j ? n_items : n_users, max = known >= 0 ? known - 1 : (int64_t)INT32_MAX - 1;
            if (v[j] <= max) continue;
            if (known >= 0)
                return mml__fail(MML_ERR_FORMAT, "%s:%lld: %s %s is out of range (%s=%lld)", fname, L.line, col[j],
                                 mml__num(fs[j], fe[j], q, sizeof q), j ? "n_items" : "n_users", (long long)known);
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: %s %s is out of range (at most %lld)", fname, L.line, col[j],
                             mml__num(fs[j], fe[j], q, sizeof q), (long long)max);
        }
        if (v[2] != domain)
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: domain column is %s but the file is in domain_%d/", fname,
                             L.line, mml__num(fs[2], fe[2], q, sizeof q), domain);
        if (v[0] > *max_uid) *max_uid = v[0];
        if (v[1] > *max_pid) *max_pid = v[1];
        sp->uid[r] = (int32_t)v[0];
        sp->pid[r] = (int32_t)v[1];
        sp->dom[r] = domain;
        sp->label[r] = (float)v[3];
        r++;
    }
    sp->n = r;
    return MML_OK;
}

/* One id of field fd in [s, e): in 0..vocab-1, or vocab in val and test
 * (the out-of-vocabulary id). 0, or an error naming file:line. */
static mml_status mml__parse_id(const char *s, const char *e, const mml_field_t *fd, int split, const char *fname,
                                long long line, int32_t *out) {
    char q[64];
    int64_t v = 0, hi = split == MML_TRAIN ? fd->vocab - 1 : fd->vocab;
    int ok = mml__to_i64(s, e, &v), digits = mml__all_digits(s, e);
    if (!ok && !digits)
        return mml__fail(MML_ERR_FORMAT, "%s:%lld: field %s: id is not an integer: %s", fname, line, fd->name,
                         mml__q(s, e, q, sizeof q));
    if (!ok || !digits || v > hi)
        return mml__fail(MML_ERR_FORMAT, "%s:%lld: field %s: id %s out of range (vocab %d%s)", fname, line, fd->name,
                         mml__num(s, e, q, sizeof q), fd->vocab, split == MML_TRAIN ? "" : "; vocab itself is the OOV id");
    *out = (int32_t)v;
    return MML_OK;
}

/* One cell of field f in [s, e) into row r of sp. */
static mml_status mml__parse_cell(const char *s, const char *e, const mml_schema_t *sc, int32_t f, int split,
                                  const char *fname, long long line, mml_split_t *sp, int64_t r) {
    const mml_field_t *fd = &sc->field[f];
    char q[64];
    if (fd->kind == MML_FIELD_CATEGORICAL) return mml__parse_id(s, e, fd, split, fname, line, &sp->ids[f][r]);
    if (fd->kind == MML_FIELD_NUMERIC) {
        char num[64], *end;
        snprintf(num, sizeof num, "%.*s", (int)(e - s < 63 ? e - s : 63), s);
        float x = strtof(num, &end);
        if (s == e || e - s > 63 || *end || num[0] == ' ' || !(x - x == 0.0f))
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: field %s: not a finite number: %s", fname, line, fd->name,
                             mml__q(s, e, q, sizeof q));
        sp->values[f][r] = x;
        return MML_OK;
    }
    int32_t *list = sp->ids[f] + r * fd->max_len;
    int n = 0;
    for (int q2 = 0; q2 < fd->max_len; q2++) list[q2] = -1;
    while (s < e) { /* "a|b|c"; "" is the empty list */
        const char *bar = (const char *)memchr(s, '|', (size_t)(e - s)), *end = bar ? bar : e;
        if (n == fd->max_len)
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: field %s: more than max_len=%d ids", fname, line, fd->name, fd->max_len);
        mml_status st = mml__parse_id(s, end, fd, split, fname, line, &list[n++]);
        if (st) return st;
        s = bar ? bar + 1 : e;
        if (bar && s == e) return mml__fail(MML_ERR_FORMAT, "%s:%lld: field %s: list ends in '|'", fname, line, fd->name);
    }
    return MML_OK;
}

/* domain_<k>/<split>.csv of a data set with a schema (the header: the
 * schema's field names in order, then label) into rows starting at sp->n. */
static mml_status mml__parse_split_cols(const char *buf, size_t n, const char *fname, int32_t domain, int split,
                                        const mml_schema_t *sc, const char *header, mml_split_t *sp) {
    mml__lines L;
    const char *s, *e, *fs[MML_MAX_FIELDS + 2], *fe[MML_MAX_FIELDS + 2];
    char q[64];
    int nc = sc->n_fields + 1;
    int64_t r = sp->n;
    mml__lines_init(&L, buf, n, fname);
    s = e = buf;
    if (!mml__next_line(&L, &s, &e) || !mml__key_is(s, e, header))
        return mml__fail(MML_ERR_FORMAT, "%s:1: missing header: expected \"%s\", got %s", fname, header,
                         n ? mml__q(s, e, q, sizeof q) : "an empty file");
    while (mml__next_line(&L, &s, &e)) {
        if (s == e) return mml__fail(MML_ERR_FORMAT, "%s:%lld: empty line", fname, L.line);
        int nf = mml__fields(s, e, ",", 1, fs, fe, nc + 1);
        if (nf != nc)
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: %s: expected %d columns, got %d", fname, L.line,
                             nf < nc && L.last_unterminated ? "truncated last line" : nf < nc ? "missing columns" : "extra columns",
                             nc, nf);
        for (int32_t f = 0; f < sc->n_fields; f++) {
            mml_status st = mml__parse_cell(fs[f], fe[f], sc, f, split, fname, L.line, sp, r);
            if (st) return st;
        }
        if (sp->ids[sc->domain][r] != domain)
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: domain column is %s but the file is in domain_%d/", fname, L.line,
                             mml__num(fs[sc->domain], fe[sc->domain], q, sizeof q), domain);
        if (!(fe[nc - 1] - fs[nc - 1] == 1 && (fs[nc - 1][0] == '0' || fs[nc - 1][0] == '1')))
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: label must be 0 or 1, got %s", fname, L.line,
                             mml__q(fs[nc - 1], fe[nc - 1], q, sizeof q));
        sp->dom[r] = domain;
        sp->label[r] = (float)(fs[nc - 1][0] - '0');
        r++;
    }
    sp->n = r;
    return MML_OK;
}

/* Reads domain_<k>/<split>.csv for every k into one split. */
static mml_status mml__load_split(const char *dir, int s, const mml__meta *m, mml_split_t *sp,
                                  int64_t *max_uid, int64_t *max_pid, mml__srcs *rec) {
    int32_t nd = (int32_t)m->n_domains, k;
    mml__buf *bufs = (mml__buf *)mml__alloc((size_t)nd * sizeof(mml__buf));
    char path[MML__PATH_MAX], sub[64], *header = NULL;
    struct stat fst;
    int64_t cap = 0;
    mml_status st = MML_OK;
    if (!bufs) return mml__fail(MML_ERR_NOMEM, "out of memory");
    for (k = 0; k < nd && !st; k++) {
        snprintf(sub, sizeof sub, "domain_%d/%s.csv", k, mml__split_names[s]);
        if ((st = mml__join(path, dir, sub)) != MML_OK) break;
        if ((st = mml__read_file_st(path, NULL, &bufs[k], &fst)) != MML_OK) break;
        mml__srcs_add(rec, sub, &fst);
        cap += mml__count_lines(bufs[k].p, bufs[k].n);
    }
    if (!st) st = m->schema ? mml__split_alloc_cols(sp, cap, nd, m->schema) : mml__split_alloc(sp, cap, nd);
    if (!st && m->schema && !(header = (char *)mml__alloc(mml__row_bytes(m->schema))))
        st = mml__fail(MML_ERR_NOMEM, "out of memory");
    if (header) mml__cols_header(m->schema, header);
    if (!st) sp->n = 0;
    for (k = 0; k < nd && !st; k++) {
        int64_t before = sp->n;
        snprintf(sub, sizeof sub, "domain_%d/%s.csv", k, mml__split_names[s]);
        mml__join(path, dir, sub);
        st = m->schema ? mml__parse_split_cols(bufs[k].p, bufs[k].n, path, k, s, m->schema, header, sp)
                       : mml__parse_split_csv(bufs[k].p, bufs[k].n, path, k, m->n_users, m->n_items, sp, max_uid, max_pid);
        sp->dom_start[k + 1] = sp->n;
        if (!st && m->counts && m->counts[s * nd + k] >= 0 && m->counts[s * nd + k] != sp->n - before)
            st = mml__fail(MML_ERR_FORMAT, "%s: has %lld rows but meta.txt says count.%s.%d=%lld", path,
                           (long long)(sp->n - before), mml__split_names[s], k, (long long)m->counts[s * nd + k]);
    }
    for (k = 0; k < nd; k++) mml__buf_free(&bufs[k]);
    mml__free(bufs);
    mml__free(header);
    return st;
}

/* Reads an embedding file written by mml__write_emb, checking its shape. */
static mml_status mml__read_emb(const char *dir, const char *name, int64_t rows, int32_t dim, float **out,
                                mml__srcs *rec) {
    char path[MML__PATH_MAX];
    mml__buf b;
    struct stat fst;
    uint32_t bom, d;
    uint64_t r, bytes;
    mml_status st;
    *out = NULL;
    if ((st = mml__join(path, dir, name)) != MML_OK) return st;
    if ((st = mml__read_file_st(path, NULL, &b, &fst)) != MML_OK) return st;
    mml__srcs_add(rec, name, &fst);
    if (b.n < 24 || memcmp(b.p, "MMLEMB01", 8) != 0) {
        mml__buf_free(&b);
        return mml__fail(MML_ERR_FORMAT, "%s: not a moemlora embedding file", path);
    }
    memcpy(&bom, b.p + 8, 4);
    memcpy(&d, b.p + 12, 4);
    memcpy(&r, b.p + 16, 8);
    if (bom != MML__BOM || d != (uint32_t)dim || r != (uint64_t)rows ||
        !mml__mul_ok(r, (uint64_t)d * 4, (uint64_t)b.n, &bytes) || bytes + 24 != b.n) {
        mml__buf_free(&b);
        return mml__fail(MML_ERR_FORMAT, "%s: shape/byte order mismatch (file %llu x %u, expected %lld x %d, %zu bytes)",
                         path, (unsigned long long)r, d, (long long)rows, dim, b.n);
    }
    *out = (float *)mml__alloc((size_t)bytes + 1);
    if (!*out) {
        mml__buf_free(&b);
        return mml__fail(MML_ERR_NOMEM, "%s: out of memory", path);
    }
    memcpy(*out, b.p + 24, (size_t)bytes);
    mml__buf_free(&b);
    return MML_OK;
}

/* The CSV layout; rec (may be NULL) gets every file read, as it was read. */
static mml_status mml__load_csv(const char *dir, mml_data_t *out, mml__srcs *rec) {
    char path[MML__PATH_MAX], sub[64];
    mml__meta m;
    mml__buf mb;
    struct stat fst;
    int64_t max_uid = -1, max_pid = -1;
    int s;
    int32_t k;
    mml_status st;
    if (!out) return mml__fail(MML_ERR_ARG, "mml_data_load_csv: out is NULL");
    memset(out, 0, sizeof *out);
    memset(&m, 0, sizeof m);
    if (!dir) return mml__fail(MML_ERR_ARG, "mml_data_load_csv: dir is NULL");
    if ((st = mml__join(path, dir, "meta.txt")) != MML_OK) return st;
    if (mml__is_file(path)) {
        if ((st = mml__read_file_st(path, NULL, &mb, &fst)) != MML_OK) return st;
        mml__srcs_add(rec, "meta.txt", &fst);
        st = mml__parse_meta(mb.p, mb.n, path, &m, out);
        mml__buf_free(&mb);
        if (st) goto fail;
    } else {
        /* The paper repo's layout: domain_0, domain_1, ... and nothing else. */
        m.n_users = m.n_items = m.dim = -1;
        for (m.n_domains = 0; m.n_domains < 1000000; m.n_domains++) {
            snprintf(sub, sizeof sub, "domain_%lld", (long long)m.n_domains);
            if ((st = mml__join(path, dir, sub)) != MML_OK) return st;
            if (!mml__is_dir(path)) break;
        }
        if (m.n_domains == 0)
            return mml__fail(MML_ERR_IO, "%s: neither meta.txt nor domain_0/ found", dir);
        out->n_domains = (int32_t)m.n_domains;
        mml__srcs_add(rec, "meta.txt", NULL);
        mml__srcs_add(rec, sub, NULL);
    }
    out->schema = m.schema; /* the data's from here on: freed with it */
    for (s = 0; s < 3; s++)
        if ((st = mml__load_split(dir, s, &m, &out->split[s], &max_uid, &max_pid, rec)) != MML_OK) goto fail;
    out->n_users = (int32_t)(out->schema ? 0 : m.n_users >= 0 ? m.n_users : max_uid + 1);
    out->n_items = (int32_t)(out->schema ? 0 : m.n_items >= 0 ? m.n_items : max_pid + 1);
    out->pretrained_dim = (int32_t)(m.dim > 0 && !out->schema ? m.dim : 0);
    if (!out->schema && (out->n_users < 1 || out->n_items < 1)) {
        st = mml__fail(MML_ERR_FORMAT, "%s: no rows and no n_users/n_items in meta.txt", dir);
        goto fail;
    }
    for (k = 0; k < out->n_domains; k++) {
        if (!out->domain_names || !out->domain_names[k]) {
            snprintf(sub, sizeof sub, "domain_%d", k);
            if ((st = mml__set_name(out, k, sub, strlen(sub))) != MML_OK) goto fail;
        }
    }
    if (out->pretrained_dim > 0) {
        st = mml__read_emb(dir, "user_emb.bin", out->n_users, out->pretrained_dim, &out->user_emb, rec);
        if (!st) st = mml__read_emb(dir, "item_emb.bin", out->n_items, out->pretrained_dim, &out->item_emb, rec);
        if (st) goto fail;
    }
    m.schema = NULL;
    mml__meta_free(&m);
    return MML_OK;
fail:
    if (out->schema == m.schema) m.schema = NULL;
    mml__meta_free(&m);
    mml_data_free(out);
    return st;
}

mml_status mml_data_load_csv(const char *dir, mml_data_t *out) { return mml__load_csv(dir, out, NULL); }

/* ---- binary cache ---- */

/* Layout (little-endian, byte-order marker checked):
 *   0  "MMLCACHE"      8  u32 version 3  12 u32 marker 0x01020304
 *   16 i32 n_users, n_items, n_domains, pretrained_dim
 *   32 i64 n[3]        56 u64 names_bytes                  (64-byte header)
 *   64 u64 n_sources, then n_sources entries of MML__SRC_BYTES: the files
 *      the cache was built from (none: written by mml_data_save_cache)
 *   names: per domain u32 length + bytes
 *   per split: i64 dom_start[n_domains+1], i32 uid[n], i32 pid[n], i32 dom[n],
 *              f32 label[n]
 *   f32 user_emb[n_users*dim], f32 item_emb[n_items*dim]
 *   u32 CRC32C (mml_crc32c) of everything before it
 * With a schema (n_users = n_items = 0 in the header says so):
 *   after the names, the schema: u32 n_fields, i32 domain, then per field
 *      MML__FIELD_REC bytes (mml__field_put);
 *   per split: i64 dom_start[n_domains+1], i32 dom[n], f32 label[n], then
 *      per field its column: i32 ids[n] or [n*max_len], or f32 values[n];
 *   no embeddings. */

static mml_status mml__cache_put_sources(mml__afile *w, uint32_t *crc, const mml__srcs *src) {
    uint64_t n = src ? (uint64_t)src->n : 0, i;
    mml_status st = mml__afile_put(w, crc, &n, 8);
    for (i = 0; i < n && !st; i++) {
        const mml__src *e = &src->v[i];
        unsigned char b[MML__SRC_BYTES];
        memcpy(b, e->name, 40);
        memcpy(b + 40, &e->size, 8);
        memcpy(b + 48, &e->mtime_s, 8);
        memcpy(b + 56, &e->mtime_ns, 8);
        st = mml__afile_put(w, crc, b, sizeof b);
    }
    return st;
}

/* ---- binary cache: the schema's part ---- */

/* A field on disk: name[48] (NUL-padded), i32 kind, vocab, dim, max_len,
 * pooling, hash_buckets, frozen, norm, f32 shift, scale. */
#define MML__FIELD_REC 88

static void mml__field_put(unsigned char *b, const mml_field_t *fd) {
    int32_t v[8] = {(int32_t)fd->kind, fd->vocab, fd->dim, fd->max_len, (int32_t)fd->pooling, fd->hash_buckets,
                    fd->frozen, (int32_t)fd->norm};
    const char *nul = (const char *)memchr(fd->name, 0, MML_FIELD_NAME_MAX);
    memset(b, 0, MML_FIELD_NAME_MAX);
    memcpy(b, fd->name, nul ? (size_t)(nul - fd->name) : MML_FIELD_NAME_MAX - 1);
    memcpy(b + 48, v, 32);
    memcpy(b + 80, &fd->shift, 4);
    memcpy(b + 84, &fd->scale, 4);
}

static void mml__field_get(const unsigned char *b, mml_field_t *fd) {
    int32_t v[8];
    memcpy(fd->name, b, MML_FIELD_NAME_MAX);
    fd->name[MML_FIELD_NAME_MAX - 1] = 0;
    memcpy(v, b + 48, 32);
    fd->kind = (mml_field_kind)v[0];
    fd->vocab = v[1];
    fd->dim = v[2];
    fd->max_len = v[3];
    fd->pooling = (mml_pooling)v[4];
    fd->hash_buckets = v[5];
    fd->frozen = v[6];
    fd->norm = (mml_norm)v[7];
    memcpy(&fd->shift, b + 80, 4);
    memcpy(&fd->scale, b + 84, 4);
}

static mml_status mml__cache_put_schema(mml__afile *w, uint32_t *crc, const mml_schema_t *sc) {
    unsigned char b[MML__FIELD_REC];
    int32_t head[2] = {sc->n_fields, sc->domain};
    mml_status st = mml__afile_put(w, crc, head, 8);
    for (int32_t f = 0; f < sc->n_fields && !st; f++) {
        mml__field_put(b, &sc->field[f]);
        st = mml__afile_put(w, crc, b, sizeof b);
    }
    return st;
}

/* A split's rows in a schema's columns: dom_start, dom, label, the fields. */
static mml_status mml__cache_put_cols(mml__afile *w, uint32_t *crc, const mml_schema_t *sc, const mml_split_t *sp,
                                      int32_t n_domains) {
    size_t n = (size_t)sp->n;
    mml_status st = mml__afile_put(w, crc, sp->dom_start, ((size_t)n_domains + 1) * 8);
    if (!st && n) st = mml__afile_put(w, crc, sp->dom, n * 4);
    if (!st && n) st = mml__afile_put(w, crc, sp->label, n * 4);
    for (int32_t f = 0; f < sc->n_fields && !st && n; f++) {
        const mml_field_t *fd = &sc->field[f];
        st = fd->kind == MML_FIELD_NUMERIC ? mml__afile_put(w, crc, sp->values[f], n * 4)
                                           : mml__afile_put(w, crc, sp->ids[f], n * (size_t)mml__col_width(fd) * 4);
    }
    return st;
}

/* The schema block at buf + at into *sc, its size into *bytes and the bytes
 * of one row of a split into *row; 0 if it does not fit in len (its content
 * is checked with the data). */
static int mml__cache_schema(const unsigned char *buf, size_t len, uint64_t at, mml_schema_t *sc, uint64_t *bytes,
                             uint64_t *row) {
    int32_t head[2];
    if (at > len || len - at < 8) return 0;
    memcpy(head, buf + at, 8);
    if (head[0] < 1 || head[0] > MML_MAX_FIELDS || (uint64_t)head[0] * MML__FIELD_REC > len - at - 8) return 0;
    memset(sc, 0, sizeof *sc);
    sc->n_fields = head[0];
    sc->domain = head[1];
    *row = 8;
    for (int32_t f = 0; f < sc->n_fields; f++) {
        mml__field_get(buf + at + 8 + (uint64_t)f * MML__FIELD_REC, &sc->field[f]);
        if (sc->field[f].kind == MML_FIELD_MULTI_HOT && (sc->field[f].max_len < 1 || sc->field[f].max_len > 4096)) return 0;
        *row += 4 * (uint64_t)mml__col_width(&sc->field[f]);
    }
    *bytes = 8 + (uint64_t)sc->n_fields * MML__FIELD_REC;
    return 1;
}

/* Rows of a split in a schema's columns from buf at *pos (sizes checked). */
static void mml__cache_split_cols(const unsigned char *buf, uint64_t *pos, const mml_schema_t *sc, mml_split_t *sp,
                                  int32_t n_domains) {
    size_t n = (size_t)sp->n;
    memcpy(sp->dom_start, buf + *pos, ((size_t)n_domains + 1) * 8);
    *pos += ((uint64_t)n_domains + 1) * 8;
    memcpy(sp->dom, buf + *pos, n * 4);
    *pos += n * 4;
    memcpy(sp->label, buf + *pos, n * 4);
    *pos += n * 4;
    for (int32_t f = 0; f < sc->n_fields; f++) {
        const mml_field_t *fd = &sc->field[f];
        size_t b = n * (size_t)mml__col_width(fd) * 4;
        memcpy(fd->kind == MML_FIELD_NUMERIC ? (void *)sp->values[f] : (void *)sp->ids[f], buf + *pos, b);
        *pos += b;
    }
}

/* The cache of d at path, recording src (NULL: built from nothing known). */
static mml_status mml__save_cache(const mml_data_t *d, const char *path, const mml__srcs *src) {
    mml__afile w;
    unsigned char hdr[64];
    uint32_t u, crc = 0;
    int32_t i32[4], k;
    int64_t n3[3];
    uint64_t names_bytes = 0;
    int s;
    mml_status st;
    if (!d || !path) return mml__fail(MML_ERR_ARG, "mml_data_save_cache: NULL argument");
    if (!mml__host_le()) return mml__fail(MML_ERR_ARG, "%s: the cache format needs a little-endian host", path);
    if ((st = mml__data_check(d, "mml_data_save_cache")) != MML_OK) return mml__recode(MML_ERR_ARG);
    for (k = 0; k < d->n_domains; k++)
        names_bytes += 4 + (d->domain_names && d->domain_names[k] ? strlen(d->domain_names[k]) : 0);
    memset(hdr, 0, sizeof hdr);
    memcpy(hdr, "MMLCACHE", 8);
    u = MML__CACHE_VERSION;
    memcpy(hdr + 8, &u, 4);
    u = MML__BOM;
    memcpy(hdr + 12, &u, 4);
    i32[0] = d->schema ? 0 : d->n_users;
    i32[1] = d->schema ? 0 : d->n_items;
    i32[2] = d->n_domains;
    i32[3] = d->pretrained_dim;
    memcpy(hdr + 16, i32, 16);
    for (s = 0; s < 3; s++) n3[s] = d->split[s].n;
    memcpy(hdr + 32, n3, 24);
    memcpy(hdr + 56, &names_bytes, 8);
    if ((st = mml__afile_open(&w, path)) != MML_OK) return st;
    st = mml__afile_put(&w, &crc, hdr, sizeof hdr);
    if (!st) st = mml__cache_put_sources(&w, &crc, src);
    for (k = 0; k < d->n_domains && !st; k++) {
        const char *nm = d->domain_names && d->domain_names[k] ? d->domain_names[k] : "";
        u = (uint32_t)strlen(nm);
        st = mml__afile_put(&w, &crc, &u, 4);
        if (!st) st = mml__afile_put(&w, &crc, nm, u);
    }
    if (!st && d->schema) st = mml__cache_put_schema(&w, &crc, d->schema);
    for (s = 0; s < 3 && !st && d->schema; s++) st = mml__cache_put_cols(&w, &crc, d->schema, &d->split[s], d->n_domains);
    for (s = 0; s < 3 && !st && !d->schema; s++) {
        const mml_split_t *sp = &d->split[s];
        size_t n = (size_t)sp->n;
        st = mml__afile_put(&w, &crc, sp->dom_start, ((size_t)d->n_domains + 1) * 8);
        if (!st && n) st = mml__afile_put(&w, &crc, sp->uid, n * 4);
        if (!st && n) st = mml__afile_put(&w, &crc, sp->pid, n * 4);
        if (!st && n) st = mml__afile_put(&w, &crc, sp->dom, n * 4);
        if (!st && n) st = mml__afile_put(&w, &crc, sp->label, n * 4);
    }
    if (!st && d->pretrained_dim > 0) {
        st = mml__afile_put(&w, &crc, d->user_emb, (size_t)d->n_users * (size_t)d->pretrained_dim * 4);
        if (!st) st = mml__afile_put(&w, &crc, d->item_emb, (size_t)d->n_items * (size_t)d->pretrained_dim * 4);
    }
    if (!st) st = mml__afile_write(&w, &crc, 4);
    if (st) {
        mml__afile_abort(&w);
        return st;
    }
    return mml__afile_commit(&w);
}

mml_status mml_data_save_cache(const mml_data_t *d, const char *path) { return mml__save_cache(d, path, NULL); }

/* The version of a buffer that starts as a cache does, else 0. */
static uint32_t mml__cache_version(const unsigned char *buf, size_t len) {
    uint32_t ver;
    if (len < 12 || memcmp(buf, "MMLCACHE", 8) != 0) return 0;
    memcpy(&ver, buf + 8, 4);
    return ver;
}

/* The source list of a current-version cache: *n entries at *at, bounds
 * checked against len. 0 if it does not fit. */
static int mml__cache_sources(const unsigned char *buf, size_t len, uint64_t *n, uint64_t *at) {
    uint64_t bytes;
    if (len < 72) return 0;
    memcpy(n, buf + 64, 8);
    *at = 72;
    return mml__mul_ok(*n, MML__SRC_BYTES, len - 72, &bytes);
}

/* 1 if dir holds a CSV layout (meta.txt, or the paper's domain_0/). */
static int mml__has_layout(const char *dir) {
    char path[MML__PATH_MAX];
    if (mml__join(path, dir, "meta.txt") == MML_OK && mml__is_file(path)) return 1;
    return mml__join(path, dir, "domain_0") == MML_OK && mml__is_dir(path);
}

/* 1 if every file the cache records is, in dir, what it was when the cache
 * was built. A cache that records none (mml_data_save_cache) cannot vouch
 * for a CSV layout beside it: it is fresh only in a folder without one. */
static int mml__cache_fresh(const unsigned char *buf, size_t len, const char *dir) {
    uint64_t n, at, i;
    mml__src e;
    if (!mml__cache_sources(buf, len, &n, &at)) return 0;
    if (n == 0) return !mml__has_layout(dir);
    for (i = 0; i < n; i++) {
        mml__src_get(buf + at + i * MML__SRC_BYTES, &e);
        if (!mml__src_valid(&e) || !mml__src_same(dir, &e)) return 0;
    }
    return 1;
}

/* Sizes first, each checked against the bytes actually present, then the CRC,
 * then the content invariants; never reads past buf + len. */
static mml_status mml__cache_decode(const unsigned char *buf, size_t len, const char *fname, mml_data_t *out) {
    uint32_t ver, bom, crc_file, crc_now;
    int32_t i32[4], k;
    int64_t n3[3];
    uint64_t names_bytes, need, t, pos, n_src, src_at, names_at, schema_bytes = 0, row = 16;
    mml__src e;
    mml_schema_t sc;
    int s, cols;
    mml_status st = MML_OK;
    memset(out, 0, sizeof *out);
    if (len < 68 || memcmp(buf, "MMLCACHE", 8) != 0)
        return mml__fail(MML_ERR_FORMAT, "%s: not a moemlora cache (bad magic or shorter than a header)", fname);
    memcpy(&ver, buf + 8, 4);
    memcpy(&bom, buf + 12, 4);
    if (bom != MML__BOM)
        return mml__fail(MML_ERR_FORMAT, "%s: byte-order marker 0x%08x: written on a host of other byte order or corrupt",
                         fname, bom);
    if (ver != MML__CACHE_VERSION)
        return mml__fail(MML_ERR_FORMAT, "%s: cache version %u, this library reads %u (mml_data_load rebuilds it when its folder "
                         "holds the CSV layout)",
                         fname, ver, MML__CACHE_VERSION);
    memcpy(i32, buf + 16, 16);
    memcpy(n3, buf + 32, 24);
    memcpy(&names_bytes, buf + 56, 8);
    cols = i32[0] == 0 && i32[1] == 0;
    if ((!cols && (i32[0] < 1 || i32[1] < 1)) || i32[2] < 1 || i32[3] < 0 || i32[3] > 65536 || (cols && i32[3]))
        return mml__fail(MML_ERR_FORMAT, "%s: bad sizes in header (n_users=%d n_items=%d n_domains=%d dim=%d)", fname,
                         i32[0], i32[1], i32[2], i32[3]);
    /* need = total file size implied by the header, overflow-checked against len */
    if (!mml__cache_sources(buf, len, &n_src, &src_at)) goto short_file;
    need = src_at + n_src * MML__SRC_BYTES + 4;
    if (names_bytes > len || need + names_bytes > len) goto short_file;
    need += names_bytes;
    if (cols && !mml__cache_schema(buf, len, need - 4, &sc, &schema_bytes, &row)) goto short_file;
    need += schema_bytes;
    for (s = 0; s < 3; s++) {
        if (n3[s] < 0 || !mml__mul_ok((uint64_t)n3[s], row, len, &t)) goto short_file;
        need += t;
        if (!mml__mul_ok((uint64_t)i32[2] + 1, 8, len, &t)) goto short_file;
        need += t;
        if (need > len) goto short_file;
    }
    if (i32[3] > 0) {
        if (!mml__mul_ok((uint64_t)i32[0] + (uint64_t)i32[1], (uint64_t)i32[3] * 4, len, &t)) goto short_file;
        need += t;
    }
    if (need != len)
        return mml__fail(MML_ERR_FORMAT, "%s: size %zu bytes but the header implies %llu (truncated or corrupt)", fname,
                         len, (unsigned long long)need);
    crc_now = mml_crc32c(0, buf, len - 4);
    memcpy(&crc_file, buf + len - 4, 4);
    if (crc_now != crc_file)
        return mml__fail(MML_ERR_FORMAT, "%s: checksum mismatch (file corrupt)", fname);
    for (t = 0; t < n_src; t++) {
        mml__src_get(buf + src_at + t * MML__SRC_BYTES, &e);
        if (!mml__src_valid(&e))
            return mml__fail(MML_ERR_FORMAT, "%s: corrupt source list (entry %llu)", fname, (unsigned long long)t);
    }
    out->n_users = i32[0];
    out->n_items = i32[1];
    out->n_domains = i32[2];
    out->pretrained_dim = i32[3];
    names_at = src_at + n_src * MML__SRC_BYTES;
    pos = names_at;
    for (k = 0; k < out->n_domains; k++) {
        uint32_t nl;
        if (pos + 4 > names_at + names_bytes) goto bad_names;
        memcpy(&nl, buf + pos, 4);
        pos += 4;
        if (nl > names_at + names_bytes - pos || memchr(buf + pos, 0, nl) || memchr(buf + pos, '\n', nl))
            goto bad_names;
        if ((st = mml__set_name(out, k, (const char *)buf + pos, nl)) != MML_OK) goto fail;
        pos += nl;
    }
    if (pos != names_at + names_bytes) goto bad_names;
    if (cols && !(out->schema = (mml_schema_t *)mml__alloc(sizeof sc))) {
        st = mml__fail(MML_ERR_NOMEM, "%s: out of memory", fname);
        goto fail;
    }
    if (cols) *out->schema = sc;
    pos += schema_bytes;
    for (s = 0; s < 3 && cols; s++) {
        out->split[s].n = n3[s];
        if ((st = mml__split_alloc_cols(&out->split[s], n3[s], out->n_domains, &sc)) != MML_OK) goto fail;
        mml__cache_split_cols(buf, &pos, &sc, &out->split[s], out->n_domains);
    }
    for (s = 0; s < 3 && !cols; s++) {
        mml_split_t *sp = &out->split[s];
        size_t n = (size_t)n3[s];
        if ((st = mml__split_alloc(sp, n3[s], out->n_domains)) != MML_OK) goto fail;
        memcpy(sp->dom_start, buf + pos, ((size_t)out->n_domains + 1) * 8);
        pos += ((uint64_t)out->n_domains + 1) * 8;
        memcpy(sp->uid, buf + pos, n * 4);
        pos += n * 4;
        memcpy(sp->pid, buf + pos, n * 4);
        pos += n * 4;
        memcpy(sp->dom, buf + pos, n * 4);
        pos += n * 4;
        memcpy(sp->label, buf + pos, n * 4);
        pos += n * 4;
    }
    if (out->pretrained_dim > 0) {
        size_t ub = (size_t)out->n_users * (size_t)out->pretrained_dim * 4;
        size_t ib = (size_t)out->n_items * (size_t)out->pretrained_dim * 4;
        out->user_emb = (float *)mml__alloc(ub);
        out->item_emb = (float *)mml__alloc(ib);
        if (!out->user_emb || !out->item_emb) {
            st = mml__fail(MML_ERR_NOMEM, "%s: out of memory", fname);
            goto fail;
        }
        memcpy(out->user_emb, buf + pos, ub);
        memcpy(out->item_emb, buf + pos + ub, ib);
    }
    if ((st = mml__data_check(out, fname)) != MML_OK) goto fail;
    return MML_OK;
short_file:
    return mml__fail(MML_ERR_FORMAT, "%s: truncated or corrupt: sizes in the header exceed the file (%zu bytes)", fname, len);
bad_names:
    st = mml__fail(MML_ERR_FORMAT, "%s: corrupt domain-name block", fname);
fail:
    mml_data_free(out);
    return st;
}

mml_status mml_data_load_cache(const char *path, mml_data_t *out) {
    mml__buf b;
    mml_status st;
    if (!out) return mml__fail(MML_ERR_ARG, "mml_data_load_cache: out is NULL");
    memset(out, 0, sizeof *out);
    if (!path) return mml__fail(MML_ERR_ARG, "mml_data_load_cache: path is NULL");
    if (!mml__host_le()) return mml__fail(MML_ERR_ARG, "%s: the cache format needs a little-endian host", path);
    if ((st = mml__read_file(path, &b)) != MML_OK) return st;
    st = mml__cache_decode((const unsigned char *)b.p, b.n, path, out);
    mml__buf_free(&b);
    return st;
}

/* The CSV layout of dir, and a new cache at path recording what was read.
 * The cache is a convenience: when it cannot be written (a read-only
 * folder) the next load parses the CSVs again, and the load still succeeds. */
static mml_status mml__load_and_recache(const char *dir, const char *path, mml_data_t *out) {
    char keep[sizeof mml__errbuf];
    mml__srcs rec;
    mml_status st;
    memset(&rec, 0, sizeof rec);
    st = mml__load_csv(dir, out, &rec);
    if (!st && !rec.failed) {
        memcpy(keep, mml__errbuf, sizeof keep);
        if (mml__save_cache(out, path, &rec) != MML_OK) memcpy(mml__errbuf, keep, sizeof keep);
    }
    mml__srcs_free(&rec);
    return st;
}

/* A cache is used only while every file it was built from is unchanged;
 * a stale one, or one of an older version, is rebuilt from the CSVs (whose
 * own errors then surface). A corrupt one, a newer version, or an older one
 * with no CSV layout beside it to rebuild it from, is an error. */
mml_status mml_data_load(const char *dir, mml_data_t *out) {
    char path[MML__PATH_MAX];
    mml__buf b;
    uint32_t ver;
    int rebuild;
    mml_status st;
    if (!out) return mml__fail(MML_ERR_ARG, "mml_data_load: out is NULL");
    memset(out, 0, sizeof *out);
    if (!dir) return mml__fail(MML_ERR_ARG, "mml_data_load: dir is NULL");
    if (!mml__is_dir(dir)) return mml__fail(MML_ERR_IO, "%s: no such directory", dir);
    if ((st = mml__join(path, dir, "data.mmlc")) != MML_OK) return st;
    if (!mml__is_file(path)) return mml_data_load_csv(dir, out);
    if (!mml__host_le()) return mml__fail(MML_ERR_ARG, "%s: the cache format needs a little-endian host", path);
    if ((st = mml__read_file(path, &b)) != MML_OK) return st;
    ver = mml__cache_version((const unsigned char *)b.p, b.n);
    if (ver != 0 && ver < MML__CACHE_VERSION) rebuild = mml__has_layout(dir);
    else rebuild = ver == MML__CACHE_VERSION && !mml__cache_fresh((const unsigned char *)b.p, b.n, dir);
    if (rebuild) {
        mml__buf_free(&b);
        return mml__load_and_recache(dir, path, out);
    }
    st = mml__cache_decode((const unsigned char *)b.p, b.n, path, out);
    mml__buf_free(&b);
    return st;
}

/* ---- free space ---- */

/* Free bytes for an unprivileged writer on the filesystem of path, or of its
 * nearest existing parent when path does not exist yet (named in where);
 * -1 if the system cannot tell. */
static double mml__free_bytes(const char *path, char *where, size_t cap) {
    struct statvfs vfs;
    char up[MML__PATH_MAX];
    snprintf(where, cap, "%s", path);
    while (statvfs(where, &vfs) != 0) {
        if ((errno != ENOENT && errno != ENOTDIR) || !strcmp(where, ".") || !strcmp(where, "/") ||
            !mml__dir_of(where, up))
            return -1;
        snprintf(where, cap, "%s", up);
    }
    return (double)vfs.f_bavail * (double)vfs.f_frsize;
}

static const char *mml__gb(double bytes, char *buf, size_t cap) {
    snprintf(buf, cap, bytes < 10e9 ? "%.2f" : "%.0f", bytes / 1e9);
    return buf;
}

/* Refuses, before anything is written to target, a write of about need bytes
 * that the filesystem has no room for. Only a first check: the atomic
 * writer still reports a disk that fills up meanwhile. */
static mml_status mml__check_space(const char *target, double need) {
    char where[MML__PATH_MAX], a[32], b[32];
    double avail = mml__free_bytes(target, where, sizeof where);
    if (avail < 0 || need <= avail) return MML_OK;
    return mml__fail(MML_ERR_IO, "%s: needs about %s GB, %s GB free on %s", target, mml__gb(need, a, sizeof a),
                     mml__gb(avail, b, sizeof b), where);
}

static int mml__digits(uint64_t v) {
    int n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

/* At most the bytes d's prepared set takes on disk (each file rounded up to
 * a 4 KB block), the cache included when asked. */
static double mml__set_bytes(const mml_data_t *d, int with_cache) {
    double rows = 0, files = 2.0 + 3.0 * d->n_domains, row, emb = 0, bytes;
    int s;
    for (s = 0; s < 3; s++) rows += (double)d->split[s].n;
    row = mml__digits((uint64_t)d->n_users) + mml__digits((uint64_t)d->n_items) + mml__digits((uint64_t)d->n_domains) + 5;
    if (d->schema) { /* the widest value of every cell */
        row = 2;
        for (int32_t f = 0; f < d->schema->n_fields; f++)
            row += d->schema->field[f].kind == MML_FIELD_NUMERIC ? 16.0 : 11.0 * (double)mml__col_width(&d->schema->field[f]) + 1.0;
    }
    if (d->pretrained_dim > 0) emb = 48.0 + 4.0 * d->pretrained_dim * ((double)d->n_users + d->n_items);
    bytes = rows * row + 21.0 * 3 * d->n_domains + 1500.0 * d->n_domains + emb + 4096.0 * files;
    if (d->schema) bytes += 200.0 * d->schema->n_fields;
    if (d->vocab) bytes += mml__vocab_bytes(d->vocab);
    if (with_cache) bytes += 80.0 + 1100.0 * d->n_domains + 16.0 * rows + 24.0 * (d->n_domains + 1.0) + emb;
    if (with_cache && d->schema) bytes += (double)MML__FIELD_REC * d->schema->n_fields + row * rows;
    return bytes;
}

/* ---- a prepared folder is replaced as a whole ---- */

/* A prepared folder holds meta.txt, data.mmlc, user_emb.bin, item_emb.bin,
 * vocab.txt and domain_<k>/ folders of train.csv, val.csv and test.csv; with the
 * atomic writer's "<name>.tmp.<pid>.<n>" of any of them. mml_data_save_dir
 * builds the new set in a sibling "<dir>.tmp.<pid>.<n>" and swaps the two
 * folders, so dir always holds one whole set. Anything else found in dir is
 * a user's and is never moved or deleted: such a folder is refused. */
static int mml__is_set_file(const char *name, int in_domain) {
    static const char *const top[] = {"meta.txt", "data.mmlc", "user_emb.bin", "item_emb.bin", "vocab.txt"};
    static const char *const dom[] = {"train.csv", "val.csv", "test.csv"};
    const char *const *v = in_domain ? dom : top;
    int i, n = in_domain ? 3 : 5;
    for (i = 0; i < n; i++) {
        size_t k = strlen(v[i]);
        if (strncmp(name, v[i], k) == 0 && (name[k] == 0 || strncmp(name + k, ".tmp.", 5) == 0)) return 1;
    }
    return 0;
}

static int mml__is_domain_dir(const char *name) {
    const char *p = name + 7;
    if (strncmp(name, "domain_", 7) != 0 || !*p || (*p == '0' && p[1])) return 0;
    for (; *p; p++)
        if ((unsigned)(*p - '0') > 9) return 0;
    return 1;
}

/* Walks dir (a set's folder, or with in_domain one of its domain folders):
 * with rm, removes the set's own files and domain folders, then dir if that
 * emptied it. Returns how many entries are no part of a set (the first is
 * named in foreign), or -1 if dir cannot be read. */
static long mml__set_scan(const char *dir, int in_domain, int rm, char *foreign, size_t cap) {
    char path[MML__PATH_MAX];
    struct dirent *e;
    struct stat st;
    long others = 0, k;
    DIR *dh = opendir(dir);
    if (!dh) return -1;
    while ((e = readdir(dh)) != NULL) {
        const char *n = e->d_name;
        int mine;
        if (!strcmp(n, ".") || !strcmp(n, "..")) continue;
        if (snprintf(path, sizeof path, "%s/%s", dir, n) >= (int)sizeof path || lstat(path, &st) != 0) {
            others++;
            continue;
        }
        mine = S_ISREG(st.st_mode) && mml__is_set_file(n, in_domain);
        if (!mine && !in_domain && S_ISDIR(st.st_mode) && mml__is_domain_dir(n)) {
            char inner[256];
            k = mml__set_scan(path, 1, rm, inner, sizeof inner);
            if (k > 0 && others == 0 && foreign && snprintf(foreign, cap, "%s/%s", n, inner) < 0) foreign[0] = 0;
            others += k < 0 ? 1 : k;
            continue;
        }
        if (mine && rm) unlink(path);
        if (!mine && others++ == 0 && foreign) snprintf(foreign, cap, "%s", n);
    }
    closedir(dh);
    if (rm) rmdir(dir);
    return others;
}

/* dir without trailing slashes (into path), its parent folder and its last
 * name ("a/b/" -> "a/b", "a", "b"). */
static mml_status mml__split_path(const char *dir, char *path, char *parent, char *base) {
    char tmp[MML__PATH_MAX];
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;
    if (n == 0 || n >= sizeof tmp) return mml__fail(MML_ERR_ARG, "bad directory name \"%s\"", dir);
    memcpy(tmp, dir, n);
    tmp[n] = 0;
    strcpy(path, tmp);
    strcpy(base, mml__dir_of(tmp, parent));
    if (!*base || !strcmp(base, ".") || !strcmp(base, ".."))
        return mml__fail(MML_ERR_ARG, "%s: name the folder itself (a prepared set replaces its folder as a whole)", dir);
    return MML_OK;
}

/* The folder to replace: out_dir, or where it leads when it is a symbolic
 * link (the set is swapped in there and the link stays as it is). */
static mml_status mml__target_path(const char *out_dir, char *dir, char *parent, char *base) {
    char link[MML__PATH_MAX], next[2 * MML__PATH_MAX];
    struct stat st;
    int hops;
    mml_status rc = mml__split_path(out_dir, dir, parent, base);
    for (hops = 0; !rc && lstat(dir, &st) == 0 && S_ISLNK(st.st_mode); hops++) {
        ssize_t n = readlink(dir, link, sizeof link - 1);
        if (n < 0 || hops == 16)
            return mml__fail(MML_ERR_IO, "%s: cannot follow the link: %s", out_dir,
                             n < 0 ? strerror(errno) : "too many levels");
        link[n] = 0;
        snprintf(next, sizeof next, "%s%s%s", link[0] == '/' ? "" : parent, link[0] == '/' ? "" : "/", link);
        rc = mml__split_path(next, dir, parent, base);
    }
    return rc;
}

/* Removes the "<base>.tmp.<pid>.<n>" set folders in parent whose process
 * has gone (a preparation killed midway leaves one), as the atomic writer
 * does with its files; only a set's own files are removed. */
static void mml__remove_stale_sets(const char *parent, const char *base) {
    char path[MML__PATH_MAX];
    size_t bn = strlen(base);
    struct dirent *e;
    DIR *dh = opendir(parent);
    if (!dh) return;
    while ((e = readdir(dh)) != NULL)
        if (strncmp(e->d_name, base, bn) == 0 && mml__tmp_of_gone(e->d_name + bn) &&
            snprintf(path, sizeof path, "%s/%s", parent, e->d_name) < (int)sizeof path)
            mml__set_scan(path, 0, 1, NULL, 0);
    closedir(dh);
}


/* Exchanges two paths atomically (Linux renameat2 RENAME_EXCHANGE, called by
 * number so that no feature macro is needed); -1 with errno otherwise. */
static int mml__exchange(const char *a, const char *b) {
#if defined(__linux__) && defined(SYS_renameat2)
    return (int)syscall(SYS_renameat2, (long)AT_FDCWD, a, (long)AT_FDCWD, b, 2L /* RENAME_EXCHANGE */);
#else
    (void)a;
    (void)b;
    errno = ENOSYS;
    return -1;
#endif
}

/* Puts the whole set at tmp in dir's place; the old set, if any, ends up at
 * tmp. Without an atomic exchange (other systems, filesystems without it)
 * dir is renamed aside first: a crash between the two renames leaves no dir,
 * with the old set at "<dir>.tmp.<pid>.<n>". */
static mml_status mml__swap_in(const char *tmp, const char *dir, int dir_exists) {
    int err;
    if (!dir_exists) {
        if (rename(tmp, dir) == 0) return MML_OK;
        return mml__fail(MML_ERR_IO, "%s: cannot rename the new set into place: %s", dir, strerror(errno));
    }
    if (mml__exchange(tmp, dir) == 0) return MML_OK;
    err = errno;
#if defined(EOPNOTSUPP) && EOPNOTSUPP != ENOTSUP
    if (err == EOPNOTSUPP) err = ENOTSUP;
#endif
    if (err != ENOSYS && err != EINVAL && err != ENOTSUP)
        return mml__fail(MML_ERR_IO, "%s: cannot swap in the new set: %s", dir, strerror(err));
    {
        char aside[MML__PATH_MAX + 32];
        static unsigned mml__aside_counter;
        unsigned n = __atomic_fetch_add(&mml__aside_counter, 1u, __ATOMIC_RELAXED);
        snprintf(aside, sizeof aside, "%s.tmp.%ld.old%u", dir, (long)getpid(), n);
        if (rename(dir, aside) != 0)
            return mml__fail(MML_ERR_IO, "%s: cannot move the old set aside: %s", dir, strerror(errno));
        if (rename(tmp, dir) != 0) {
            err = errno;
            rename(aside, dir);
            return mml__fail(MML_ERR_IO, "%s: cannot rename the new set into place: %s", dir, strerror(err));
        }
        if (rename(aside, tmp) != 0) mml__set_scan(aside, 0, 1, NULL, 0);
    }
    return MML_OK;
}

/* What dir holds now: 0 nothing, 1 a prepared set (or an empty folder). */
static mml_status mml__check_target(const char *dir, int *exists, mode_t *mode) {
    char foreign[MML__PATH_MAX];
    struct stat st;
    long others;
    *exists = 0;
    if (lstat(dir, &st) != 0) {
        if (errno == ENOENT) return MML_OK;
        return mml__fail(MML_ERR_IO, "%s: %s", dir, strerror(errno));
    }
    if (!S_ISDIR(st.st_mode)) return mml__fail(MML_ERR_IO, "%s: exists and is not a folder", dir);
    others = mml__set_scan(dir, 0, 0, foreign, sizeof foreign);
    if (others < 0) return mml__fail(MML_ERR_IO, "%s: cannot read: %s", dir, strerror(errno));
    if (others > 0)
        return mml__fail(MML_ERR_IO,
                         "%s: holds %s%s, not part of a prepared set; a new set replaces the whole folder, so move "
                         "that away or prepare into another folder (nothing was changed)",
                         dir, foreign, others > 1 ? " and more" : "");
    *exists = 1;
    *mode = st.st_mode & 07777;
    return MML_OK;
}

/* The new set in tmp, with the cache when asked (recording the files it
 * was built from, as they are in tmp: the swap keeps them as they are). */
static mml_status mml__build_set(const mml_data_t *d, const char *tmp, int with_cache) {
    char path[MML__PATH_MAX];
    mml__srcs src;
    mml_status st;
    if (mkdir(tmp, 0777) != 0) return mml__fail(MML_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    st = mml__write_set(d, tmp);
    if (st || !with_cache) return st;
    memset(&src, 0, sizeof src);
    st = mml__srcs_of_set(d, tmp, &src);
    if (!st) st = mml__join(path, tmp, "data.mmlc");
    if (!st) st = mml__save_cache(d, path, &src);
    mml__srcs_free(&src);
    return st;
}

mml_status mml_data_save_prepared(const mml_data_t *d, const char *out_dir, int with_cache) {
    static unsigned mml__set_counter;
    char dir[MML__PATH_MAX], parent[MML__PATH_MAX], base[MML__PATH_MAX], tmp[MML__PATH_MAX];
    int exists = 0;
    mode_t mode = 0;
    mml_status st;
    if (!d || !out_dir) return mml__fail(MML_ERR_ARG, "mml_data_save_dir: NULL argument");
    if ((st = mml__data_check(d, "mml_data_save_dir")) != MML_OK) return mml__recode(MML_ERR_ARG);
    if ((st = mml__check_names(d)) != MML_OK) return st;
    if (d->vocab && (!d->schema || mml__vocab_check(d->vocab, d->schema, "mml_data_save_dir: the vocabulary")))
        return d->schema ? MML_ERR_ARG : mml__fail(MML_ERR_ARG, "mml_data_save_dir: a vocabulary needs a schema");
    if ((d->pretrained_dim > 0 || with_cache) && !mml__host_le())
        return mml__fail(MML_ERR_ARG, "binary embedding and cache files need a little-endian host");
    if ((st = mml__target_path(out_dir, dir, parent, base)) != MML_OK) return st;
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld.%u", dir, (long)getpid(),
                 __atomic_fetch_add(&mml__set_counter, 1u, __ATOMIC_RELAXED)) >= (int)sizeof tmp)
        return mml__fail(MML_ERR_ARG, "%s: path too long", dir);
    if ((st = mml__check_target(dir, &exists, &mode)) != MML_OK) return st;
    if (exists) mml__remove_stale_sets(parent, base); /* their space first */
    if ((st = mml__check_space(dir, mml__set_bytes(d, with_cache))) != MML_OK) return st;
    if ((st = mml__mkdirs(parent)) != MML_OK) return st;
    st = mml__build_set(d, tmp, with_cache);
    if (!st && exists && chmod(tmp, mode) != 0) st = mml__fail(MML_ERR_IO, "%s: chmod: %s", tmp, strerror(errno));
    if (!st) st = mml__swap_in(tmp, dir, exists);
    if (!st) mml__fsync_dir_of(tmp);
    mml__set_scan(tmp, 0, 1, NULL, 0); /* the old set, or the new one after a failure */
    if (!st) mml__remove_stale_sets(parent, base);
    return st;
}

mml_status mml_data_save_dir(const mml_data_t *d, const char *dir) { return mml_data_save_prepared(d, dir, 0); }

// >>vocab ------------------------------------------------------------------

/* Raw values as moemlora-prepare csv reads them. The recipes
 * (examples/mml_recipes.h) read their input with these functions and
 * serving with a vocabulary reads requests with them too, so the two agree
 * by construction. */

/* FNV-1a. A hashed cell's bucket is mix64(fnv1a64(bytes)) mod buckets
 * (docs/DATA.md): prepared sets and the requests served on them depend on
 * it, so it must never change. */
static uint64_t mml__fnv1a64(const char *s, const char *e) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; s < e; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

static int32_t mml__hash_bucket(const char *s, const char *e, int32_t buckets) {
    return (int32_t)(mml__mix64(mml__fnv1a64(s, e)) % (uint64_t)buckets);
}

/* Parses a float at p (no leading spaces), returns the end or NULL. Decimal
 * mantissa of up to 19 significant digits times an exact power of ten, then
 * rounded to float: within 1 ulp of strtof, ~10x faster. */
static const char *mml__parse_f32(const char *p, const char *e, float *out) {
    static const double p10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                 1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    int neg = 0, digits = 0, sig = 0;
    int64_t ex = 0;
    uint64_t m = 0;
    double v;
    if (p < e && (*p == '-' || *p == '+')) neg = *p++ == '-';
    while (p < e && (unsigned)(*p - '0') <= 9) {
        if (sig < 19) {
            m = m * 10 + (uint64_t)(*p - '0');
            if (m) sig++;
        } else {
            ex++;
        }
        digits++;
        p++;
    }
    if (p < e && *p == '.') {
        p++;
        while (p < e && (unsigned)(*p - '0') <= 9) {
            if (sig < 19) {
                m = m * 10 + (uint64_t)(*p - '0');
                if (m) sig++;
                ex--;
            }
            digits++;
            p++;
        }
    }
    if (!digits) return NULL;
    if (p < e && (*p == 'e' || *p == 'E')) {
        int eneg = 0, ed = 0;
        int64_t x = 0;
        p++;
        if (p < e && (*p == '-' || *p == '+')) eneg = *p++ == '-';
        while (p < e && (unsigned)(*p - '0') <= 9) {
            if (x < 100000) x = x * 10 + (*p - '0');
            ed++;
            p++;
        }
        if (!ed) return NULL;
        ex += eneg ? -x : x;
    }
    v = (double)m;
    if (m == 0) v = 0;
    else if (ex >= 0 && ex <= 22) v *= p10[ex];
    else if (ex < 0 && ex >= -22) v /= p10[-ex];
    else v *= pow(10.0, (double)ex);
    if (!(fabs(v) <= 3.4028234663852886e38)) return NULL; /* inf, overflow */
    *out = (float)(neg ? -v : v);
    return p;
}

/* The first delim in [q, e), or e. Eight bytes a step while they lie in
 * the line: most cells end in the first step, so their end costs one
 * branch, not one a byte. */
static char *mml__find_byte(char *q, char *e, char delim) {
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const uint64_t ones = 0x0101010101010101ull, d = ones * (unsigned char)delim;
    while (e - q >= 8) {
        uint64_t x, hit;
        memcpy(&x, q, 8);
        x ^= d;
        hit = (x - ones) & ~x & (ones << 7); /* exact up to its lowest byte */
        if (hit) return q + (__builtin_ctzll(hit) >> 3);
        q += 8;
    }
#endif
    while (q < e && *q != delim) q++;
    return q;
}

/* The next cell of [*p, e) as [*a, *b), quotes removed (in place: "" is a
 * quote); *p moves past the delimiter. 1: more cells follow, 2: it was the
 * line's last, 0: a quote is not closed. */
static int mml__csv_cell(char **p, char *e, char delim, char **a, char **b) {
    char *q = *p;
    if (q < e && *q == '"') {
        char *w = ++q;
        *a = w;
        for (;;) {
            if (q >= e) return 0;
            if (*q == '"') {
                if (q + 1 < e && q[1] == '"') {
                    *w++ = '"';
                    q += 2;
                    continue;
                }
                q++;
                break;
            }
            *w++ = *q++;
        }
        *b = w;
        while (q < e && *q != delim) q++; /* text after the closing quote is dropped */
    } else {
        *a = q;
        *b = q = mml__find_byte(q, e, delim);
    }
    if (q < e) {
        *p = q + 1;
        return 1;
    }
    *p = e;
    return 2; /* the line's last cell */
}

/* ---- vocabularies ---- */

static const char *mml__skip_blanks(const char *p, const char *e) {
    while (p < e && (*p == ' ' || *p == '\t')) p++;
    return p;
}
static const char *mml__find_blank(const char *p, const char *e) {
    while (p < e && *p != ' ' && *p != '\t') p++;
    return p;
}
static int mml__tok_eq(const char *s, const char *e, const char *word) {
    size_t n = strlen(word);
    return (size_t)(e - s) == n && memcmp(s, word, n) == 0;
}

#define MML__VOCAB_FORMAT "moemlora-vocab-1"

/* One field's raw side: how its cells read and, for a re-indexed field
 * (listed), its values in id order, value i the bytes [off[i], off[i+1]),
 * with an open-addressing table of ids by value. */
typedef struct mml__vfield {
    char name[MML_FIELD_NAME_MAX];
    char column[256];           /* the input's header name */
    mml_field_kind kind;
    int32_t vocab, max_len, hash_buckets;
    int is_domain, listed;
    char sep;                   /* multi-hot list separator */
    int has_missing;            /* numeric: an empty cell reads as missing */
    float missing;
    int32_t n, ncap;
    int64_t *off;               /* [ncap + 1] */
    char *bytes;
    int64_t bcap;
    int32_t *slot;              /* [cap] ids, -1 empty */
    uint64_t cap;
} mml__vfield;

struct mml_vocab_t {
    int32_t n_fields;
    char delim;                 /* the input's cell delimiter */
    mml__vfield f[MML_MAX_FIELDS];
};

void mml_vocab_free(mml_vocab_t *v) {
    if (!v) return;
    for (int32_t f = 0; f < MML_MAX_FIELDS; f++) {
        mml__free(v->f[f].off);
        mml__free(v->f[f].bytes);
        mml__free(v->f[f].slot);
    }
    mml__free(v);
}

/* An empty vocabulary of schema s: every field read as moemlora-prepare's
 * defaults (column = name, '|' lists, ',' cells, no missing numbers). */
static mml_status mml__vocab_new(const mml_schema_t *s, mml_vocab_t **out) {
    mml_vocab_t *v = (mml_vocab_t *)mml__alloc(sizeof *v);
    *out = NULL;
    if (!v) return mml__fail(MML_ERR_NOMEM, "vocabulary: out of memory");
    v->n_fields = s->n_fields;
    v->delim = ',';
    for (int32_t f = 0; f < s->n_fields; f++) {
        const mml_field_t *fd = &s->field[f];
        mml__vfield *vf = &v->f[f];
        memcpy(vf->name, fd->name, sizeof vf->name);
        vf->name[sizeof vf->name - 1] = 0;
        memcpy(vf->column, vf->name, sizeof vf->name); /* a name fits a column */
        vf->kind = fd->kind;
        vf->vocab = fd->vocab;
        vf->max_len = fd->max_len;
        vf->hash_buckets = fd->hash_buckets;
        vf->is_domain = f == s->domain;
        vf->listed = fd->kind != MML_FIELD_NUMERIC && fd->hash_buckets == 0;
        vf->sep = '|';
    }
    *out = v;
    return MML_OK;
}

/* *p (used bytes kept) moved to a new block of bytes; 0 when out of memory. */
static int mml__regrow(void **p, size_t used, size_t bytes) {
    void *n = mml__alloc_from(bytes, used);
    if (!n) return 0;
    if (used) memcpy(n, *p, used);
    mml__free(*p);
    *p = n;
    return 1;
}

/* Appends the value s[0, len) as the next id of vf. */
static mml_status mml__vocab_add(mml__vfield *vf, const char *s, size_t len) {
    int64_t used = vf->n ? vf->off[vf->n] : 0;
    if (vf->n + 1 >= vf->ncap) {
        int32_t nc = vf->ncap ? vf->ncap * 2 : 1024;
        if (vf->ncap >= (1 << 30) || !mml__regrow((void **)&vf->off, (size_t)vf->ncap * 8, ((size_t)nc + 1) * 8))
            return mml__fail(MML_ERR_NOMEM, "field %s: out of memory for a vocabulary of %d values", vf->name, vf->n);
        vf->ncap = nc;
    }
    if ((uint64_t)used + len > (uint64_t)vf->bcap) {
        uint64_t nb = vf->bcap ? 2 * (uint64_t)vf->bcap : 4096;
        while (nb < (uint64_t)used + len) nb *= 2;
        if (!mml__regrow((void **)&vf->bytes, (size_t)used, (size_t)nb))
            return mml__fail(MML_ERR_NOMEM, "field %s: out of memory for a vocabulary of %d values", vf->name, vf->n);
        vf->bcap = (int64_t)nb;
    }
    if (len) memcpy(vf->bytes + used, s, len);
    vf->off[vf->n + 1] = used + (int64_t)len;
    vf->n++;
    return MML_OK;
}

static uint64_t mml__vocab_hash(const char *s, size_t len) { return mml__mix64(mml__fnv1a64(s, s + len)); }

/* The id of s[0, len) in vf, or -1. */
static int32_t mml__vocab_find(const mml__vfield *vf, const char *s, size_t len) {
    if (!vf->cap) return -1;
    for (uint64_t i = mml__vocab_hash(s, len) & (vf->cap - 1);; i = (i + 1) & (vf->cap - 1)) {
        int32_t c = vf->slot[i];
        if (c < 0) return -1;
        const char *t = vf->bytes + vf->off[c];
        if ((size_t)(vf->off[c + 1] - vf->off[c]) == len && memcmp(t, s, len) == 0) return c;
    }
}

/* The table of vf's values; the first id whose value came before (a
 * duplicate) in *dup, else -1. */
static mml_status mml__vocab_index(mml__vfield *vf, int32_t *dup) {
    uint64_t cap = 16;
    *dup = -1;
    while (cap < 2 * (uint64_t)vf->n) cap *= 2;
    mml__free(vf->slot);
    vf->cap = 0;
    if (!(vf->slot = (int32_t *)mml__alloc_from(cap * 4, cap * 4)))
        return mml__fail(MML_ERR_NOMEM, "field %s: out of memory for a vocabulary of %d values", vf->name, vf->n);
    memset(vf->slot, 0xff, cap * 4);
    vf->cap = cap;
    for (int32_t c = 0; c < vf->n; c++) {
        const char *s = vf->bytes + vf->off[c];
        size_t len = (size_t)(vf->off[c + 1] - vf->off[c]);
        uint64_t i = mml__vocab_hash(s, len) & (cap - 1);
        if (mml__vocab_find(vf, s, len) >= 0) {
            *dup = c;
            return MML_OK;
        }
        while (vf->slot[i] >= 0) i = (i + 1) & (cap - 1);
        vf->slot[i] = c;
    }
    return MML_OK;
}

/* The count of values a listed field must have: its vocabulary, or none
 * when training saw no value at all (the one id is never given then). */
static int mml__vocab_count_ok(const mml__vfield *vf, int32_t n) {
    return n == vf->vocab || (n == 0 && vf->vocab == 1 && !vf->is_domain);
}

/* v describes schema s: the same fields, kinds, hashes and vocabularies. */
static mml_status mml__vocab_check(const mml_vocab_t *v, const mml_schema_t *s, const char *where) {
    if (v->n_fields != s->n_fields)
        return mml__fail(MML_ERR_ARG, "%s: %d fields, the schema has %d", where, v->n_fields, s->n_fields);
    for (int32_t f = 0; f < s->n_fields; f++) {
        const mml__vfield *vf = &v->f[f];
        const mml_field_t *fd = &s->field[f];
        if (strcmp(vf->name, fd->name) || vf->kind != fd->kind || vf->hash_buckets != fd->hash_buckets ||
            (vf->kind != MML_FIELD_NUMERIC && vf->vocab != fd->vocab) ||
            vf->is_domain != (f == s->domain) || (vf->listed && !mml__vocab_count_ok(vf, vf->n)))
            return mml__fail(MML_ERR_ARG, "%s: field %d (%s) does not match the schema's (%s)", where, f, vf->name,
                             fd->name);
    }
    return MML_OK;
}

/* ---- vocab.txt ---- */

/* s[0, n) with '\\' and control bytes escaped (\\, \t, \r, \n, \xNN) and,
 * with blanks, spaces too: a value line then holds any bytes, a token no
 * blank. */
static mml_status mml__vocab_put(mml__afile *w, const char *s, size_t n, int blanks) {
    char buf[256];
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (o + 4 >= sizeof buf) {
            if (mml__afile_write(w, buf, o)) return MML_ERR_IO;
            o = 0;
        }
        if (c == '\\') buf[o++] = '\\', buf[o++] = '\\';
        else if (c == '\t') buf[o++] = '\\', buf[o++] = 't';
        else if (c == '\r') buf[o++] = '\\', buf[o++] = 'r';
        else if (c == '\n') buf[o++] = '\\', buf[o++] = 'n';
        else if (c < 0x20 || c == 0x7f || (blanks && c == ' '))
            buf[o++] = '\\', buf[o++] = 'x', buf[o++] = "0123456789abcdef"[c >> 4], buf[o++] = "0123456789abcdef"[c & 15];
        else buf[o++] = (char)c;
    }
    return mml__afile_write(w, buf, o);
}

/* The field line "field NAME KIND [domain] column=C [sep=C] [hash=N]
 * [missing=X] [n=N]", then its n values, one a line. */
static void mml__vocab_put_field(mml__afile *w, const mml__vfield *vf) {
    static const char *const kinds[3] = {"categorical", "multi_hot", "numeric"};
    char num[32];
    mml__afile_printf(w, "field %s %s%s column=", vf->name, kinds[vf->kind], vf->is_domain ? " domain" : "");
    mml__vocab_put(w, vf->column, strlen(vf->column), 1);
    if (vf->kind == MML_FIELD_MULTI_HOT) {
        mml__afile_write(w, " sep=", 5);
        mml__vocab_put(w, &vf->sep, 1, 1);
    }
    if (vf->hash_buckets) mml__afile_printf(w, " hash=%d", vf->hash_buckets);
    if (vf->has_missing) {
        *mml__put_f32(num, vf->missing) = 0;
        mml__afile_printf(w, " missing=%s", num);
    }
    if (vf->listed) mml__afile_printf(w, " n=%d", vf->n);
    mml__afile_write(w, "\n", 1);
    for (int32_t c = 0; vf->listed && c < vf->n; c++) {
        mml__vocab_put(w, vf->bytes + vf->off[c], (size_t)(vf->off[c + 1] - vf->off[c]), 0);
        mml__afile_write(w, "\n", 1);
    }
}

static mml_status mml__write_vocab(const char *path, const mml_vocab_t *v) {
    mml__afile w;
    mml_status st;
    if ((st = mml__afile_open(&w, path)) != MML_OK) return st;
    mml__afile_printf(&w, "%s\ndelimiter=", MML__VOCAB_FORMAT);
    mml__vocab_put(&w, &v->delim, 1, 1);
    mml__afile_write(&w, "\n", 1);
    for (int32_t f = 0; f < v->n_fields; f++) mml__vocab_put_field(&w, &v->f[f]);
    mml__afile_write(&w, "end\n", 4);
    if (w.failed) {
        mml__afile_abort(&w);
        return MML_ERR_IO;
    }
    return mml__afile_commit(&w);
}

static int mml__hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Undoes mml__vocab_put on [s, e) in place; the new end, or NULL at a bad
 * escape (*bad points at it). */
static char *mml__vocab_unescape(char *s, char *e, char **bad) {
    char *w = s;
    for (char *p = s; p < e; p++) {
        if (*p != '\\') {
            *w++ = *p;
            continue;
        }
        *bad = p;
        if (++p == e) return NULL;
        if (*p == '\\') *w++ = '\\';
        else if (*p == 't') *w++ = '\t';
        else if (*p == 'r') *w++ = '\r';
        else if (*p == 'n') *w++ = '\n';
        else if (*p == 'x' && e - p > 2 && mml__hexval(p[1]) >= 0 && mml__hexval(p[2]) >= 0) {
            *w++ = (char)(mml__hexval(p[1]) << 4 | mml__hexval(p[2]));
            p += 2;
        } else return NULL;
    }
    return w;
}

/* One "key=value" token of a field line into vf; n gets n=. */
static mml_status mml__vocab_opt(mml__vfield *vf, char *s, char *e, int64_t *n, const char *file, long long line) {
    char *eq = (char *)memchr(s, '=', (size_t)(e - s)), *bad = s, *ve;
    char q[64], num[64];
    if (!eq) return mml__fail(MML_ERR_FORMAT, "%s:%lld: field %s: %s is not key=value", file, line, vf->name, mml__q(s, e, q, sizeof q));
    size_t kl = (size_t)(eq - s);
    if (!(ve = mml__vocab_unescape(eq + 1, e, &bad)))
        return mml__fail(MML_ERR_FORMAT, "%s:%lld: field %s: bad escape %s", file, line, vf->name, mml__q(bad, e, q, sizeof q));
    size_t vl = (size_t)(ve - eq - 1);
    snprintf(num, sizeof num, "%.*s", (int)(vl < 63 ? vl : 63), eq + 1);
    int64_t x = 0;
    float fx = 0;
    char *fe = NULL;
    if (kl == 6 && !memcmp(s, "column", 6) && vl > 0 && vl < sizeof vf->column) {
        memcpy(vf->column, eq + 1, vl);
        vf->column[vl] = 0;
    } else if (kl == 3 && !memcmp(s, "sep", 3) && vl == 1 && vf->kind == MML_FIELD_MULTI_HOT) {
        vf->sep = eq[1];
    } else if (kl == 7 && !memcmp(s, "missing", 7) && vf->kind == MML_FIELD_NUMERIC && vl > 0 && vl < 63 &&
               (fx = strtof(num, &fe), !*fe) && fx - fx == 0.0f) { /* strtof: mml__put_f32 wrote it for strtof */
        vf->has_missing = 1;
        vf->missing = fx;
    } else if (kl == 4 && !memcmp(s, "hash", 4) && mml__parse_i64(num, 1, 1 << 30, &x) == 0 && vl < 63) {
        if (x != vf->hash_buckets)
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: field %s: hash=%lld, the model's field has %d buckets", file, line,
                             vf->name, (long long)x, vf->hash_buckets);
    } else if (kl == 1 && *s == 'n' && vf->listed && mml__parse_i64(num, 0, INT32_MAX, n) == 0 && vl < 63) {
        if (!mml__vocab_count_ok(vf, (int32_t)*n))
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: field %s: n=%lld values, the model's vocabulary is %d", file, line,
                             vf->name, (long long)*n, vf->vocab);
    } else {
        return mml__fail(MML_ERR_FORMAT, "%s:%lld: field %s: unexpected %s", file, line, vf->name, mml__q(s, e, q, sizeof q));
    }
    return MML_OK;
}

/* "field NAME KIND [domain] key=value..." for field f of s (names, kinds,
 * the domain and hash sizes as the model's); *n = how many values follow. */
static mml_status mml__vocab_field_line(mml_vocab_t *v, const mml_schema_t *s, int32_t f, char *p, char *e, int64_t *n,
                                        const char *file, long long line) {
    static const char *const kinds[3] = {"categorical", "multi_hot", "numeric"};
    mml__vfield *vf = &v->f[f];
    const mml_field_t *fd = &s->field[f];
    char *t[3], *te[3], q[64];
    int dom = 0, k = 0, hashed = 0;
    mml_status st;
    *n = -1;
    for (; k < 3 && (p = (char *)mml__skip_blanks(p, e)) < e; k++) {
        t[k] = p;
        p = te[k] = (char *)mml__find_blank(p, e);
    }
    if (k < 3 || !mml__tok_eq(t[0], te[0], "field"))
        return mml__fail(MML_ERR_FORMAT, "%s:%lld: expected \"field %s KIND ...\" (the model's field %d)", file, line,
                         fd->name, f);
    if (!mml__tok_eq(t[1], te[1], fd->name))
        return mml__fail(MML_ERR_FORMAT, "%s:%lld: field %s, but the model's field %d is %s", file, line,
                         mml__q(t[1], te[1], q, sizeof q), f, fd->name);
    if (!mml__tok_eq(t[2], te[2], kinds[fd->kind]))
        return mml__fail(MML_ERR_FORMAT, "%s:%lld: field %s is %s in the model, not %s", file, line, fd->name,
                         kinds[fd->kind], mml__q(t[2], te[2], q, sizeof q));
    while ((p = (char *)mml__skip_blanks(p, e)) < e) {
        char *a = p;
        p = (char *)mml__find_blank(p, e);
        if (mml__tok_eq(a, p, "domain")) dom = 1;
        else if ((st = mml__vocab_opt(vf, a, p, n, file, line)) != MML_OK) return st;
        else hashed |= p - a > 5 && !memcmp(a, "hash=", 5);
    }
    if (dom != vf->is_domain)
        return mml__fail(MML_ERR_FORMAT, "%s:%lld: field %s is %sthe domain in the model", file, line, fd->name,
                         dom ? "not " : "");
    if (hashed != (vf->hash_buckets > 0))
        return mml__fail(MML_ERR_FORMAT, "%s:%lld: field %s: the model's field has %d hash buckets", file, line, fd->name,
                         vf->hash_buckets);
    if (vf->listed && *n < 0)
        return mml__fail(MML_ERR_FORMAT, "%s:%lld: field %s: n=N (its count of values) missing", file, line, fd->name);
    if (*n < 0) *n = 0;
    return MML_OK;
}

/* Field f's line and its values, indexed. */
static mml_status mml__vocab_read_field(mml_vocab_t *v, const mml_schema_t *s, int32_t f, mml__lines *L) {
    mml__vfield *vf = &v->f[f];
    const char *ls, *le;
    char *w, *bad = NULL, q[64];
    int64_t n;
    int32_t dup;
    mml_status st;
    if (!mml__next_line(L, &ls, &le))
        return mml__fail(MML_ERR_FORMAT, "%s:%lld: truncated: no line for field %s (the model has %d fields)", L->file,
                         L->line + 1, vf->name, s->n_fields);
    if ((st = mml__vocab_field_line(v, s, f, (char *)ls, (char *)le, &n, L->file, L->line)) != MML_OK) return st;
    long long first = L->line + 1;
    for (int64_t c = 0; c < n; c++) {
        if (!mml__next_line(L, &ls, &le))
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: truncated: field %s has %lld of its n=%lld values", L->file,
                             L->line + 1, vf->name, (long long)c, (long long)n);
        if (!(w = mml__vocab_unescape((char *)ls, (char *)le, &bad)))
            return mml__fail(MML_ERR_FORMAT, "%s:%lld: field %s: bad escape %s", L->file, L->line, vf->name,
                             mml__q(bad, le, q, sizeof q));
        if ((st = mml__vocab_add(vf, ls, (size_t)(w - ls))) != MML_OK) return st;
    }
    if ((st = mml__vocab_index(vf, &dup)) != MML_OK) return st;
    if (dup >= 0)
        return mml__fail(MML_ERR_FORMAT, "%s:%lld: field %s: value %s given twice", L->file, first + dup, vf->name,
                         mml__q(vf->bytes + vf->off[dup], vf->bytes + vf->off[dup + 1], q, sizeof q));
    return MML_OK;
}

static mml_status mml__vocab_parse(mml_vocab_t *v, const mml_schema_t *s, mml__lines *L) {
    const char *ls, *le;
    char *w, *bad;
    mml_status st;
    if (!mml__next_line(L, &ls, &le) || !mml__tok_eq(ls, le, MML__VOCAB_FORMAT))
        return mml__fail(MML_ERR_FORMAT, "%s:1: not a vocabulary (the first line is not \"%s\")", L->file, MML__VOCAB_FORMAT);
    if (!mml__next_line(L, &ls, &le) || le - ls < 10 || memcmp(ls, "delimiter=", 10) ||
        !(w = mml__vocab_unescape((char *)ls + 10, (char *)le, &bad)) || w - ls != 11)
        return mml__fail(MML_ERR_FORMAT, "%s:2: expected delimiter=C (one character)", L->file);
    v->delim = ls[10];
    for (int32_t f = 0; f < s->n_fields; f++)
        if ((st = mml__vocab_read_field(v, s, f, L)) != MML_OK) return st;
    if (!mml__next_line(L, &ls, &le))
        return mml__fail(MML_ERR_FORMAT, "%s:%lld: truncated: no \"end\" line after the last field", L->file, L->line + 1);
    if (!mml__tok_eq(ls, le, "end"))
        return mml__fail(MML_ERR_FORMAT, "%s:%lld: expected \"end\" after the model's %d fields", L->file, L->line,
                         s->n_fields);
    while (mml__next_line(L, &ls, &le))
        if (ls != le) return mml__fail(MML_ERR_FORMAT, "%s:%lld: text after \"end\"", L->file, L->line);
    return MML_OK;
}

/* A vocabulary from the text buf[0, n) (changed in place), named file in
 * messages; the fuzzer's entry. */
static mml_status mml__vocab_load_mem(char *buf, size_t n, const char *file, const mml_schema_t *s, mml_vocab_t **out) {
    mml__lines L;
    mml_vocab_t *v = NULL;
    mml_status st;
    *out = NULL;
    if (mml_schema_check(s)) return mml__recode(MML_ERR_ARG);
    if ((st = mml__vocab_new(s, &v)) == MML_OK) {
        mml__lines_init(&L, buf, n, file);
        st = mml__vocab_parse(v, s, &L);
    }
    if (st) mml_vocab_free(v);
    else *out = v;
    return st;
}

mml_status mml_vocab_load(const char *dir, const mml_schema_t *s, mml_vocab_t **out) {
    char path[MML__PATH_MAX];
    mml__buf b;
    mml_status st;
    if (!out) return mml__fail(MML_ERR_ARG, "mml_vocab_load: out is NULL");
    *out = NULL;
    if (!dir || !s) return mml__fail(MML_ERR_ARG, "mml_vocab_load: NULL argument");
    if ((st = mml__join(path, dir, MML__VOCAB_FILE)) != MML_OK) return st;
    if ((st = mml__read_file(path, &b)) != MML_OK) return st;
    st = mml__vocab_load_mem(b.p, b.n, path, s, out);
    mml__buf_free(&b);
    return st;
}

int mml_vocab_cells(const mml_vocab_t *v, char *line, size_t n, const char **cell, size_t *len, int max) {
    char *p = line, *e = line + n, *a, *b;
    int k = 0, more = 1;
    if (!v || (!line && n)) return -1;
    if (!line) p = e = (char *)"";
    while (more == 1) {
        if (!(more = mml__csv_cell(&p, e, v->delim, &a, &b))) return -1;
        if (k < max) cell[k] = a, len[k] = (size_t)(b - a);
        k++;
    }
    return k;
}

const char *mml_vocab_column(const mml_vocab_t *v, int32_t f) {
    return v && f >= 0 && f < v->n_fields ? v->f[f].column : NULL;
}

/* A categorical or list value's id: its bucket, its place in the
 * vocabulary, else the out-of-vocabulary id (-1 for an unknown domain). */
static int32_t mml__vocab_id(const mml__vfield *vf, const char *s, const char *e) {
    if (vf->hash_buckets > 0) return mml__hash_bucket(s, e, vf->hash_buckets);
    int32_t c = mml__vocab_find(vf, s, (size_t)(e - s));
    return c >= 0 ? c : vf->is_domain ? -1 : vf->vocab;
}

mml_status mml_vocab_map(const mml_vocab_t *v, int32_t f, const char *s, size_t n, int32_t *ids, float *value) {
    char q[64];
    if (!v || f < 0 || f >= v->n_fields || (!s && n)) return mml__fail(MML_ERR_ARG, "mml_vocab_map: bad argument");
    const mml__vfield *vf = &v->f[f];
    const char *e = s + n;
    if (vf->kind == MML_FIELD_NUMERIC) {
        float x = vf->missing;
        if (!value) return mml__fail(MML_ERR_ARG, "mml_vocab_map: field %s is numeric: value is NULL", vf->name);
        if (n == 0 && !vf->has_missing)
            return mml__fail(MML_ERR_FORMAT, "field %s: empty (the schema gave no missing= value)", vf->name);
        if (n && (mml__parse_f32(s, e, &x) != e || !isfinite(x)))
            return mml__fail(MML_ERR_FORMAT, "field %s: %s is not a number", vf->name, mml__q(s, e, q, sizeof q));
        *value = x;
        return MML_OK;
    }
    if (!ids) return mml__fail(MML_ERR_ARG, "mml_vocab_map: field %s: ids is NULL", vf->name);
    if (vf->kind == MML_FIELD_CATEGORICAL) {
        if ((ids[0] = mml__vocab_id(vf, s, e)) < 0)
            return mml__fail(MML_ERR_FORMAT, "field %s (the domain): %s is not one of the model's domains", vf->name,
                             mml__q(s, e, q, sizeof q));
        return MML_OK;
    }
    int k = 0; /* as the recipe reads a list: split at sep, empty items skipped */
    for (const char *x = s; x < e;) {
        const char *y = (const char *)memchr(x, vf->sep, (size_t)(e - x));
        if (!y) y = e;
        if (y > x) {
            if (k == vf->max_len)
                return mml__fail(MML_ERR_FORMAT, "field %s: more than max_len=%d ids in %s", vf->name, vf->max_len,
                                 mml__q(s, e, q, sizeof q));
            ids[k++] = mml__vocab_id(vf, x, y);
        }
        x = y + 1;
    }
    for (; k < vf->max_len; k++) ids[k] = -1;
    return MML_OK;
}

/* An upper estimate of vocab.txt's size (every byte escaped). */
static double mml__vocab_bytes(const mml_vocab_t *v) {
    double b = 64;
    for (int32_t f = 0; f < v->n_fields; f++)
        b += 400.0 + (v->f[f].n ? 4.0 * (double)v->f[f].off[v->f[f].n] + v->f[f].n : 0.0);
    return b;
}


// >>model ------------------------------------------------------------------
/* A model is made of parts, each with one job:
 *   arch    what the config implies, fixed at creation: the fields, the tower
 *           layers, the tensor table and the model kind's operations;
 *   P       the parameter values, one arena laid out by the tensor table;
 *   grads   the gradients of a step (the same layout) with the embedding rows
 *           they touch; each training worker has its own;
 *   opt     Adam: moments, its step, the rows still owed deferred steps;
 *   phase   what the current phase trains and which adapters it uses;
 *   fit     where a running mml_fit stands, and its early-stopping snapshot;
 *   fold    the folded per-domain inference weights;
 *   pass    activations and decisions for one batch (the caller's own);
 *   rt      worker threads (a pass and gradients each) and processes.
 * Forward and backward read the model and write a pass and its gradients; only
 * the optimizer writes parameters. A pass carries everything a batch needs, so
 * worker threads and serving sessions are passes over the same model. */

/* Parameter groups: freezing works on whole groups (experts also per expert). */
enum { MML__G_EMB, MML__G_LINEAR, MML__G_TOWER, MML__G_EXTRA, MML__G_OUT, MML__G_EXPERT,
       MML__G_GATE, MML__G_COUNT };

/* How an expert parameter stacks its experts: A [d_in, E*r] in column blocks,
 * B [E*r, d_out] in row blocks, C [E, d_out] in rows. */
enum { MML__XL_NONE, MML__XL_COLS, MML__XL_ROWS };

/* How a tensor starts: zero (biases, adapters' B and c), Glorot uniform,
 * embedding rows (N(0, 1e-4), DeepCTR), gate rows (Keras' U(-0.05, 0.05)), or
 * by its model kind (init of mml__kind). The OOV row of a table stays zero. */
enum { MML__INIT_ZERO, MML__INIT_GLOROT, MML__INIT_EMB, MML__INIT_GATE_EMB, MML__INIT_KIND };

typedef struct mml__param {
    char name[64];
    int group;
    int ndim;
    int64_t shape[4];
    int64_t off, size;       /* floats, in every arena */
    int init;                /* MML__INIT_* */
    int64_t fan_in, fan_out; /* Glorot */
    int row_table;           /* embedding-like: rows touched per batch */
    int xlayout;             /* MML__XL_*: expert stacking */
    int64_t xblock;          /* floats per expert block (ROWS) or columns (COLS) */
} mml__param;

typedef struct mml__layer {
    int d_in, d_out, r;
    int W, b, A, B, C;       /* tensor indices, -1 when absent */
    int tf;                  /* has buffers for domain-folded training (see >>forward) */
} mml__layer;

/* One input field: an id per row looked up in its embedding table. */
/* An embedded field (categorical or multi-hot): ids looked up in its table. */
typedef struct mml__field {
    int src;                 /* its index in the schema */
    int32_t vocab;           /* ids 0..vocab-1; row vocab is the out-of-vocabulary row */
    int dim, e_off;          /* its width and first column in a row of E */
    int len;                 /* ids per row: 1, or a multi-hot field's max_len (-1 pads) */
    int mean;                /* multi-hot: mean pooling (else sum) */
    int emb, lin;            /* its embedding and linear-logit tables (-1: none) */
    int frozen;              /* pretrained embeddings: never updated */
} mml__field;

/* A numeric field: the model reads (x - shift) * scale. */
typedef struct mml__numeric {
    int src;                 /* its index in the schema */
    float shift, scale;
} mml__numeric;

/* Adapter use in one forward pass. */
enum { MML__AD_OFF, MML__AD_SINGLE, MML__AD_MIX };

#define MML__MAX_FIELDS MML_MAX_FIELDS
#define MML__MAX_PARAMS (2 * MML__MAX_FIELDS + 96)
#define MML__HP_RING 4096 /* steps of Adam constants kept for replays (power of 2) */
#define MML__AGE_BUCKETS 1024 /* replays sort rows by age up to this many steps */
#define MML__ATT_LAYERS 3
#define MML__ATT_HEADS 2
#define MML__ATT_SIZE 8
#define MML__CROSS_LAYERS 2
#define MML__CIN_LAYERS 2
static const int mml__cin_sizes[MML__CIN_LAYERS] = {128, 128};

typedef struct mml__pass mml__pass;
typedef struct mml__carve mml__carve;

/* A model kind: the parts beside the shared tower (see >>kinds). Each entry
 * adds its tensors, sizes its buffers and runs its parts; NULL means "none". */
typedef struct mml__kind {
    const char *name;
    int linear;              /* has the wide part: a linear-logit table per field */
    int logit_term;          /* side_fwd writes a logit term into side_logit */
    int input_params;        /* the tower input transform has tensors of its own */
    int equal_dims;          /* its interactions need one dim for every embedded field */
    int side_on_x0;          /* its side parts read the tower input x0 (else E) */
    /* dk and d0 (the kind's part of the tower input; all of it, set to E
     * and E + numeric before build), de (extra inputs of the final dense
     * layer) and the kind's tensors, into m->a.part */
    void (*build)(mml_model_t *m);
    /* tensors with MML__INIT_KIND */
    void (*init)(const mml_model_t *m, int i, float *w, uint64_t *rng);
    /* the kind's buffers for up to B rows; returns the scratch (ws) floats it needs */
    int64_t (*carve)(const mml_model_t *m, mml__pass *ps, mml__carve *c, int64_t B);
    /* field embeddings E [n, F*k] -> tower input x0 [n, d0]; NULL: x0 is E */
    void (*input_fwd)(const mml_model_t *m, mml__pass *ps);
    /* dx0 -> dE += (dE zeroed by the caller) */
    void (*input_bwd)(const mml_model_t *m, mml__pass *ps);
    /* parts beside the tower: side_logit and/or extra (inputs of the final dense) */
    void (*side_fwd)(const mml_model_t *m, mml__pass *ps);
    /* their backward: dlogit / dextra -> the kind's gradients and dE */
    void (*side_bwd)(const mml_model_t *m, mml__pass *ps);
} mml__kind;

/* What the config implies. */
/* What the config implies. The embedded fields are in E's column order: the
 * schema's order with the domain field last, so that a tower input made of
 * E ends with the domain's columns (folded inference moves them into the
 * bias). */
typedef struct mml__arch {
    const mml__kind *kind;
    mml_schema_t *schema;    /* the model's own copy */
    int own_schema;          /* made from cfg.schema (else the paper's layout from the vocab sizes) */
    int F, k, D;             /* embedded fields, their common dim (0: dims differ), E's width */
    int dom_field;           /* the embedded field holding the domain (F - 1) */
    int n_num;               /* numeric fields */
    int dk, d0, de;          /* tower input: the kind's part, all of it (+ numeric); extra inputs of the final dense */
    int n_pairs, se_r;       /* field pairs; SENET width (FiBiNET) */
    int n_experts, n_layers, max_r, max_d;
    mml__field field[MML__MAX_FIELDS];
    mml__numeric num[MML__MAX_FIELDS];
    int lin_num;             /* the wide part's weights of the numeric fields (-1: none) */
    mml__layer layer[MML_MAX_HIDDEN];
    int gate_emb, gate_W, gate_b, out_W, out_b;   /* -1 when absent */
    int part[16];            /* the kind's tensors, in the order its build adds them */
    mml__param t[MML__MAX_PARAMS];
    int n_params;
    int64_t n_floats;
} mml__arch;

/* Gradients in the tensor table's layout, and the embedding rows they touch
 * (first-seen order; mark[f][row] says a row is listed). */
typedef struct mml__grads {
    float *G;
    int32_t *touched[MML__MAX_FIELDS];
    int n_touched[MML__MAX_FIELDS];
    uint8_t *mark[MML__MAX_FIELDS];
} mml__grads;

/* Adam. Dense Adam defers the zero-gradient steps of embedding rows no batch
 * touched (and of the linear-logit rows of the same ids): last[f][row] is the
 * step field f's row is current at (see >>optimizer). */
typedef struct mml__optim {
    float *M, *V;
    int64_t t;               /* steps of this phase's optimizer */
    uint64_t steps;          /* training steps of the model (dropout masks) */
    int64_t *last[MML__MAX_FIELDS];
    int64_t synced_t;        /* every row is current at this step */
    mml_adam_hp *hp_ring;    /* Adam's constants of recent steps (for replays) */
    int64_t *hp_tag;         /* the step each ring entry holds (-1: none) */
    int32_t *uniq[MML__MAX_FIELDS]; /* a batch's unique rows per field [max_batch] */
    int32_t *catch_tmp, *catch_all; /* row lists for replays: [max_batch], [2 * largest table] */
    int64_t *catch_count;    /* [MML__AGE_BUCKETS + 1] */
} mml__optim;

/* What the phase trains and uses. */
typedef struct mml__phase_state {
    mml_phase phase;
    int expert;              /* MML_PHASE_EXPERT: the expert trained, else -1 */
    int trainable[MML__G_COUNT];
} mml__phase_state;

/* Where a running mml_fit is, so a checkpoint can resume it exactly, and
 * what it runs on, so a checkpoint resumes nothing else. */
typedef struct mml__fit_state {
    int32_t active;          /* a fit is in progress */
    int32_t done;            /* a fit ran to its end */
    int32_t from_export;     /* loaded from an inference-only export */
    int32_t stage;           /* 0: first phase; 1..E: expert stage-1; E+1: gate */
    int32_t epoch;           /* epochs completed in this stage */
    int32_t bad;             /* epochs without improvement */
    double best;             /* best validation score of this stage */
    uint64_t rng;            /* epoch shuffle generator */
    /* the fit's data and run options (older checkpoints lack them) */
    int32_t has_data, has_opts;
    int64_t data_size[6];    /* users, items, domains, train, val, test rows */
    uint64_t data_hash;      /* mml__data_hash */
    int32_t batch, max_epochs, patience;
    uint64_t seed;
} mml__fit_state;

/* The decisions of one forward/backward, taken once for the whole batch and
 * shared by every worker's share of it. */
typedef struct mml__plan {
    int train;
    int ad_mode, ad_expert;  /* adapters: none, one (MLoRA's domain or the expert), all mixed */
    int folded;              /* inference through the folded weights */
    uint64_t step;           /* dropout masks */
    int defer_scatter;       /* workers leave embedding gradients in dE (mml__scatter_owned) */
} mml__plan;

/* The parts of a pass that belong to its model kind (see >>kinds). */
typedef struct mml__kind_bufs {
    float *act[4];                       /* layer activations saved for backward */
    float *att_act[MML__ATT_LAYERS], *att_out[MML__ATT_LAYERS], *datt[2]; /* AutoInt */
    float *se_out, *dV;                  /* FiBiNET: SENET output and its gradient */
} mml__kind_bufs;

/* Rows of a batch as a pass sees them: ids in range (an unknown id is its
 * field's OOV row, a multi-hot list's empty slots -1), field-major in E's
 * order; numeric values normalised; row0 is the first row's index in the
 * whole step (dropout masks). */
typedef struct mml__rows {
    int n, row0;
    const int32_t *ids[MML__MAX_FIELDS];  /* per embedded field: [n * len] */
    const float *num;                     /* numeric fields, normalised: [n, n_num] */
    const float *label;
} mml__rows;

/* Activations and decisions for one batch of at most max_batch rows. */
struct mml__pass {
    mml__rows r;             /* the rows this pass runs (a share of `loaded` for workers) */
    mml__plan plan;
    /* a batch loaded into this pass (grouped by domain when sorted) */
    mml__rows loaded;
    int sorted;
    int32_t *ids_buf[MML__MAX_FIELDS];
    float *num_buf, *label_buf;
    int32_t *perm;           /* sorted: the batch row of each loaded row */
    int32_t *dom_count;      /* [D + 2], counting sort */
    /* domain runs of these rows: domain-folded training and bias mixtures */
    int tf_on[MML_MAX_HIDDEN], tf_nruns;
    int tf_base;             /* the folded layers carry the base weight and bias too (no dropout) */
    int32_t *tf_run;         /* [D + 2] */
    float *tf_wd, *tf_db, *tf_dw;      /* per run: mixture [D+1, E], bias grad [D+1, d], dw [D+1, E] */
    float *tf_P[MML_MAX_HIDDEN];       /* per expert A_e B_e [E, d_in*d_out], then M_e in backward */
    float *tf_W[MML_MAX_HIDDEN];       /* per run folded adapter [D+1, d_in*d_out], then its gradient */
    float *tf_c[MML_MAX_HIDDEN];       /* per run folded bias [D+1, d_out] */
    /* where backward writes */
    mml__grads *g;
    /* activations */
    float *E, *dE;                     /* field embeddings [B, F*k] (E aliases x0 when the kind has no input transform) */
    float *x0, *dx0;
    float *z[MML_MAX_HIDDEN], *T[MML_MAX_HIDDEN], *U[MML_MAX_HIDDEN];
    uint8_t *dkeep[MML_MAX_HIDDEN];    /* dropout masks [B, d_out] (training) */
    float *gw, *glogit, *dw, *gin;     /* gate: weights, logits, their gradient [B, E]; gate input */
    float *logit, *prob, *dlogit, *unperm;
    float *lin_out, *side_logit;       /* the wide part's logit; the kind's logit term */
    float *dz, *dx, *dT, *dU;
    float *extra, *dextra;             /* the kind's inputs of the final dense layer */
    mml__kind_bufs kb;
    float *ws;                         /* the kind's scratch */
    void *block;
};

struct mml__pool;

/* A training worker thread: its pass over its share of a batch, its gradients. */
typedef struct mml__worker {
    mml__pass pass;
    mml__grads grads;
} mml__worker;

/* Threads inside a step, processes across steps. */
typedef struct mml__runtime {
    struct mml__pool *pool;  /* worker threads (threads > 1); the caller is worker 0 */
    mml__worker *workers;    /* threads - 1 */
    int32_t rank, world;     /* data-parallel processes (mml_model_set_distributed) */
    mml_allreduce_fn sum;
    void *sum_user;
    float *dist_buf;         /* one step's gradients, packed */
} mml__runtime;

struct mml_model_t {
    mml_config_t cfg;
    const mml_kernels_t *K;
    const mml_kernels_t *KT; /* training passes' tower GEMMs: K, or kt_bf16 (cfg.precision) */
    const mml_kernels_t *KI; /* inference passes' tower GEMMs: K, or kt_bf16 (cfg.infer_precision) */
    mml_kernels_t kt_bf16;   /* K with gemm_nn/nt/tn/pair on bf16 inputs */
    mml_isa isa;
    mml__arch a;
    float *P;
    mml__grads grads;
    mml__optim opt;
    mml__phase_state ph;
    mml__fit_state fit;
    float *snapshot;         /* fit: the parameters of the stage's best epoch */
    struct { float *w; int ok; } fold; /* w: packed in cfg.infer_precision's layout (mml__fold_bf16) */
    mml__pass pass;
    mml__runtime rt;
};

/* Knobs the tests turn; production code never changes them. */
static struct {
    int tf_force;            /* domain-folded training: 0 by cost, 1 wherever possible, -1 never */
    int defer_min_dim;       /* deferred dense Adam from this row width on (0: always) */
} mml__knobs;

static float *mml__p(const mml_model_t *m, int i) { return m->P + m->a.t[i].off; }
/* The kernels of the tower layers' GEMMs (base and adapter products) in this
 * pass: cfg.precision's in training, cfg.infer_precision's in inference. */
static const mml_kernels_t *mml__tk(const mml_model_t *m, const mml__pass *ps) {
    return ps->plan.train ? m->KT : m->KI;
}

/* A fold per domain (and the OOV domain), or the base model's one (its
 * weights packed; one copy stays in cache where D + 1 would not). */
static int mml__fold_per_domain(const mml_model_t *m) { return m->cfg.adapter != MML_ADAPTER_NONE; }
static float *mml__g(const mml__grads *g, const mml_model_t *m, int i) { return g->G + m->a.t[i].off; }

/* ---- the tensor table ---- */

static int mml__add_param(mml_model_t *m, const char *name, int group, int ndim, int64_t d0, int64_t d1) {
    mml__param *p = &m->a.t[m->a.n_params];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->group = group;
    p->ndim = ndim;
    p->shape[0] = d0;
    p->shape[1] = ndim > 1 ? d1 : 1;
    p->size = d0 * p->shape[1];
    p->off = m->a.n_floats;
    m->a.n_floats += (p->size + 15) & ~(int64_t)15; /* 64-byte aligned tensors */
    return m->a.n_params++;
}

static int mml__add_glorot(mml_model_t *m, const char *name, int group, int64_t d0, int64_t d1, int64_t fan_in,
                           int64_t fan_out) {
    int i = mml__add_param(m, name, group, 2, d0, d1);
    m->a.t[i].init = MML__INIT_GLOROT;
    m->a.t[i].fan_in = fan_in;
    m->a.t[i].fan_out = fan_out;
    return i;
}

/* Glorot uniform: the Keras default for dense kernels. */
static void mml__init_glorot(float *w, int64_t n, int64_t fan_in, int64_t fan_out, uint64_t *rng) {
    double lim = sqrt(6.0 / (double)(fan_in + fan_out));
    for (int64_t i = 0; i < n; i++) w[i] = (float)((2.0 * mml__rng_uniform(rng) - 1.0) * lim);
}

/* Work buffers carved from one block (one allocation, one check, one free):
 * a first run with base == NULL only sizes it. n floats, 64-byte aligned;
 * other types take the room of as many floats. */
struct mml__carve { float *base; int64_t used; };

static float *mml__take(mml__carve *c, int64_t n) {
    float *p = c->base ? c->base + c->used : NULL;
    c->used += (n + 15) & ~(int64_t)15;
    return p;
}

typedef void (*mml__carve_fn)(void *ctx, mml__carve *c);

/* The buffers fn carves, in one zeroed block *block (free it with
 * mml__free): fn runs once to size it, once to hand the buffers out. */
static mml_status mml__carve_block(mml__carve_fn fn, void *ctx, const char *what, float **block) {
    mml__carve c = {NULL, 0};
    uint64_t bytes;
    fn(ctx, &c);
    if (!mml__mul_ok((uint64_t)c.used, sizeof(float), (uint64_t)1 << 40, &bytes))
        return mml__fail(MML_ERR_ARG, "%s: size overflows", what);
    if (!(c.base = (float *)mml__alloc((size_t)bytes)))
        return mml__fail(MML_ERR_NOMEM, "%s: cannot allocate %llu bytes", what, (unsigned long long)bytes);
    c.used = 0;
    fn(ctx, &c);
    *block = c.base;
    return MML_OK;
}

// >>kinds ------------------------------------------------------------------
/* The eight CTR models and the plain MLP differ only in the parts beside the
 * shared tower; each is one entry of mml__kinds (a model kind adds nothing
 * anywhere else). Tensor indices live in m->a.part in the order build adds
 * them; buffers in the pass's kb. Layers themselves are in >>layers. */

/* ---- DeepFM: FM second-order term over the field embeddings ---- */

static int64_t mml__fm_carve(const mml_model_t *m, mml__pass *ps, mml__carve *c, int64_t B) {
    ps->kb.act[0] = mml__take(c, (int64_t)mml__fm_act_floats((int)B, m->a.k));
    return 0;
}
static void mml__fm_side_fwd(const mml_model_t *m, mml__pass *ps) {
    mml__fm_forward(ps->r.n, m->a.F, m->a.k, ps->E, ps->side_logit, ps->kb.act[0]);
}
static void mml__fm_side_bwd(const mml_model_t *m, mml__pass *ps) {
    mml__fm_backward(ps->r.n, m->a.F, m->a.k, ps->E, ps->kb.act[0], ps->dlogit, ps->dE);
}

/* ---- NFM: bi-interaction pooling as the tower input ---- */

static void mml__nfm_build(mml_model_t *m) {
    m->a.dk = m->a.k;
    m->a.d0 = m->a.dk + m->a.n_num;
}
static int64_t mml__nfm_carve(const mml_model_t *m, mml__pass *ps, mml__carve *c, int64_t B) {
    ps->kb.act[0] = mml__take(c, (int64_t)mml__bi_act_floats((int)B, m->a.k));
    return 0;
}
static void mml__nfm_input_fwd(const mml_model_t *m, mml__pass *ps) {
    mml__bi_forward(ps->r.n, m->a.F, m->a.k, ps->E, ps->x0, m->a.d0, ps->kb.act[0]);
}
static void mml__nfm_input_bwd(const mml_model_t *m, mml__pass *ps) {
    mml__bi_backward(ps->r.n, m->a.F, m->a.k, ps->E, ps->kb.act[0], ps->dx0, m->a.d0, ps->dE);
}

/* ---- PNN (inner product): the embeddings and their pairwise products ---- */

static void mml__pnn_build(mml_model_t *m) {
    m->a.dk = m->a.D + m->a.n_pairs;
    m->a.d0 = m->a.dk + m->a.n_num;
}
static void mml__pnn_input_fwd(const mml_model_t *m, mml__pass *ps) {
    int D = m->a.D, n = ps->r.n;
    for (int i = 0; i < n; i++) memcpy(ps->x0 + (int64_t)i * m->a.d0, ps->E + (int64_t)i * D, (size_t)D * sizeof(float));
    mml__inner_forward(m->K, n, m->a.F, m->a.k, ps->E, ps->x0 + D, m->a.d0);
}
static void mml__pnn_input_bwd(const mml_model_t *m, mml__pass *ps) {
    int D = m->a.D, n = ps->r.n;
    for (int i = 0; i < n; i++) m->K->axpy(D, 1.0f, ps->dx0 + (int64_t)i * m->a.d0, ps->dE + (int64_t)i * D);
    mml__inner_backward(m->K, n, m->a.F, m->a.k, ps->E, ps->dx0 + D, m->a.d0, ps->dE);
}

/* ---- DCN: a cross network on the tower input beside the tower; part 0
 * cross.w, part 1 cross.b ---- */

static void mml__dcn_build(mml_model_t *m) {
    int d0 = m->a.d0;
    m->a.part[0] = mml__add_glorot(m, "cross.w", MML__G_EXTRA, MML__CROSS_LAYERS, d0, d0, 1);
    m->a.part[1] = mml__add_param(m, "cross.b", MML__G_EXTRA, 2, MML__CROSS_LAYERS, d0);
    m->a.de = d0;
}
static int64_t mml__dcn_carve(const mml_model_t *m, mml__pass *ps, mml__carve *c, int64_t B) {
    int d0 = m->a.d0;
    ps->kb.act[0] = mml__take(c, (int64_t)mml__cross_act_floats((int)B, d0, MML__CROSS_LAYERS));
    ps->extra = mml__take(c, B * m->a.de);
    ps->dextra = mml__take(c, B * m->a.de);
    return (int64_t)mml__cross_ws_floats((int)B, d0);
}
static void mml__dcn_side_fwd(const mml_model_t *m, mml__pass *ps) {
    mml__cross_forward(m->K, ps->r.n, m->a.d0, MML__CROSS_LAYERS, ps->x0, mml__p(m, m->a.part[0]),
                       mml__p(m, m->a.part[1]), ps->extra, ps->kb.act[0]);
}
static void mml__dcn_side_bwd(const mml_model_t *m, mml__pass *ps) {
    mml__cross_backward(m->K, ps->r.n, m->a.d0, MML__CROSS_LAYERS, ps->x0, mml__p(m, m->a.part[0]), ps->kb.act[0],
                        ps->dextra, ps->dx0, mml__g(ps->g, m, m->a.part[0]), mml__g(ps->g, m, m->a.part[1]), ps->ws);
}

/* ---- xDeepFM: CIN with its own logit; part 0 the packed CIN tensor ---- */

static void mml__xdeepfm_build(mml_model_t *m) {
    m->a.part[0] = mml__add_param(m, "cin.params", MML__G_EXTRA, 1,
                                  (int64_t)mml__cin_param_floats(m->a.F, MML__CIN_LAYERS, mml__cin_sizes, 1), 1);
    m->a.t[m->a.part[0]].init = MML__INIT_KIND;
}
/* Glorot per layer block and for the output weights, as DeepCTR's Conv1D and Dense. */
static void mml__xdeepfm_init(const mml_model_t *m, int i, float *w, uint64_t *rng) {
    (void)i;
    int F = m->a.F, L = MML__CIN_LAYERS, hp = F;
    const int *sz = mml__cin_sizes;
    for (int h = 0; h < L; h++) {
        size_t o = mml__cin_param_offset(F, L, sz, 1, h);
        mml__init_glorot(w + o, (int64_t)sz[h] * hp * F, (int64_t)hp * F, sz[h], rng);
        hp = h < L - 1 ? sz[h] / 2 : 0;
    }
    size_t o = mml__cin_param_offset(F, L, sz, 1, L);
    int fs = mml__cin_fmap_sum(L, sz, 1);
    mml__init_glorot(w + o, fs, fs, 1, rng);
}
static int64_t mml__xdeepfm_carve(const mml_model_t *m, mml__pass *ps, mml__carve *c, int64_t B) {
    int F = m->a.F, k = m->a.k;
    ps->kb.act[0] = mml__take(c, (int64_t)mml__cin_act_floats((int)B, F, k, MML__CIN_LAYERS, mml__cin_sizes, 1));
    return (int64_t)mml__cin_ws_floats((int)B, F, k, MML__CIN_LAYERS, mml__cin_sizes, 1);
}
static void mml__xdeepfm_side_fwd(const mml_model_t *m, mml__pass *ps) {
    mml__cin_forward(m->K, ps->r.n, m->a.F, m->a.k, MML__CIN_LAYERS, mml__cin_sizes, 1, ps->E, mml__p(m, m->a.part[0]),
                     ps->side_logit, ps->kb.act[0], ps->ws);
}
static void mml__xdeepfm_side_bwd(const mml_model_t *m, mml__pass *ps) {
    mml__cin_backward(m->K, ps->r.n, m->a.F, m->a.k, MML__CIN_LAYERS, mml__cin_sizes, 1, mml__p(m, m->a.part[0]),
                      ps->kb.act[0], ps->dlogit, ps->dE, mml__g(ps->g, m, m->a.part[0]), ps->ws);
}

/* ---- AutoInt: interacting layers beside the tower; part 4l+j: layer l's
 * Wq, Wk, Wv, Wres ---- */

static void mml__autoint_build(mml_model_t *m) {
    static const char *const an[4] = {"Wq", "Wk", "Wv", "Wres"};
    int HA = MML__ATT_HEADS * MML__ATT_SIZE, din = m->a.k;
    for (int l = 0; l < MML__ATT_LAYERS; l++) {
        for (int j = 0; j < 4; j++) {
            char nm[48];
            snprintf(nm, sizeof nm, "att.%d.%s", l, an[j]);
            m->a.part[4 * l + j] = mml__add_glorot(m, nm, MML__G_EXTRA, din, HA, din, HA);
        }
        din = HA;
    }
    m->a.de = m->a.F * HA;
}
static int64_t mml__autoint_carve(const mml_model_t *m, mml__pass *ps, mml__carve *c, int64_t B) {
    int F = m->a.F, HA = MML__ATT_HEADS * MML__ATT_SIZE;
    for (int l = 0; l < MML__ATT_LAYERS; l++) {
        ps->kb.att_act[l] = mml__take(c, (int64_t)mml__autoint_act_floats((int)B, F, MML__ATT_HEADS, MML__ATT_SIZE));
        ps->kb.att_out[l] = mml__take(c, B * F * HA);
    }
    ps->kb.datt[0] = mml__take(c, B * F * HA);
    ps->kb.datt[1] = mml__take(c, B * F * HA);
    ps->extra = ps->kb.att_out[MML__ATT_LAYERS - 1];
    ps->dextra = mml__take(c, B * m->a.de);
    return (int64_t)mml__autoint_ws_floats((int)B, F, MML__ATT_HEADS, MML__ATT_SIZE);
}
static void mml__autoint_side_fwd(const mml_model_t *m, mml__pass *ps) {
    const float *x = ps->E;
    int din = m->a.k, HA = MML__ATT_HEADS * MML__ATT_SIZE;
    for (int l = 0; l < MML__ATT_LAYERS; l++) {
        const int *pa = m->a.part + 4 * l;
        mml__autoint_forward(m->K, ps->r.n, m->a.F, din, MML__ATT_HEADS, MML__ATT_SIZE, x, mml__p(m, pa[0]),
                             mml__p(m, pa[1]), mml__p(m, pa[2]), mml__p(m, pa[3]), ps->kb.att_out[l],
                             ps->kb.att_act[l], ps->ws);
        x = ps->kb.att_out[l];
        din = HA;
    }
}
static void mml__autoint_side_bwd(const mml_model_t *m, mml__pass *ps) {
    int n = ps->r.n, F = m->a.F, HA = MML__ATT_HEADS * MML__ATT_SIZE;
    const float *dout = ps->dextra;
    for (int l = MML__ATT_LAYERS - 1; l >= 0; l--) {
        const int *pa = m->a.part + 4 * l;
        const float *x = l ? ps->kb.att_out[l - 1] : ps->E;
        float *dxl = l ? ps->kb.datt[(l - 1) & 1] : ps->dE;
        if (l) memset(dxl, 0, (size_t)n * F * HA * sizeof(float));
        mml__autoint_backward(m->K, n, F, l ? HA : m->a.k, MML__ATT_HEADS, MML__ATT_SIZE, x, mml__p(m, pa[0]),
                              mml__p(m, pa[1]), mml__p(m, pa[2]), mml__p(m, pa[3]), ps->kb.att_out[l],
                              ps->kb.att_act[l], dout, dxl, mml__g(ps->g, m, pa[0]), mml__g(ps->g, m, pa[1]),
                              mml__g(ps->g, m, pa[2]), mml__g(ps->g, m, pa[3]), ps->ws);
        dout = dxl;
    }
}

/* ---- FiBiNET: bilinear interactions of SENET-weighted and plain embeddings
 * as the tower input; parts 0-3: senet.W1, senet.W2, bilinear.senet,
 * bilinear.plain ---- */

static void mml__fibinet_build(mml_model_t *m) {
    int F = m->a.F, k = m->a.k;
    m->a.dk = 2 * m->a.n_pairs * k;
    m->a.d0 = m->a.dk + m->a.n_num;
    m->a.se_r = mml__senet_r(F, 3);
    m->a.part[0] = mml__add_glorot(m, "senet.W1", MML__G_EXTRA, F, m->a.se_r, F, m->a.se_r);
    m->a.part[1] = mml__add_glorot(m, "senet.W2", MML__G_EXTRA, m->a.se_r, F, m->a.se_r, F);
    m->a.part[2] = mml__add_glorot(m, "bilinear.senet", MML__G_EXTRA, (int64_t)m->a.n_pairs * k, k, k, k);
    m->a.part[3] = mml__add_glorot(m, "bilinear.plain", MML__G_EXTRA, (int64_t)m->a.n_pairs * k, k, k, k);
}
static int64_t mml__fibinet_carve(const mml_model_t *m, mml__pass *ps, mml__carve *c, int64_t B) {
    int F = m->a.F, k = m->a.k;
    ps->kb.act[0] = mml__take(c, (int64_t)mml__senet_act_floats((int)B, F, m->a.se_r));
    ps->kb.act[1] = mml__take(c, (int64_t)mml__bilinear_act_floats((int)B, F, k));
    ps->kb.act[2] = mml__take(c, (int64_t)mml__bilinear_act_floats((int)B, F, k));
    ps->kb.se_out = mml__take(c, B * m->a.D);
    ps->kb.dV = mml__take(c, B * m->a.D);
    int64_t ws = (int64_t)mml__senet_ws_floats((int)B, F, m->a.se_r), w = (int64_t)mml__bilinear_ws_floats((int)B, k);
    return w > ws ? w : ws;
}
static void mml__fibinet_input_fwd(const mml_model_t *m, mml__pass *ps) {
    const mml_kernels_t *K = m->K;
    int n = ps->r.n, F = m->a.F, k = m->a.k, Pk = m->a.n_pairs * k;
    const int *pt = m->a.part;
    mml__senet_forward(K, n, F, k, m->a.se_r, ps->E, mml__p(m, pt[0]), mml__p(m, pt[1]), ps->kb.se_out, ps->kb.act[0]);
    mml__bilinear_forward(K, n, F, k, ps->kb.se_out, mml__p(m, pt[2]), ps->x0, m->a.d0, ps->kb.act[1]);
    mml__bilinear_forward(K, n, F, k, ps->E, mml__p(m, pt[3]), ps->x0 + Pk, m->a.d0, ps->kb.act[2]);
}
static void mml__fibinet_input_bwd(const mml_model_t *m, mml__pass *ps) {
    const mml_kernels_t *K = m->K;
    int n = ps->r.n, F = m->a.F, k = m->a.k, Pk = m->a.n_pairs * k;
    const int *pt = m->a.part;
    const mml__grads *g = ps->g;
    memset(ps->kb.dV, 0, (size_t)n * m->a.D * sizeof(float));
    mml__bilinear_backward(K, n, F, k, ps->kb.se_out, mml__p(m, pt[2]), ps->kb.act[1], ps->dx0, m->a.d0, ps->kb.dV,
                           mml__g(g, m, pt[2]), ps->ws);
    mml__bilinear_backward(K, n, F, k, ps->E, mml__p(m, pt[3]), ps->kb.act[2], ps->dx0 + Pk, m->a.d0, ps->dE,
                           mml__g(g, m, pt[3]), ps->ws);
    mml__senet_backward(K, n, F, k, m->a.se_r, ps->E, mml__p(m, pt[0]), mml__p(m, pt[1]), ps->kb.act[0], ps->kb.dV,
                        ps->dE, mml__g(g, m, pt[0]), mml__g(g, m, pt[1]), ps->ws);
}

/* name, linear, logit_term, input_params, equal_dims, side_on_x0,
 * build, init, carve, input_fwd, input_bwd, side_fwd, side_bwd */
static const mml__kind mml__kinds[MML_MODEL_COUNT] = {
    {"mlp", 0, 0, 0, 0, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    {"wdl", 1, 0, 0, 0, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    {"deepfm", 1, 1, 0, 1, 0, NULL, NULL, mml__fm_carve, NULL, NULL, mml__fm_side_fwd, mml__fm_side_bwd},
    {"nfm", 1, 0, 0, 1, 0, mml__nfm_build, NULL, mml__nfm_carve, mml__nfm_input_fwd, mml__nfm_input_bwd, NULL, NULL},
    {"pnn", 0, 0, 0, 1, 0, mml__pnn_build, NULL, NULL, mml__pnn_input_fwd, mml__pnn_input_bwd, NULL, NULL},
    {"dcn", 1, 0, 0, 0, 1, mml__dcn_build, NULL, mml__dcn_carve, NULL, NULL, mml__dcn_side_fwd, mml__dcn_side_bwd},
    {"xdeepfm", 1, 1, 0, 1, 0, mml__xdeepfm_build, mml__xdeepfm_init, mml__xdeepfm_carve, NULL, NULL,
     mml__xdeepfm_side_fwd, mml__xdeepfm_side_bwd},
    {"autoint", 1, 0, 0, 1, 0, mml__autoint_build, NULL, mml__autoint_carve, NULL, NULL, mml__autoint_side_fwd,
     mml__autoint_side_bwd},
    {"fibinet", 1, 0, 1, 1, 0, mml__fibinet_build, NULL, mml__fibinet_carve, mml__fibinet_input_fwd,
     mml__fibinet_input_bwd, NULL, NULL},
};

const char *mml_model_kind_name(mml_model_kind k) {
    return (unsigned)k < MML_MODEL_COUNT ? mml__kinds[k].name : "?";
}
int mml_model_kind_from_name(const char *s, mml_model_kind *out) {
    for (int i = 0; i < MML_MODEL_COUNT; i++)
        if (strcmp(s, mml__kinds[i].name) == 0) { *out = (mml_model_kind)i; return 0; }
    return -1;
}

/* ---- config ---- */

/* mml_X_name and mml_X_from_name of an enum T whose n values are named in
 * table; the table's names past the n-th are aliases, each of the name n
 * places before it. */
#define MML__ENUM_NAMES(T, name_fn, from_fn, table, n)                                \
    const char *name_fn(T v) { return (unsigned)v < (unsigned)(n) ? table[v] : "?"; } \
    int from_fn(const char *s, T *out) {                                              \
        int i = mml__name_index(table, (int)(sizeof table / sizeof *table), s);       \
        if (i >= 0) *out = (T)(i % (n));                                              \
        return i < 0 ? -1 : 0;                                                        \
    }

static const char *const mml__adapter_names[] = {"none", "mlora", "moe", "base"};
MML__ENUM_NAMES(mml_adapter, mml_adapter_name, mml_adapter_from_name, mml__adapter_names, 3)

/* ---- the config, made from MML_CONFIG_FIELDS ---- */

static const char *const mml__gate_names[] = {"domain", "input"};
MML__ENUM_NAMES(mml_gate_kind, mml_gate_name, mml_gate_from_name, mml__gate_names, 2)
static const char *const mml__precision_names[] = {"fp32", "bf16"};
MML__ENUM_NAMES(mml_precision, mml_precision_name, mml_precision_from_name, mml__precision_names, 2)

/* Is the tower outside 1..MML_MAX_HIDDEN layers of lo..hi units? */
static int mml__config_hidden_bad(const mml_config_t *c, int lo, int hi) {
    if (c->n_hidden < 1 || c->n_hidden > MML_MAX_HIDDEN) return 1;
    for (int i = 0; i < c->n_hidden; i++)
        if (c->hidden[i] < lo || c->hidden[i] > hi) return 1;
    return 0;
}

/* "256,128,64" into buf; its length (snprintf's). */
static int mml__hidden_text(const int32_t *h, int n_h, char *buf, size_t n) {
    int k = 0;
    if (n) buf[0] = 0;
    for (int i = 0; i < n_h && k >= 0 && (size_t)k < n; i++) k += snprintf(buf + k, n - (size_t)k, i ? ",%d" : "%d", h[i]);
    return k;
}

/* "256,128,64": 1..MML_MAX_HIDDEN sizes; 0 if it is not one. */
static int mml__parse_hidden(const char *v, int32_t *n_out, int32_t *h) {
    int n = 0;
    const char *p = v;
    int32_t t[MML_MAX_HIDDEN];
    while (*p) {
        const char *e = p;
        while (*e && *e != ',') e++;
        int64_t x;
        if (n >= MML_MAX_HIDDEN || !mml__to_i64(p, e, &x) || x < INT32_MIN || x > INT32_MAX) return 0;
        t[n++] = (int32_t)x;
        p = *e ? e + 1 : e;
        if (*e && !*p) return 0; /* a trailing comma */
    }
    if (!n) return 0;
    *n_out = n;
    memcpy(h, t, (size_t)n * sizeof(int32_t));
    return 1;
}

void mml_config_default(mml_config_t *c) {
    memset(c, 0, sizeof *c);
#define MML__CFG_DEF(type, name, def, lo, hi, flag, help) MML__CFG_DEF_##type(name, def)
#define MML__CFG_DEF_MODEL(name, def) c->name = def;
#define MML__CFG_DEF_ADAPTER(name, def) c->name = def;
#define MML__CFG_DEF_GATE(name, def) c->name = def;
#define MML__CFG_DEF_PREC(name, def) c->name = def;
#define MML__CFG_DEF_I32(name, def) c->name = def;
#define MML__CFG_DEF_BOOL(name, def) c->name = def;
#define MML__CFG_DEF_F32(name, def) c->name = def;
#define MML__CFG_DEF_U64(name, def) c->name = def;
#define MML__CFG_DEF_HIDDEN(name, def) mml__parse_hidden(def, &c->n_##name, c->name);
    MML_CONFIG_FIELDS(MML__CFG_DEF)
}

/* One setting from text; with check, also against its range. Unparsable
 * text is MML_ERR_FORMAT, a value out of range MML_ERR_ARG. */
static mml_status mml__config_parse(mml_config_t *c, const char *key, const char *v, int check) {
    int64_t i = 0;
    double d = 0.0;
    uint64_t u = 0;
    (void)d;
    (void)u;
#define MML__CFG_PARSE(type, name, def, lo, hi, flag, help)                                                            \
    if (!strcmp(key, #name)) return MML__CFG_PARSE_##type(name, lo, hi);
#define MML__CFG_PARSE_MODEL(name, lo, hi)                                                                            \
    (mml_model_kind_from_name(v, &c->name) ? mml__fail(MML_ERR_FORMAT, "unknown model \"%s\"", v) : MML_OK)
#define MML__CFG_PARSE_ADAPTER(name, lo, hi)                                                                          \
    (mml_adapter_from_name(v, &c->name) ? mml__fail(MML_ERR_FORMAT, "unknown adapter \"%s\"", v) : MML_OK)
#define MML__CFG_PARSE_GATE(name, lo, hi)                                                                             \
    (mml_gate_from_name(v, &c->name) ? mml__fail(MML_ERR_FORMAT, "unknown gate \"%s\"", v) : MML_OK)
#define MML__CFG_PARSE_PREC(name, lo, hi)                                                                             \
    (mml_precision_from_name(v, &c->name) ? mml__fail(MML_ERR_FORMAT, "unknown precision \"%s\"", v) : MML_OK)
#define MML__CFG_PARSE_I32(name, lo, hi)                                                                              \
    (mml__parse_i64(v, INT32_MIN, INT32_MAX, &i) ? mml__fail(MML_ERR_FORMAT, "bad integer %s=%s", key, v)            \
     : check && (i < (lo) || i > (hi)) ? mml__fail(MML_ERR_ARG, "config: %s %s outside %d..%d", key, v, lo, hi)     \
     : (c->name = (int32_t)i, MML_OK))
#define MML__CFG_PARSE_BOOL(name, lo, hi)                                                                             \
    (mml__parse_i64(v, 0, 1, &i) ? mml__fail(MML_ERR_FORMAT, "bad flag %s=%s (0 or 1)", key, v) : (c->name = (int32_t)i, MML_OK))
#define MML__CFG_PARSE_F32(name, lo, hi)                                                                              \
    (mml__parse_dbl(v, &d) ? mml__fail(MML_ERR_FORMAT, "bad number %s=%s", key, v)                                  \
     : check && !(d >= (double)(lo) && d <= (double)(hi))                                                             \
         ? mml__fail(MML_ERR_ARG, "config: %s %s outside %g..%g", key, v, (double)(lo), (double)(hi))                 \
         : (c->name = (float)d, MML_OK))
#define MML__CFG_PARSE_U64(name, lo, hi) (mml__parse_u64(v, &u) ? mml__fail(MML_ERR_FORMAT, "bad %s \"%s\"", key, v) : (c->name = u, MML_OK))
#define MML__CFG_PARSE_HIDDEN(name, lo, hi)                                                                           \
    (!mml__parse_hidden(v, &c->n_##name, c->name) ? mml__fail(MML_ERR_FORMAT, "bad hidden \"%s\"", v)              \
     : check && mml__config_hidden_bad(c, lo, hi) ? mml__fail(MML_ERR_ARG, "config: hidden %s: sizes outside %d..%d", v, lo, hi) \
     : MML_OK)
    MML_CONFIG_FIELDS(MML__CFG_PARSE)
    return mml__fail(MML_ERR_FORMAT, "unknown key \"%s\"", key);
}

mml_status mml_config_set(mml_config_t *c, const char *key, const char *value) {
    if (!c || !key || !value) return mml__fail(MML_ERR_ARG, "mml_config_set: NULL argument");
    mml_status st = mml__config_parse(c, key, value, 1);
    return st == MML_ERR_FORMAT ? mml__recode(MML_ERR_ARG) : st;
}

int mml_config_get(const mml_config_t *c, const char *key, char *buf, size_t n) {
    int k = -1;
#define MML__CFG_GET(type, name, def, lo, hi, flag, help)                                                              \
    if (k < 0 && !strcmp(key, #name)) k = MML__CFG_GET_##type(name);
#define MML__CFG_GET_MODEL(name) snprintf(buf, n, "%s", mml_model_kind_name(c->name))
#define MML__CFG_GET_ADAPTER(name) snprintf(buf, n, "%s", mml_adapter_name(c->name))
#define MML__CFG_GET_GATE(name) snprintf(buf, n, "%s", mml_gate_name(c->name))
#define MML__CFG_GET_PREC(name) snprintf(buf, n, "%s", mml_precision_name(c->name))
#define MML__CFG_GET_I32(name) snprintf(buf, n, "%d", c->name)
#define MML__CFG_GET_BOOL(name) snprintf(buf, n, "%d", c->name)
#define MML__CFG_GET_F32(name) snprintf(buf, n, "%a", (double)c->name)
#define MML__CFG_GET_U64(name) snprintf(buf, n, "%llu", (unsigned long long)c->name)
#define MML__CFG_GET_HIDDEN(name) mml__hidden_text(c->name, c->n_##name, buf, n)
    MML_CONFIG_FIELDS(MML__CFG_GET)
    return k >= 0 && (size_t)k < n ? k : -1;
}

/* Every setting in its range (MML_CONFIG_FIELDS). */
static mml_status mml__config_ranges(const mml_config_t *c) {
#define MML__CFG_RANGE(type, name, def, lo, hi, flag, help) MML__CFG_RANGE_##type(name, lo, hi)
#define MML__CFG_RANGE_ENUM(name, hi)                                                                                 \
    if ((unsigned)c->name > (unsigned)(hi)) return mml__fail(MML_ERR_ARG, "config: unknown " #name " %d", (int)c->name);
#define MML__CFG_RANGE_MODEL(name, lo, hi) MML__CFG_RANGE_ENUM(name, hi)
#define MML__CFG_RANGE_ADAPTER(name, lo, hi) MML__CFG_RANGE_ENUM(name, hi)
#define MML__CFG_RANGE_GATE(name, lo, hi) MML__CFG_RANGE_ENUM(name, hi)
#define MML__CFG_RANGE_PREC(name, lo, hi) MML__CFG_RANGE_ENUM(name, hi)
#define MML__CFG_RANGE_I32(name, lo, hi)                                                                              \
    if (c->name < (lo) || c->name > (hi))                                                                            \
        return mml__fail(MML_ERR_ARG, "config: " #name " %d outside %d..%d", c->name, lo, hi);
#define MML__CFG_RANGE_BOOL(name, lo, hi) MML__CFG_RANGE_I32(name, lo, hi)
#define MML__CFG_RANGE_F32(name, lo, hi)                                                                              \
    if (!(c->name >= (lo) && c->name <= (hi)))                                                                       \
        return mml__fail(MML_ERR_ARG, "config: " #name " %g outside %g..%g", (double)c->name, (double)(lo), (double)(hi));
#define MML__CFG_RANGE_U64(name, lo, hi)
#define MML__CFG_RANGE_HIDDEN(name, lo, hi)                                                                           \
    if (mml__config_hidden_bad(c, lo, hi))                                                                           \
        return mml__fail(MML_ERR_ARG, "config: the tower needs 1..%d layers of %d..%d units", MML_MAX_HIDDEN, lo, hi);
    MML_CONFIG_FIELDS(MML__CFG_RANGE)
    return MML_OK;
}

/* Rank of the adapter on a layer with d_out units. */
static int mml__rank(const mml_config_t *c, int d_out) {
    if (c->lora_r > 0) return c->lora_r;
    int r = d_out / (c->lora_reduce > 0 ? c->lora_reduce : 1);
    return r < 1 ? 1 : r;
}

/* The domains of a config: its schema's domain field, or n_domains. */
static int32_t mml__config_domains(const mml_config_t *c) {
    return c->schema ? c->schema->field[c->schema->domain].vocab : c->n_domains;
}

/* Interaction models need one dim for every embedded field. */
static mml_status mml__check_dims(const mml_config_t *c) {
    const mml_schema_t *s = c->schema;
    int first = -1;
    for (int f = 0; f < s->n_fields; f++) {
        const mml_field_t *fd = &s->field[f];
        if (fd->kind == MML_FIELD_NUMERIC) continue;
        int dim = fd->dim > 0 ? fd->dim : c->emb_dim;
        if (first < 0) first = f;
        int d0 = s->field[first].dim > 0 ? s->field[first].dim : c->emb_dim;
        if (dim != d0)
            return mml__fail(MML_ERR_ARG, "config: %s needs one embedding dim for every field (%s has %d, %s has %d)",
                             mml_model_kind_name(c->model), s->field[first].name, d0, fd->name, dim);
    }
    return MML_OK;
}

/* The ranges of MML_CONFIG_FIELDS, then what relates settings. */
static mml_status mml__check_config(const mml_config_t *c) {
    if (c->schema) {
        mml_status st = mml_schema_check(c->schema);
        if (st) return st;
        if ((unsigned)c->model < MML_MODEL_COUNT && mml__kinds[c->model].equal_dims && (st = mml__check_dims(c)))
            return st;
        if (c->pretrained) return mml__fail(MML_ERR_ARG, "config: with a schema, mark pretrained fields frozen instead");
    } else if (c->n_users <= 0 || c->n_items <= 0 || c->n_domains <= 0) {
        return mml__fail(MML_ERR_ARG, "config: vocab sizes must be positive (users %d, items %d, domains %d)",
                         c->n_users, c->n_items, c->n_domains);
    }
    int32_t nd = mml__config_domains(c);
    if (nd > MML_MAX_DOMAINS)
        return mml__fail(MML_ERR_ARG, "config: %d domains, at most MML_MAX_DOMAINS = %d", nd, MML_MAX_DOMAINS);
    mml_status st = mml__config_ranges(c);
    if (st) return st;
    /* the adapters' experts (MLoRA: one per domain) at most 256; the base model takes any domain count */
    int64_t experts = c->adapter == MML_ADAPTER_MOE ? (int64_t)c->experts_per_domain * nd
                    : c->adapter == MML_ADAPTER_MLORA ? nd : 1;
    if (experts > 256)
        return mml__fail(MML_ERR_ARG, "config: experts (%d per domain x %d domains) must be 1..256",
                         c->adapter == MML_ADAPTER_MOE ? c->experts_per_domain : 1, nd);
    return MML_OK;
}

/* ---- the architecture ---- */

/* Domain-folded training. When each row's expert mixture is a function of its
 * domain alone (MoE-MLoRA with the domain gate, MLoRA), a pass over rows
 * sorted by domain can fold, per domain run d, the adapters of layer l into
 * one dense matrix and bias,
 *   dW_d = sum_e w_e(d) P_e  with  P_e = A_e B_e,   c_d = sum_e w_e(d) c_e,
 * and apply x dW_d + c_d instead of the low-rank path over all experts. The
 * backward pass gets the run's gradient G_d = X_d^T dz_d and maps it back:
 *   M_e = sum_d w_e(d) G_d,  dA_e = M_e B_e^T,  dB_e = A_e^T M_e,
 *   dw_e(d) = <G_d, P_e> + <colsum dz_d, c_e>.
 * Same function, same gradients (up to rounding).
 *
 * Without dropout the base layer folds in as well: W_d = W + dW_d and
 * b + c_d, one product per run in each direction (z = X_d W_d,
 * dX_d = dZ_d W_d^T) and dW = sum_d G_d, so a folded layer costs the base
 * model's 3 d_in d_out multiply-adds per row plus per-step terms in the
 * runs and experts. With dropout the base part alone is masked,
 *   z = m * s (x W + b) + x dW_d + c_d  (m per element),
 * which no single product gives (nor dX = (m s dZ) W^T + dZ dW_d^T, nor
 * dW = X^T (m s dZ) beside G_d = X^T dZ): the base products stay separate
 * and folding only replaces the low-rank path, E r (d_in + d_out)
 * multiply-adds per row, by d_in d_out, which pays where d_in is small next
 * to E r (the first layer of a narrow-embedding model). */
static int mml__tf_config(const mml_config_t *c) {
    return c->adapter == MML_ADAPTER_MLORA || (c->adapter == MML_ADAPTER_MOE && c->gate == MML_GATE_DOMAIN);
}

/* Does folding layer L pay for n rows in nr domain runs (base: the base
 * weight folds in too)? Multiply-adds of the all-parameters phase, forward
 * and backward, beyond the base layer's 3 n K that both ways run (K = d_in
 * d_out): the low-rank path's x A, U B, dz B^T, U^T dz, x^T dT, dT A^T;
 * folding's P_e = A_e B_e, dA_e, dB_e (3 E r K), the mixtures W_d, M_e and
 * dw (3 nr E K) and either the delta's own x dW_d, dz dW_d^T, G_d (3 n K)
 * or, with the base folded, the runs' W + dW_d and sum of G_d (2 nr K adds).
 * The margin is for the folded path's small, oddly shaped products. */
static int mml__tf_pays(const mml__layer *L, int E, int64_t n, int64_t nr, int base) {
    double K = (double)L->d_in * L->d_out, Er = (double)E * L->r;
    double low = 3.0 * (double)n * Er * (L->d_in + L->d_out);
    double fold = 3.0 * Er * K + 3.0 * (double)nr * E * K + (base ? 2.0 * (double)nr * K : 3.0 * (double)n * K);
    return fold < 0.8 * low;
}

/* The folded layers of a training pass take in the base weight when no
 * dropout masks the base part alone. */
static int mml__tf_fold_base(const mml_config_t *c) { return !(c->dropout > 0.0f); }

static void mml__tf_layout(mml_model_t *m) {
    const mml_config_t *c = &m->cfg;
    int64_t n = c->max_batch / c->threads, nr = (int64_t)c->n_domains + 1;
    if (n < 1) n = 1;
    if (nr > n) nr = n;
    for (int l = 0; l < m->a.n_layers; l++) {
        mml__layer *L = &m->a.layer[l];
        double fl = ((double)m->a.n_experts + c->n_domains + 1) * L->d_in * L->d_out;
        /* small layers always carry the buffers (tests force the path) */
        L->tf = m->a.n_experts > 0 && mml__tf_config(c) && fl <= 4e6 &&
                (fl <= 65536 || mml__tf_pays(L, m->a.n_experts, n, nr, mml__tf_fold_base(c)));
    }
}

/* ---- the architecture ---- */

/* The embedded fields in E's order (the schema's, the domain last), their
 * tables and the wide part's; the numeric fields. */
static void mml__build_fields(mml_model_t *m) {
    const mml_config_t *c = &m->cfg;
    const mml_schema_t *s = m->a.schema;
    mml__arch *a = &m->a;
    a->F = a->n_num = a->D = 0;
    a->k = -1;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < s->n_fields; i++) {
            const mml_field_t *sf = &s->field[i];
            if (sf->kind == MML_FIELD_NUMERIC || (i == s->domain) != pass) continue;
            mml__field *fd = &a->field[a->F++];
            memset(fd, 0, sizeof *fd);
            fd->src = i;
            fd->vocab = sf->vocab;
            fd->dim = sf->dim > 0 ? sf->dim : c->emb_dim;
            fd->e_off = a->D;
            fd->len = sf->kind == MML_FIELD_MULTI_HOT ? sf->max_len : 1;
            fd->mean = sf->kind == MML_FIELD_MULTI_HOT && sf->pooling == MML_POOL_MEAN;
            fd->frozen = sf->frozen;
            a->D += fd->dim;
            a->k = a->k < 0 || a->k == fd->dim ? fd->dim : 0;
        }
    a->dom_field = a->F - 1;
    for (int i = 0; i < s->n_fields; i++) {
        if (s->field[i].kind != MML_FIELD_NUMERIC) continue;
        mml__numeric *nm = &a->num[a->n_num++];
        nm->src = i;
        nm->shift = s->field[i].shift;
        nm->scale = s->field[i].scale;
    }
    a->n_pairs = a->F * (a->F - 1) / 2;
    for (int f = 0; f < a->F; f++) {
        mml__field *fd = &a->field[f];
        char nm[64];
        snprintf(nm, sizeof nm, "emb.%s", s->field[fd->src].name);
        /* one extra row: the out-of-vocabulary id */
        fd->emb = mml__add_param(m, nm, MML__G_EMB, 2, fd->vocab + 1, fd->dim);
        a->t[fd->emb].row_table = 1;
        a->t[fd->emb].init = MML__INIT_EMB;
    }
    for (int f = 0; f < a->F; f++) {
        mml__field *fd = &a->field[f];
        char nm[64];
        fd->lin = -1;
        if (!a->kind->linear) continue;
        snprintf(nm, sizeof nm, "linear.%s", s->field[fd->src].name);
        fd->lin = mml__add_param(m, nm, MML__G_LINEAR, 2, fd->vocab + 1, 1);
        a->t[fd->lin].row_table = 1;
        a->t[fd->lin].init = MML__INIT_EMB;
    }
    a->lin_num = a->kind->linear && a->n_num ? mml__add_param(m, "linear.numeric", MML__G_LINEAR, 1, a->n_num, 1) : -1;
    a->dk = a->D;
    a->d0 = a->D + a->n_num;
}

/* The tower's layers with their adapters (E experts of rank r per layer). */
static void mml__build_tower(mml_model_t *m) {
    const mml_config_t *c = &m->cfg;
    mml__arch *a = &m->a;
    int E = a->n_experts, d_in = a->d0;
    a->n_layers = c->n_hidden;
    a->max_r = 1;
    a->max_d = a->d0;
    for (int l = 0; l < c->n_hidden; l++) {
        mml__layer *L = &a->layer[l];
        char nm[48];
        L->d_in = d_in;
        L->d_out = c->hidden[l];
        L->r = E ? mml__rank(c, L->d_out) : 0;
        snprintf(nm, sizeof nm, "tower.%d.W", l);
        L->W = mml__add_glorot(m, nm, MML__G_TOWER, d_in, L->d_out, d_in, L->d_out);
        snprintf(nm, sizeof nm, "tower.%d.b", l);
        L->b = mml__add_param(m, nm, MML__G_TOWER, 1, L->d_out, 1);
        L->A = L->B = L->C = -1;
        if (E) {
            snprintf(nm, sizeof nm, "tower.%d.lora_A", l);
            L->A = mml__add_glorot(m, nm, MML__G_EXPERT, d_in, (int64_t)E * L->r, d_in, L->r);
            a->t[L->A].xlayout = MML__XL_COLS;
            a->t[L->A].xblock = L->r;
            snprintf(nm, sizeof nm, "tower.%d.lora_B", l);
            L->B = mml__add_param(m, nm, MML__G_EXPERT, 2, (int64_t)E * L->r, L->d_out);
            a->t[L->B].xlayout = MML__XL_ROWS;
            a->t[L->B].xblock = (int64_t)L->r * L->d_out;
            snprintf(nm, sizeof nm, "tower.%d.lora_c", l);
            L->C = mml__add_param(m, nm, MML__G_EXPERT, 2, E, L->d_out);
            a->t[L->C].xlayout = MML__XL_ROWS;
            a->t[L->C].xblock = L->d_out;
            if (E * L->r > a->max_r) a->max_r = E * L->r;
        }
        if (L->d_out > a->max_d) a->max_d = L->d_out;
        d_in = L->d_out;
    }
}

/* The tensor table and every size the config implies (nothing allocated
 * but the model's copy of the schema). */
static mml_status mml__build_arch(mml_model_t *m, const mml_config_t *cfg) {
    mml__arch *a = &m->a;
    a->schema = (mml_schema_t *)mml__alloc(sizeof *a->schema);
    if (!a->schema) return mml__fail(MML_ERR_NOMEM, "cannot allocate the schema");
    m->cfg = *cfg;
    a->own_schema = cfg->schema != NULL;
    if (cfg->schema) {
        *a->schema = *cfg->schema;
        m->cfg.n_domains = mml__config_domains(cfg);
    } else {
        mml_schema_paper(a->schema, cfg->n_users, cfg->n_items, cfg->n_domains);
        a->schema->field[0].frozen = a->schema->field[1].frozen = cfg->pretrained;
    }
    m->cfg.schema = a->schema;
    const mml_config_t *c = &m->cfg;
    a->kind = &mml__kinds[c->model];
    for (int i = 0; i < (int)(sizeof a->part / sizeof a->part[0]); i++) a->part[i] = -1;
    mml__build_fields(m);
    a->de = 0;
    if (a->kind->build) a->kind->build(m);
    a->n_experts = c->adapter == MML_ADAPTER_MLORA ? c->n_domains
                 : c->adapter == MML_ADAPTER_MOE ? c->n_domains * c->experts_per_domain : 0;
    mml__build_tower(m);
    int E = a->n_experts, d_in = a->layer[a->n_layers - 1].d_out;
    a->gate_emb = a->gate_W = a->gate_b = -1;
    if (c->adapter == MML_ADAPTER_MOE) {
        int gin = c->gate == MML_GATE_DOMAIN ? c->gate_dim : a->d0;
        if (c->gate == MML_GATE_DOMAIN) {
            a->gate_emb = mml__add_param(m, "gate.emb", MML__G_GATE, 2, c->n_domains + 1, c->gate_dim);
            a->t[a->gate_emb].row_table = 1;
            a->t[a->gate_emb].init = MML__INIT_GATE_EMB;
        }
        a->gate_W = mml__add_glorot(m, "gate.W", MML__G_GATE, gin, E, gin, E);
        a->gate_b = mml__add_param(m, "gate.b", MML__G_GATE, 1, E, 1);
    }
    a->out_W = mml__add_glorot(m, "out.W", MML__G_OUT, d_in + a->de, 1, d_in + a->de, 1);
    a->out_b = mml__add_param(m, "out.b", MML__G_OUT, 1, 1, 1);
    mml__tf_layout(m);
    return MML_OK;
}

/* One random stream in tensor order (the order fixes every initial value). */
static void mml__init_params(mml_model_t *m) {
    uint64_t rng = m->cfg.seed ^ 0x6D6F656D6C6F7261ull;
    for (int i = 0; i < m->a.n_params; i++) {
        const mml__param *p = &m->a.t[i];
        float *w = m->P + p->off;
        int64_t rows = (p->shape[0] - 1) * p->shape[1]; /* a table's OOV row stays zero */
        switch (p->init) {
        case MML__INIT_EMB:
            for (int64_t j = 0; j < rows; j++) w[j] = 1e-4f * mml__rng_normal(&rng);
            break;
        case MML__INIT_GATE_EMB:
            for (int64_t j = 0; j < rows; j++) w[j] = (float)(0.1 * mml__rng_uniform(&rng) - 0.05);
            break;
        case MML__INIT_GLOROT: mml__init_glorot(w, p->size, p->fan_in, p->fan_out, &rng); break;
        case MML__INIT_KIND: m->a.kind->init(m, i, w, &rng); break;
        default: break; /* zero */
        }
    }
}

/* ---- passes, gradients, the optimizer's memory ---- */

enum { MML__PASS_TRAIN = 1, MML__PASS_LOAD = 2 };

/* A pass's buffers for max_batch rows: with TRAIN, what backward and
 * domain-folded training need beyond inference; with LOAD, room to load a
 * batch (worker passes view the model pass's). */
static void mml__carve_pass(const mml_model_t *m, mml__pass *ps, mml__carve *c, int what) {
    const mml__arch *a = &m->a;
    int64_t B = m->cfg.max_batch, E = a->n_experts > 0 ? a->n_experts : 1, nd = m->cfg.n_domains;
    ps->x0 = mml__take(c, B * a->d0);
    ps->dx0 = mml__take(c, B * a->d0);
    int alias = !a->kind->input_fwd && !a->n_num; /* the tower input is E itself */
    ps->E = alias ? ps->x0 : mml__take(c, B * a->D);
    ps->dE = alias ? ps->dx0 : mml__take(c, B * a->D);
    for (int l = 0; l < a->n_layers; l++) {
        const mml__layer *L = &a->layer[l];
        int64_t er = L->r ? (int64_t)a->n_experts * L->r : 1;
        ps->z[l] = mml__take(c, B * L->d_out);
        ps->dkeep[l] = (what & MML__PASS_TRAIN) && m->cfg.dropout > 0.0f
                           ? (uint8_t *)(void *)mml__take(c, (B * L->d_out + 3) / 4) : NULL;
        ps->T[l] = mml__take(c, B * er);
        ps->U[l] = mml__take(c, B * er);
        ps->tf_P[l] = ps->tf_W[l] = ps->tf_c[l] = NULL;
        if (!(what & MML__PASS_TRAIN) || !L->tf) continue;
        ps->tf_P[l] = mml__take(c, E * L->d_in * L->d_out);
        ps->tf_W[l] = mml__take(c, (nd + 1) * L->d_in * L->d_out);
        ps->tf_c[l] = mml__take(c, (nd + 1) * L->d_out);
    }
    ps->gw = mml__take(c, B * E);
    ps->glogit = mml__take(c, B * E);
    ps->dw = mml__take(c, B * E);
    ps->gin = mml__take(c, B * (m->cfg.gate == MML_GATE_INPUT ? 1 : m->cfg.gate_dim));
    ps->logit = mml__take(c, B);
    ps->prob = mml__take(c, B);
    ps->dlogit = mml__take(c, B);
    ps->lin_out = mml__take(c, B);
    ps->side_logit = mml__take(c, B);
    ps->dz = mml__take(c, B * a->max_d);
    ps->dx = mml__take(c, B * a->max_d);
    ps->dT = mml__take(c, B * a->max_r);
    ps->dU = mml__take(c, B * (a->max_r > m->cfg.gate_dim ? a->max_r : m->cfg.gate_dim));
    ps->tf_run = NULL;
    ps->tf_wd = ps->tf_db = ps->tf_dw = NULL;
    if ((what & MML__PASS_TRAIN) && a->n_experts > 0 && mml__tf_config(&m->cfg)) {
        ps->tf_run = (int32_t *)(void *)mml__take(c, nd + 2);
        ps->tf_wd = mml__take(c, (nd + 1) * E);
        ps->tf_db = mml__take(c, (nd + 1) * a->max_d);
        ps->tf_dw = mml__take(c, (nd + 1) * E);
    }
    for (int f = 0; f < MML__MAX_FIELDS; f++) ps->ids_buf[f] = NULL;
    ps->num_buf = ps->label_buf = ps->unperm = NULL;
    ps->perm = ps->dom_count = NULL;
    if (what & MML__PASS_LOAD) {
        for (int f = 0; f < a->F; f++) ps->ids_buf[f] = (int32_t *)(void *)mml__take(c, B * a->field[f].len);
        ps->num_buf = mml__take(c, B * a->n_num);
        ps->label_buf = mml__take(c, B);
        ps->perm = (int32_t *)(void *)mml__take(c, B);
        ps->dom_count = (int32_t *)(void *)mml__take(c, nd + 2);
        ps->unperm = mml__take(c, B);
    }
    ps->extra = ps->dextra = NULL;
    memset(&ps->kb, 0, sizeof ps->kb);
    int64_t ws = a->kind->carve ? a->kind->carve(m, ps, c, B) : 0;
    ps->ws = mml__take(c, ws + 16);
}

static void mml__pass_free(mml__pass *ps) {
    mml__free(ps->block);
    ps->block = NULL;
}

typedef struct mml__pass_spec { const mml_model_t *m; mml__pass *ps; int what; } mml__pass_spec;
static void mml__carve_pass_cb(void *ctx, mml__carve *c) {
    const mml__pass_spec *sp = (const mml__pass_spec *)ctx;
    mml__carve_pass(sp->m, sp->ps, c, sp->what);
}

static mml_status mml__pass_init(const mml_model_t *m, mml__pass *ps, int what) {
    mml__pass_spec sp = {m, ps, what};
    float *blk = NULL;
    memset(ps, 0, sizeof *ps);
    mml_status st = mml__carve_block(mml__carve_pass_cb, &sp, "activations", &blk);
    ps->block = blk;
    return st;
}

static void mml__grads_free(const mml_model_t *m, mml__grads *g) {
    mml__free(g->G);
    for (int f = 0; f < m->a.F; f++) { mml__free(g->touched[f]); mml__free(g->mark[f]); }
    memset(g, 0, sizeof *g);
}

/* A gradient arena whose floats below zero_from are never written (workers
 * leave their embedding gradients in dE), and the touched-row lists. */
static mml_status mml__grads_init(const mml_model_t *m, mml__grads *g, int64_t zero_from) {
    memset(g, 0, sizeof *g);
    int64_t B = m->cfg.max_batch;
    g->G = (float *)mml__alloc_from((size_t)m->a.n_floats * sizeof(float), (size_t)zero_from * sizeof(float));
    if (!g->G) return mml__fail(MML_ERR_NOMEM, "cannot allocate %llu bytes of gradients",
                                (unsigned long long)m->a.n_floats * sizeof(float));
    for (int f = 0; f < m->a.F; f++) {
        int64_t rows = m->a.t[m->a.field[f].emb].shape[0], ids = B * m->a.field[f].len;
        g->touched[f] = (int32_t *)mml__alloc((size_t)(ids < rows ? ids : rows) * sizeof(int32_t) + 4);
        g->mark[f] = (uint8_t *)mml__alloc((size_t)rows);
        if (!g->touched[f] || !g->mark[f]) return mml__fail(MML_ERR_NOMEM, "cannot allocate id buffers");
    }
    return MML_OK;
}

static void mml__optim_free(const mml_model_t *m, mml__optim *o) {
    mml__free(o->M); mml__free(o->V);
    for (int f = 0; f < m->a.F; f++) { mml__free(o->last[f]); mml__free(o->uniq[f]); }
    mml__free(o->hp_ring); mml__free(o->hp_tag);
    mml__free(o->catch_tmp); mml__free(o->catch_all); mml__free(o->catch_count);
}

static mml_status mml__optim_init(const mml_model_t *m, mml__optim *o, size_t arena_bytes) {
    int64_t most = 0, B = m->cfg.max_batch, ids = B;
    o->M = (float *)mml__alloc(arena_bytes);
    o->V = (float *)mml__alloc(arena_bytes);
    for (int f = 0; f < m->a.F; f++) {
        int64_t rows = m->a.t[m->a.field[f].emb].shape[0];
        o->last[f] = (int64_t *)mml__alloc((size_t)rows * sizeof(int64_t));
        o->uniq[f] = (int32_t *)mml__alloc((size_t)B * m->a.field[f].len * sizeof(int32_t));
        if (!o->last[f] || !o->uniq[f]) return mml__fail(MML_ERR_NOMEM, "cannot allocate optimizer row state");
        if (rows > most) most = rows;
        if (B * m->a.field[f].len > ids) ids = B * m->a.field[f].len;
    }
    o->catch_tmp = (int32_t *)mml__alloc((size_t)ids * sizeof(int32_t));
    o->catch_all = (int32_t *)mml__alloc((size_t)(2 * most) * sizeof(int32_t));
    o->catch_count = (int64_t *)mml__alloc((MML__AGE_BUCKETS + 1) * sizeof(int64_t));
    o->hp_ring = (mml_adam_hp *)mml__alloc(MML__HP_RING * sizeof(mml_adam_hp));
    o->hp_tag = (int64_t *)mml__alloc(MML__HP_RING * sizeof(int64_t));
    if (!o->M || !o->V || !o->catch_tmp || !o->catch_all || !o->catch_count || !o->hp_ring || !o->hp_tag)
        return mml__fail(MML_ERR_NOMEM, "cannot allocate the optimizer state");
    for (int i = 0; i < MML__HP_RING; i++) o->hp_tag[i] = -1;
    return MML_OK;
}

/* ---- lifecycle ---- */

static void mml__threads_free(mml_model_t *m);
static void mml__catch_up_all(mml_model_t *m);
static void mml__rows_current(mml_model_t *m);
static mml_status mml__threads_init(mml_model_t *m);

void mml_model_free(mml_model_t *m) {
    if (!m) return;
    mml__threads_free(m);
    mml__free(m->P);
    mml__free(m->snapshot);
    mml__free(m->fold.w);
    mml__free(m->rt.dist_buf);
    mml__grads_free(m, &m->grads);
    mml__optim_free(m, &m->opt);
    mml__pass_free(&m->pass);
    mml__free(m->a.schema);
    MOEMLORA_FREE(m);
}

/* The tower GEMMs' kernels of training and inference passes. */
static void mml__set_precision(mml_model_t *m, mml_precision training, mml_precision inference) {
    m->cfg.precision = training;
    m->cfg.infer_precision = inference;
    m->KT = training == MML_PRECISION_BF16 ? &m->kt_bf16 : m->K;
    m->KI = inference == MML_PRECISION_BF16 ? &m->kt_bf16 : m->K;
}

mml_status mml_model_create(const mml_config_t *c, mml_model_t **out) {
    *out = NULL;
    mml_status st = mml__check_config(c);
    if (st) return st;
    char err[256];
    mml_isa isa;
    if (mml_simd_resolve(&isa, err, sizeof err) != 0) return mml__fail(MML_ERR_ISA, "%s", err);
    mml_model_t *m = (mml_model_t *)MOEMLORA_MALLOC(sizeof *m);
    if (!m) return mml__fail(MML_ERR_NOMEM, "cannot allocate the model");
    memset(m, 0, sizeof *m);
    m->isa = isa;
    m->rt.world = 1;
    m->K = mml_simd_kernels(isa);
    m->kt_bf16 = *m->K;
    m->kt_bf16.gemm_nn = m->K->gemm_nn_bf16;
    m->kt_bf16.gemm_nt = m->K->gemm_nt_bf16;
    m->kt_bf16.gemm_tn = m->K->gemm_tn_bf16;
    m->kt_bf16.gemm_pair = m->K->gemm_pair_bf16;
    mml__set_precision(m, c->precision, c->infer_precision);
    if ((st = mml__build_arch(m, c)) != MML_OK) {
        mml_model_free(m);
        return st;
    }
    uint64_t bytes;
    if (!mml__mul_ok((uint64_t)m->a.n_floats, sizeof(float), (uint64_t)1 << 40, &bytes)) {
        mml_model_free(m);
        return mml__fail(MML_ERR_ARG, "config: parameter size overflows");
    }
    m->P = (float *)mml__alloc((size_t)bytes);
    m->snapshot = (float *)mml__alloc((size_t)bytes);
    if (!m->P || !m->snapshot) {
        mml_model_free(m);
        return mml__fail(MML_ERR_NOMEM, "cannot allocate %llu bytes of parameters", (unsigned long long)bytes * 5);
    }
    st = mml__grads_init(m, &m->grads, 0);
    if (!st) st = mml__optim_init(m, &m->opt, (size_t)bytes);
    if (!st) st = mml__pass_init(m, &m->pass, MML__PASS_TRAIN | MML__PASS_LOAD);
    if (!st) m->pass.g = &m->grads;
    if (st) { mml_model_free(m); return st; }
    mml__init_params(m);
    mml_model_set_phase(m, c->adapter == MML_ADAPTER_MOE ? MML_PHASE_GATE : MML_PHASE_ALL, 0);
    st = mml__threads_init(m);
    if (st) { mml_model_free(m); return st; }
    *out = m;
    return MML_OK;
}

const mml_config_t *mml_model_config(const mml_model_t *m) { return &m->cfg; }
const char *mml_model_isa(const mml_model_t *m) { return mml_isa_name(m->isa); }
int32_t mml_model_n_experts(const mml_model_t *m) { return m->a.n_experts; }

/* Does the phase train tensor i? */
static int mml__param_trainable(const mml_model_t *m, int i) {
    const mml__param *p = &m->a.t[i];
    if (!m->ph.trainable[p->group]) return 0;
    for (int f = 0; f < m->a.F; f++)
        if (i == m->a.field[f].emb) return !m->a.field[f].frozen;
    return 1;
}

int64_t mml_model_param_count(const mml_model_t *m, int trainable_only) {
    int64_t n = 0;
    for (int i = 0; i < m->a.n_params; i++) {
        const mml__param *p = &m->a.t[i];
        if (!trainable_only) { n += p->size; continue; }
        if (!mml__param_trainable(m, i)) continue;
        /* phase 2 trains one expert's block only */
        n += (p->group == MML__G_EXPERT && m->ph.phase == MML_PHASE_EXPERT) ? p->size / m->a.n_experts : p->size;
    }
    return n;
}

mml_status mml_model_set_pretrained(mml_model_t *m, const float *user_emb, const float *item_emb, int32_t dim) {
    if (dim != m->a.k) return mml__fail(MML_ERR_ARG, "pretrained dim %d != model emb_dim %d", dim, m->a.k);
    memcpy(mml__p(m, m->a.field[0].emb), user_emb, (size_t)m->cfg.n_users * dim * sizeof(float));
    memcpy(mml__p(m, m->a.field[1].emb), item_emb, (size_t)m->cfg.n_items * dim * sizeof(float));
    return MML_OK;
}

static void mml__phase_flags(mml_model_t *m, mml_phase p, int32_t expert) {
    m->fold.ok = 0;
    m->ph.phase = p;
    m->ph.expert = p == MML_PHASE_EXPERT ? expert : -1;
    int backbone = p == MML_PHASE_ALL || p == MML_PHASE_BACKBONE;
    int *tr = m->ph.trainable;
    tr[MML__G_EMB] = tr[MML__G_LINEAR] = tr[MML__G_TOWER] = backbone;
    tr[MML__G_EXTRA] = tr[MML__G_OUT] = backbone;
    tr[MML__G_EXPERT] = p == MML_PHASE_ALL || p == MML_PHASE_EXPERT;
    tr[MML__G_GATE] = p == MML_PHASE_ALL || p == MML_PHASE_GATE;
}

mml_status mml_model_set_phase(mml_model_t *m, mml_phase p, int32_t expert) {
    int moe = m->cfg.adapter == MML_ADAPTER_MOE;
    if ((unsigned)p > MML_PHASE_GATE) return mml__fail(MML_ERR_ARG, "unknown phase %d", (int)p);
    if (!moe && p != MML_PHASE_ALL)
        return mml__fail(MML_ERR_STATE, "phase %d needs the MoE adapter", (int)p);
    if (p == MML_PHASE_EXPERT && (expert < 0 || expert >= m->a.n_experts))
        return mml__fail(MML_ERR_ARG, "expert %d outside 0..%d", expert, m->a.n_experts - 1);
    mml__catch_up_all(m); /* finish the old optimizer's steps first */
    mml__phase_flags(m, p, expert);
    /* a fresh optimizer for every phase */
    size_t bytes = (size_t)m->a.n_floats * sizeof(float);
    memset(m->opt.M, 0, bytes);
    memset(m->opt.V, 0, bytes);
    memset(m->grads.G, 0, bytes);
    m->opt.t = 0;
    mml__rows_current(m);
    return MML_OK;
}
// >>forward ----------------------------------------------------------------
/* The path of a batch: mml__pass_load (ids into the pass, once, grouped by
 * domain where that pays), mml__plan_for (the decisions for the whole batch),
 * then mml__forward and mml__backward on the pass's rows, which may be one
 * worker's share of the loaded batch. */

static void mml__folded_forward_tower(const mml_model_t *m, mml__pass *ps);

/* Schema field src's column of a batch (the paper's layout: uid, pid, dom). */
static const int32_t *mml__batch_ids(const mml_batch_t *b, int src) {
    if (b->ids) return b->ids[src];
    return src == 0 ? b->uid : src == 1 ? b->pid : b->dom;
}

static int mml__domain_runs(const mml_model_t *m, const mml_batch_t *b) {
    const int32_t *dom = mml__batch_ids(b, m->a.field[m->a.dom_field].src);
    int runs = 1;
    for (int i = 1; i < b->n; i++) runs += dom[i] != dom[i - 1];
    return runs;
}

/* Loads the rows of b into the pass: ids clamped to the vocabulary (an
 * unknown id reads its field's OOV row; a list's empty slots become -1),
 * numeric values normalised and, with sort, rows grouped by domain (a
 * stable counting sort; perm[j] is the batch row of loaded row j). The
 * pass's rows become the whole batch. */
static void mml__pass_load(const mml_model_t *m, mml__pass *ps, const mml_batch_t *b, int sort) {
    const mml__arch *a = &m->a;
    int n = b->n, df = a->dom_field, D = a->field[df].vocab, J = a->n_num;
    const int32_t *dom = mml__batch_ids(b, a->field[df].src);
    ps->sorted = sort;
    if (sort) {
        int32_t *start = ps->dom_count;
        memset(start, 0, sizeof(int32_t) * (size_t)(D + 2));
        for (int i = 0; i < n; i++) start[(dom[i] >= 0 && dom[i] < D ? dom[i] : D) + 1]++;
        for (int d = 0; d <= D; d++) start[d + 1] += start[d];
        for (int i = 0; i < n; i++) ps->perm[start[dom[i] >= 0 && dom[i] < D ? dom[i] : D]++] = i;
    }
    for (int f = 0; f < a->F; f++) {
        const int32_t *src = mml__batch_ids(b, a->field[f].src);
        int32_t *dst = ps->ids_buf[f], V = a->field[f].vocab;
        int len = a->field[f].len;
        for (int j = 0; j < n; j++) {
            const int32_t *row = src + (int64_t)(sort ? ps->perm[j] : j) * len;
            int32_t *out = dst + (int64_t)j * len;
            for (int q = 0; q < len; q++) {
                int32_t id = row[q];
                out[q] = id >= 0 && id < V ? id : len > 1 && id < 0 ? -1 : V;
            }
        }
        ps->loaded.ids[f] = dst;
    }
    for (int q = 0; q < J; q++) {
        const float *src = b->values[a->num[q].src];
        float sh = a->num[q].shift, sc = a->num[q].scale;
        for (int j = 0; j < n; j++) ps->num_buf[(int64_t)j * J + q] = (src[sort ? ps->perm[j] : j] - sh) * sc;
    }
    ps->loaded.num = ps->num_buf;
    ps->loaded.label = b->label;
    if (b->label && sort) {
        for (int j = 0; j < n; j++) ps->label_buf[j] = b->label[ps->perm[j]];
        ps->loaded.label = ps->label_buf;
    }
    ps->loaded.n = n;
    ps->loaded.row0 = 0;
    ps->r = ps->loaded;
}

/* Rows [lo, hi) of rows r, as a worker's share. */
static mml__rows mml__rows_slice(const mml_model_t *m, const mml__rows *r, int lo, int hi) {
    mml__rows s = *r;
    s.n = hi - lo;
    s.row0 = r->row0 + lo;
    for (int f = 0; f < m->a.F; f++) s.ids[f] = r->ids[f] + (int64_t)lo * m->a.field[f].len;
    if (r->num) s.num = r->num + (int64_t)lo * m->a.n_num;
    if (r->label) s.label = r->label + lo;
    return s;
}
/* Which adapters the rows use: none, one (MLoRA's domain when every row is of
 * one domain, or the expert being trained), or all experts mixed by per-row
 * weights. Taken on the whole batch, so every worker's share and every
 * process's share use the same path, and the optimizer steps what it chose. */
static void mml__plan_for(const mml_model_t *m, mml__pass *ps, int train) {
    mml__plan *pl = &ps->plan;
    pl->train = train;
    pl->folded = !train && m->fold.ok;
    pl->step = m->opt.steps;
    pl->defer_scatter = 0;
    pl->ad_mode = MML__AD_OFF;
    pl->ad_expert = 0;
    if (!m->a.n_experts) return;
    if (m->cfg.adapter == MML_ADAPTER_MLORA) {
        const int32_t *dom = ps->loaded.ids[m->a.dom_field];
        int n = ps->loaded.n, same = 1;
        for (int i = 1; i < n && same; i++) same = dom[i] == dom[0];
        if (!same) pl->ad_mode = MML__AD_MIX;
        else if (dom[0] < m->cfg.n_domains) { pl->ad_mode = MML__AD_SINGLE; pl->ad_expert = dom[0]; }
        return;
    }
    if (m->ph.phase == MML_PHASE_BACKBONE) return;
    if (m->ph.phase == MML_PHASE_EXPERT) { pl->ad_mode = MML__AD_SINGLE; pl->ad_expert = m->ph.expert; return; }
    pl->ad_mode = MML__AD_MIX;
}

/* A multi-hot row's weight per id: 1/count for mean pooling (0 for an empty
 * list), else 1. */
static float mml__list_weight(const mml__field *fd, const int32_t *ids) {
    if (!fd->mean) return 1.0f;
    int c = 0;
    for (int q = 0; q < fd->len; q++) c += ids[q] >= 0;
    return c ? 1.0f / (float)c : 0.0f;
}

/* Field embeddings of the rows: E [n, D], field f in columns [e_off, e_off + dim). */
static void mml__embed(const mml_model_t *m, mml__pass *ps) {
    const mml__arch *a = &m->a;
    for (int f = 0; f < a->F; f++) {
        const mml__field *fd = &a->field[f];
        const float *tab = mml__p(m, fd->emb);
        if (fd->len == 1) {
            m->K->gather_rows(ps->r.n, ps->r.ids[f], tab, fd->dim, ps->E + fd->e_off, a->D);
            continue;
        }
        for (int i = 0; i < ps->r.n; i++) { /* pooled lists */
            const int32_t *ids = ps->r.ids[f] + (int64_t)i * fd->len;
            float *e = ps->E + (int64_t)i * a->D + fd->e_off, w = mml__list_weight(fd, ids);
            memset(e, 0, (size_t)fd->dim * sizeof(float));
            for (int q = 0; q < fd->len; q++)
                if (ids[q] >= 0) m->K->axpy(fd->dim, w, tab + (int64_t)ids[q] * fd->dim, e);
        }
    }
}

/* Where a tower input made of E puts the domain's columns: after the other
 * fields and the numeric inputs, so folded inference can move them into the
 * bias. De: E's columns before the domain's. */
static int mml__x0_dom_at(const mml_model_t *m) { return m->a.d0 - m->a.field[m->a.dom_field].dim; }

/* E (and the numeric inputs) -> x0: [n, d0], the kind's part then the
 * numeric values; E itself when the kind has no transform and there is
 * nothing numeric. */
static void mml__input_forward(const mml_model_t *m, mml__pass *ps) {
    const mml__arch *a = &m->a;
    int n = ps->r.n, J = a->n_num, kd = a->field[a->dom_field].dim, De = a->D - kd;
    if (a->kind->input_fwd) a->kind->input_fwd(m, ps);
    if (!J) return;
    int at = a->kind->input_fwd ? a->dk : De;
    for (int i = 0; i < n; i++) {
        float *x = ps->x0 + (int64_t)i * a->d0;
        const float *e = ps->E + (int64_t)i * a->D;
        if (!a->kind->input_fwd) {
            memcpy(x, e, (size_t)De * sizeof(float));
            memcpy(x + mml__x0_dom_at(m), e + De, (size_t)kd * sizeof(float));
        }
        memcpy(x + at, ps->r.num + (int64_t)i * J, (size_t)J * sizeof(float));
    }
}

/* dx0: [n, d0] -> dE: [n, D] += (dE is zeroed here unless it aliases dx0). */
static void mml__input_backward(const mml_model_t *m, mml__pass *ps, int have_dx0) {
    const mml__arch *a = &m->a;
    size_t bytes = (size_t)ps->r.n * a->D * sizeof(float);
    if (ps->dE == ps->dx0) {
        if (!have_dx0) memset(ps->dE, 0, bytes);
        return;
    }
    memset(ps->dE, 0, bytes);
    if (!have_dx0) return;
    if (a->kind->input_bwd) {
        a->kind->input_bwd(m, ps);
        return;
    }
    int kd = a->field[a->dom_field].dim, De = a->D - kd; /* E was copied into x0 around the numeric inputs */
    for (int i = 0; i < ps->r.n; i++) {
        const float *dx = ps->dx0 + (int64_t)i * a->d0;
        float *de = ps->dE + (int64_t)i * a->D;
        memcpy(de, dx, (size_t)De * sizeof(float));
        memcpy(de + De, dx + mml__x0_dom_at(m), (size_t)kd * sizeof(float));
    }
}

/* The wide part's inputs: the embedded fields' ids and the numeric values. */
static mml__wide mml__wide_of(const mml_model_t *m, const mml__pass *ps, int *len, int *mean) {
    mml__wide w = {m->a.F, m->a.n_num, ps->r.ids, len, mean, ps->r.num};
    for (int f = 0; f < m->a.F; f++) {
        len[f] = m->a.field[f].len;
        mean[f] = m->a.field[f].mean;
    }
    return w;
}

/* Parts beside the tower: the wide part's logit, then the kind's logit term
 * and extra inputs of the final dense layer. */
static void mml__side_forward(const mml_model_t *m, mml__pass *ps) {
    if (m->a.kind->linear) {
        const float *w[MML__MAX_FIELDS];
        int len[MML__MAX_FIELDS], mean[MML__MAX_FIELDS];
        mml__wide in = mml__wide_of(m, ps, len, mean);
        for (int f = 0; f < m->a.F; f++) w[f] = mml__p(m, m->a.field[f].lin);
        mml__linear_forward(ps->r.n, &in, w, m->a.lin_num >= 0 ? mml__p(m, m->a.lin_num) : NULL, NULL, ps->lin_out);
    }
    if (m->a.kind->side_fwd) m->a.kind->side_fwd(m, ps);
}

/* Backward of the side parts: dlogit -> their parameters and dE. */
static void mml__side_backward(const mml_model_t *m, mml__pass *ps) {
    const int *tr = m->ph.trainable;
    if (m->a.kind->linear && tr[MML__G_LINEAR]) {
        float *dw[MML__MAX_FIELDS];
        int len[MML__MAX_FIELDS], mean[MML__MAX_FIELDS];
        mml__wide in = mml__wide_of(m, ps, len, mean);
        for (int f = 0; f < m->a.F; f++) dw[f] = mml__g(ps->g, m, m->a.field[f].lin);
        mml__linear_backward(ps->r.n, &in, ps->dlogit, dw, m->a.lin_num >= 0 ? mml__g(ps->g, m, m->a.lin_num) : NULL,
                             NULL);
    }
    if (!tr[MML__G_EXTRA] && !tr[MML__G_EMB]) return;
    if (m->a.kind->side_bwd) m->a.kind->side_bwd(m, ps);
}

/* MLoRA's mixed rows select each row's own domain adapter by one-hot weights. */
static void mml__mlora_weights(const mml_model_t *m, mml__pass *ps) {
    const int32_t *dom = ps->r.ids[m->a.dom_field];
    int E = m->a.n_experts, n = ps->r.n;
    memset(ps->gw, 0, (size_t)n * E * sizeof(float));
    for (int i = 0; i < n; i++)
        if (dom[i] < m->cfg.n_domains) ps->gw[(int64_t)i * E + dom[i]] = 1.0f;
}

/* gin: [n, gdim] (domain-gate embeddings or x0)  G: [gdim, E]  -> gw = softmax(gin G + b): [n, E] */
static void mml__gate_forward(const mml_model_t *m, mml__pass *ps) {
    const mml_kernels_t *K = m->K;
    int E = m->a.n_experts, n = ps->r.n, gd;
    const float *gin;
    if (m->cfg.gate == MML_GATE_DOMAIN) {
        gd = m->cfg.gate_dim;
        K->gather_rows(n, ps->r.ids[m->a.dom_field], mml__p(m, m->a.gate_emb), gd, ps->gin, gd);
        gin = ps->gin;
    } else {
        gd = m->a.d0;
        gin = ps->x0;
    }
    K->gemm_nn(n, E, gd, gin, gd, mml__p(m, m->a.gate_W), E, ps->glogit, E, 0);
    K->add_bias(n, E, mml__p(m, m->a.gate_b), ps->glogit, E);
    K->softmax_rows(n, E, ps->glogit, E, ps->gw, E);
}

static uint64_t mml__dropout_seed(const mml_model_t *m, const mml__pass *ps, int layer) {
    uint64_t s = m->cfg.seed * 0x9E3779B97F4A7C15ull + ps->plan.step * 0x100000001B3ull + (uint64_t)layer;
    return mml__rng_next(&s);
}

/* Do this phase's mixtures depend on the domain alone? (MLoRA; MoE-MLoRA with
 * the domain gate in the phases that mix experts) */
static int mml__mix_by_domain(const mml_model_t *m) {
    if (!mml__tf_config(&m->cfg)) return 0;
    return m->cfg.adapter == MML_ADAPTER_MLORA || m->ph.phase == MML_PHASE_GATE || m->ph.phase == MML_PHASE_ALL;
}

/* Which layers this training pass folds: needs the rows in runs of one domain
 * (at most D+1 runs: a batch sorted by domain), the layer's buffers and,
 * unless forced, a lower cost than the low-rank path. */
static void mml__tf_plan(const mml_model_t *m, mml__pass *ps) {
    memset(ps->tf_on, 0, sizeof ps->tf_on);
    ps->tf_nruns = ps->tf_base = 0;
    if (!ps->plan.train || mml__knobs.tf_force < 0 || !ps->tf_run || ps->plan.ad_mode != MML__AD_MIX ||
        !mml__mix_by_domain(m))
        return;
    const int32_t *dom = ps->r.ids[m->a.dom_field];
    int n = ps->r.n, nr = 0, E = m->a.n_experts, D = m->cfg.n_domains;
    for (int i = 0; i < n; i++) {
        if (i && dom[i] == dom[i - 1]) continue;
        if (nr == D + 1) return; /* not grouped by domain */
        ps->tf_run[nr++] = i;
    }
    ps->tf_run[nr] = n;
    ps->tf_base = mml__tf_fold_base(&m->cfg);
    for (int l = 0; l < m->a.n_layers; l++) {
        const mml__layer *L = &m->a.layer[l];
        ps->tf_on[l] = L->tf && (mml__knobs.tf_force > 0 || mml__tf_pays(L, E, n, nr, ps->tf_base));
    }
    ps->tf_nruns = nr; /* the low-rank layers use the runs for their bias mixtures */
    for (int g = 0; g < nr; g++)
        memcpy(ps->tf_wd + (int64_t)g * E, ps->gw + (int64_t)ps->tf_run[g] * E, (size_t)E * sizeof(float));
}

/* z += x dW_d + c_d per domain run (z holds the base part) or, with
 * ps->tf_base, z = x (W + dW_d) + b + c_d. */
static void mml__tf_forward(const mml_model_t *m, mml__pass *ps, int l, const float *x, float *z) {
    const mml_kernels_t *K = m->K;
    const mml__layer *L = &m->a.layer[l];
    int di = L->d_in, dout = L->d_out, r = L->r, E = m->a.n_experts, Er = E * r, nr = ps->tf_nruns;
    int64_t kk = (int64_t)di * dout;
    float *P = ps->tf_P[l], *W = ps->tf_W[l], *cd = ps->tf_c[l];
    const float *A = mml__p(m, L->A), *B = mml__p(m, L->B);
    for (int e = 0; e < E; e++)
        K->gemm_nn(di, dout, r, A + (int64_t)e * r, Er, B + (int64_t)e * r * dout, dout, P + e * kk, dout, 0);
    K->gemm_nn(nr, (int)kk, E, ps->tf_wd, E, P, (int)kk, W, (int)kk, 0);
    K->gemm_nn(nr, dout, E, ps->tf_wd, E, mml__p(m, L->C), dout, cd, dout, 0);
    for (int g = 0; g < nr && ps->tf_base; g++) {
        K->axpy(kk, 1.0f, mml__p(m, L->W), W + g * kk);
        K->axpy(dout, 1.0f, mml__p(m, L->b), cd + (int64_t)g * dout);
    }
    for (int g = 0; g < nr; g++) {
        int a = ps->tf_run[g], ng = ps->tf_run[g + 1] - a;
        mml__tk(m, ps)->gemm_nn(ng, dout, di, x + (int64_t)a * di, di, W + g * kk, dout, z + (int64_t)a * dout, dout,
                                !ps->tf_base);
        K->add_bias(ng, dout, cd + (int64_t)g * dout, z + (int64_t)a * dout, dout);
    }
}

/* Backward of mml__tf_forward: dx = dz dW_d^T (with ps->tf_base: dz W_d^T)
 * per run (if need_dx), the adapters' gradients, the runs' dw (added to each
 * run's first row) and, with ps->tf_base and a trainable tower, the base
 * weight's gradient sum_d G_d. */
static int mml__tf_backward(const mml_model_t *m, mml__pass *ps, int l, const float *x, const float *dz, float *dx,
                            int need_dx, int gx, int gg) {
    const mml_kernels_t *K = m->K, *KT = mml__tk(m, ps);
    const mml__layer *L = &m->a.layer[l];
    int di = L->d_in, dout = L->d_out, r = L->r, E = m->a.n_experts, Er = E * r, nr = ps->tf_nruns;
    int gt = ps->tf_base && m->ph.trainable[MML__G_TOWER];
    int64_t kk = (int64_t)di * dout;
    float *P = ps->tf_P[l], *W = ps->tf_W[l], *db = ps->tf_db;
    for (int g = 0; g < nr && need_dx; g++) {
        int a = ps->tf_run[g], ng = ps->tf_run[g + 1] - a;
        KT->gemm_nt(ng, di, dout, dz + (int64_t)a * dout, dout, W + g * kk, dout, dx + (int64_t)a * di, di, 0);
    }
    if (!gx && !gg && !gt) return need_dx;
    for (int g = 0; g < nr; g++) { /* W becomes the runs' gradients G_d */
        int a = ps->tf_run[g], ng = ps->tf_run[g + 1] - a;
        KT->gemm_tn(di, dout, ng, x + (int64_t)a * di, di, dz + (int64_t)a * dout, dout, W + g * kk, dout, 0);
        memset(db + (int64_t)g * dout, 0, (size_t)dout * sizeof(float));
        K->colsum_add(ng, dout, dz + (int64_t)a * dout, dout, db + (int64_t)g * dout);
        if (gt) K->axpy(kk, 1.0f, W + g * kk, mml__g(ps->g, m, L->W));
    }
    const float *C = mml__p(m, L->C);
    if (gg) {
        K->gemm_nt(nr, E, (int)kk, W, (int)kk, P, (int)kk, ps->tf_dw, E, 0);
        K->gemm_nt(nr, E, dout, db, dout, C, dout, ps->tf_dw, E, 1);
        for (int g = 0; g < nr; g++)
            K->axpy(E, 1.0f, ps->tf_dw + (int64_t)g * E, ps->dw + (int64_t)ps->tf_run[g] * E);
    }
    if (gx) { /* P becomes M */
        const float *A = mml__p(m, L->A), *B = mml__p(m, L->B);
        float *gA = mml__g(ps->g, m, L->A), *gB = mml__g(ps->g, m, L->B);
        K->gemm_tn(E, (int)kk, nr, ps->tf_wd, E, W, (int)kk, P, (int)kk, 0);
        for (int e = 0; e < E; e++) {
            K->gemm_nt(di, r, dout, P + e * kk, dout, B + (int64_t)e * r * dout, dout, gA + (int64_t)e * r, Er, 1);
            K->gemm_tn(r, dout, di, A + (int64_t)e * r, Er, P + e * kk, dout, gB + (int64_t)e * r * dout, dout, 1);
        }
        K->gemm_tn(E, dout, nr, ps->tf_wd, E, db, dout, mml__g(ps->g, m, L->C), dout, 1);
    }
    return need_dx;
}

/* x: [n, d_in]  W: [d_in, d_out]  -> z = dropout(x W + b), then relu if the
 * pass runs no adapter: [n, d_out]. The mask is kept for the backward pass
 * where an adapter's part joins z before the relu; without one, z > 0 tells
 * the kept elements (mml__backward). With T (the mixture's layers outside
 * domain-folded training) also T = x A_all: [n, E*r], on the same
 * conversion of x where the bf16 tiles run (gemm_pair). */
static void mml__base_forward(const mml_model_t *m, mml__pass *ps, int l, const float *x, float *z, float *T) {
    const mml__layer *L = &m->a.layer[l];
    int n = ps->r.n, di = L->d_in, dout = L->d_out, relu = ps->plan.ad_mode == MML__AD_OFF;
    int drop = ps->plan.train && m->cfg.dropout > 0.0f;
    if (T) {
        const int Er = m->a.n_experts * L->r;
        mml__tk(m, ps)->gemm_pair(n, di, x, di, 0, dout, mml__p(m, L->W), dout, z, dout, Er, mml__p(m, L->A), Er, T,
                                  Er, 0);
    } else {
        mml__tk(m, ps)->gemm_nn(n, dout, di, x, di, mml__p(m, L->W), dout, z, dout, 0);
    }
    m->K->bias_dropout_relu(n, dout, mml__p(m, L->b), z, drop ? m->cfg.dropout : 0.0f,
                            drop ? mml__dropout_seed(m, ps, l) : 0, (uint64_t)ps->r.row0 * dout,
                            drop && !relu ? ps->dkeep[l] : NULL, relu);
}

/* x: [n, d_in]  W: [d_in, d_out]  A: [d_in, E*r]  B: [E*r, d_out]  C: [E, d_out]
 * -> z = relu(dropout(x W + b) + adapter(x)): [n, d_out]; T = x A_active, U = T * w
 * (a layer folded with its base weight runs both parts in one product per domain run) */
static void mml__layer_forward(const mml_model_t *m, mml__pass *ps, int l, const float *x) {
    const mml_kernels_t *K = m->K, *KT = mml__tk(m, ps);
    const mml__layer *L = &m->a.layer[l];
    int n = ps->r.n, di = L->d_in, dout = L->d_out, r = L->r, E = m->a.n_experts, Er = E * r;
    int mode = ps->plan.ad_mode;
    float *z = ps->z[l];
    int pair = mode == MML__AD_MIX && !ps->tf_on[l]; /* T = x A_all beside x W */
    if (!(ps->tf_on[l] && ps->tf_base)) mml__base_forward(m, ps, l, x, z, pair ? ps->T[l] : NULL);
    if (mode == MML__AD_SINGLE) {
        int e = ps->plan.ad_expert;
        KT->gemm_nn(n, r, di, x, di, mml__p(m, L->A) + (int64_t)e * r, Er, ps->T[l], r, 0);
        KT->gemm_nn(n, dout, r, ps->T[l], r, mml__p(m, L->B) + (int64_t)e * r * dout, dout, z, dout, 1);
        K->add_bias(n, dout, mml__p(m, L->C) + (int64_t)e * dout, z, dout);
    } else if (mode == MML__AD_MIX && ps->tf_on[l]) {
        mml__tf_forward(m, ps, l, x, z);
    } else if (mode == MML__AD_MIX) {
        K->block_scale(n, E, r, ps->T[l], Er, ps->gw, E, ps->U[l], Er);
        KT->gemm_nn(n, dout, Er, ps->U[l], Er, mml__p(m, L->B), dout, z, dout, 1);
        if (ps->tf_nruns) { /* rows in domain runs: one bias mixture per run */
            float *cd = ps->tf_db;
            K->gemm_nn(ps->tf_nruns, dout, E, ps->tf_wd, E, mml__p(m, L->C), dout, cd, dout, 0);
            for (int g = 0; g < ps->tf_nruns; g++)
                K->add_bias(ps->tf_run[g + 1] - ps->tf_run[g], dout, cd + (int64_t)g * dout,
                            z + (int64_t)ps->tf_run[g] * dout, dout);
        } else {
            K->gemm_nn(n, dout, E, ps->gw, E, mml__p(m, L->C), dout, z, dout, 1);
        }
    }
    if (mode != MML__AD_OFF) K->relu_fwd((int64_t)n * dout, z, z);
}

/* Full forward of the pass's rows: logits and probabilities. */
static void mml__forward(const mml_model_t *m, mml__pass *ps) {
    const mml_kernels_t *K = m->K;
    const mml__arch *a = &m->a;
    int n = ps->r.n;
    mml__embed(m, ps);
    mml__input_forward(m, ps);
    if (ps->plan.folded) {
        mml__folded_forward_tower(m, ps);
    } else {
        if (ps->plan.ad_mode == MML__AD_MIX) {
            if (m->cfg.adapter == MML_ADAPTER_MLORA) mml__mlora_weights(m, ps);
            else mml__gate_forward(m, ps);
        }
        mml__tf_plan(m, ps);
        const float *x = ps->x0;
        for (int l = 0; l < a->n_layers; l++) {
            mml__layer_forward(m, ps, l, x);
            x = ps->z[l];
        }
    }
    const float *x = ps->z[a->n_layers - 1];
    mml__side_forward(m, ps);
    int dl = a->layer[a->n_layers - 1].d_out;
    const float *w = mml__p(m, a->out_W), bias = *mml__p(m, a->out_b);
    K->gemm_nn(n, 1, dl, x, dl, w, 1, ps->logit, 1, 0);
    if (a->de) K->gemm_nn(n, 1, a->de, ps->extra, a->de, w + dl, 1, ps->logit, 1, 1);
    for (int i = 0; i < n; i++) {
        float z = ps->logit[i] + bias;
        if (a->kind->linear) z += ps->lin_out[i];
        if (a->kind->logit_term) z += ps->side_logit[i];
        ps->logit[i] = z;
    }
    K->sigmoid(n, ps->logit, ps->prob);
}

/* Does layer l's backward pass take the base weight's gradient x^T dz and
 * the experts' x^T dT in one gemm_pair (one conversion of x)? Then
 * mml__adapter_backward leaves the experts' to mml__backward, which runs both
 * once dz has been through the dropout mask. */
static int mml__pair_grads(const mml_model_t *m, const mml__pass *ps, int l) {
    return ps->plan.ad_mode == MML__AD_MIX && !ps->tf_on[l] && m->ph.trainable[MML__G_EXPERT] &&
           m->ph.trainable[MML__G_TOWER];
}

/* Does anything below layer l need the gradient of its input? */
static int mml__need_dx(const mml_model_t *m, const mml__pass *ps, int l) {
    const int *tr = m->ph.trainable;
    int mode = ps->plan.ad_mode;
    if (l > 0)
        return tr[MML__G_TOWER] || (tr[MML__G_EXPERT] && mode != MML__AD_OFF) || (tr[MML__G_GATE] && mode == MML__AD_MIX);
    int emb = tr[MML__G_EMB] || (m->a.kind->input_params && tr[MML__G_EXTRA]);
    int gate_in = m->cfg.gate == MML_GATE_INPUT && tr[MML__G_GATE] && mode == MML__AD_MIX &&
                  m->cfg.adapter == MML_ADAPTER_MOE;
    return emb || gate_in;
}

/* dz: [n, d_out] gradient at the adapter's output (before dropout of the base part)
 * -> adapter parameter gradients, dw (mixture weights) and, if dx, dx = dz-part: [n, d_in].
 * Returns 1 if it wrote dx. */
static int mml__adapter_backward(const mml_model_t *m, mml__pass *ps, int l, const float *x, const float *dz,
                                 float *dx, int need_dx) {
    const mml_kernels_t *K = m->K, *KT = mml__tk(m, ps);
    const mml__layer *L = &m->a.layer[l];
    const mml__grads *g = ps->g;
    int n = ps->r.n, di = L->d_in, dout = L->d_out, r = L->r, E = m->a.n_experts, Er = E * r;
    int gx = m->ph.trainable[MML__G_EXPERT];
    if (ps->plan.ad_mode == MML__AD_SINGLE) {
        if (!gx && !need_dx) return 0;
        int e = ps->plan.ad_expert;
        const float *Ae = mml__p(m, L->A) + (int64_t)e * r;
        const float *Be = mml__p(m, L->B) + (int64_t)e * r * dout;
        KT->gemm_nt(n, r, dout, dz, dout, Be, dout, ps->dT, r, 0);
        if (gx) {
            KT->gemm_tn(r, dout, n, ps->T[l], r, dz, dout, mml__g(g, m, L->B) + (int64_t)e * r * dout, dout, 1);
            K->colsum_add(n, dout, dz, dout, mml__g(g, m, L->C) + (int64_t)e * dout);
            KT->gemm_tn(di, r, n, x, di, ps->dT, r, mml__g(g, m, L->A) + (int64_t)e * r, Er, 1);
        }
        if (need_dx) KT->gemm_nt(n, di, r, ps->dT, r, Ae, Er, dx, di, 0);
        return need_dx;
    }
    if (ps->plan.ad_mode != MML__AD_MIX) return 0;
    int gg = m->ph.trainable[MML__G_GATE] && m->cfg.adapter == MML_ADAPTER_MOE;
    if (ps->tf_on[l]) return mml__tf_backward(m, ps, l, x, dz, dx, need_dx, gx, gg);
    if (!gx && !need_dx && !gg) return 0;
    KT->gemm_nt(n, Er, dout, dz, dout, mml__p(m, L->B), dout, ps->dU, Er, 0);
    int nr = ps->tf_nruns;
    if (nr && (gg || gx)) { /* rows in domain runs: the bias mixture's gradients per run */
        for (int q = 0; q < nr; q++) {
            memset(ps->tf_db + (int64_t)q * dout, 0, (size_t)dout * sizeof(float));
            K->colsum_add(ps->tf_run[q + 1] - ps->tf_run[q], dout, dz + (int64_t)ps->tf_run[q] * dout, dout,
                          ps->tf_db + (int64_t)q * dout);
        }
    }
    if (gg) {
        if (nr) {
            K->gemm_nt(nr, E, dout, ps->tf_db, dout, mml__p(m, L->C), dout, ps->tf_dw, E, 0);
            for (int q = 0; q < nr; q++)
                K->axpy(E, 1.0f, ps->tf_dw + (int64_t)q * E, ps->dw + (int64_t)ps->tf_run[q] * E);
        } else {
            K->gemm_nt(n, E, dout, dz, dout, mml__p(m, L->C), dout, ps->dw, E, 1);
        }
        K->block_dot(n, E, r, ps->dU, Er, ps->T[l], Er, ps->dw, E, 1);
    }
    if (gx) {
        KT->gemm_tn(Er, dout, n, ps->U[l], Er, dz, dout, mml__g(g, m, L->B), dout, 1);
        if (nr) K->gemm_tn(E, dout, nr, ps->tf_wd, E, ps->tf_db, dout, mml__g(g, m, L->C), dout, 1);
        else K->gemm_tn(E, dout, n, ps->gw, E, dz, dout, mml__g(g, m, L->C), dout, 1);
    }
    if (!gx && !need_dx) return 0;
    K->block_scale(n, E, r, ps->dU, Er, ps->gw, E, ps->dT, Er);
    if (gx && !mml__pair_grads(m, ps, l)) KT->gemm_tn(di, Er, n, x, di, ps->dT, Er, mml__g(g, m, L->A), Er, 1);
    if (need_dx) KT->gemm_nt(n, di, Er, ps->dT, Er, mml__p(m, L->A), Er, dx, di, 0);
    return need_dx;
}

/* Softmax backward into the gate's parameters (and x0 for the input gate). */
static void mml__gate_backward(const mml_model_t *m, mml__pass *ps) {
    const mml_kernels_t *K = m->K;
    const mml__grads *g = ps->g;
    int n = ps->r.n, E = m->a.n_experts;
    float *dw = ps->dw;
    for (int i = 0; i < n; i++) {
        const float *w = ps->gw + (int64_t)i * E;
        float *d = dw + (int64_t)i * E;
        float s = K->dot(E, w, d);
        for (int e = 0; e < E; e++) d[e] = w[e] * (d[e] - s);
    }
    int gd = m->cfg.gate == MML_GATE_DOMAIN ? m->cfg.gate_dim : m->a.d0;
    const float *gin = m->cfg.gate == MML_GATE_DOMAIN ? ps->gin : ps->x0;
    K->gemm_tn(gd, E, n, gin, gd, dw, E, mml__g(g, m, m->a.gate_W), E, 1);
    K->colsum_add(n, E, dw, E, mml__g(g, m, m->a.gate_b));
    if (m->cfg.gate == MML_GATE_DOMAIN) {
        float *dg = ps->dU; /* [n, gate_dim] */
        K->gemm_nt(n, gd, E, dw, E, mml__p(m, m->a.gate_W), E, dg, gd, 0);
        K->scatter_add_rows(n, ps->r.ids[m->a.dom_field], dg, gd, gd, mml__g(g, m, m->a.gate_emb));
    } else {
        K->gemm_nt(n, m->a.d0, E, dw, E, mml__p(m, m->a.gate_W), E, ps->dx0, m->a.d0, 1);
    }
}

/* Embedding gradients (unless the workers' owned scatter adds them later) and
 * the rows they touch. */
static void mml__embed_backward(const mml_model_t *m, mml__pass *ps) {
    const mml__arch *a = &m->a;
    mml__grads *g = ps->g;
    int n = ps->r.n;
    for (int f = 0; f < a->F; f++) {
        const mml__field *fd = &a->field[f];
        if (!mml__param_trainable(m, fd->emb)) continue;
        const int32_t *ids = ps->r.ids[f];
        float *G = mml__g(g, m, fd->emb);
        if (!ps->plan.defer_scatter && fd->len == 1)
            m->K->scatter_add_rows(n, ids, ps->dE + fd->e_off, a->D, fd->dim, G);
        else if (!ps->plan.defer_scatter)
            for (int i = 0; i < n; i++) {
                const int32_t *row = ids + (int64_t)i * fd->len;
                const float *de = ps->dE + (int64_t)i * a->D + fd->e_off;
                float w = mml__list_weight(fd, row);
                for (int q = 0; q < fd->len; q++)
                    if (row[q] >= 0) m->K->axpy(fd->dim, w, de, G + (int64_t)row[q] * fd->dim);
            }
        for (int64_t i = 0; i < (int64_t)n * fd->len; i++) {
            int32_t id = ids[i];
            if (id >= 0 && !g->mark[f][id]) { g->mark[f][id] = 1; g->touched[f][g->n_touched[f]++] = id; }
        }
    }
}

/* Gradients of scale * (summed BCE of the rows) accumulate into the pass's
 * gradients; returns the summed BCE. Needs mml__forward of the same rows. */
static double mml__backward(const mml_model_t *m, mml__pass *ps, float scale) {
    const mml_kernels_t *K = m->K, *KT = mml__tk(m, ps);
    const mml__arch *a = &m->a;
    const int *tr = m->ph.trainable;
    mml__grads *g = ps->g;
    int n = ps->r.n;
    double loss = K->bce_logits(n, ps->logit, ps->r.label, scale, ps->dlogit);
    int nl = a->n_layers, dl = a->layer[nl - 1].d_out;
    if (tr[MML__G_OUT]) {
        /* dW_out += z^T dlogit, as the row dlogit^T z (one pass over z) */
        K->gemm_nn(1, dl, n, ps->dlogit, n, ps->z[nl - 1], dl, mml__g(g, m, a->out_W), dl, 1);
        if (a->de) K->gemm_nn(1, a->de, n, ps->dlogit, n, ps->extra, a->de, mml__g(g, m, a->out_W) + dl, a->de, 1);
        float s = 0.0f;
        for (int i = 0; i < n; i++) s += ps->dlogit[i];
        *mml__g(g, m, a->out_b) += s;
    }
    if (a->de && (tr[MML__G_EXTRA] || tr[MML__G_EMB]))
        K->gemm_nn(n, a->de, 1, ps->dlogit, 1, mml__p(m, a->out_W) + dl, a->de, ps->dextra, a->de, 0);
    int mix_gate = ps->plan.ad_mode == MML__AD_MIX && m->cfg.adapter == MML_ADAPTER_MOE && tr[MML__G_GATE];
    if (mix_gate) memset(ps->dw, 0, (size_t)n * a->n_experts * sizeof(float));
    float *dz = ps->dz, *dx = ps->dx;
    K->gemm_nn(n, dl, 1, ps->dlogit, 1, mml__p(m, a->out_W), dl, dz, dl, 0);
    int have_dx0 = 0;
    for (int l = nl - 1; l >= 0; l--) {
        const mml__layer *L = &a->layer[l];
        const float *x = l ? ps->z[l - 1] : ps->x0;
        float *dxl = l ? dx : ps->dx0;
        int need = mml__need_dx(m, ps, l), base_done = ps->tf_on[l] && ps->tf_base; /* W's products: in the runs' */
        /* dz through the relu, the adapter's part, dropout (z > 0 tells the kept
         * elements when no adapter joined z: mml__base_forward) and db */
        int drop = m->cfg.dropout > 0.0f, wrote = 0;
        float keep_scale = drop ? 1.0f / (1.0f - m->cfg.dropout) : 1.0f;
        float *db = tr[MML__G_TOWER] ? mml__g(g, m, L->b) : NULL;
        if (ps->plan.ad_mode == MML__AD_OFF) {
            K->dropout_relu_bwd(n, L->d_out, ps->z[l], NULL, keep_scale, dz, db);
        } else {
            K->relu_bwd((int64_t)n * L->d_out, ps->z[l], dz, dz);
            wrote = mml__adapter_backward(m, ps, l, x, dz, dxl, need);
            if (drop || db) K->dropout_relu_bwd(n, L->d_out, NULL, drop ? ps->dkeep[l] : NULL, keep_scale, dz, db);
        }
        if (mml__pair_grads(m, ps, l)) { /* dW += x^T dz beside dA += x^T dT */
            int Er = a->n_experts * L->r;
            KT->gemm_pair(L->d_in, n, x, L->d_in, 1, L->d_out, dz, L->d_out, mml__g(g, m, L->W), L->d_out, Er, ps->dT,
                          Er, mml__g(g, m, L->A), Er, 1);
        } else if (tr[MML__G_TOWER] && !base_done) {
            KT->gemm_tn(L->d_in, L->d_out, n, x, L->d_in, dz, L->d_out, mml__g(g, m, L->W), L->d_out, 1);
        }
        if (!need) break;
        if (!base_done)
            KT->gemm_nt(n, L->d_in, L->d_out, dz, L->d_out, mml__p(m, L->W), L->d_out, dxl, L->d_in, wrote);
        if (l == 0) have_dx0 = 1;
        float *t = dz; dz = dx; dx = t;
    }
    if (mix_gate) {
        if (!have_dx0) memset(ps->dx0, 0, (size_t)n * a->d0 * sizeof(float));
        mml__gate_backward(m, ps);
        have_dx0 = 1;
    }
    if (tr[MML__G_EMB] || tr[MML__G_EXTRA] || tr[MML__G_LINEAR]) {
        if (a->kind->side_on_x0) { /* its gradient joins dx0 before dx0 reaches E */
            if (!have_dx0) memset(ps->dx0, 0, (size_t)n * a->d0 * sizeof(float));
            have_dx0 = 1;
            mml__side_backward(m, ps);
            mml__input_backward(m, ps, have_dx0);
        } else {
            mml__input_backward(m, ps, have_dx0);
            mml__side_backward(m, ps);
        }
    }
    if (tr[MML__G_EMB]) mml__embed_backward(m, ps);
    return loss;
}

/* A training forward of b, unsorted, in the model's own pass (the gradient
 * checks' entry point; mml__backward follows). */
static MML__UNUSED mml__pass *mml__train_forward(mml_model_t *m, const mml_batch_t *b) {
    mml__pass *ps = &m->pass;
    mml__pass_load(m, ps, b, 0);
    mml__plan_for(m, ps, 1);
    mml__forward(m, ps);
    return ps;
}

// >>optimizer --------------------------------------------------------------

/* Adam's hyper-parameters at step t (bias corrections of that step). */
static void mml__adam_hp_at(const mml_model_t *m, int64_t t, mml_adam_hp *hp) {
    const mml_config_t *c = &m->cfg;
    hp->lr = c->lr;
    hp->beta1 = c->beta1;
    hp->beta2 = c->beta2;
    hp->eps = c->eps;
    hp->bc1 = (float)(1.0 - pow((double)c->beta1, (double)t));
    hp->bc2 = (float)(1.0 - pow((double)c->beta2, (double)t));
    hp->weight_decay = c->weight_decay;
}

/* Linear-logit table f's gradient rows are those of embedding table f when
 * that table keeps a touched list (it is trainable). */
static int mml__linear_sparse(const mml_model_t *m, int f) {
    return m->a.kind->linear && mml__param_trainable(m, m->a.field[f].emb);
}

/* Linear-logit table f takes its Adam steps with embedding table f's rows:
 * the touched rows in the step, the others (dense Adam) replayed when read,
 * none at all (lazy Adam). */
static int mml__lin_rows(const mml_model_t *m, int f) {
    return mml__linear_sparse(m, f) && mml__param_trainable(m, m->a.field[f].lin);
}

/* Subnormal floats (magnitudes below 1.2e-38) take a slow path in the FPU: on
 * x86 a microcode assist of about a hundred cycles per operation that meets
 * one. Training meets them where a quantity decays towards zero, such as the
 * Adam moments of units whose gradient is zero, or the gradients of rows the
 * model already predicts well; a GEMM over such values ran at half speed. So
 * the library computes with subnormals flushed to zero (x86: MXCSR FTZ and
 * DAZ; Arm: FPCR.FZ), as TensorFlow's CPU kernels do: on its worker threads
 * for their whole life, and on the caller's thread for the length of a
 * training step, a prediction, a fold or a catch-up of deferred rows (the
 * caller's setting is restored after it). Values this changes are below
 * 1.2e-38. */
#if defined(__x86_64__) || (defined(__i386__) && defined(__SSE__))
static inline unsigned mml__flush_begin(void) {
    unsigned old = __builtin_ia32_stmxcsr();
    __builtin_ia32_ldmxcsr(old | 0x8040u); /* FTZ | DAZ */
    return old;
}
static inline void mml__flush_end(unsigned old) { __builtin_ia32_ldmxcsr(old); }
#elif defined(__aarch64__)
static inline unsigned mml__flush_begin(void) {
    uint64_t old, fz;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(old));
    fz = old | (1ull << 24); /* FZ */
    __asm__ __volatile__("msr fpcr, %0" : : "r"(fz));
    return (unsigned)old;
}
static inline void mml__flush_end(unsigned old) {
    uint64_t v = old;
    __asm__ __volatile__("msr fpcr, %0" : : "r"(v));
}
#else
static inline unsigned mml__flush_begin(void) { return 0; }
static inline void mml__flush_end(unsigned old) { (void)old; }
#endif

/* Dense Adam (PyTorch semantics) moves every embedding row at every step,
 * even rows whose gradient is zero. Doing that for a whole table costs a pass
 * over it per step; instead a row records the last step it was updated at and
 * replays the zero-gradient steps it missed, with the same kernel and the same
 * per-step constants, just before anything reads it. The result is the same,
 * bit for bit, as updating every row every step. */
static int mml__deferred_rows(const mml_model_t *m, int f) {
    return !m->cfg.lazy_adam && m->a.k >= mml__knobs.defer_min_dim && mml__param_trainable(m, m->a.field[f].emb);
}

/* mml__adam_hp_at, from the ring of recent steps when it holds step t. */
static void mml__adam_hp_cached(const mml_model_t *m, int64_t t, mml_adam_hp *hp) {
    int64_t s = t & (MML__HP_RING - 1);
    if (m->opt.hp_tag[s] == t) *hp = m->opt.hp_ring[s];
    else mml__adam_hp_at(m, t, hp);
}

/* Does the row at offset o (d floats) change under zero-gradient steps? Not
 * when it never moved since the optimizer started (zero moments, no decay). */
static int mml__row_moves(const mml_model_t *m, int64_t o, int64_t d) {
    int moved = m->cfg.weight_decay != 0.0f;
    for (int64_t j = 0; j < d && !moved; j++) moved = m->opt.M[o + j] != 0.0f || m->opt.V[o + j] != 0.0f;
    return moved;
}

/* Adam's constants of steps t..t+c-1 (all <= opt.t): straight from the ring
 * when it holds them in one run (every step of the phase writes its slot, so
 * a slot still tagged t holds step t, and the slots after it the steps after
 * it), else copied into buf. */
static const mml_adam_hp *mml__hp_window(const mml_model_t *m, int64_t t, int c, mml_adam_hp *buf) {
    int64_t s = t & (MML__HP_RING - 1);
    if (s + c <= MML__HP_RING && m->opt.hp_tag[s] == t) return m->opt.hp_ring + s;
    for (int j = 0; j < c; j++) mml__adam_hp_cached(m, t + j, &buf[j]);
    return buf;
}

/* Zero-gradient steps s0..opt.t on n floats (p, moments mo, v); with first
 * (n <= 128), element i joins at step s0 + first[i]. */
static void mml__replay(const mml_model_t *m, int64_t s0, int64_t n, float *p, float *mo, float *v,
                        const int32_t *first) {
    mml_adam_hp hp[64];
    int32_t fw[128];
    for (int64_t t = s0; t <= m->opt.t;) {
        int c = m->opt.t - t + 1 < 64 ? (int)(m->opt.t - t + 1) : 64;
        if (first)
            for (int64_t q = 0; q < n; q++) fw[q] = first[q] - (int32_t)(t - s0);
        m->K->adam_steps(n, p, mo, v, mml__hp_window(m, t, c, hp), c, first ? fw : NULL);
        t += c;
    }
}

/* Asks for the lines of the parameters and moments of the row at offset o,
 * line by line across the three arrays, into L1 (near) or only the outer
 * caches. A replay of a row touched a few steps ago lasts less than a trip
 * to memory, so the replays ask ahead: a wide row (more than 64 floats) two
 * rows on into L1 and 16 rows on into L2; a narrow row, which takes a few
 * nanoseconds, 16 rows on into L1 and 64 on into L2; and the update step of
 * the row twice the far distance on. On MoE-MLoRA emb 128 with dense Adam (1
 * thread, Zen 5) the wide requests took the step from 71-77k to 82-84k
 * samples/s, against near requests alone, array after array; at emb 8 the
 * narrow ones per row (before: per block of 16 rows) took MoE-MLoRA and the
 * base model, fp32 and bf16, up by 6-9%. */
#define MML__REPLAY_NEAR 2
#define MML__REPLAY_FAR 16
#define MML__REPLAY_NARROW_NEAR 16
#define MML__REPLAY_NARROW_FAR 64
static void mml__prefetch_row(const mml_model_t *m, int64_t o, int64_t d, int near) {
    for (int64_t j = 0; j < d; j += 16) {
        if (near) {
            mml__prefetch_floats(m->P + o + j, 1);
            mml__prefetch_floats(m->opt.M + o + j, 1);
            mml__prefetch_floats(m->opt.V + o + j, 1);
        } else {
            mml__prefetch_far(m->P + o + j, 1);
            mml__prefetch_far(m->opt.M + o + j, 1);
            mml__prefetch_far(m->opt.V + o + j, 1);
        }
    }
}

/* The requests ahead of rows[i] of row table p (rows d floats wide): rows
 * near and far on, and the update step of the row 2 far on. */
static void mml__replay_ahead(const mml_model_t *m, const mml__param *p, int64_t d, const int64_t *last,
                              const int32_t *rows, int i, int n, int near, int far) {
    if (i + near < n) mml__prefetch_row(m, p->off + (int64_t)rows[i + near] * d, d, 1);
    if (i + far < n) mml__prefetch_row(m, p->off + (int64_t)rows[i + far] * d, d, 0);
    if (i + 2 * far < n) mml__prefetch_far(&last[rows[i + 2 * far]], 1);
}

/* Rows rows[0..n) of row table pi (field f's embedding or linear-logit
 * table), sorted by age (steps since their last update, opt.last[f], which
 * this leaves alone). Narrow rows of similar age are replayed together: up to
 * 128 floats gathered into one block whose steps run over several independent
 * vectors; a row joins in at its own first missed step (the kernel's
 * per-element first step). */
static void mml__replay_rows(mml_model_t *m, int f, int pi, const int32_t *rows, int n) {
    const mml__param *p = &m->a.t[pi];
    float *P = m->P, *M = m->opt.M, *V = m->opt.V;
    int64_t d = p->shape[1], T = m->opt.t;
    const int64_t *last = m->opt.last[f];
    float bp[128], bm[128], bv[128];
    int32_t g[128], first[128];
    int64_t gfrom[128];
    int asked = -1; /* the last row the narrow requests were made for */
    for (int i = 0; i < n;) {
        if (d > 64) {
            mml__replay_ahead(m, p, d, last, rows, i, n, MML__REPLAY_NEAR, MML__REPLAY_FAR);
            int64_t from = last[rows[i]], o = p->off + (int64_t)rows[i++] * d;
            if (from < T && mml__row_moves(m, o, d)) mml__replay(m, from + 1, d, P + o, M + o, V + o, NULL);
            continue;
        }
        int ng = 0;
        int64_t amin = -1, amax = 0;
        for (; i < n && (ng + 1) * d <= 128; i++) {
            int32_t r = rows[i];
            if (i > asked) { /* a row that ended the last block on its age was asked for then */
                asked = i;
                mml__replay_ahead(m, p, d, last, rows, i, n, MML__REPLAY_NARROW_NEAR, MML__REPLAY_NARROW_FAR);
            }
            int64_t from = last[r], age = T - from, o = p->off + (int64_t)r * d;
            if (from >= T) continue;
            if (ng && age > amin + amin / 4 + 16) break; /* too many idle lanes: next block */
            if (!mml__row_moves(m, o, d)) continue;
            if (amin < 0) amin = age;
            if (age > amax) amax = age;
            for (int64_t j = 0; j < d; j++) { /* short rows: plain loops beat memcpy calls */
                bp[ng * d + j] = P[o + j];
                bm[ng * d + j] = M[o + j];
                bv[ng * d + j] = V[o + j];
            }
            g[ng] = r;
            gfrom[ng++] = from;
        }
        if (!ng) continue;
        int64_t s0 = T - amax + 1; /* the block's first step */
        for (int k = 0; k < ng; k++)
            for (int64_t j = 0; j < d; j++) first[k * d + j] = (int32_t)(gfrom[k] + 1 - s0);
        mml__replay(m, s0, ng * d, bp, bm, bv, first);
        for (int k = 0; k < ng; k++) {
            int64_t o = p->off + (int64_t)g[k] * d;
            for (int64_t j = 0; j < d; j++) {
                P[o + j] = bp[k * d + j];
                M[o + j] = bm[k * d + j];
                V[o + j] = bv[k * d + j];
            }
        }
    }
}

/* Rows rows[0..n) of field f, sorted by age: its embedding rows and, when
 * they follow them, its linear-logit rows replay their missed steps; then
 * the rows are current. */
static void mml__catch_up_rows(mml_model_t *m, int f, const int32_t *rows, int n) {
    mml__replay_rows(m, f, m->a.field[f].emb, rows, n);
    if (mml__lin_rows(m, f)) mml__replay_rows(m, f, m->a.field[f].lin, rows, n);
    for (int i = 0; i < n; i++) m->opt.last[f][rows[i]] = m->opt.t;
}

/* Sorts rows[0..n) by last update step: a counting sort on the age (ages of
 * MML__AGE_BUCKETS and more share the last bucket, where rows stay unsorted
 * and mostly replay one by one). tmp: n ints, count: MML__AGE_BUCKETS + 1. */
static void mml__sort_by_age(const mml_model_t *m, int f, int32_t *rows, int64_t n, int32_t *tmp, int64_t *count) {
    memset(count, 0, (MML__AGE_BUCKETS + 1) * sizeof(int64_t));
    const int64_t *last = m->opt.last[f];
    for (int64_t i = 0; i < n; i++) {
        int64_t a = m->opt.t - last[rows[i]];
        count[(a < MML__AGE_BUCKETS ? a : MML__AGE_BUCKETS - 1) + 1]++;
    }
    for (int b = 0; b < MML__AGE_BUCKETS; b++) count[b + 1] += count[b];
    for (int64_t i = 0; i < n; i++) {
        int64_t a = m->opt.t - last[rows[i]];
        tmp[count[a < MML__AGE_BUCKETS ? a : MML__AGE_BUCKETS - 1]++] = rows[i];
    }
    memcpy(rows, tmp, (size_t)n * sizeof(int32_t));
}

/* [lo, hi) of n items for worker w of t, chunks rounded up to `align`. */
static void mml__slice(int64_t n, int w, int t, int64_t align, int64_t *lo, int64_t *hi) {
    int64_t chunk = (n + t - 1) / t;
    chunk = (chunk + align - 1) / align * align;
    *lo = (int64_t)w * chunk < n ? (int64_t)w * chunk : n;
    *hi = *lo + chunk < n ? *lo + chunk : n;
}

/* Replays of several row lists (one per field), shared among the workers in
 * chunks taken from a common counter, oldest rows first: a row costs about
 * its age plus a fixed part (its three loads), so static shares of either
 * leave one worker idle. Which worker replays a row does not change its bits. */
typedef struct mml__catch_job {
    mml_model_t *m;
    int nf, f[MML__MAX_FIELDS], n[MML__MAX_FIELDS], chunk[MML__MAX_FIELDS], first_chunk[MML__MAX_FIELDS + 1];
    int32_t *rows[MML__MAX_FIELDS];
    int next;
} mml__catch_job;

static void mml__catch_run(void *arg, int w) {
    (void)w;
    mml__catch_job *j = (mml__catch_job *)arg;
    for (;;) {
        int k = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED), i = 0;
        if (k >= j->first_chunk[j->nf]) return;
        while (k >= j->first_chunk[i + 1]) i++;
        int c = j->first_chunk[i + 1] - 1 - k; /* lists are sorted young to old: take the old end first */
        int lo = c * j->chunk[i], hi = lo + j->chunk[i] < j->n[i] ? lo + j->chunk[i] : j->n[i];
        mml__catch_up_rows(j->m, j->f[i], j->rows[i] + lo, hi - lo);
    }
}

static void mml__pool_run(struct mml__pool *p, void (*fn)(void *, int), void *arg);

/* Replays rows[i][0..n[i]) of field f[i] for i < nf (each sorted by age), on
 * the workers when there are enough rows, else on this thread. */
static void mml__catch_rows(mml_model_t *m, int nf, const int *f, int32_t *const *rows, const int *n) {
    mml__catch_job j;
    int total = 0;
    j.m = m;
    j.nf = nf;
    j.next = 0;
    j.first_chunk[0] = 0;
    for (int i = 0; i < nf; i++) total += n[i];
    int t = m->rt.pool && total >= 64 ? m->cfg.threads : 1;
    for (int i = 0; i < nf; i++) {
        j.f[i] = f[i];
        j.rows[i] = rows[i];
        j.n[i] = n[i];
        j.chunk[i] = t == 1 ? (n[i] > 0 ? n[i] : 1) : (n[i] + 8 * t - 1) / (8 * t);
        if (j.chunk[i] < 16) j.chunk[i] = 16;
        j.first_chunk[i + 1] = j.first_chunk[i] + (n[i] + j.chunk[i] - 1) / j.chunk[i];
    }
    if (t > 1) mml__pool_run(m->rt.pool, mml__catch_run, &j);
    else mml__catch_run(&j, 0);
}

/* Before a step: the rows the batch reads are brought up to date (each row
 * once: the lists are made unique first). */
static void mml__catch_up_batch(mml_model_t *m, const mml__rows *r) {
    int nf = 0, fs[MML__MAX_FIELDS], ns[MML__MAX_FIELDS];
    int32_t *lists[MML__MAX_FIELDS];
    for (int f = 0; f < m->a.F; f++) {
        if (!mml__deferred_rows(m, f)) continue;
        int32_t *rows = m->opt.uniq[f];
        uint8_t *mark = m->grads.mark[f]; /* clear between steps: borrowed to make the list unique */
        int n = 0;
        for (int64_t i = 0; i < (int64_t)r->n * m->a.field[f].len; i++) {
            int32_t id = r->ids[f][i];
            if (id >= 0 && m->opt.last[f][id] < m->opt.t && !mark[id]) { mark[id] = 1; rows[n++] = id; }
        }
        for (int i = 0; i < n; i++) mark[rows[i]] = 0;
        mml__sort_by_age(m, f, rows, n, m->opt.catch_tmp, m->opt.catch_count);
        fs[nf] = f;
        lists[nf] = rows;
        ns[nf++] = n;
    }
    mml__catch_rows(m, nf, fs, lists, ns);
}

/* Before anything reads whole tables (predict, evaluate, save, snapshots). */
static void mml__catch_up_all(mml_model_t *m) {
    if (m->opt.synced_t == m->opt.t) return;
    unsigned fp = mml__flush_begin(); /* as in the steps whose replays these are */
    m->opt.synced_t = m->opt.t;
    for (int f = 0; f < m->a.F; f++) {
        if (!mml__deferred_rows(m, f)) continue;
        int64_t rows = m->a.t[m->a.field[f].emb].shape[0], n = 0;
        int32_t *list = m->opt.catch_all;
        for (int64_t r = 0; r < rows; r++)
            if (m->opt.last[f][r] < m->opt.t) list[n++] = (int32_t)r;
        mml__sort_by_age(m, f, list, n, m->opt.catch_all + rows, m->opt.catch_count);
        int ni = (int)n;
        mml__catch_rows(m, 1, &f, &list, &ni);
    }
    mml__flush_end(fp);
}

/* After parameters were replaced wholesale (restore, load): nothing to replay. */
static void mml__rows_current(mml_model_t *m) {
    m->opt.synced_t = m->opt.t;
    for (int f = 0; f < m->a.F; f++) {
        int64_t rows = m->a.t[m->a.field[f].emb].shape[0];
        for (int64_t r = 0; r < rows; r++) m->opt.last[f][r] = m->opt.t;
    }
}

/* The field whose embedding table tensor i is, or -1. */
static int mml__emb_field(const mml_model_t *m, int i) {
    for (int f = 0; f < m->a.F; f++)
        if (i == m->a.field[f].emb) return f;
    return -1;
}

/* The field whose linear-logit table tensor i is, when that table follows
 * the field's embedding rows (mml__lin_rows), or -1. */
static int mml__lin_field(const mml_model_t *m, int i) {
    for (int f = 0; f < m->a.F; f++)
        if (m->a.kind->linear && i == m->a.field[f].lin) return mml__lin_rows(m, f) ? f : -1;
    return -1;
}

/* How Adam steps tensor i under plan pl: one expert's part of an expert
 * tensor (SINGLE), the batch's rows of a linear-logit table that follows its
 * embedding rows (LIN_ROWS) or of an embedding table (ROWS), a dense pass
 * over an embedding table (TABLE), the whole of such a linear-logit table
 * (LIN_DENSE: its gradient is cleared by row after the step), or the whole
 * tensor (DENSE). */
enum { MML__AK_SINGLE, MML__AK_LIN_ROWS, MML__AK_ROWS, MML__AK_TABLE, MML__AK_LIN_DENSE, MML__AK_DENSE };
static int mml__adam_kind(const mml_model_t *m, const mml__plan *pl, int i) {
    if (m->a.t[i].group == MML__G_EXPERT && pl->ad_mode == MML__AD_SINGLE) return MML__AK_SINGLE;
    int f = mml__emb_field(m, i), lf = mml__lin_field(m, i);
    if (lf >= 0) return m->cfg.lazy_adam || mml__deferred_rows(m, lf) ? MML__AK_LIN_ROWS : MML__AK_LIN_DENSE;
    if (f >= 0) return m->cfg.lazy_adam || mml__deferred_rows(m, f) ? MML__AK_ROWS : MML__AK_TABLE;
    return MML__AK_DENSE;
}

static int mml__param_stepped(const mml_model_t *m, const mml__plan *pl, int i);

/* Does Adam clear tensor i's gradient as it reads it (the step's zeroing
 * while the lines are still in cache)? The kinds ROWS, LIN_ROWS and DENSE. */
static int mml__adam_clears(const mml_model_t *m, const mml__plan *pl, int i) {
    if (!mml__param_stepped(m, pl, i)) return 0;
    int k = mml__adam_kind(m, pl, i);
    return k == MML__AK_ROWS || k == MML__AK_LIN_ROWS || k == MML__AK_DENSE;
}

/* Adam over n floats of a dense tensor, the gradient cleared behind it in
 * pieces that are still in cache. */
#define MML__CLEAR_PIECE 4096
static void mml__adam_clear(const mml_kernels_t *K, int64_t n, float *P, float *G, float *M, float *V,
                            const mml_adam_hp *hp) {
    for (int64_t o = 0; o < n; o += MML__CLEAR_PIECE) {
        int64_t c = n - o < MML__CLEAR_PIECE ? n - o : MML__CLEAR_PIECE;
        K->adam_dense(c, P + o, G + o, M + o, V + o, hp);
        memset(G + o, 0, (size_t)c * sizeof(float));
    }
}

/* Worker w's share (of t) of the Adam update of tensor i; the gradient is
 * cleared where mml__adam_clears says so. */
static void mml__adam_param(mml_model_t *m, const mml__plan *pl, int i, const mml_adam_hp *hp, int w, int t) {
    const mml_kernels_t *K = m->K;
    const mml__param *p = &m->a.t[i];
    float *P = m->P + p->off, *G = m->grads.G + p->off, *M = m->opt.M + p->off, *V = m->opt.V + p->off;
    int64_t lo, hi;
    int kind = mml__adam_kind(m, pl, i);
    if (kind == MML__AK_SINGLE) {
        int64_t e = pl->ad_expert;
        if (p->xlayout == MML__XL_COLS) {
            int64_t wd = p->shape[1], r = p->xblock;
            mml__slice(p->shape[0], w, t, 1, &lo, &hi);
            for (int64_t row = lo; row < hi; row++) {
                int64_t o = row * wd + e * r;
                K->adam_dense(r, P + o, G + o, M + o, V + o, hp);
            }
        } else {
            int64_t o = e * p->xblock;
            mml__slice(p->xblock, w, t, 16, &lo, &hi);
            K->adam_dense(hi - lo, P + o + lo, G + o + lo, M + o + lo, V + o + lo, hp);
        }
        return;
    }
    int f = mml__emb_field(m, i), lf = mml__lin_field(m, i);
    const mml__grads *g = &m->grads;
    if (kind == MML__AK_LIN_ROWS) {
        /* rows of width 1, alongside the embedding rows (which keep opt.last) */
        mml__slice(g->n_touched[lf], w, t, 1, &lo, &hi);
        K->adam_rows((int)(hi - lo), g->touched[lf] + lo, 1, P, G, M, V, hp);
        for (int64_t j = lo; j < hi; j++) G[g->touched[lf][j]] = 0.0f;
        return;
    }
    if (kind == MML__AK_ROWS) {
        /* touched rows now; with dense semantics the others catch up when read */
        int64_t d = p->shape[1];
        mml__slice(g->n_touched[f], w, t, 1, &lo, &hi);
        K->adam_rows((int)(hi - lo), g->touched[f] + lo, (int)d, P, G, M, V, hp);
        for (int64_t j = lo; j < hi; j++) memset(G + (int64_t)g->touched[f][j] * d, 0, (size_t)d * sizeof(float));
        if (!m->cfg.lazy_adam)
            for (int64_t j = lo; j < hi; j++) m->opt.last[f][g->touched[f][j]] = m->opt.t;
        return;
    }
    if (kind == MML__AK_TABLE) { /* dense pass over a table: untouched rows read a zero gradient kept in L1 */
        static const float zeros[2048] = {0.0f};
        int64_t d = p->shape[1];
        const uint8_t *mk = g->mark[f];
        mml__slice(p->shape[0], w, t, 1, &lo, &hi);
        for (int64_t r = lo; r < hi;) {
            int64_t r0 = r;
            if (mk[r]) {
                while (r < hi && mk[r]) r++;
                K->adam_dense((r - r0) * d, P + r0 * d, G + r0 * d, M + r0 * d, V + r0 * d, hp);
                continue;
            }
            while (r < hi && !mk[r] && (r - r0 + 1) * d <= 2048) r++;
            if (r == r0) r++; /* rows wider than the zero block */
            for (int64_t o = r0 * d; o < r * d; o += 2048) {
                int64_t c = r * d - o < 2048 ? r * d - o : 2048;
                K->adam_dense(c, P + o, zeros, M + o, V + o, hp);
            }
        }
        return;
    }
    mml__slice(p->size, w, t, 16, &lo, &hi);
    if (kind == MML__AK_DENSE) mml__adam_clear(K, hi - lo, P + lo, G + lo, M + lo, V + lo, hp);
    else K->adam_dense(hi - lo, P + lo, G + lo, M + lo, V + lo, hp); /* LIN_DENSE */
}

/* Worker w's share (of t) of clearing the gradients: every dense tensor, and
 * the touched rows of the embedding tables; after an Adam step with plan pl
 * (else NULL), what that step did not clear (mml__adam_clears). With dry set,
 * writes nothing and says whether there is anything to clear. */
static int mml__zero_part(mml_model_t *m, const mml__plan *pl, int w, int t, int dry) {
    const mml__grads *g = &m->grads;
    int64_t lo, hi;
    for (int i = 0; i < m->a.n_params; i++) {
        const mml__param *p = &m->a.t[i];
        if ((p->row_table && p->group == MML__G_EMB) || mml__lin_field(m, i) >= 0) continue;
        if (pl && mml__adam_clears(m, pl, i)) continue;
        if (dry) return 1;
        mml__slice(p->size, w, t, 16, &lo, &hi);
        memset(g->G + p->off + lo, 0, (size_t)(hi - lo) * sizeof(float));
    }
    for (int f = 0; f < m->a.F; f++) {
        const mml__param *p = &m->a.t[m->a.field[f].emb];
        int64_t d = p->shape[1];
        int rows = !(pl && mml__adam_clears(m, pl, m->a.field[f].emb));
        float *lin = mml__lin_rows(m, f) && !(pl && mml__adam_clears(m, pl, m->a.field[f].lin))
                   ? mml__g(g, m, m->a.field[f].lin) : NULL;
        if ((!rows && !lin) || !g->n_touched[f]) continue;
        if (dry) return 1;
        mml__slice(g->n_touched[f], w, t, 1, &lo, &hi);
        for (int64_t j = lo; j < hi; j++) {
            if (rows) memset(g->G + p->off + (int64_t)g->touched[f][j] * d, 0, (size_t)d * sizeof(float));
            if (lin) lin[g->touched[f][j]] = 0.0f;
        }
    }
    return 0;
}

typedef struct mml__zero_job { mml_model_t *m; const mml__plan *pl; } mml__zero_job;

static void mml__zero_share(void *arg, int w) {
    mml__zero_job *j = (mml__zero_job *)arg;
    mml__zero_part(j->m, j->pl, w, j->m->rt.pool ? j->m->cfg.threads : 1, 0);
}

/* Clears the gradients (after an Adam step with plan pl: what it left; NULL:
 * all) and the touched-row lists. */
static void mml__zero_grads(mml_model_t *m, const mml__plan *pl) {
    mml__zero_job j = {m, pl};
    if (mml__zero_part(m, pl, 0, 1, 1)) {
        if (m->rt.pool) mml__pool_run(m->rt.pool, mml__zero_share, &j);
        else mml__zero_share(&j, 0);
    }
    mml__grads *g = &m->grads;
    for (int f = 0; f < m->a.F; f++) {
        for (int j = 0; j < g->n_touched[f]; j++) g->mark[f][g->touched[f][j]] = 0;
        g->n_touched[f] = 0;
    }
}

/* Is tensor i updated by a step with plan pl? */
static int mml__param_stepped(const mml_model_t *m, const mml__plan *pl, int i) {
    if (!mml__param_trainable(m, i)) return 0;
    if (m->a.t[i].group == MML__G_EXPERT && pl->ad_mode == MML__AD_OFF) return 0;
    if (m->a.t[i].group == MML__G_GATE && !(pl->ad_mode == MML__AD_MIX && m->cfg.adapter == MML_ADAPTER_MOE))
        return 0;
    return 1;
}

typedef struct mml__adam_job { mml_model_t *m; const mml__plan *pl; mml_adam_hp hp; } mml__adam_job;

static void mml__adam_run(void *arg, int w) {
    mml__adam_job *j = (mml__adam_job *)arg;
    mml_model_t *m = j->m;
    int t = m->rt.pool ? m->cfg.threads : 1;
    for (int i = 0; i < m->a.n_params; i++)
        if (mml__param_stepped(m, j->pl, i)) mml__adam_param(m, j->pl, i, &j->hp, w, t);
}

/* One Adam step on the gradients of a step with plan pl, then the gradients
 * are cleared. */
static void mml__optimizer_step(mml_model_t *m, const mml__plan *pl) {
    m->opt.t++;
    mml__adam_job j;
    j.m = m;
    j.pl = pl;
    mml__adam_hp_at(m, m->opt.t, &j.hp);
    m->opt.hp_ring[m->opt.t & (MML__HP_RING - 1)] = j.hp;
    m->opt.hp_tag[m->opt.t & (MML__HP_RING - 1)] = m->opt.t;
    if (m->rt.pool) mml__pool_run(m->rt.pool, mml__adam_run, &j);
    else mml__adam_run(&j, 0);
    mml__zero_grads(m, pl);
}

// >>steps ------------------------------------------------------------------
/* mml_train_step and mml_predict: a batch is checked, loaded into the model's
 * pass once, planned, then run on this thread, on the workers (>>threads) or
 * as this process's share (>>distributed). */

/* Every column the schema needs is there; training batches also hold ids in
 * range (a list's empty slots -1), finite values and 0/1 labels. */
static mml_status mml__check_batch(const mml_model_t *m, const mml_batch_t *b, int need_label) {
    const mml_schema_t *s = m->a.schema;
    if (!b || b->n < 1 || (need_label && !b->label)) return mml__fail(MML_ERR_ARG, "batch: empty or missing arrays");
    if (!b->ids && (s->n_fields != 3 || m->a.n_num || !b->uid || !b->pid || !b->dom))
        return mml__fail(MML_ERR_ARG, "batch: %s", s->n_fields != 3 || m->a.n_num
                         ? "this model's schema needs the columns in ids/values" : "empty or missing arrays");
    for (int f = 0; b->ids && f < s->n_fields; f++) {
        int num = s->field[f].kind == MML_FIELD_NUMERIC;
        if (num ? !b->values || !b->values[f] : !b->ids[f])
            return mml__fail(MML_ERR_ARG, "batch: no column for field %s", s->field[f].name);
    }
    if (!need_label) return MML_OK;
    if (b->n > m->cfg.max_batch) return mml__fail(MML_ERR_ARG, "batch: %d rows exceed max_batch %d", b->n, m->cfg.max_batch);
    for (int f = 0; f < m->a.F; f++) {
        const mml__field *fd = &m->a.field[f];
        const int32_t *ids = mml__batch_ids(b, fd->src);
        for (int64_t i = 0; i < (int64_t)b->n * fd->len; i++)
            if (ids[i] >= fd->vocab || ids[i] < (fd->len > 1 ? -1 : 0))
                return mml__fail(MML_ERR_ARG, "batch row %lld: field %s: id %d out of range [0,%d)",
                                 (long long)(i / fd->len), s->field[fd->src].name, ids[i], fd->vocab);
    }
    for (int q = 0; q < m->a.n_num; q++) {
        const float *v = b->values[m->a.num[q].src];
        for (int i = 0; i < b->n; i++)
            if (!(v[i] - v[i] == 0.0f))
                return mml__fail(MML_ERR_ARG, "batch row %d: field %s: value %g is not finite", i,
                                 s->field[m->a.num[q].src].name, (double)v[i]);
    }
    for (int i = 0; i < b->n; i++)
        if (b->label[i] != 0.0f && b->label[i] != 1.0f)
            return mml__fail(MML_ERR_ARG, "batch row %d: label %g is not 0 or 1", i, (double)b->label[i]);
    return MML_OK;
}

mml_batch_t mml_batch_paper(int32_t n, const int32_t *uid, const int32_t *pid, const int32_t *dom, const float *label) {
    mml_batch_t b = {n, uid, pid, dom, label, NULL, NULL};
    return b;
}

/* A batch's column pointers for a schema: ids or values per field. */
typedef struct mml__cols {
    const int32_t *ids[MML__MAX_FIELDS];
    const float *values[MML__MAX_FIELDS];
} mml__cols;

/* Rows [s, s + n) of batch b as a batch; c holds its column pointers. */
static mml_batch_t mml__batch_part(const mml_schema_t *sc, const mml_batch_t *b, int64_t s, int n, mml__cols *c) {
    mml_batch_t o = {n, NULL, NULL, NULL, b->label ? b->label + s : NULL, NULL, NULL};
    if (!b->ids) {
        o.uid = b->uid + s;
        o.pid = b->pid + s;
        o.dom = b->dom + s;
        return o;
    }
    for (int f = 0; f < sc->n_fields; f++) {
        const mml_field_t *fd = &sc->field[f];
        int64_t len = fd->kind == MML_FIELD_MULTI_HOT ? fd->max_len : 1;
        c->ids[f] = fd->kind == MML_FIELD_NUMERIC ? NULL : b->ids[f] + s * len;
        c->values[f] = fd->kind == MML_FIELD_NUMERIC ? b->values[f] + s : NULL;
    }
    o.ids = c->ids;
    o.values = c->values;
    return o;
}

/* A split as one batch (its rows must fit an int). */
static mml_batch_t mml__split_batch(const mml_split_t *sp) {
    mml_batch_t b = {(int32_t)(sp->n < INT32_MAX ? sp->n : INT32_MAX), sp->uid, sp->pid, sp->dom, sp->label,
                     (const int32_t *const *)sp->ids, (const float *const *)sp->values};
    return b;
}

/* Domain-folded training needs the rows grouped by domain (the loss is a sum
 * over rows, so their order is free). */
static int mml__train_sort(const mml_model_t *m, const mml_batch_t *b) {
    if (!m->pass.tf_run || mml__knobs.tf_force < 0 || !mml__mix_by_domain(m)) return 0;
    int runs = mml__domain_runs(m, b);
    return runs > m->cfg.n_domains && runs != 1; /* else grouped already (or MLoRA's one-domain batch) */
}

/* Folded inference runs the rows of a domain together: sort rows that are
 * not in long runs. */
static int mml__predict_sort(const mml_model_t *m, const mml_batch_t *b) {
    if (!m->fold.ok || !mml__fold_per_domain(m)) return 0;
    int runs = mml__domain_runs(m, b);
    return runs * 8 > b->n && runs > 2;
}

static double mml__parallel_train(mml_model_t *m, float scale);
static void mml__parallel_predict(mml_model_t *m, mml__pass *ps);
static mml_status mml__dist_reduce(mml_model_t *m, double *loss);

/* A checked batch: its summed loss and the gradients of its mean loss in
 * m->grads (distributed: of this process's rows, then summed over processes). */
static mml_status mml__step_gradients(mml_model_t *m, const mml_batch_t *b, double *loss) {
    mml__pass *ps = &m->pass;
    mml__pass_load(m, ps, b, mml__train_sort(m, b));
    mml__plan_for(m, ps, 1);
    mml__catch_up_batch(m, &ps->loaded);
    int lo = 0, hi = b->n;
    if (m->rt.world > 1) {
        lo = (int)((int64_t)b->n * m->rt.rank / m->rt.world);
        hi = (int)((int64_t)b->n * (m->rt.rank + 1) / m->rt.world);
    }
    ps->r = mml__rows_slice(m, &ps->loaded, lo, hi);
    float scale = 1.0f / (float)b->n;
    *loss = 0.0;
    if (m->rt.pool && ps->r.n >= 2 * m->cfg.threads) *loss = mml__parallel_train(m, scale);
    else if (ps->r.n > 0) {
        mml__forward(m, ps);
        *loss = mml__backward(m, ps, scale);
    }
    return m->rt.world > 1 ? mml__dist_reduce(m, loss) : MML_OK;
}

static mml_status mml__train_step(mml_model_t *m, const mml_batch_t *b, float *loss) {
    mml_status st = mml__check_batch(m, b, 1);
    if (st) return st;
    m->fold.ok = 0;
    double l;
    st = mml__step_gradients(m, b, &l);
    if (st) {
        mml__zero_grads(m, NULL); /* the model stays as it was before the step */
        return st;
    }
    mml__optimizer_step(m, &m->pass.plan);
    m->opt.steps++;
    if (loss) *loss = (float)(l / b->n);
    return MML_OK;
}

mml_status mml_train_step(mml_model_t *m, const mml_batch_t *b, float *loss) {
    unsigned fp = mml__flush_begin();
    mml_status st = mml__train_step(m, b, loss);
    mml__flush_end(fp);
    return st;
}

/* Probabilities of a batch of at most max_batch rows through a pass, in the
 * batch's row order; workers when there are enough rows. */
static void mml__predict_batch(const mml_model_t *m, mml__pass *ps, const mml_batch_t *b, float *prob, int parallel) {
    mml__pass_load(m, ps, b, mml__predict_sort(m, b));
    mml__plan_for(m, ps, 0);
    if (parallel) mml__parallel_predict((mml_model_t *)m, ps);
    else mml__forward(m, ps);
    if (!ps->sorted) {
        memcpy(prob, ps->prob, (size_t)b->n * sizeof(float));
        return;
    }
    for (int j = 0; j < b->n; j++) prob[ps->perm[j]] = ps->prob[j];
}

static mml_status mml__predict(mml_model_t *m, const mml_batch_t *b, float *prob) {
    mml_status st = mml__check_batch(m, b, 0);
    if (st) return st;
    mml__catch_up_all(m);
    mml__cols cols;
    for (int s = 0; s < b->n; s += m->cfg.max_batch) {
        int n = b->n - s < m->cfg.max_batch ? b->n - s : m->cfg.max_batch;
        mml_batch_t c = mml__batch_part(m->a.schema, b, s, n, &cols);
        mml__predict_batch(m, &m->pass, &c, prob + s, m->rt.pool && n >= 64 * m->cfg.threads);
    }
    return MML_OK;
}

mml_status mml_predict(mml_model_t *m, const mml_batch_t *b, float *prob) {
    unsigned fp = mml__flush_begin();
    mml_status st = mml__predict(m, b, prob);
    mml__flush_end(fp);
    return st;
}

// >>threads ----------------------------------------------------------------

/* Data parallelism inside one step: the batch is cut into one contiguous row
 * range per thread, each range runs forward and backward in a pass of its own
 * (the model's parameters, its own activations and gradients), the gradients
 * are summed in a fixed order and one Adam step follows. A range is a part of
 * a job that any thread may claim: it runs in the pass of its number, not of
 * the thread, so when the scheduler keeps a worker off its core, the thread
 * that finished first runs that worker's part and the step does not wait.
 * Results depend on the thread count only through the ranges and the
 * summation order, so a fixed thread count is deterministic. */

#include <pthread.h>

typedef struct mml__pool {
    int n;                   /* worker threads; a job has n + 1 parts */
    pthread_t th[255];
    pthread_mutex_t mu;
    pthread_cond_t start, done;
    uint64_t gen;            /* jobs published */
    uint64_t claim;          /* gen << 16 | the next part of job gen to hand out */
    int finished, stop;      /* parts of the current job finished */
    void (*fn)(void *arg, int part);
    void *arg;
    int caller_cpu;          /* the CPU the caller ran on when it posted the job, or -1 */
} mml__pool;

/* Where the scheduler puts a woken worker. It places a thread that wakes
 * where its waker runs when no CPU is idle, so on a machine where another
 * program keeps one core busy, the worker lands on the caller's CPU and the
 * two share it while the other program has the other core to itself: two
 * threads then ran no faster than one (the process got one CPU's time), and
 * nothing makes the scheduler move the worker back, as either placement
 * leaves two tasks on one CPU and one on the other. A worker that finds a
 * new job on the caller's CPU moves itself to another CPU of its affinity
 * mask and hands the mask back at once (the thread stays where it moved),
 * so it takes its fair share of the busy core instead of the caller's
 * (moemlora-bench --hog, Zen 5: 2 threads against 1 beside a busy process
 * went from 0.92-0.97x to 1.13-1.28x, medians of three runs). That happens
 * tens of times a second under such load and almost never on an idle
 * machine; the user's affinity mask stays as it was, and a mask of one CPU
 * leaves the worker where it is.
 * Linux only (raw system calls: no feature macro needed); elsewhere -1 and
 * 0, and the scheduler decides alone. */
static int mml__cpu_now(void) {
#if defined(__linux__) && defined(SYS_getcpu)
    unsigned cpu = 0;
    if (syscall(SYS_getcpu, &cpu, NULL, NULL) == 0) return (int)cpu;
#endif
    return -1;
}

/* Moves the calling thread off CPU cpu, keeping its affinity mask; 1 if it
 * moved. (A mask of more than 1024 CPUs is left alone.) */
static int mml__move_off_cpu(int cpu) {
#if defined(__linux__) && defined(SYS_sched_getaffinity) && defined(SYS_sched_setaffinity)
    enum { mml__mask_words = 1024 / (8 * sizeof(unsigned long)) };
    unsigned long mask[mml__mask_words], less[mml__mask_words];
    const int bits = 8 * (int)sizeof(unsigned long);
    long n = syscall(SYS_sched_getaffinity, 0L, sizeof mask, mask); /* bytes the kernel wrote */
    if (n <= 0 || cpu < 0 || cpu >= 8 * n) return 0;
    int other = 0, words = (int)(n / (long)sizeof(unsigned long));
    memcpy(less, mask, (size_t)n);
    less[cpu / bits] &= ~(1ul << (cpu % bits));
    for (int i = 0; i < words; i++) other |= less[i] != 0;
    if (!other || syscall(SYS_sched_setaffinity, 0L, (size_t)n, less) != 0) return 0;
    (void)syscall(SYS_sched_setaffinity, 0L, (size_t)n, mask);
    return 1;
#else
    (void)cpu;
    return 0;
#endif
}


/* A step runs several jobs back to back, microseconds apart, while waking a
 * thread that sleeps on a condition variable takes tens of microseconds (more
 * in a virtual machine). So both sides spin for a while before they sleep,
 * by the clock (a pause instruction lasts 20 to 150 cycles depending on the
 * CPU). Not longer than 50 us: on a core that another program keeps busy, a
 * spinning thread eats the time slices its late partner needs, and a
 * sleeping one lets the scheduler move that partner to the freed core
 * (moemlora-bench --hog: 2 threads beside a busy process ran at 0.73x one
 * thread with 0.5 ms of spinning, 0.95x with 50 us; unloaded, no change). */
#define MML__SPIN_NS 50000

static void mml__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static int64_t mml__mono_ns(void) {
    struct timespec ts;
    clock_gettime(MML__CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

struct mml__pool;
/* A worker's wait: a new job (gen moved past seen) or stop. */
static int mml__pool_has_job(const struct mml__pool *p, uint64_t seen);
/* The caller's wait: every part of the job finished. */
static int mml__pool_all_done(const struct mml__pool *p, uint64_t seen);

/* Spins until ready(p, seen) or MML__SPIN_NS passed; returns ready's value. */
static int mml__spin(int (*ready)(const struct mml__pool *, uint64_t), const struct mml__pool *p, uint64_t seen) {
    int64_t end = 0;
    for (int s = 0;; s++) {
        if (ready(p, seen)) return 1;
        if ((s & 255) == 0) {
            int64_t t = mml__mono_ns();
            if (!end) end = t + MML__SPIN_NS;
            else if (t >= end) return 0;
        }
        mml__cpu_relax();
    }
}

static int mml__pool_has_job(const mml__pool *p, uint64_t seen) {
    return __atomic_load_n(&p->gen, __ATOMIC_ACQUIRE) != seen || __atomic_load_n(&p->stop, __ATOMIC_ACQUIRE);
}
static int mml__pool_all_done(const mml__pool *p, uint64_t seen) {
    (void)seen;
    return __atomic_load_n(&p->finished, __ATOMIC_ACQUIRE) == p->n + 1;
}

/* The next unclaimed part of job gen, or -1 when every part is taken (or the
 * pool moved on to a later job). Parts go to whichever thread asks first: a
 * part's result depends on its number only, never on the thread that runs
 * it, so the results stay those of the thread count however the parts fall.
 * A worker that the scheduler keeps off its core (another program busy
 * there) finds its part taken by a thread that finished its own. */
static int mml__pool_claim(mml__pool *p, uint64_t gen) {
    uint64_t w = __atomic_load_n(&p->claim, __ATOMIC_ACQUIRE);
    for (;;) {
        if (w >> 16 != (gen & 0xFFFFFFFFFFFFull) || (int)(w & 0xFFFF) > p->n) return -1;
        if (__atomic_compare_exchange_n(&p->claim, &w, w + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            return (int)(w & 0xFFFF);
    }
}

/* Runs the parts of job gen that this thread can claim; the thread that
 * finishes the last part wakes the caller. */
static void mml__pool_work(mml__pool *p, uint64_t gen) {
    for (int i; (i = mml__pool_claim(p, gen)) >= 0;) {
        p->fn(p->arg, i);
        if (__atomic_add_fetch(&p->finished, 1, __ATOMIC_ACQ_REL) == p->n + 1) {
            pthread_mutex_lock(&p->mu); /* the caller may be asleep */
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

static void *mml__pool_main(void *a) {
    mml__pool *p = (mml__pool *)a;
    uint64_t seen = 0;
    (void)mml__flush_begin(); /* a worker computes with subnormals flushed, always */
    for (;;) {
        mml__spin(mml__pool_has_job, p, seen);
        pthread_mutex_lock(&p->mu);
        while (__atomic_load_n(&p->gen, __ATOMIC_ACQUIRE) == seen && !p->stop) pthread_cond_wait(&p->start, &p->mu);
        if (p->stop) { pthread_mutex_unlock(&p->mu); return NULL; }
        seen = __atomic_load_n(&p->gen, __ATOMIC_ACQUIRE);
        int cpu = p->caller_cpu;
        pthread_mutex_unlock(&p->mu);
        if (cpu >= 0 && mml__cpu_now() == cpu) (void)mml__move_off_cpu(cpu);
        mml__pool_work(p, seen);
    }
}

/* Runs fn(arg, i) for i = 0..n, each part once, on the calling thread and the
 * workers (whichever claims a part first runs it), and waits for all. */
static void mml__pool_run(mml__pool *p, void (*fn)(void *, int), void *arg) {
    int cpu = mml__cpu_now();
    pthread_mutex_lock(&p->mu);
    p->caller_cpu = cpu;
    p->fn = fn;
    p->arg = arg;
    __atomic_store_n(&p->finished, 0, __ATOMIC_RELAXED);
    uint64_t gen = p->gen + 1;
    __atomic_store_n(&p->claim, (gen & 0xFFFFFFFFFFFFull) << 16, __ATOMIC_RELEASE);
    __atomic_store_n(&p->gen, gen, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mu);
    mml__pool_work(p, gen);
    mml__spin(mml__pool_all_done, p, 0);
    if (!mml__pool_all_done(p, 0)) {
        pthread_mutex_lock(&p->mu);
        while (!mml__pool_all_done(p, 0)) pthread_cond_wait(&p->done, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
}

static void mml__pool_free(mml__pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    __atomic_store_n(&p->stop, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n; i++) pthread_join(p->th[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->start);
    pthread_cond_destroy(&p->done);
    MOEMLORA_FREE(p);
}

static mml__pool *mml__pool_new(int workers) {
    mml__pool *p = (mml__pool *)MOEMLORA_MALLOC(sizeof *p);
    if (!p) return NULL;
    memset(p, 0, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->start, NULL);
    pthread_cond_init(&p->done, NULL);
    for (int i = 0; i < workers; i++) {
        if (pthread_create(&p->th[i], NULL, mml__pool_main, p) != 0) break;
        p->n++;
    }
    if (p->n != workers) {
        mml__pool_free(p);
        return NULL;
    }
    return p;
}

/* Workers leave their embedding gradients in dE (mml__scatter_owned), so
 * their gradient arenas use nothing below the first offset of any other
 * tensor (the embedding tables come first). */
static int64_t mml__worker_grads_from(const mml_model_t *m) {
    int64_t from = m->a.n_floats;
    for (int i = 0; i < m->a.n_params; i++) {
        const mml__param *p = &m->a.t[i];
        if (!(p->row_table && p->group == MML__G_EMB) && p->off < from) from = p->off;
    }
    return from;
}

static mml__worker *mml__worker_at(mml_model_t *m, int i) { return &m->rt.workers[i - 1]; }
/* Worker i's pass: the model's own for i = 0 (the calling thread). */
static mml__pass *mml__worker_pass(mml_model_t *m, int i) { return i == 0 ? &m->pass : &mml__worker_at(m, i)->pass; }

static void mml__threads_free(mml_model_t *m) {
    mml__pool_free(m->rt.pool);
    if (m->rt.workers) {
        for (int i = 1; i < m->cfg.threads; i++) {
            mml__pass_free(&mml__worker_at(m, i)->pass);
            mml__grads_free(m, &mml__worker_at(m, i)->grads);
        }
        MOEMLORA_FREE(m->rt.workers);
    }
    m->rt.pool = NULL;
    m->rt.workers = NULL;
}

static mml_status mml__threads_init(mml_model_t *m) {
    int w = m->cfg.threads - 1;
    if (w <= 0) return MML_OK;
    m->rt.workers = (mml__worker *)MOEMLORA_MALLOC(sizeof(mml__worker) * (size_t)w);
    if (!m->rt.workers) return mml__fail(MML_ERR_NOMEM, "cannot allocate thread workers");
    memset(m->rt.workers, 0, sizeof(mml__worker) * (size_t)w);
    for (int i = 1; i <= w; i++) {
        mml__worker *wk = mml__worker_at(m, i);
        mml_status st = mml__pass_init(m, &wk->pass, MML__PASS_TRAIN);
        if (!st) st = mml__grads_init(m, &wk->grads, mml__worker_grads_from(m));
        wk->pass.g = &wk->grads;
        if (st) { mml__threads_free(m); return st; }
    }
    m->rt.pool = mml__pool_new(w);
    if (!m->rt.pool) {
        mml__threads_free(m);
        return mml__fail(MML_ERR_NOMEM, "cannot start %d worker threads", w);
    }
    return MML_OK;
}

typedef struct mml__job {
    mml_model_t *m;
    mml__rows all;           /* the rows shared out */
    float scale;             /* train: 1 / rows of the whole batch */
    double loss[256];
} mml__job;

/* Rows [lo, hi) of worker i out of t: equal contiguous shares. */
static void mml__share(int n, int t, int i, int *lo, int *hi) {
    *lo = (int)((int64_t)n * i / t);
    *hi = (int)((int64_t)n * (i + 1) / t);
}

/* Worker i's share: forward (and backward) of its rows in its pass, with
 * the model pass's plan. */
static void mml__job_run(void *arg, int i) {
    mml__job *j = (mml__job *)arg;
    mml_model_t *m = j->m;
    mml__pass *ps = mml__worker_pass(m, i);
    int lo, hi;
    mml__share(j->all.n, m->cfg.threads, i, &lo, &hi);
    j->loss[i] = 0.0;
    ps->r = mml__rows_slice(m, &j->all, lo, hi);
    if (hi <= lo) return;
    mml__forward(m, ps);
    if (ps->plan.train) j->loss[i] = mml__backward(m, ps, j->scale);
}

/* Every worker's touched rows join the model's list (worker order). */
static void mml__merge_touched(mml_model_t *m) {
    mml__grads *g = &m->grads;
    for (int v = 1; v < m->cfg.threads; v++) {
        const mml__grads *w = &mml__worker_at(m, v)->grads;
        for (int f = 0; f < m->a.F; f++)
            for (int j = 0; j < w->n_touched[f]; j++) {
                int32_t id = w->touched[f][j];
                if (!g->mark[f][id]) { g->mark[f][id] = 1; g->touched[f][g->n_touched[f]++] = id; }
            }
    }
}

/* Rows ids[0..n) of field f: the workers' linear-table gradients (where
 * worker v touched the row: its marks) join the model's and are cleared
 * there; the workers' marks are cleared. */
static void mml__reduce_rows(mml_model_t *m, int f, const int32_t *ids, int64_t n) {
    int lin = mml__lin_rows(m, f);
    int64_t off = lin ? m->a.t[m->a.field[f].lin].off : 0;
    for (int64_t j = 0; j < n; j++)
        for (int v = 1; v < m->cfg.threads; v++) {
            mml__grads *w = &mml__worker_at(m, v)->grads;
            if (!w->mark[f][ids[j]]) continue;
            w->mark[f][ids[j]] = 0;
            if (lin) {
                m->grads.G[off + ids[j]] += w->G[off + ids[j]];
                w->G[off + ids[j]] = 0.0f;
            }
        }
}

/* The worker (of t) that adds the gradient rows of id to a table of k-float
 * rows: ids go by groups of 2^sh rows, the fewest that span 16 floats (whole
 * cache lines when k divides 16, as tables start on 64-byte boundaries), and
 * the groups are spread over the workers by a multiplicative hash: a multiply
 * and shifts, no division in the loops over a batch's ids. Which worker adds
 * a row does not change its bits. */
static int mml__row_group_shift(int k) {
    int sh = 0;
    while ((k << sh) < 16) sh++;
    return sh;
}
static inline int mml__row_owner(int32_t id, int sh, int t) {
    return (int)(((uint64_t)((uint32_t)(id >> sh) * 0x9E3779B1u) * (uint32_t)t) >> 32);
}

/* Embedding gradients of the whole batch, left in each worker's dE: worker w
 * adds the rows of the ids it owns (mml__row_owner), in batch order, so a row
 * sums its contributions in the order one thread would, and (for widths
 * that divide 16 or are multiples of 16) no two workers write one cache line
 * of a table. A worker owns about 1/t of the ids it reads, so it asks for
 * rows MML__OWNED_AHEAD ids on (4 ids on, as the one-thread scatter does,
 * left it waiting on most rows at 2 threads). */
#define MML__OWNED_AHEAD 16
static void mml__scatter_owned(mml_model_t *m, int w) {
    const mml__arch *a = &m->a;
    int t = m->cfg.threads;
    for (int f = 0; f < a->F; f++) {
        const mml__field *fd = &a->field[f];
        if (!mml__param_trainable(m, fd->emb)) continue;
        int k = fd->dim, len = fd->len, sh = mml__row_group_shift(k);
        float *g = mml__g(&m->grads, m, fd->emb);
        for (int u = 0; u < t; u++) {
            const mml__pass *U = mml__worker_pass(m, u);
            const int32_t *ids = U->r.ids[f];
            int64_t n = (int64_t)U->r.n * len;
            for (int64_t i = 0; i < n; i++) {
                int32_t ahead = i + MML__OWNED_AHEAD < n ? ids[i + MML__OWNED_AHEAD] : -1;
                if (ahead >= 0 && mml__row_owner(ahead, sh, t) == w) mml__prefetch_floats(g + (int64_t)ahead * k, k);
                if (ids[i] < 0 || mml__row_owner(ids[i], sh, t) != w) continue;
                int64_t r = len == 1 ? i : i / len;
                const float *de = U->dE + r * a->D + fd->e_off;
                float wt = len == 1 ? 1.0f : mml__list_weight(fd, ids + r * len);
                m->K->axpy(k, wt, de, g + (int64_t)ids[i] * k);
            }
        }
    }
}

/* Worker w's share of summing every worker's gradients into the model's, in
 * worker order (so the result does not depend on timing): slices of the
 * dense tensors, slices of the model's touched-row lists, the embedding rows
 * it owns. */
static void mml__reduce_share(void *arg, int w) {
    mml_model_t *m = (mml_model_t *)arg;
    int t = m->cfg.threads;
    int64_t lo, hi;
    for (int i = 0; i < m->a.n_params; i++) {
        const mml__param *p = &m->a.t[i];
        if ((p->row_table && p->group == MML__G_EMB) || !mml__param_trainable(m, i)) continue;
        if (mml__lin_field(m, i) >= 0) continue; /* reduced by rows, with its embedding table's */
        mml__slice(p->size, w, t, 16, &lo, &hi);
        for (int v = 1; v < t; v++) {
            float *g = mml__worker_at(m, v)->grads.G + p->off + lo;
            m->K->axpy(hi - lo, 1.0f, g, m->grads.G + p->off + lo);
            memset(g, 0, (size_t)(hi - lo) * sizeof(float));
        }
    }
    for (int f = 0; f < m->a.F; f++) {
        mml__slice(m->grads.n_touched[f], w, t, 1, &lo, &hi);
        mml__reduce_rows(m, f, m->grads.touched[f] + lo, hi - lo);
    }
    mml__scatter_owned(m, w);
}

/* The model pass's rows on the workers: their summed loss, the gradients of
 * scale * that sum in m->grads. */
/* Every worker pass takes the model pass's plan here, before the job, so the
 * shares only read it while they run (share 0 is the model pass itself). */
static void mml__share_plan(mml_model_t *m) {
    for (int i = 1; i < m->cfg.threads; i++) mml__worker_pass(m, i)->plan = m->pass.plan;
}

static double mml__parallel_train(mml_model_t *m, float scale) {
    mml__job j;
    j.m = m;
    j.all = m->pass.r;
    j.scale = scale;
    m->pass.plan.defer_scatter = 1;
    mml__share_plan(m);
    mml__pool_run(m->rt.pool, mml__job_run, &j);
    m->pass.plan.defer_scatter = 0;
    double loss = 0.0;
    for (int i = 0; i < m->cfg.threads; i++) loss += j.loss[i];
    mml__merge_touched(m);
    mml__pool_run(m->rt.pool, mml__reduce_share, m);
    for (int v = 1; v < m->cfg.threads; v++)
        for (int f = 0; f < m->a.F; f++) mml__worker_at(m, v)->grads.n_touched[f] = 0;
    m->pass.r = j.all;
    return loss;
}

/* Predictions of the pass's rows on the workers, gathered into its prob. */
static void mml__parallel_predict(mml_model_t *m, mml__pass *ps) {
    mml__job j;
    j.m = m;
    j.all = ps->r;
    j.scale = 1.0f;
    mml__share_plan(m);
    mml__pool_run(m->rt.pool, mml__job_run, &j);
    for (int i = 1; i < m->cfg.threads; i++) {
        const mml__pass *w = mml__worker_pass(m, i);
        memcpy(ps->prob + (w->r.row0 - j.all.row0), w->prob, (size_t)w->r.n * sizeof(float));
    }
    ps->r = j.all;
}

// >>distributed ------------------------------------------------------------

/* Check words: 8 nibbles of a hash and their squares. Summed over the
 * processes, world * sum(w^2) == sum(w)^2 for every nibble exactly when all
 * processes hashed the same thing, and every process sees the same sums, so
 * all of them take the same decision (the sums are exact in floats). */
#define MML__DIST_WORDS 16
static void mml__dist_words(uint64_t h, float *w) {
    h = mml__mix64(h);
    for (int j = 0; j < 8; j++) {
        w[j] = (float)((h >> (4 * j)) & 15);
        w[8 + j] = w[j] * w[j];
    }
}
static int mml__dist_agree(const mml_model_t *m, const float *sum) {
    for (int j = 0; j < 8; j++)
        if ((double)m->rt.world * sum[8 + j] != (double)sum[j] * sum[j]) return 0;
    return 1;
}
static uint64_t mml__hash_mix(uint64_t h, uint64_t x) { return (h ^ x) * 0x100000001B3ull; }

/* Gradient tables reduced by rows: embedding table f and, when it follows
 * that table's rows (mml__lin_field), linear-logit table f. -1 otherwise. */
static int mml__dist_row_field(const mml_model_t *m, int i) {
    int f = mml__emb_field(m, i);
    return f >= 0 ? f : mml__lin_field(m, i);
}

/* Floats of one step's packed gradients, at most: every tensor whole, or for
 * the tables reduced by rows, room for a full batch of rows; the loss and the
 * check words. */
/* Floats of a full batch's rows of tensor i when it is reduced by rows
 * (field f's tables: every id of every row), else 0. */
static int64_t mml__dist_room(const mml_model_t *m, int i) {
    for (int f = 0; f < m->a.F; f++)
        if (i == m->a.field[f].emb || i == m->a.field[f].lin)
            return (int64_t)m->cfg.max_batch * m->a.field[f].len * m->a.t[i].shape[1];
    return 0;
}

static int64_t mml__dist_capacity(const mml_model_t *m) {
    int64_t n = 1 + MML__DIST_WORDS;
    for (int i = 0; i < m->a.n_params; i++) {
        int64_t rows = mml__dist_room(m, i), size = m->a.t[i].size;
        n += m->a.t[i].group == MML__G_EMB ? rows : rows > size ? rows : size;
    }
    return n;
}

mml_status mml_model_set_distributed(mml_model_t *m, int32_t rank, int32_t world, mml_allreduce_fn sum, void *user) {
    if (world < 1 || world > 4096 || rank < 0 || rank >= world)
        return mml__fail(MML_ERR_ARG, "distributed: rank %d of world %d (world 1..4096, rank 0..world-1)", rank, world);
    if (world > 1 && !sum) return mml__fail(MML_ERR_ARG, "distributed: world %d needs a sum function", world);
    float *buf = NULL;
    if (world > 1) {
        uint64_t bytes;
        if (!mml__mul_ok((uint64_t)mml__dist_capacity(m), sizeof(float), (uint64_t)1 << 40, &bytes) ||
            !(buf = (float *)mml__alloc((size_t)bytes)))
            return mml__fail(MML_ERR_NOMEM, "distributed: cannot allocate the gradient buffer");
    }
    mml__free(m->rt.dist_buf);
    m->rt.dist_buf = buf;
    m->rt.rank = world > 1 ? rank : 0;
    m->rt.world = world;
    m->rt.sum = world > 1 ? sum : NULL;
    m->rt.sum_user = world > 1 ? user : NULL;
    return MML_OK;
}

/* Sums n floats over the processes; an error of the transport stops the
 * call with a message. */
static mml_status mml__dist_sum(mml_model_t *m, float *buf, int64_t n, const char *what) {
    mml_status st = m->rt.sum(buf, n, m->rt.sum_user);
    if (st) return mml__fail(st, "distributed: the sum of %s failed (status %d)", what, (int)st);
    return MML_OK;
}

/* The hash of a batch's rows: every field's ids, the numeric values, the labels. */
static uint64_t mml__batch_hash(const mml_model_t *m, const mml__rows *b) {
    uint64_t h = mml__hash_mix(0x9E3779B97F4A7C15ull, (uint64_t)b->n);
    for (int f = 0; f < m->a.F; f++)
        for (int64_t i = 0; i < (int64_t)b->n * m->a.field[f].len; i++) h = mml__hash_mix(h, (uint32_t)b->ids[f][i]);
    for (int64_t i = 0; i < (int64_t)b->n * m->a.n_num; i++) {
        uint32_t u;
        memcpy(&u, &b->num[i], 4);
        h = mml__hash_mix(h, u);
    }
    for (int i = 0; i < b->n; i++) h = mml__hash_mix(h, b->label[i] > 0.5f);
    return h;
}

/* Copies the step's gradients into buf (to_buf) or back: the tensors this
 * step updates, whole, then for each field the rows of the batch's ids in
 * m->grads.touched (the same list on every process), in room for a full batch, so
 * the size depends only on the phase. Returns the floats of the layout. */
static int64_t mml__dist_pack(mml_model_t *m, float *buf, int to_buf) {
    const mml__grads *gr = &m->grads;
    int64_t n = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < m->a.n_params; i++) {
            const mml__param *p = &m->a.t[i];
            int f = mml__dist_row_field(m, i);
            if (!mml__param_stepped(m, &m->pass.plan, i) || (pass == 0) != (f < 0)) continue;
            if (f < 0) {
                float *g = gr->G + p->off;
                if (to_buf) memcpy(buf + n, g, (size_t)p->size * sizeof(float));
                else memcpy(g, buf + n, (size_t)p->size * sizeof(float));
                n += p->size;
                continue;
            }
            int64_t d = p->shape[1], room = mml__dist_room(m, i);
            for (int j = 0; j < gr->n_touched[f]; j++) {
                float *g = gr->G + p->off + (int64_t)gr->touched[f][j] * d;
                if (to_buf) memcpy(buf + n + j * d, g, (size_t)d * sizeof(float));
                else memcpy(g, buf + n + j * d, (size_t)d * sizeof(float));
            }
            if (to_buf) memset(buf + n + gr->n_touched[f] * d, 0, (size_t)(room - gr->n_touched[f] * d) * sizeof(float));
            n += room;
        }
    return n;
}

/* Every column of a split with a schema, field by field, then the labels. */
static uint64_t mml__split_hash_schema(uint64_t h, const mml_schema_t *sc, const mml_split_t *s) {
    for (int f = 0; f < sc->n_fields; f++) {
        const mml_field_t *fd = &sc->field[f];
        int64_t n = s->n * (fd->kind == MML_FIELD_MULTI_HOT ? fd->max_len : 1);
        h = mml__hash_mix(h, (uint64_t)f);
        for (int64_t i = 0; i < n; i++) {
            uint32_t w;
            if (fd->kind == MML_FIELD_NUMERIC) memcpy(&w, &s->values[f][i], 4);
            else w = (uint32_t)s->ids[f][i];
            h = mml__hash_mix(h, w);
        }
    }
    for (int64_t i = 0; i < s->n; i++) h = mml__hash_mix(h, s->label[i] > 0.5f);
    return h;
}

/* A fingerprint of a data set: its sizes and every row of the three splits
 * (with a schema: every column). Each step is a bijection of h for a given
 * word, so data that differ in one word always hash differently. */
static uint64_t mml__data_hash(const mml_data_t *d) {
    uint64_t h = mml__hash_mix(0x6D6D6C66ull, (uint64_t)d->n_users);
    h = mml__hash_mix(mml__hash_mix(h, (uint64_t)d->n_items), (uint64_t)d->n_domains);
    for (int k = 0; k < 3; k++) {
        const mml_split_t *s = &d->split[k];
        h = mml__hash_mix(h, (uint64_t)s->n);
        if (d->schema && s->ids) {
            h = mml__split_hash_schema(h, d->schema, s);
            continue;
        }
        for (int64_t i = 0; i < s->n; i++)
            h = mml__hash_mix(mml__hash_mix(h, (uint32_t)s->uid[i] ^ ((uint64_t)(uint32_t)s->pid[i] << 32)),
                              (uint32_t)s->dom[i] ^ (s->label[i] > 0.5f ? 0x80000000u : 0u));
    }
    return h;
}

/* mml_fit's first collective: every process must hold the same data (hashed
 * by mml__data_hash) and options (else the processes would make different
 * calls and wait on each other forever). */
static mml_status mml__dist_check_fit(mml_model_t *m, uint64_t data_hash, const mml_fit_opts_t *o) {
    uint64_t h = mml__hash_mix(mml__hash_mix(mml__hash_mix(data_hash, (uint64_t)o->batch), (uint64_t)o->max_epochs),
                               (uint64_t)o->patience);
    h = mml__hash_mix(h, o->seed);
    float w[MML__DIST_WORDS];
    mml__dist_words(h, w);
    mml_status st = mml__dist_sum(m, w, MML__DIST_WORDS, "the data check");
    if (st) return st;
    if (!mml__dist_agree(m, w))
        return mml__fail(MML_ERR_STATE, "distributed: the processes were given different data or fit options "
                         "(process %d of %d)", m->rt.rank, m->rt.world);
    return MML_OK;
}

/* After each process's share of a batch: the touched rows become the whole
 * batch's (in order of first occurrence), and the gradients, the loss and the
 * batch check words are summed over the processes in one buffer. Every
 * process then holds the same gradients, so the same Adam step keeps the
 * replicas equal. */
static mml_status mml__dist_reduce(mml_model_t *m, double *loss) {
    const mml__rows *b = &m->pass.loaded;
    mml__grads *g = &m->grads;
    for (int f = 0; f < m->a.F; f++) {
        for (int j = 0; j < g->n_touched[f]; j++) g->mark[f][g->touched[f][j]] = 0;
        g->n_touched[f] = 0;
        if (!mml__param_trainable(m, m->a.field[f].emb)) continue;
        for (int64_t i = 0; i < (int64_t)b->n * m->a.field[f].len; i++) {
            int32_t id = b->ids[f][i];
            if (id >= 0 && !g->mark[f][id]) { g->mark[f][id] = 1; g->touched[f][g->n_touched[f]++] = id; }
        }
    }
    float *buf = m->rt.dist_buf;
    int64_t n = mml__dist_pack(m, buf, 1);
    buf[n] = (float)*loss;
    mml__dist_words(mml__batch_hash(m, b), buf + n + 1);
    mml_status st = mml__dist_sum(m, buf, n + 1 + MML__DIST_WORDS, "the gradients");
    if (st) return st;
    if (!mml__dist_agree(m, buf + n + 1))
        return mml__fail(MML_ERR_STATE, "distributed: the processes were given batches that differ (process %d of %d: "
                         "%d rows)", m->rt.rank, m->rt.world, b->n);
    mml__dist_pack(m, buf, 0);
    *loss = buf[n];
    return MML_OK;
}

// >>sessions ---------------------------------------------------------------

/* A session is a pass of its own over a model that is not being trained. */
struct mml_session_t {
    const mml_model_t *m;
    mml__pass pass;
};

mml_status mml_session_create(const mml_model_t *m, mml_session_t **out) {
    *out = NULL;
    mml_session_t *s = (mml_session_t *)MOEMLORA_MALLOC(sizeof *s);
    if (!s) return mml__fail(MML_ERR_NOMEM, "cannot allocate a session");
    mml__catch_up_all((mml_model_t *)m); /* sessions only read the parameters */
    mml_status st = mml__pass_init(m, &s->pass, MML__PASS_LOAD);
    if (st) { MOEMLORA_FREE(s); return st; }
    s->m = m;
    *out = s;
    return MML_OK;
}

void mml_session_free(mml_session_t *s) {
    if (!s) return;
    mml__pass_free(&s->pass);
    MOEMLORA_FREE(s);
}

static mml_status mml__session_predict(mml_session_t *s, const mml_batch_t *b, float *prob) {
    const mml_model_t *m = s->m;
    mml_status st = mml__check_batch(m, b, 0);
    if (st) return st;
    mml__cols cols;
    for (int i = 0; i < b->n; i += m->cfg.max_batch) {
        int n = b->n - i < m->cfg.max_batch ? b->n - i : m->cfg.max_batch;
        mml_batch_t c = mml__batch_part(m->a.schema, b, i, n, &cols);
        mml__predict_batch(m, &s->pass, &c, prob + i, 0);
    }
    return MML_OK;
}

mml_status mml_session_predict(mml_session_t *s, const mml_batch_t *b, float *prob) {
    unsigned fp = mml__flush_begin();
    mml_status st = mml__session_predict(s, b, prob);
    mml__flush_end(fp);
    return st;
}
// >>folding ----------------------------------------------------------------

/* The paper's gate sees only the domain, so at inference each domain's mixture
 * is a constant and its adapters fold into one dense layer:
 *   W_d = W + sum_e w_e(d) A_e B_e,   b_d = b + sum_e w_e(d) c_e.
 * One block per domain plus one for the out-of-vocabulary domain; the base
 * model folds into one block (its weights packed once). */

static int mml__can_fold(const mml_model_t *m) {
    if (m->cfg.adapter == MML_ADAPTER_NONE) return 1; /* the weights packed once */
    if (m->cfg.adapter == MML_ADAPTER_MLORA) return m->ph.phase == MML_PHASE_ALL;
    if (m->cfg.adapter == MML_ADAPTER_MOE)
        return m->cfg.gate == MML_GATE_DOMAIN && (m->ph.phase == MML_PHASE_GATE || m->ph.phase == MML_PHASE_ALL);
    return 0;
}

/* Rows of layer l's folded weights the tower reads. In the first layer of a
 * model whose tower input is the field embeddings [user | item | domain], the
 * domain's part is one constant row per domain: in a fold per domain it goes
 * into the bias, and the product reads only the user and item columns. */
static int mml__fold_rows(const mml_model_t *m, int l) {
    return l == 0 && !m->a.kind->input_fwd && mml__fold_per_domain(m) ? mml__x0_dom_at(m) : m->a.layer[l].d_in;
}

/* Is the fold packed for gemm_packed_bf16? fold.w is freed when the
 * inference precision changes (mml_model_set_precision), so its layout is
 * always this one. */
static int mml__fold_bf16(const mml_model_t *m) { return m->cfg.infer_precision == MML_PRECISION_BF16; }

/* Floats of a folded weight [K, N] packed (fp32, or bf16 if the fold is). */
static int64_t mml__fold_pack_size(const mml_model_t *m, int K, int N) {
    return mml__fold_bf16(m) ? m->K->gemm_pack_size_bf16(K, N) : m->K->gemm_pack_size(K, N);
}

/* Floats of layer l's block: the packed weights, then the bias. */
static int64_t mml__fold_layer_floats(const mml_model_t *m, int l) {
    int64_t s = mml__fold_pack_size(m, mml__fold_rows(m, l), m->a.layer[l].d_out) + m->a.layer[l].d_out;
    return (s + 15) & ~(int64_t)15;
}

static int64_t mml__fold_stride(const mml_model_t *m) {
    int64_t s = 0;
    for (int l = 0; l < m->a.n_layers; l++) s += mml__fold_layer_floats(m, l);
    return s;
}

/* Mixture weights of domain d (d == n_domains: the OOV domain). */
static void mml__domain_mixture(const mml_model_t *m, int d, float *w) {
    int E = m->a.n_experts;
    if (m->cfg.adapter == MML_ADAPTER_MLORA) {
        for (int e = 0; e < E; e++) w[e] = e == d ? 1.0f : 0.0f;
        return;
    }
    int gd = m->cfg.gate_dim;
    const float *g = mml__p(m, m->a.gate_emb) + (int64_t)d * gd, *G = mml__p(m, m->a.gate_W), *b = mml__p(m, m->a.gate_b);
    float lg[256];
    for (int e = 0; e < E; e++) {
        double s = b[e];
        for (int j = 0; j < gd; j++) s += (double)g[j] * G[(int64_t)j * E + e];
        lg[e] = (float)s;
    }
    m->K->softmax_rows(1, E, lg, E, w, E);
}

static mml_status mml__model_fold(mml_model_t *m) {
    if (!mml__can_fold(m))
        return mml__fail(MML_ERR_STATE, "fold: needs the base model, MLoRA, or MoE-MLoRA with the domain gate in the gate phase");
    const mml_kernels_t *K = m->K;
    int D = mml__fold_per_domain(m) ? m->cfg.n_domains : 0, E = m->a.n_experts;
    int64_t stride = mml__fold_stride(m);
    if (!m->fold.w) {
        uint64_t bytes;
        if (!mml__mul_ok((uint64_t)stride * (uint64_t)(D + 1), sizeof(float), (uint64_t)1 << 40, &bytes))
            return mml__fail(MML_ERR_ARG, "fold: size overflows");
        m->fold.w = (float *)mml__alloc((size_t)bytes);
        if (!m->fold.w) return mml__fail(MML_ERR_NOMEM, "fold: cannot allocate %llu bytes", (unsigned long long)bytes);
    }
    int64_t maxu = 0, maxw = 0;
    for (int l = 0; l < m->a.n_layers; l++) {
        int64_t u = (int64_t)m->a.layer[l].d_in * E * m->a.layer[l].r, wd = (int64_t)m->a.layer[l].d_in * m->a.layer[l].d_out;
        if (u > maxu) maxu = u;
        if (wd > maxw) maxw = wd;
    }
    float *U = (float *)mml__alloc((size_t)(maxu > 0 ? maxu : 1) * sizeof(float)), w[256];
    float *Wd = (float *)mml__alloc((size_t)maxw * sizeof(float));
    if (!U || !Wd) {
        mml__free(U);
        mml__free(Wd);
        return mml__fail(MML_ERR_NOMEM, "fold: out of memory");
    }
    for (int d = 0; d <= D; d++) {
        if (E > 0) mml__domain_mixture(m, d, w);
        float *blk = m->fold.w + (int64_t)d * stride;
        for (int l = 0; l < m->a.n_layers; l++) {
            const mml__layer *L = &m->a.layer[l];
            int di = L->d_in, dout = L->d_out, Er = E * L->r, rows = mml__fold_rows(m, l);
            float *bd = blk + mml__fold_pack_size(m, rows, dout);
            memcpy(Wd, mml__p(m, L->W), (size_t)di * dout * sizeof(float));
            memcpy(bd, mml__p(m, L->b), (size_t)dout * sizeof(float));
            if (E > 0) { /* U = A with expert block e scaled by w_e; W_d += U B; b_d += w C */
                const float *A = mml__p(m, L->A);
                for (int i = 0; i < di; i++)
                    K->block_scale(1, E, L->r, A + (int64_t)i * Er, Er, w, E, U + (int64_t)i * Er, Er);
                K->gemm_nn(di, dout, Er, U, Er, mml__p(m, L->B), dout, Wd, dout, 1);
                K->gemm_nn(1, dout, E, w, E, mml__p(m, L->C), dout, bd, dout, 1);
            }
            if (rows < di) /* b_d += e_d W_d[rows:, :], e_d = domain d's embedding */
                K->gemm_nn(1, dout, di - rows, mml__p(m, m->a.field[m->a.dom_field].emb) + (int64_t)d * m->a.k, di - rows,
                           Wd + (int64_t)rows * dout, dout, bd, dout, 1);
            (mml__fold_bf16(m) ? K->gemm_pack_b_bf16 : K->gemm_pack_b)(rows, dout, Wd, dout, blk);
            blk += mml__fold_layer_floats(m, l);
        }
    }
    mml__free(U);
    mml__free(Wd);
    m->fold.ok = 1;
    return MML_OK;
}

mml_status mml_model_fold(mml_model_t *m) {
    unsigned fp = mml__flush_begin();
    mml_status st = mml__model_fold(m);
    mml__flush_end(fp);
    return st;
}

mml_status mml_model_set_precision(mml_model_t *m, mml_precision training, mml_precision inference) {
    if ((unsigned)training > MML_PRECISION_BF16 || (unsigned)inference > MML_PRECISION_BF16)
        return mml__fail(MML_ERR_ARG, "set_precision: precisions %d and %d (expected %d fp32 or %d bf16)",
                         (int)training, (int)inference, MML_PRECISION_FP32, MML_PRECISION_BF16);
    if (inference != m->cfg.infer_precision) { /* the fold's layout, maybe its size, changes */
        mml__free(m->fold.w);
        m->fold.w = NULL;
    }
    mml__set_precision(m, training, inference);
    m->fold.ok = 0;
    return MML_OK;
}

/* Inference tower on folded weights for rows [a, a + n) that share domain d. */
static void mml__folded_tower(const mml_model_t *m, mml__pass *ps, int a, int n, int d) {
    const mml_kernels_t *K = m->K;
    const float *blk = m->fold.w + (int64_t)d * mml__fold_stride(m);
    const float *x = ps->x0 + (int64_t)a * m->a.d0;
    for (int l = 0; l < m->a.n_layers; l++) {
        const mml__layer *L = &m->a.layer[l];
        float *z = ps->z[l] + (int64_t)a * L->d_out;
        int rows = mml__fold_rows(m, l);
        (mml__fold_bf16(m) ? K->gemm_packed_bf16 : K->gemm_packed)(n, L->d_out, rows, x, L->d_in, blk, z, L->d_out,
                                                              blk + mml__fold_pack_size(m, rows, L->d_out), 1);
        blk += mml__fold_layer_floats(m, l);
        x = z;
    }
}

/* Rows go through their domain's folded weights, one run of a domain at a
 * time (mml__pass_load grouped rows that were not in long runs); the base
 * model's all at once. */
static void mml__folded_forward_tower(const mml_model_t *m, mml__pass *ps) {
    const int32_t *dom = ps->r.ids[m->a.dom_field];
    int n = ps->r.n;
    if (!mml__fold_per_domain(m)) {
        mml__folded_tower(m, ps, 0, n, 0);
        return;
    }
    for (int a = 0; a < n;) {
        int b = a + 1;
        while (b < n && dom[b] == dom[a]) b++;
        mml__folded_tower(m, ps, a, b - a, dom[a]);
        a = b;
    }
}
// >>metrics ----------------------------------------------------------------

typedef struct mml__scored { float s, y; } mml__scored;

static int mml__cmp_scored(const void *a, const void *b) {
    float x = ((const mml__scored *)a)->s, y = ((const mml__scored *)b)->s;
    return (x > y) - (x < y);
}

/* The exact AUC into *auc, NaN when a class is absent; MML_ERR_NOMEM (and
 * *auc NaN) when the sort buffer cannot be had, which callers that summarise
 * must not mistake for "undefined". */
static mml_status mml__auc(int64_t n, const float *score, const float *label, double *auc) {
    *auc = NAN;
    int64_t npos = 0;
    for (int64_t i = 0; i < n; i++) npos += label[i] > 0.5f;
    int64_t nneg = n - npos;
    if (n <= 0 || npos == 0 || nneg == 0) return MML_OK;
    mml__scored *v = (mml__scored *)mml__alloc((size_t)n * sizeof *v);
    if (!v) return MML_ERR_NOMEM;
    for (int64_t i = 0; i < n; i++) {
        v[i].s = score[i] != score[i] ? 0.0f : score[i]; /* NaN scores rank as 0 */
        v[i].y = label[i];
    }
    qsort(v, (size_t)n, sizeof *v, mml__cmp_scored);
    /* Mann-Whitney U: sum of the (1-based, tie-averaged) ranks of positives */
    double rank_sum = 0.0;
    for (int64_t i = 0; i < n;) {
        int64_t j = i;
        int64_t pos = 0;
        while (j < n && v[j].s == v[i].s) { pos += v[j].y > 0.5f; j++; }
        double avg_rank = 0.5 * (double)(i + 1 + j); /* mean of ranks i+1..j */
        rank_sum += avg_rank * (double)pos;
        i = j;
    }
    mml__free(v);
    *auc = (rank_sum - 0.5 * (double)npos * (double)(npos + 1)) / ((double)npos * (double)nneg);
    return MML_OK;
}

double mml_auc(int64_t n, const float *score, const float *label) {
    double a;
    return mml__auc(n, score, label, &a) ? NAN : a;
}

double mml_logloss(int64_t n, const float *prob, const float *label) {
    if (n <= 0) return NAN;
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double p = prob[i];
        if (p < 1e-7) p = 1e-7;
        if (p > 1.0 - 1e-7) p = 1.0 - 1e-7;
        s -= label[i] > 0.5f ? log(p) : log(1.0 - p);
    }
    return s / (double)n;
}

/* Mean and weighted AUC over the domains whose AUC is defined. */
static void mml__metrics_summarize(mml_metrics_t *mt) {
    double sum = 0.0, wsum = 0.0, w = 0.0;
    int cnt = 0;
    for (int d = 0; d < mt->n_domains; d++) {
        if (mt->auc[d] != mt->auc[d]) continue;
        sum += mt->auc[d];
        cnt++;
        wsum += (double)mt->n[d] * mt->auc[d];
        w += (double)mt->n[d];
    }
    mt->mean_auc = cnt ? sum / cnt : NAN;
    mt->weighted_auc = w > 0 ? wsum / w : NAN;
}

/* Predicts rows [a, b) of a split into prob (batches stay domain-homogeneous). */
/* Probabilities of rows [a, b) of a split into prob (distributed: each
 * process predicts its share, the rest stays zero, and the sum gives every
 * process every row, exactly). */
static mml_status mml__predict_rows(mml_model_t *m, const mml_split_t *s, int64_t a, int64_t b, float *prob) {
    int64_t lo = a, hi = b;
    if (m->rt.world > 1) {
        lo = a + (b - a) * m->rt.rank / m->rt.world;
        hi = a + (b - a) * (m->rt.rank + 1) / m->rt.world;
        memset(prob, 0, (size_t)(b - a) * sizeof(float));
    }
    mml_batch_t all = mml__split_batch(s);
    mml__cols cols;
    all.label = NULL;
    for (int64_t i = lo; i < hi; i += m->cfg.max_batch) {
        int n = (int)(hi - i < m->cfg.max_batch ? hi - i : m->cfg.max_batch);
        mml_batch_t c = mml__batch_part(m->a.schema, &all, i, n, &cols);
        mml_status st = mml_predict(m, &c, prob + (i - a));
        if (st) return st;
    }
    return m->rt.world > 1 ? mml__dist_sum(m, prob, b - a, "the predictions") : MML_OK;
}

/* A split mml_evaluate can read: every row in exactly one domain. */
static mml_status mml__check_split(const mml_split_t *s, int32_t n_domains) {
    if (n_domains < 1 || n_domains > MML_MAX_DOMAINS)
        return mml__fail(MML_ERR_ARG, "evaluate: n_domains %d outside 1..%d", n_domains, MML_MAX_DOMAINS);
    if (!s->dom_start) return mml__fail(MML_ERR_ARG, "evaluate: the split has no dom_start");
    if (s->n <= 0) return mml__fail(MML_ERR_ARG, "evaluate: empty split");
    if ((!s->ids && (!s->uid || !s->pid)) || !s->dom || !s->label)
        return mml__fail(MML_ERR_ARG, "evaluate: the split lacks a uid, pid, dom or label array");
    if (s->dom_start[0] != 0 || s->dom_start[n_domains] != s->n)
        return mml__fail(MML_ERR_ARG, "evaluate: dom_start[0] = %lld and dom_start[%d] = %lld must be 0 and the "
                         "split's %lld rows", (long long)s->dom_start[0], n_domains,
                         (long long)s->dom_start[n_domains], (long long)s->n);
    for (int d = 0; d < n_domains; d++)
        if (s->dom_start[d + 1] < s->dom_start[d])
            return mml__fail(MML_ERR_ARG, "evaluate: dom_start decreases at domain %d (%lld after %lld)", d,
                             (long long)s->dom_start[d + 1], (long long)s->dom_start[d]);
    return MML_OK;
}

mml_status mml_evaluate(mml_model_t *m, const mml_split_t *s, int32_t n_domains, mml_metrics_t *out) {
    memset(out, 0, sizeof *out);
    if (!m || !s) return mml__fail(MML_ERR_ARG, "evaluate: no model or no split");
    mml_status st = mml__check_split(s, n_domains);
    if (st) return st;
    out->n_domains = n_domains;
    float *prob = (float *)mml__alloc((size_t)s->n * sizeof(float));
    if (!prob) return mml__fail(MML_ERR_NOMEM, "evaluate: out of memory");
    double ll = 0.0;
    int nomem = -1; /* distributed: the predictions are collective, so a failing AUC stops only after them */
    for (int d = 0; d < n_domains && !st; d++) {
        int64_t a = s->dom_start[d], b = s->dom_start[d + 1];
        out->n[d] = b - a;
        out->auc[d] = out->logloss[d] = NAN;
        if (b == a) continue;
        st = mml__predict_rows(m, s, a, b, prob + a);
        if (!st && mml__auc(b - a, prob + a, s->label + a, &out->auc[d]) && nomem < 0) nomem = d;
        out->logloss[d] = mml_logloss(b - a, prob + a, s->label + a);
        ll += out->logloss[d] * (double)(b - a);
    }
    mml__free(prob);
    if (!st && nomem >= 0) st = mml__fail(MML_ERR_NOMEM, "evaluate: out of memory computing the AUC of domain %d", nomem);
    if (st) return st;
    out->n_all = s->n;
    out->logloss_all = ll / (double)s->n;
    mml__metrics_summarize(out);
    return MML_OK;
}

// >>schedules --------------------------------------------------------------

void mml_fit_opts_default(mml_fit_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->batch = 1024;
    o->max_epochs = 50;
    o->patience = 3;
    o->seed = 123;
    o->progress_every_s = 0.25;
}

static double mml__now(void) {
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct mml__fit {
    mml_model_t *m;
    const mml_data_t *d;
    const mml_fit_opts_t *o;
    uint64_t rng;
    int64_t *perm;           /* a domain's training rows, shuffled */
    mml__cols src;           /* the training split's columns, per schema field */
    int32_t *ids[MML__MAX_FIELDS];  /* a batch's columns, gathered */
    float *values[MML__MAX_FIELDS], *label;
    int32_t *dorder;         /* the domains' order in an epoch */
    float *block;            /* perm .. dorder */
} mml__fit;

static void mml__fit_carve(void *ctx, mml__carve *c) {
    mml__fit *f = (mml__fit *)ctx;
    const mml_split_t *tr = &f->d->split[MML_TRAIN];
    const mml_schema_t *sc = f->m->a.schema;
    int64_t b = f->o->batch, maxdom = 0;
    for (int k = 0; k < f->d->n_domains; k++)
        if (tr->dom_start[k + 1] - tr->dom_start[k] > maxdom) maxdom = tr->dom_start[k + 1] - tr->dom_start[k];
    f->perm = (int64_t *)(void *)mml__take(c, 2 * (maxdom + 1));
    for (int k = 0; k < sc->n_fields; k++) {
        const mml_field_t *fd = &sc->field[k];
        if (fd->kind == MML_FIELD_NUMERIC) f->values[k] = mml__take(c, b);
        else f->ids[k] = (int32_t *)(void *)mml__take(c, b * (fd->kind == MML_FIELD_MULTI_HOT ? fd->max_len : 1));
    }
    f->label = mml__take(c, b);
    f->dorder = (int32_t *)(void *)mml__take(c, f->d->n_domains);
}

static void mml__emit(const mml__fit *f, mml_progress_t *p) {
    if (f->o->progress) f->o->progress(p, f->o->user);
}

/* Rows rows[0..n) of a split as a batch in the fit's buffers. */
static mml_batch_t mml__gather(mml__fit *f, const mml_split_t *s, const int64_t *rows, int n) {
    const mml_schema_t *sc = f->m->a.schema;
    for (int c = 0; c < sc->n_fields; c++) {
        const mml_field_t *fd = &sc->field[c];
        if (fd->kind == MML_FIELD_NUMERIC) {
            for (int j = 0; j < n; j++) f->values[c][j] = f->src.values[c][rows[j]];
            continue;
        }
        int64_t len = fd->kind == MML_FIELD_MULTI_HOT ? fd->max_len : 1;
        for (int j = 0; j < n; j++)
            for (int64_t q = 0; q < len; q++) f->ids[c][j * len + q] = f->src.ids[c][rows[j] * len + q];
    }
    for (int j = 0; j < n; j++) f->label[j] = s->label[rows[j]];
    mml_batch_t b = {n, NULL, NULL, NULL, f->label, (const int32_t *const *)f->ids, (const float *const *)f->values};
    return b;
}

/* One shuffled pass: domains in random order, each domain's rows shuffled,
 * domain-homogeneous batches. only_domain >= 0 restricts to one domain. */
static mml_status mml__epoch(mml__fit *f, mml_progress_t *pr, int only_domain) {
    const mml_split_t *s = &f->d->split[MML_TRAIN];
    int nd = f->d->n_domains;
    int64_t total = 0;
    for (int d = 0; d < nd; d++) {
        f->dorder[d] = d;
        if (only_domain < 0 || d == only_domain) total += s->dom_start[d + 1] - s->dom_start[d];
    }
    for (int d = nd - 1; d > 0; d--) {
        int j = (int)mml__rng_below(&f->rng, (uint64_t)d + 1);
        int32_t t = f->dorder[d]; f->dorder[d] = f->dorder[j]; f->dorder[j] = t;
    }
    double t0 = mml__now(), last = t0, loss_sum = 0.0;
    int64_t done = 0;
    pr->event = MML_EV_PROGRESS;
    pr->total = total;
    for (int di = 0; di < nd; di++) {
        int d = f->dorder[di];
        if (only_domain >= 0 && d != only_domain) continue;
        int64_t a = s->dom_start[d], n = s->dom_start[d + 1] - a;
        for (int64_t i = 0; i < n; i++) f->perm[i] = a + i;
        mml__shuffle_i64(f->perm, n, &f->rng);
        for (int64_t i = 0; i < n; i += f->o->batch) {
            int bn = (int)(n - i < f->o->batch ? n - i : f->o->batch);
            mml_batch_t b = mml__gather(f, s, f->perm + i, bn);
            float loss;
            mml_status st = mml_train_step(f->m, &b, &loss);
            if (st) return st;
            loss_sum += (double)loss * bn;
            done += bn;
            double now = mml__now();
            if (f->o->progress && now - last >= f->o->progress_every_s) {
                last = now;
                pr->domain = d;
                pr->done = done;
                pr->samples_per_s = done / (now - t0);
                pr->eta_s = (double)(total - done) / (pr->samples_per_s > 0 ? pr->samples_per_s : 1);
                pr->loss = loss_sum / (double)done;
                mml__emit(f, pr);
            }
        }
    }
    double el = mml__now() - t0;
    pr->done = done;
    pr->samples_per_s = el > 0 ? done / el : 0;
    pr->loss = done ? loss_sum / (double)done : NAN;
    return MML_OK;
}

/* The stage's early-stopping criterion, chosen once per stage: the AUC when
 * one of the stage's domains (an expert: its own) has validation rows of both
 * classes, else the log loss. An undefined AUC never improves, so stopping on
 * it would hand back the stage's initial parameters. */
static int mml__stage_uses_auc(const mml__fit *f, int only_domain) {
    const mml_split_t *s = &f->d->split[MML_VAL];
    for (int d = 0; d < f->d->n_domains; d++) {
        if (only_domain >= 0 && d != only_domain) continue;
        int seen = 0; /* bit 0: a positive, bit 1: a negative */
        for (int64_t i = s->dom_start[d]; i < s->dom_start[d + 1] && seen != 3; i++) seen |= s->label[i] > 0.5f ? 1 : 2;
        if (seen == 3) return 1;
    }
    return 0;
}

/* The validation criterion, higher is better (the mean AUC, or minus the log
 * loss), and the mean AUC (NaN where undefined). */
static mml_status mml__val_score(mml__fit *f, int only_domain, int use_auc, double *score, double *auc) {
    const mml_split_t *s = &f->d->split[MML_VAL];
    mml_status st;
    *score = *auc = NAN;
    if (only_domain >= 0) {
        int64_t a = s->dom_start[only_domain], b = s->dom_start[only_domain + 1];
        if (b <= a) return MML_OK;
        float *prob = (float *)mml__alloc((size_t)(b - a) * sizeof(float));
        if (!prob) return mml__fail(MML_ERR_NOMEM, "fit: out of memory validating domain %d", only_domain);
        st = mml__predict_rows(f->m, s, a, b, prob);
        if (!st && mml__auc(b - a, prob, s->label + a, auc))
            st = mml__fail(MML_ERR_NOMEM, "fit: out of memory computing the validation AUC of domain %d", only_domain);
        if (!st) *score = use_auc ? *auc : -mml_logloss(b - a, prob, s->label + a);
        mml__free(prob);
        return st;
    }
    mml_metrics_t mt;
    st = mml_evaluate(f->m, s, f->d->n_domains, &mt);
    if (st) return st;
    *auc = mt.mean_auc;
    *score = use_auc ? mt.mean_auc : -mt.logloss_all;
    return MML_OK;
}

/* The stages of the adapter's schedule: one phase, or MoE's backbone, one
 * stage per expert and the gate. */
static int mml__n_stages(const mml_model_t *m) {
    return m->cfg.adapter == MML_ADAPTER_MOE ? m->a.n_experts + 2 : 1;
}

static void mml__stage_info(const mml_model_t *m, int s, const char **name, mml_phase *ph, int *expert) {
    *expert = -1;
    if (m->cfg.adapter != MML_ADAPTER_MOE) {
        *name = m->cfg.adapter == MML_ADAPTER_NONE ? "base" : "mlora";
        *ph = MML_PHASE_ALL;
    } else if (s == 0) {
        *name = "backbone";
        *ph = MML_PHASE_BACKBONE;
    } else if (s <= m->a.n_experts) {
        *name = "expert";
        *ph = MML_PHASE_EXPERT;
        *expert = s - 1;
    } else {
        *name = "gate";
        *ph = MML_PHASE_GATE;
    }
}

/* Trains one stage with early stopping from wherever m->fit says it stands;
 * the best parameters are restored at its end. */
static mml_status mml__run_stage(mml__fit *f, int s) {
    mml_model_t *m = f->m;
    mml__fit_state *fs = &m->fit;
    const char *name;
    mml_phase phase;
    int expert;
    mml__stage_info(m, s, &name, &phase, &expert);
    int only_domain = expert >= 0 ? expert % f->d->n_domains : -1;
    int use_auc = mml__stage_uses_auc(f, only_domain);
    size_t bytes = (size_t)m->a.n_floats * sizeof(float);
    mml_status st;
    if (fs->epoch == 0) {
        st = mml_model_set_phase(m, phase, expert);
        if (st) return st;
        mml__catch_up_all(m);
        memcpy(m->snapshot, m->P, bytes);
        fs->best = -INFINITY; /* the first epoch always counts */
        fs->bad = 0;
    } else {
        mml__phase_flags(m, phase, expert); /* resumed: keep the optimizer state */
    }
    mml_progress_t pr;
    memset(&pr, 0, sizeof pr);
    pr.phase_name = name;
    pr.expert = expert;
    pr.val_metric = use_auc ? "auc" : "logloss";
    while (fs->epoch < f->o->max_epochs && fs->bad < f->o->patience) {
        pr.epoch = fs->epoch + 1;
        st = mml__epoch(f, &pr, only_domain);
        if (st) return st;
        double v;
        st = mml__val_score(f, only_domain, use_auc, &v, &pr.val_auc);
        if (st) return st;
        pr.event = MML_EV_EPOCH_END;
        pr.val_score = use_auc ? v : -v;
        pr.improved = v == v && v > fs->best;
        if (pr.improved) {
            fs->best = v;
            fs->bad = 0;
            mml__catch_up_all(m);
            memcpy(m->snapshot, m->P, bytes);
        } else {
            fs->bad++;
        }
        fs->epoch++;
        fs->rng = f->rng;
        mml__emit(f, &pr);
        if (f->o->checkpoint_path && m->rt.rank == 0) {
            st = mml_model_save(m, f->o->checkpoint_path);
            if (st) return st;
        }
    }
    memcpy(m->P, m->snapshot, bytes);
    mml__rows_current(m);
    return MML_OK;
}

static mml_status mml__phase_end(mml__fit *f, const char *name, mml_metrics_t *test) {
    mml_status st = mml_evaluate(f->m, &f->d->split[MML_TEST], f->d->n_domains, test);
    if (st) return st;
    mml_progress_t pr;
    memset(&pr, 0, sizeof pr);
    pr.event = MML_EV_PHASE_END;
    pr.phase_name = name;
    pr.expert = -1;
    pr.test = test;
    mml__emit(f, &pr);
    return MML_OK;
}

/* The data's fields are the model's (the same kinds and lists; vocabularies
 * at most the model's). */
static mml_status mml__check_data(const mml_model_t *m, const mml_data_t *d) {
    const mml_config_t *c = &m->cfg;
    const mml_schema_t *ms = m->a.schema, *ds = d->schema;
    if (!ds && (ms->n_fields != 3 || ms->field[0].kind || ms->field[1].kind || ms->domain != 2)) {
        char names[160] = "";
        for (int f = 0, n = 0; f < ms->n_fields && n >= 0 && n < (int)sizeof names; f++)
            n += snprintf(names + n, sizeof names - (size_t)n, "%s%s", f ? "," : "", ms->field[f].name);
        return mml__fail(MML_ERR_ARG, "data in the paper's layout (user, item, domain) does not fit the model's "
                         "schema (%d fields: %s)", ms->n_fields, names);
    }
    if (!ds && (d->n_users > ms->field[0].vocab || d->n_items > ms->field[1].vocab || d->n_domains != c->n_domains))
        return mml__fail(MML_ERR_ARG, "data (users %d, items %d, domains %d) does not fit the model (%d, %d, %d)",
                         d->n_users, d->n_items, d->n_domains, c->n_users, c->n_items, c->n_domains);
    if (ds && (ds->n_fields != ms->n_fields || ds->domain != ms->domain || d->n_domains != c->n_domains))
        return mml__fail(MML_ERR_ARG, "data (%d fields, domain field %d, %d domains) does not fit the model (%d, %d, %d)",
                         ds->n_fields, ds->domain, d->n_domains, ms->n_fields, ms->domain, c->n_domains);
    for (int f = 0; ds && f < ds->n_fields; f++) {
        const mml_field_t *a = &ds->field[f], *b = &ms->field[f];
        if (a->kind != b->kind || (a->kind != MML_FIELD_NUMERIC && a->vocab > b->vocab) ||
            (a->kind == MML_FIELD_MULTI_HOT && a->max_len != b->max_len))
            return mml__fail(MML_ERR_ARG, "data field %d (%s) does not fit the model's (%s)", f, a->name, b->name);
    }
    for (int k = 0; k < 3; k++)
        if (d->split[k].n <= 0)
            return mml__fail(MML_ERR_ARG, "data: the %s split is empty", k == 0 ? "train" : k == 1 ? "val" : "test");
    return MML_OK;
}

static void mml__data_sizes(const mml_data_t *d, int64_t size[6]) {
    size[0] = d->n_users;
    size[1] = d->n_items;
    size[2] = d->n_domains;
    for (int k = 0; k < 3; k++) size[3 + k] = d->split[k].n;
}

/* A model holding a fit, stopped or finished, runs only on the data and with
 * the batch and seed the fit began with: anything else would mix two runs in
 * one set of weights. max_epochs and patience may change (they only decide
 * where stages end). */
static mml_status mml__check_resume(const mml_model_t *m, const mml_data_t *d, uint64_t data_hash,
                                    const mml_fit_opts_t *o) {
    const mml__fit_state *fs = &m->fit;
    if (!fs->active && !fs->done) return MML_OK;
    int64_t z[6];
    mml__data_sizes(d, z);
    const int64_t *w = fs->data_size;
    if (fs->has_data && memcmp(z, w, sizeof z))
        return mml__fail(MML_ERR_STATE, "fit: the checkpoint was written for other data: sizes differ (checkpoint: "
                         "%lld users, %lld items, %lld domains, %lld/%lld/%lld train/val/test rows; given: %lld, %lld, "
                         "%lld, %lld/%lld/%lld)", (long long)w[0], (long long)w[1], (long long)w[2], (long long)w[3],
                         (long long)w[4], (long long)w[5], (long long)z[0], (long long)z[1], (long long)z[2],
                         (long long)z[3], (long long)z[4], (long long)z[5]);
    if (fs->has_data && data_hash != fs->data_hash)
        return mml__fail(MML_ERR_STATE, "fit: the checkpoint was written for other data: rows differ (same sizes)");
    if (fs->done) return mml__fail(MML_ERR_FINISHED, "fit: already finished: the model's fit ran to its end");
    if (fs->has_opts && o->batch != fs->batch)
        return mml__fail(MML_ERR_STATE, "fit: the checkpoint's run has batch %d, given %d: the batch and the seed must "
                         "stay the same to resume", fs->batch, o->batch);
    if (fs->has_opts && o->seed != fs->seed)
        return mml__fail(MML_ERR_STATE, "fit: the checkpoint's run has seed %llu, given %llu: the batch and the seed "
                         "must stay the same to resume", (unsigned long long)fs->seed, (unsigned long long)o->seed);
    return MML_OK;
}

/* Starts a fit, or takes over a stopped one: from here on its checkpoints
 * carry the data and the options it runs with. */
static void mml__fit_begin(mml_model_t *m, const mml_data_t *d, uint64_t data_hash, const mml_fit_opts_t *o) {
    mml__fit_state *fs = &m->fit;
    if (!fs->active) {
        memset(fs, 0, sizeof *fs);
        fs->active = 1;
        fs->rng = o->seed ^ 0x5EEDull;
    }
    fs->has_data = fs->has_opts = 1;
    mml__data_sizes(d, fs->data_size);
    fs->data_hash = data_hash;
    fs->batch = o->batch;
    fs->max_epochs = o->max_epochs;
    fs->patience = o->patience;
    fs->seed = o->seed;
}

mml_fit_state mml_model_fit_state(const mml_model_t *m, mml_fit_opts_t *opts) {
    const mml__fit_state *fs = &m->fit;
    mml_fit_state s = fs->active ? MML_FIT_STOPPED : fs->done ? MML_FIT_FINISHED
                    : fs->from_export ? MML_FIT_EXPORT : MML_FIT_NONE;
    if (!opts) return s;
    mml_fit_opts_default(opts);
    if (s == MML_FIT_STOPPED || s == MML_FIT_FINISHED) {
        opts->batch = fs->has_opts ? fs->batch : 0;
        opts->max_epochs = fs->has_opts ? fs->max_epochs : 0;
        opts->patience = fs->has_opts ? fs->patience : 0;
        opts->seed = fs->has_opts ? fs->seed : 0;
    }
    return s;
}

/* The stages from the one the fit stands in to the end; *test after each
 * phase (the experts' stages end none). */
static mml_status mml__run_stages(mml__fit *f, mml_metrics_t *test) {
    mml_model_t *m = f->m;
    const mml_split_t *tr = &f->d->split[MML_TRAIN];
    mml_status st = MML_OK;
    for (int s = m->fit.stage; !st && s < mml__n_stages(m); s++) {
        const char *name;
        mml_phase ph;
        int expert;
        mml__stage_info(m, s, &name, &ph, &expert);
        int dom = expert >= 0 ? expert % f->d->n_domains : 0;
        int skip = expert >= 0 && tr->dom_start[dom + 1] == tr->dom_start[dom];
        if (!skip) st = mml__run_stage(f, s); /* an expert without data stays zero */
        if (st) break;
        m->fit.stage = s + 1;
        m->fit.epoch = 0;
        if (ph != MML_PHASE_EXPERT) st = mml__phase_end(f, name, test);
    }
    if (!st) {
        m->fit.active = 0;
        m->fit.done = 1;
    }
    return st;
}

mml_status mml_fit(mml_model_t *m, const mml_data_t *d, const mml_fit_opts_t *o, mml_metrics_t *test) {
    mml_status st = mml__check_data(m, d);
    if (st) return st;
    if (o->batch < 1 || o->batch > m->cfg.max_batch)
        return mml__fail(MML_ERR_ARG, "fit: batch %d outside 1..max_batch %d", o->batch, m->cfg.max_batch);
    if (o->max_epochs < 1 || o->patience < 1) return mml__fail(MML_ERR_ARG, "fit: max_epochs and patience must be >= 1");
    if (m->cfg.pretrained && (!d->user_emb || !d->item_emb))
        return mml__fail(MML_ERR_ARG, "fit: pretrained model but the data has no embeddings");
    uint64_t data_hash = mml__data_hash(d);
    /* collective first: every process then decides the checks below alike */
    if (m->rt.world > 1 && (st = mml__dist_check_fit(m, data_hash, o)) != MML_OK) return st;
    if ((st = mml__check_resume(m, d, data_hash, o)) != MML_OK) return st;
    if (m->cfg.pretrained && (st = mml_model_set_pretrained(m, d->user_emb, d->item_emb, d->pretrained_dim)) != MML_OK)
        return st;
    mml__fit f;
    memset(&f, 0, sizeof f);
    f.m = m; f.d = d; f.o = o;
    const mml_split_t *tr = &d->split[MML_TRAIN];
    const mml_schema_t *sc = m->a.schema;
    for (int k = 0; k < sc->n_fields; k++) {
        if (sc->field[k].kind == MML_FIELD_NUMERIC) f.src.values[k] = tr->values[k];
        else f.src.ids[k] = tr->ids ? tr->ids[k] : k == 0 ? tr->uid : k == 1 ? tr->pid : tr->dom;
    }
    if ((st = mml__carve_block(mml__fit_carve, &f, "fit", &f.block)) != MML_OK) return st;
    mml__fit_begin(m, d, data_hash, o);
    f.rng = m->fit.rng;
    st = mml__run_stages(&f, test);
    mml__free(f.block);
    return st;
}

// >>synthetic --------------------------------------------------------------

void mml_synth_default(mml_synth_config_t *c) {
    memset(c, 0, sizeof *c);
    c->n_domains = 10;
    c->n_users = 2000;
    c->n_items = 800;
    c->n_samples = 250000;
    c->ctr = 0.25f;
    c->domain_signal = 1.5f;
    c->noise = 0.3f;
    c->item_zipf = 0.8f;
    c->domain_skew = 0.7f;
    c->seed = 2025;
}

#define MML__SYN_H 8

/* A unit-variance pseudo-random number fixed by (seed, a, b, c): latent
 * vectors of any vocabulary without storing them. */
static float mml__syn_hash(uint64_t seed, uint64_t a, uint64_t b, uint64_t c) {
    uint64_t z = seed ^ (a * 0x9E3779B97F4A7C15ull) ^ (b * 0xC2B2AE3D27D4EB4Full) ^ (c * 0x165667B19E3779F9ull);
    z = mml__rng_next(&z);
    return (float)(((double)(z >> 11) * 0x1.0p-53 - 0.5) * 3.4641016151377544); /* sqrt(12) */
}

/* An id of a vocabulary of v by a continuous Zipf(a) draw, scattered so that
 * popularity is unrelated to the id. */
static int32_t mml__syn_id(uint64_t *rng, int32_t v, double a) {
    double u = mml__rng_uniform(rng), x;
    if (fabs(a - 1.0) < 1e-9) x = pow((double)v, u);
    else x = pow((pow((double)v, 1.0 - a) - 1.0) * u + 1.0, 1.0 / (1.0 - a));
    int64_t id = (int64_t)x - 1;
    if (id < 0) id = 0;
    if (id >= v) id = v - 1;
    return (int32_t)(((uint64_t)id * 2654435761ull) % (uint64_t)v);
}

/* Which fields carry the domain-specific part: the names in list (NULL: all). */
static mml_status mml__syn_signal(const mml_schema_t *sc, const char *list, unsigned char *sig) {
    for (int32_t f = 0; f < sc->n_fields; f++) sig[f] = list == NULL && f != sc->domain;
    for (const char *p = list; p && *p;) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        char name[MML_FIELD_NAME_MAX];
        int32_t f = -1;
        if (n < sizeof name) {
            memcpy(name, p, n);
            name[n] = 0;
            f = mml_schema_find(sc, name);
        }
        if (f < 0 || f == sc->domain)
            return mml__fail(MML_ERR_ARG, "synthetic: signal field \"%.*s\" is not a field of the schema (or is the domain)",
                             (int)n, p);
        sig[f] = 1;
        p = e ? e + 1 : p + n;
    }
    return MML_OK;
}

/* Row i's latent vector of field f (H floats; ids: the mean over a list). */
static void mml__syn_latent(const mml_schema_t *sc, int32_t f, int32_t *const *ids, float *const *values, int64_t i,
                            uint64_t seed, float *v) {
    const mml_field_t *fd = &sc->field[f];
    int64_t w = mml__col_width(fd), cnt = 0;
    for (int a = 0; a < MML__SYN_H; a++) v[a] = 0.0f;
    if (fd->kind == MML_FIELD_NUMERIC) {
        float z = (values[f][i] - fd->shift) * fd->scale;
        for (int a = 0; a < MML__SYN_H; a++) v[a] = z * mml__syn_hash(seed, (uint64_t)f, ~0ull, (uint64_t)a);
        return;
    }
    for (int64_t q = 0; q < w; q++) {
        int32_t id = ids[f][i * w + q];
        if (id < 0) continue;
        for (int a = 0; a < MML__SYN_H; a++) v[a] += mml__syn_hash(seed, (uint64_t)f, (uint64_t)id, (uint64_t)a);
        cnt++;
    }
    for (int a = 0; cnt > 1 && a < MML__SYN_H; a++) v[a] /= (float)cnt;
}

/* One row's inputs: the domain, then every other field. */
static void mml__syn_row(const mml_synth_config_t *c, const double *dcum, int64_t i, uint64_t *rng, int32_t *const *ids,
                         float *const *values) {
    const mml_schema_t *sc = c->schema;
    int32_t nd = sc->field[sc->domain].vocab, d = 0;
    double x = mml__rng_uniform(rng) * dcum[nd - 1];
    while (d < nd - 1 && x >= dcum[d]) d++;
    ids[sc->domain][i] = d;
    for (int32_t f = 0; f < sc->n_fields; f++) {
        const mml_field_t *fd = &sc->field[f];
        if (f == sc->domain) continue;
        if (fd->kind == MML_FIELD_NUMERIC) {
            float z = mml__rng_normal(rng);
            values[f][i] = fd->scale != 0.0f ? fd->shift + z / fd->scale : z;
            continue;
        }
        int64_t w = mml__col_width(fd), len = fd->kind == MML_FIELD_MULTI_HOT ? 1 + (int64_t)mml__rng_below(rng, (uint64_t)w) : 1;
        for (int64_t q = 0; q < w; q++) ids[f][i * w + q] = q < len ? mml__syn_id(rng, fd->vocab, c->item_zipf) : -1;
    }
}

/* Row i's logit before the intercept (see mml_data_synthetic). */
static double mml__syn_logit(const mml_synth_config_t *c, const unsigned char *sig, int64_t i, uint64_t *rng,
                             int32_t *const *ids, float *const *values) {
    const mml_schema_t *sc = c->schema;
    const int H = MML__SYN_H;
    float v[MML_MAX_FIELDS][MML__SYN_H];
    int32_t d = ids[sc->domain][i];
    double bias = 0, inter = 0, taste = 0, spec = 0;
    int nf = 0, np = 0, ns = 0, nsp = 0;
    for (int32_t f = 0; f < sc->n_fields; f++) {
        if (f == sc->domain) continue;
        mml__syn_latent(sc, f, ids, values, i, c->seed, v[f]);
        bias += v[f][0];
        nf++;
        for (int32_t g = 0; g < f; g++) {
            if (g == sc->domain) continue;
            double dot = 0, wdot = 0;
            for (int a = 0; a < H; a++) {
                dot += v[f][a] * v[g][a];
                if (sig[f] || sig[g])
                    wdot += mml__syn_hash(c->seed, 0x51Dull + (uint64_t)d, (uint64_t)(sig[f] ? f : g), (uint64_t)a) * v[f][a] * v[g][a];
            }
            inter += dot;
            np++;
            if (sig[f] || sig[g]) { spec += wdot; nsp++; }
        }
        if (!sig[f]) continue;
        for (int a = 0; a < H; a++) taste += mml__syn_hash(c->seed, 0x7A57Eull + (uint64_t)d, (uint64_t)f, (uint64_t)a) * v[f][a];
        ns++;
    }
    double shared = 0.5 * bias / sqrt(nf > 0 ? nf : 1) + inter / sqrt((double)H * (np > 0 ? np : 1));
    double dom = taste / sqrt((double)H * (ns > 0 ? ns : 1)) + spec / sqrt((double)H * (nsp > 0 ? nsp : 1));
    return shared + c->domain_signal * dom + c->noise * mml__rng_normal(rng);
}

/* mml_data_synthetic with a schema. */
static mml_status mml__synthetic_cols(const mml_synth_config_t *c, mml_data_t *out) {
    const mml_schema_t *sc = c->schema;
    unsigned char sig[MML_MAX_FIELDS];
    int32_t *ids[MML_MAX_FIELDS] = {0};
    float *values[MML_MAX_FIELDS] = {0};
    int64_t n = c->n_samples;
    mml_status st = mml_schema_check(sc);
    if (st) return st;
    int32_t nd = sc->field[sc->domain].vocab;
    if (nd > MML_MAX_DOMAINS || n < 10 * (int64_t)nd || n >= INT32_MAX || !(c->ctr > 0.0f && c->ctr < 1.0f))
        return mml__fail(MML_ERR_ARG, "synthetic: bad sizes (domains %d, at most %d; samples %lld, 10 per domain .. 2^31-1; ctr %g)",
                         nd, MML_MAX_DOMAINS, (long long)n, (double)c->ctr);
    if ((st = mml__syn_signal(sc, c->signal_fields, sig)) != MML_OK) return st;
    double *dcum = (double *)mml__alloc((size_t)nd * 8), *lg = (double *)mml__alloc((size_t)n * 8);
    float *lab = (float *)mml__alloc((size_t)n * 4);
    int ok = dcum && lg && lab;
    for (int32_t f = 0; f < sc->n_fields && ok; f++) {
        const mml_field_t *fd = &sc->field[f];
        if (fd->kind == MML_FIELD_NUMERIC) ok = (values[f] = (float *)mml__alloc((size_t)n * 4)) != NULL;
        else ok = (ids[f] = (int32_t *)mml__alloc((size_t)n * (size_t)mml__col_width(fd) * 4)) != NULL;
    }
    if (ok) {
        uint64_t rng = c->seed;
        double acc = 0, lo = -20, hi = 20;
        for (int32_t d = 0; d < nd; d++) dcum[d] = acc += pow(d + 1.0, -c->domain_skew);
        for (int64_t i = 0; i < n; i++) {
            mml__syn_row(c, dcum, i, &rng, ids, values);
            lg[i] = mml__syn_logit(c, sig, i, &rng, ids, values);
        }
        for (int itn = 0; itn < 50; itn++) { /* the intercept that gives the target CTR */
            double mid = 0.5 * (lo + hi), sum = 0.0;
            for (int64_t i = 0; i < n; i += 7) sum += 1.0 / (1.0 + exp(-(lg[i] + mid)));
            if (sum / (double)((n + 6) / 7) < c->ctr) lo = mid; else hi = mid;
        }
        for (int64_t i = 0; i < n; i++)
            lab[i] = mml__rng_uniform(&rng) < 1.0 / (1.0 + exp(-(lg[i] + 0.5 * (lo + hi)))) ? 1.0f : 0.0f;
        st = mml__split_cols(n, sc, ids, values, lab, c->seed + 1, out);
        for (int32_t d = 0; d < nd && !st; d++) {
            char name[16];
            snprintf(name, sizeof name, "syn%d", d);
            st = mml__set_name(out, d, name, strlen(name));
        }
        if (st) mml_data_free(out);
    } else {
        st = mml__fail(MML_ERR_NOMEM, "synthetic: out of memory");
    }
    for (int32_t f = 0; f < sc->n_fields; f++) { mml__free(ids[f]); mml__free(values[f]); }
    mml__free(dcum); mml__free(lg); mml__free(lab);
    return st;
}

/* The generator's work: the hidden world, then the samples before the split. */
typedef struct mml__syn {
    const mml_synth_config_t *c;
    uint64_t rng;
    float *U, *V;            /* user and item factors [n_users, H], [n_items, H] */
    float *Q, *dq;           /* per domain: an affinity map [H, H] and an item taste [H] */
    double *pop;             /* the items' cumulative Zipf popularity */
    int32_t *udom;           /* each user's domain */
    int32_t *uid, *pid, *dom;
    float *lab, *lg;         /* each sample's label and logit */
} mml__syn;

static void mml__syn_carve(void *ctx, mml__carve *c) {
    mml__syn *w = (mml__syn *)ctx;
    int64_t H = MML__SYN_H, nd = w->c->n_domains, nu = w->c->n_users, ni = w->c->n_items, n = w->c->n_samples;
    w->U = mml__take(c, nu * H);
    w->V = mml__take(c, ni * H);
    w->Q = mml__take(c, nd * H * H);
    w->dq = mml__take(c, nd * H);
    w->pop = (double *)(void *)mml__take(c, 2 * ni);
    w->udom = (int32_t *)(void *)mml__take(c, nu);
    w->uid = (int32_t *)(void *)mml__take(c, n);
    w->pid = (int32_t *)(void *)mml__take(c, n);
    w->dom = (int32_t *)(void *)mml__take(c, n);
    w->lab = mml__take(c, n);
    w->lg = mml__take(c, n);
}

/* Factors from N(0, 1) (the maps scaled by 1/sqrt(H)); users to domains with
 * sizes ~ (d+1)^-skew, user d < n_domains in domain d so that none is
 * empty; Zipf item popularity, cumulative for sampling. */
static void mml__syn_world(mml__syn *w) {
    const mml_synth_config_t *c = w->c;
    const int H = MML__SYN_H;
    const float sc = 1.0f / sqrtf((float)H);
    int nd = c->n_domains, nu = c->n_users, ni = c->n_items;
    for (int64_t i = 0; i < (int64_t)nu * H; i++) w->U[i] = mml__rng_normal(&w->rng);
    for (int64_t i = 0; i < (int64_t)ni * H; i++) w->V[i] = mml__rng_normal(&w->rng);
    for (int64_t i = 0; i < (int64_t)nd * H * H; i++) w->Q[i] = mml__rng_normal(&w->rng) * sc;
    for (int64_t i = 0; i < (int64_t)nd * H; i++) w->dq[i] = mml__rng_normal(&w->rng);
    double wsum = 0.0;
    for (int d = 0; d < nd; d++) wsum += pow(d + 1.0, -c->domain_skew);
    for (int u = 0; u < nu; u++) {
        if (u < nd) { w->udom[u] = u; continue; }
        double x = mml__rng_uniform(&w->rng) * wsum, acc = 0.0;
        int d = 0;
        for (; d < nd - 1; d++) { acc += pow(d + 1.0, -c->domain_skew); if (x < acc) break; }
        w->udom[u] = d;
    }
    double ps = 0.0;
    for (int i = 0; i < ni; i++) { ps += pow(i + 1.0, -c->item_zipf); w->pop[i] = ps; }
}

/* Each sample: a uniform user, an item drawn by popularity, and the logit:
 * the shared user-item affinity + the domain's own affinity and item taste
 * + noise. */
static void mml__syn_samples(mml__syn *w) {
    const mml_synth_config_t *c = w->c;
    const int H = MML__SYN_H;
    int nu = c->n_users, ni = c->n_items;
    double ps = w->pop[ni - 1];
    for (int64_t s = 0; s < c->n_samples; s++) {
        int u = (int)mml__rng_below(&w->rng, (uint64_t)nu);
        double x = mml__rng_uniform(&w->rng) * ps;
        int lo = 0, hi = ni - 1;
        while (lo < hi) { int mid = (lo + hi) / 2; if (w->pop[mid] < x) lo = mid + 1; else hi = mid; }
        int it = (int)(((int64_t)lo * 7919) % ni); /* popularity unrelated to item id */
        int d = w->udom[u];
        const float *uu = w->U + (int64_t)u * H, *vv = w->V + (int64_t)it * H, *q = w->Q + (int64_t)d * H * H;
        double shared = 0.0, spec = 0.0, pref = 0.0;
        for (int a = 0; a < H; a++) {
            shared += uu[a] * vv[a];
            double qv = 0.0;
            for (int b2 = 0; b2 < H; b2++) qv += q[a * H + b2] * vv[b2];
            spec += uu[a] * qv;
            pref += w->dq[(int64_t)d * H + a] * vv[a];
        }
        double z = shared / sqrt((double)H) + c->domain_signal * (0.5 * spec / sqrt((double)H) + pref / sqrt((double)H)) +
                   c->noise * mml__rng_normal(&w->rng);
        w->uid[s] = u; w->pid[s] = it; w->dom[s] = d; w->lg[s] = (float)z;
    }
}

/* The intercept that brings the mean click rate to c->ctr (bisection over
 * every 7th sample), then each label drawn from its probability. */
static void mml__syn_labels(mml__syn *w) {
    const mml_synth_config_t *c = w->c;
    int64_t n = c->n_samples;
    double lo = -20, hi = 20;
    for (int itn = 0; itn < 50; itn++) {
        double mid = 0.5 * (lo + hi), sum = 0.0;
        for (int64_t s = 0; s < n; s += 7) sum += 1.0 / (1.0 + exp(-(w->lg[s] + mid)));
        double mean = sum / (double)((n + 6) / 7);
        if (mean < c->ctr) lo = mid; else hi = mid;
    }
    double b0 = 0.5 * (lo + hi);
    for (int64_t s = 0; s < n; s++)
        w->lab[s] = mml__rng_uniform(&w->rng) < 1.0 / (1.0 + exp(-(w->lg[s] + b0))) ? 1.0f : 0.0f;
}

/* "syn<d>"; names are optional, so without memory they stay NULL. */
static void mml__syn_names(mml_data_t *out) {
    int nd = out->n_domains;
    out->domain_names = (char **)mml__alloc((size_t)nd * sizeof(char *));
    for (int d = 0; out->domain_names && d < nd; d++) {
        out->domain_names[d] = (char *)mml__alloc(16);
        if (out->domain_names[d]) snprintf(out->domain_names[d], 16, "syn%d", d);
    }
}

mml_status mml_data_synthetic(const mml_synth_config_t *c, mml_data_t *out) {
    memset(out, 0, sizeof *out);
    if (c->schema) return mml__synthetic_cols(c, out);
    if (c->n_domains > MML_MAX_DOMAINS)
        return mml__fail(MML_ERR_ARG, "synthetic: %d domains, at most MML_MAX_DOMAINS = %d", c->n_domains, MML_MAX_DOMAINS);
    if (c->n_domains < 1 || c->n_users < c->n_domains || c->n_items < 2 ||
        c->n_samples < 10 * (int64_t)c->n_domains || c->n_samples > ((int64_t)1 << 33) ||
        !(c->ctr > 0.0f && c->ctr < 1.0f))
        return mml__fail(MML_ERR_ARG, "synthetic: bad sizes (domains %d, users %d, items %d, samples %lld, ctr %g)",
                         c->n_domains, c->n_users, c->n_items, (long long)c->n_samples, (double)c->ctr);
    mml__syn w;
    float *block = NULL;
    memset(&w, 0, sizeof w);
    w.c = c;
    w.rng = c->seed;
    mml_status st = mml__carve_block(mml__syn_carve, &w, "synthetic", &block);
    if (st) return st;
    mml__syn_world(&w);
    mml__syn_samples(&w);
    mml__syn_labels(&w);
    st = mml_data_split(c->n_samples, w.uid, w.pid, w.dom, w.lab, c->n_users, c->n_items, c->n_domains, c->seed + 1, out);
    if (!st && !out->domain_names) mml__syn_names(out);
    mml__free(block);
    return st;
}
// >>checkpoints ------------------------------------------------------------

/* Checkpoint container.
 *
 * A model-agnostic container of tagged sections, each either raw bytes or a
 * list of named float32 tensors. The byte layout is specified in
 * docs/FORMAT.md; the short version:
 *
 *   header   "MMLCKPT\0" | u32 version=1 | u32 0x01020304 | u32 nsec | u32 crc
 *   section  tag[4] | u32 kind (0 bytes, 1 tensors) | u64 len | payload | u32 crc
 *   tensors  u32 count, then per tensor: u16 name_len, name, u32 ndim,
 *            u64 shape[ndim], zero padding to 64 (relative to the payload
 *            start), float32 data
 *
 * All integers and floats are in the writer's byte order, guarded by the
 * marker. The header CRC covers the 20 bytes before it; a section CRC covers
 * its 16-byte section header and its payload, so every byte of a file is
 * under some CRC32C (mml_crc32c of moemlora_simd.h: the CPU's CRC
 * instructions when it has them, the same value either way).
 *
 * Saving goes through the atomic writer (mml__afile_*): on any failure the
 * previous file at the path is untouched and no temporary is left. Opening
 * reads the whole file into memory and validates every length, count, shape
 * and CRC before anything is handed out: each length field is checked against
 * the bytes that remain before it is used, and every allocation is bounded by
 * the file size. */

/* The newest version this library reads. Files are written at the lowest
 * version their content needs (mml__ckpt_save_v), so a reader of an older
 * version keeps reading whatever it can understand. */
#define MML__CKPT_VERSION 2u
#define MML__CKPT_ENDIAN 0x01020304u
#define MML__CKPT_ENDIAN_SWAPPED 0x04030201u
#define MML__CKPT_HDR 24u          /* magic 8, version, endian, nsec, crc */
#define MML__CKPT_SEC_HDR 16u      /* tag 4, kind 4, payload length 8 */
#define MML__CKPT_SEC_MIN 20u      /* section header + crc, empty payload */
#define MML__CKPT_MAX_SECTIONS 1024u
#define MML__CKPT_MAX_NAME 255u
#define MML__CKPT_MAX_DIM 2147483648ull /* 2^31 */
#define MML__CKPT_ALIGN 64u
/* u16 name length + 1 name byte + u32 ndim + one u64 dim */
#define MML__CKPT_TENSOR_MIN 15u

enum { MML__CKPT_BYTES = 0, MML__CKPT_TENSORS = 1 };

static const char mml__ckpt_magic[8] = {'M', 'M', 'L', 'C', 'K', 'P', 'T', '\0'};

/* One float32 tensor handed to mml__ckpt_save; data holds prod(shape) floats. */
typedef struct mml__ckpt_tensor {
    const char *name;   /* 1..255 printable ASCII bytes, unique in its section */
    int32_t ndim;       /* 1..4 */
    int64_t shape[4];   /* each 0..2^31 */
    const float *data;
} mml__ckpt_tensor;

/* A tensor section has tensors != NULL (ntensors may be 0); otherwise it is a
 * byte section of nbytes bytes. Tags are 4 printable ASCII bytes, unique. */
typedef struct mml__ckpt_section {
    char tag[4];
    const void *bytes;
    uint64_t nbytes;
    const mml__ckpt_tensor *tensors;
    int32_t ntensors;
} mml__ckpt_section;

/* A validated tensor of an open checkpoint. */
typedef struct mml__ckpt_tinfo {
    const char *name;   /* NUL-terminated, in the section's name pool */
    uint64_t name_off;  /* offset of the name bytes in the image (during parse) */
    uint32_t name_len;
    int32_t ndim;
    int64_t shape[4];
    uint64_t nelem;
    uint64_t data_off;  /* offset of the float data in the image */
} mml__ckpt_tinfo;

typedef struct mml__ckpt_sec {
    char tag[4];
    uint32_t kind;
    uint64_t off, len;     /* payload within the image */
    int32_t ntensors;      /* -1 for a byte section */
    mml__ckpt_tinfo *t;    /* sorted by name */
    char *names;
} mml__ckpt_sec;

typedef struct mml__ckpt {
    char *label;           /* file path or caller's label, used in every error */
    unsigned char *img;    /* the whole file */
    size_t len;
    uint32_t nsec;
    uint32_t version;      /* the file's format version */
    mml__ckpt_sec *sec;
} mml__ckpt;

/* ---- container: small helpers ---- */

static uint16_t mml__ckpt_u16(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t mml__ckpt_u32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t mml__ckpt_u64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* Zero bytes that bring offset q (from the payload start) to a multiple of 64. */
static uint64_t mml__ckpt_pad(uint64_t q) { return (MML__CKPT_ALIGN - q % MML__CKPT_ALIGN) % MML__CKPT_ALIGN; }

static int mml__ckpt_printable(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] > 0x7E) return 0;
    return 1;
}

/* Copies up to 255 bytes of p into out as printable text ('?' for the rest),
 * so messages about corrupt names and tags stay readable. */
static const char *mml__ckpt_san(char out[256], const void *p, size_t n) {
    const unsigned char *s = (const unsigned char *)p;
    if (n > 255) n = 255;
    for (size_t i = 0; i < n; i++) out[i] = (s[i] >= 0x20 && s[i] <= 0x7E) ? (char)s[i] : '?';
    out[n] = 0;
    return out;
}

/* "[3, 4]" */
static const char *mml__ckpt_fmt_shape(char out[128], int32_t ndim, const int64_t *shape) {
    size_t k = 0;
    out[k++] = '[';
    for (int32_t i = 0; i < ndim && i < 4; i++)
        k += (size_t)snprintf(out + k, 128 - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    snprintf(out + k, 128 - k, "]");
    return out;
}

/* A zero dim makes the tensor empty whatever the other dims are. */
static int mml__ckpt_has_zero(int32_t ndim, const int64_t *shape) {
    for (int32_t k = 0; k < ndim; k++)
        if (shape[k] == 0) return 1;
    return 0;
}

static int mml__ckpt_tcmp(const void *a, const void *b) {
    return strcmp(((const mml__ckpt_tinfo *)a)->name, ((const mml__ckpt_tinfo *)b)->name);
}

/* ---- container: save ---- */

/* Bytes of a tensor's entry (name, shape, padding, data) that starts q bytes
 * into its payload; the caller has validated the tensor. */
static uint64_t mml__ckpt_tensor_entry(uint64_t q, const mml__ckpt_tensor *t, uint64_t nelem) {
    uint64_t h = 2 + strlen(t->name) + 4 + 8 * (uint64_t)t->ndim;
    return h + mml__ckpt_pad(q + h) + 4 * nelem;
}

/* Checks one tensor before anything is written; *nelem = its element count. */
static mml_status mml__ckpt_check_tensor(const char *path, const char *tag,
                                         const mml__ckpt_tensor *t, uint64_t *nelem) {
    size_t nl = t->name ? strlen(t->name) : 0;
    if (nl == 0 || nl > MML__CKPT_MAX_NAME || !mml__ckpt_printable((const unsigned char *)t->name, nl))
        return mml__fail(MML_ERR_ARG, "%s: section %.4s: tensor name must be 1..255 printable ASCII bytes",
                         path, tag);
    if (t->ndim < 1 || t->ndim > 4)
        return mml__fail(MML_ERR_ARG, "%s: section %.4s: tensor '%s': ndim %d out of range 1..4", path,
                         tag, t->name, (int)t->ndim);
    uint64_t n = mml__ckpt_has_zero(t->ndim, t->shape) ? 0 : 1;
    for (int32_t k = 0; k < t->ndim; k++) {
        if (t->shape[k] < 0 || (uint64_t)t->shape[k] > MML__CKPT_MAX_DIM ||
            (n && !mml__mul_ok(n, (uint64_t)t->shape[k], SIZE_MAX / 8, &n)))
            return mml__fail(MML_ERR_ARG, "%s: section %.4s: tensor '%s': dim %d = %lld out of range",
                             path, tag, t->name, (int)k, (long long)t->shape[k]);
    }
    if (n && !t->data)
        return mml__fail(MML_ERR_ARG, "%s: section %.4s: tensor '%s': data is NULL", path, tag, t->name);
    *nelem = n;
    return MML_OK;
}

/* Validates a section and returns its payload length in *plen. */
static mml_status mml__ckpt_check_section(const char *path, const mml__ckpt_section *s,
                                          uint64_t *plen) {
    const char *tag = s->tag;
    if (!mml__ckpt_printable((const unsigned char *)tag, 4))
        return mml__fail(MML_ERR_ARG, "%s: section tags must be 4 printable ASCII bytes", path);
    if (!s->tensors) {
        if (s->ntensors || (s->nbytes && !s->bytes) || s->nbytes > SIZE_MAX / 4)
            return mml__fail(MML_ERR_ARG, "%s: section %.4s: bad byte section", path, tag);
        *plen = s->nbytes;
        return MML_OK;
    }
    if (s->bytes || s->nbytes || s->ntensors < 0)
        return mml__fail(MML_ERR_ARG, "%s: section %.4s: give either bytes or tensors", path, tag);
    uint64_t q = 4;
    for (int32_t i = 0; i < s->ntensors; i++) {
        const mml__ckpt_tensor *t = &s->tensors[i];
        uint64_t n = 0;
        mml_status st = mml__ckpt_check_tensor(path, tag, t, &n);
        if (st) return st;
        for (int32_t j = 0; j < i; j++)
            if (strcmp(s->tensors[j].name, t->name) == 0)
                return mml__fail(MML_ERR_ARG, "%s: section %.4s: duplicate tensor name '%s'", path, tag,
                                 t->name);
        q += mml__ckpt_tensor_entry(q, t, n);
        if (q > SIZE_MAX / 4)
            return mml__fail(MML_ERR_ARG, "%s: section %.4s: too large", path, tag);
    }
    *plen = q;
    return MML_OK;
}

static mml_status mml__ckpt_check_all(const char *path, const mml__ckpt_section *secs, int nsec) {
    if (!path) return mml__fail(MML_ERR_ARG, "checkpoint save: path is NULL");
    if (nsec < 0 || (uint32_t)nsec > MML__CKPT_MAX_SECTIONS || (nsec && !secs))
        return mml__fail(MML_ERR_ARG, "%s: section count %d out of range 0..%u", path, nsec,
                         MML__CKPT_MAX_SECTIONS);
    for (int i = 0; i < nsec; i++) {
        uint64_t plen = 0;
        mml_status st = mml__ckpt_check_section(path, &secs[i], &plen);
        if (st) return st;
        for (int j = 0; j < i; j++)
            if (memcmp(secs[j].tag, secs[i].tag, 4) == 0)
                return mml__fail(MML_ERR_ARG, "%s: duplicate section %.4s", path, secs[i].tag);
    }
    return MML_OK;
}

/* Payload length of a validated section. */
static uint64_t mml__ckpt_payload_len(const mml__ckpt_section *s) {
    if (!s->tensors) return s->nbytes;
    uint64_t q = 4;
    for (int32_t i = 0; i < s->ntensors; i++) {
        uint64_t n = 1;
        for (int32_t k = 0; k < s->tensors[i].ndim; k++) n *= (uint64_t)s->tensors[i].shape[k];
        q += mml__ckpt_tensor_entry(q, &s->tensors[i], n);
    }
    return q;
}

static mml_status mml__ckpt_write_tensors(mml__afile *f, uint32_t *crc, const mml__ckpt_section *s) {
    unsigned char h[2 + MML__CKPT_MAX_NAME + 4 + 32 + MML__CKPT_ALIGN];
    uint32_t cnt = (uint32_t)s->ntensors;
    mml_status st = mml__afile_put(f, crc, &cnt, 4);
    uint64_t q = 4;
    for (int32_t i = 0; i < s->ntensors && !st; i++) {
        const mml__ckpt_tensor *t = &s->tensors[i];
        uint16_t nl = (uint16_t)strlen(t->name);
        uint32_t nd = (uint32_t)t->ndim;
        uint64_t n = 1;
        size_t k = 0;
        memcpy(h + k, &nl, 2), k += 2;
        memcpy(h + k, t->name, nl), k += nl;
        memcpy(h + k, &nd, 4), k += 4;
        for (uint32_t d = 0; d < nd; d++) {
            uint64_t v = (uint64_t)t->shape[d];
            memcpy(h + k, &v, 8), k += 8;
            n *= v;
        }
        uint64_t pad = mml__ckpt_pad(q + k);
        memset(h + k, 0, (size_t)pad), k += (size_t)pad;
        q += k + 4 * n;
        st = mml__afile_put(f, crc, h, k);
        if (!st && n) st = mml__afile_put(f, crc, t->data, (size_t)(4 * n));
    }
    return st;
}

static mml_status mml__ckpt_write_all(mml__afile *f, const mml__ckpt_section *secs, int nsec, uint32_t version) {
    unsigned char h[MML__CKPT_HDR];
    uint32_t v[3] = {version, MML__CKPT_ENDIAN, (uint32_t)nsec};
    memcpy(h, mml__ckpt_magic, 8);
    memcpy(h + 8, v, 12);
    uint32_t crc = mml_crc32c(0, h, 20);
    memcpy(h + 20, &crc, 4);
    mml_status st = mml__afile_write(f, h, sizeof h);
    for (int i = 0; i < nsec && !st; i++) {
        const mml__ckpt_section *s = &secs[i];
        unsigned char sh[MML__CKPT_SEC_HDR];
        uint32_t kind = s->tensors ? MML__CKPT_TENSORS : MML__CKPT_BYTES;
        uint64_t plen = mml__ckpt_payload_len(s);
        memcpy(sh, s->tag, 4);
        memcpy(sh + 4, &kind, 4);
        memcpy(sh + 8, &plen, 8);
        crc = 0;
        st = mml__afile_put(f, &crc, sh, sizeof sh);
        if (st) break;
        if (kind == MML__CKPT_TENSORS) st = mml__ckpt_write_tensors(f, &crc, s);
        else if (s->nbytes) st = mml__afile_put(f, &crc, s->bytes, (size_t)s->nbytes);
        if (!st) st = mml__afile_write(f, &crc, 4);
    }
    return st;
}

/* Rewords a write failure so the caller learns the old file is still there. */
static mml_status mml__ckpt_save_failed(const char *path, mml_status st) {
    return mml__fail(st, "%s: checkpoint not saved (the previous file is untouched): %s", path, mml_last_error());
}

/* Writes the sections to path atomically, as a file of the given format
 * version (1..MML__CKPT_VERSION: the container is the same in each; the
 * version says what a reader must understand of the sections). */
static mml_status mml__ckpt_save_v(const char *path, const mml__ckpt_section *secs, int nsec, uint32_t version) {
    if (version < 1 || version > MML__CKPT_VERSION)
        return mml__fail(MML_ERR_ARG, "%s: checkpoint save: format version %u (1..%u)", path ? path : "(null)",
                         (unsigned)version, MML__CKPT_VERSION);
    mml_status st = mml__ckpt_check_all(path, secs, nsec);
    if (st) return st;
    /* The writer holds a 64 KiB buffer: keep it off small thread stacks. */
    mml__afile *f = (mml__afile *)mml__alloc(sizeof *f);
    if (!f) return mml__fail(MML_ERR_NOMEM, "%s: out of memory", path);
    st = mml__afile_open(f, path);
    if (!st) {
        st = mml__ckpt_write_all(f, secs, nsec, version);
        if (st) mml__afile_abort(f);
        else st = mml__afile_commit(f);
    }
    mml__free(f);
    return st ? mml__ckpt_save_failed(path, st) : MML_OK;
}

/* A version 1 file: sections every reader understands (the tests write containers with it). */
static MML__UNUSED mml_status mml__ckpt_save(const char *path, const mml__ckpt_section *secs, int nsec) {
    return mml__ckpt_save_v(path, secs, nsec, 1);
}

/* ---- container: open and validate ---- */

/* Checks magic, byte order, version and header CRC; *nsec = section count. */
static mml_status mml__ckpt_parse_header(mml__ckpt *c, const unsigned char *b, size_t len,
                                         uint32_t *nsec) {
    const char *L = c->label;
    size_t m = len < 8 ? len : 8;
    if (m && memcmp(b, mml__ckpt_magic, m) != 0)
        return mml__fail(MML_ERR_FORMAT, "%s: not a moemlora checkpoint (bad magic)", L);
    if (len < MML__CKPT_HDR)
        return mml__fail(MML_ERR_FORMAT, "%s: truncated at byte %zu (the file header is %u bytes)", L,
                         len, MML__CKPT_HDR);
    uint32_t version = mml__ckpt_u32(b + 8), endian = mml__ckpt_u32(b + 12);
    if (endian == MML__CKPT_ENDIAN_SWAPPED)
        return mml__fail(MML_ERR_FORMAT, "%s: written on a machine of other byte order", L);
    if (endian != MML__CKPT_ENDIAN)
        return mml__fail(MML_ERR_FORMAT, "%s: corrupt header: byte-order marker 0x%08x", L,
                         (unsigned)endian);
    if (version > MML__CKPT_VERSION)
        return mml__fail(MML_ERR_FORMAT, "%s: format version %u is newer than this library's %u", L,
                         (unsigned)version, MML__CKPT_VERSION);
    if (version == 0) return mml__fail(MML_ERR_FORMAT, "%s: corrupt header: format version 0", L);
    uint32_t stored = mml__ckpt_u32(b + 20), crc = mml_crc32c(0, b, 20);
    if (stored != crc)
        return mml__fail(MML_ERR_FORMAT, "%s: header CRC mismatch (stored 0x%08x, computed 0x%08x)", L,
                         (unsigned)stored, (unsigned)crc);
    c->version = version;
    *nsec = mml__ckpt_u32(b + 16);
    if (*nsec > MML__CKPT_MAX_SECTIONS)
        return mml__fail(MML_ERR_FORMAT, "%s: section count %u is absurd (at most %u)", L,
                         (unsigned)*nsec, MML__CKPT_MAX_SECTIONS);
    if (*nsec > (len - MML__CKPT_HDR) / MML__CKPT_SEC_MIN)
        return mml__fail(MML_ERR_FORMAT, "%s: truncated at byte %zu: the header declares %u sections, more than fit", L, len,
                         (unsigned)*nsec);
    return MML_OK;
}

/* Reads the fixed part of tensor i at payload offset *q (name, ndim, shape,
 * padding); every length is checked against the n bytes of payload p. */
static mml_status mml__ckpt_parse_thead(const mml__ckpt *c, const char *tag, const unsigned char *p,
                                        uint64_t n, uint64_t *q, uint32_t i, mml__ckpt_tinfo *t) {
    const char *L = c->label;
    char nm[256];
    if (n - *q < 2)
        return mml__fail(MML_ERR_FORMAT, "%s: section %s: tensor %u: name length past the end of the payload",
                         L, tag, (unsigned)i);
    uint32_t nl = mml__ckpt_u16(p + *q);
    *q += 2;
    if (nl > n - *q)
        return mml__fail(MML_ERR_FORMAT, "%s: section %s: tensor %u: name length %u runs past the end of the payload",
                         L, tag, (unsigned)i, (unsigned)nl);
    if (nl == 0 || nl > MML__CKPT_MAX_NAME || !mml__ckpt_printable(p + *q, nl))
        return mml__fail(MML_ERR_FORMAT, "%s: section %s: tensor %u: bad name '%s' (%u bytes)", L, tag,
                         (unsigned)i, mml__ckpt_san(nm, p + *q, nl), (unsigned)nl);
    mml__ckpt_san(nm, p + *q, nl);
    t->name_off = *q;
    t->name_len = nl;
    *q += nl;
    if (n - *q < 4)
        return mml__fail(MML_ERR_FORMAT, "%s: section %s: tensor '%s': ndim past the end of the payload",
                         L, tag, nm);
    uint32_t nd = mml__ckpt_u32(p + *q);
    *q += 4;
    if (nd < 1 || nd > 4)
        return mml__fail(MML_ERR_FORMAT, "%s: section %s: tensor '%s': ndim %u out of range 1..4", L, tag,
                         nm, (unsigned)nd);
    if (n - *q < 8 * (uint64_t)nd)
        return mml__fail(MML_ERR_FORMAT, "%s: section %s: tensor '%s': shape past the end of the payload",
                         L, tag, nm);
    t->ndim = (int32_t)nd;
    for (uint32_t k = 0; k < nd; k++, *q += 8) {
        uint64_t d = mml__ckpt_u64(p + *q);
        if (d > MML__CKPT_MAX_DIM)
            return mml__fail(MML_ERR_FORMAT, "%s: section %s: tensor '%s': dim %u = %llu exceeds 2^31", L,
                             tag, nm, (unsigned)k, (unsigned long long)d);
        t->shape[k] = (int64_t)d;
    }
    uint64_t pad = mml__ckpt_pad(*q);
    if (n - *q < pad)
        return mml__fail(MML_ERR_FORMAT, "%s: section %s: tensor '%s': padding past the end of the payload",
                         L, tag, nm);
    for (uint64_t k = 0; k < pad; k++)
        if (p[*q + k])
            return mml__fail(MML_ERR_FORMAT, "%s: section %s: tensor '%s': nonzero padding", L, tag, nm);
    *q += pad;
    return MML_OK;
}

/* Tensor i: header, then an element count checked against what is left. */
static mml_status mml__ckpt_parse_tensor(const mml__ckpt *c, const char *tag, const unsigned char *p,
                                         uint64_t n, uint64_t *q, uint32_t i, mml__ckpt_tinfo *t) {
    mml_status st = mml__ckpt_parse_thead(c, tag, p, n, q, i, t);
    if (st) return st;
    uint64_t limit = (n - *q) / 4, ne = mml__ckpt_has_zero(t->ndim, t->shape) ? 0 : 1;
    for (int32_t k = 0; k < t->ndim && ne; k++) {
        if (!mml__mul_ok(ne, (uint64_t)t->shape[k], limit, &ne)) {
            char nm[256], sh[128];
            return mml__fail(MML_ERR_FORMAT,
                             "%s: section %s: tensor '%s': shape %s does not fit the %llu bytes left in the payload",
                             c->label, tag, mml__ckpt_san(nm, p + t->name_off, t->name_len),
                             mml__ckpt_fmt_shape(sh, t->ndim, t->shape), (unsigned long long)(n - *q));
        }
    }
    t->nelem = ne;
    t->data_off = *q;
    *q += 4 * ne;
    return MML_OK;
}

/* Parses a tensor section whose CRC has been checked: entries, exact fit,
 * then a name pool, sorted by name for lookup, with duplicates rejected. */
static mml_status mml__ckpt_parse_tensors(const mml__ckpt *c, const unsigned char *b, mml__ckpt_sec *s) {
    char tag[256], nm[256];
    const unsigned char *p = b + s->off;
    uint64_t n = s->len, q = 4, pool = 0;
    mml__ckpt_san(tag, s->tag, 4);
    if (n < 4)
        return mml__fail(MML_ERR_FORMAT, "%s: section %s: tensor count past the end of the payload",
                         c->label, tag);
    uint32_t cnt = mml__ckpt_u32(p);
    if (cnt > (n - 4) / MML__CKPT_TENSOR_MIN)
        return mml__fail(MML_ERR_FORMAT, "%s: section %s: tensor count %u does not fit the payload (%llu bytes)",
                         c->label, tag, (unsigned)cnt, (unsigned long long)n);
    s->t = (mml__ckpt_tinfo *)mml__alloc((size_t)cnt * sizeof *s->t);
    if (!s->t) return mml__fail(MML_ERR_NOMEM, "%s: section %s: out of memory", c->label, tag);
    s->ntensors = (int32_t)cnt;
    for (uint32_t i = 0; i < cnt; i++) {
        mml_status st = mml__ckpt_parse_tensor(c, tag, p, n, &q, i, &s->t[i]);
        if (st) return st;
        pool += s->t[i].name_len + 1;
        s->t[i].data_off += s->off;
    }
    if (q != n)
        return mml__fail(MML_ERR_FORMAT, "%s: section %s: %llu trailing bytes after the last tensor",
                         c->label, tag, (unsigned long long)(n - q));
    s->names = (char *)mml__alloc((size_t)pool);
    if (!s->names) return mml__fail(MML_ERR_NOMEM, "%s: section %s: out of memory", c->label, tag);
    for (uint32_t i = 0, k = 0; i < cnt; k += s->t[i].name_len + 1, i++) {
        memcpy(s->names + k, p + s->t[i].name_off, s->t[i].name_len);
        s->t[i].name = s->names + k;
    }
    if (cnt > 1) qsort(s->t, cnt, sizeof *s->t, mml__ckpt_tcmp);
    for (uint32_t i = 1; i < cnt; i++)
        if (strcmp(s->t[i - 1].name, s->t[i].name) == 0)
            return mml__fail(MML_ERR_FORMAT, "%s: section %s: duplicate tensor name '%s'", c->label, tag,
                             mml__ckpt_san(nm, s->t[i].name, s->t[i].name_len));
    return MML_OK;
}

/* Section i at byte *pos: lengths against the file end, then CRC, then the
 * contents (tag, kind, uniqueness, tensor entries). */
static mml_status mml__ckpt_parse_section(mml__ckpt *c, const unsigned char *b, size_t len,
                                          size_t *pos, uint32_t i) {
    const char *L = c->label;
    char tag[256];
    mml__ckpt_sec *s = &c->sec[i];
    size_t rem = len - *pos;
    if (rem < MML__CKPT_SEC_HDR)
        return mml__fail(MML_ERR_FORMAT, "%s: truncated at byte %zu: section %u header incomplete", L, len,
                         (unsigned)i);
    const unsigned char *h = b + *pos;
    uint64_t plen = mml__ckpt_u64(h + 8);
    mml__ckpt_san(tag, h, 4);
    if (plen > rem - MML__CKPT_SEC_HDR || rem - MML__CKPT_SEC_HDR - plen < 4)
        return mml__fail(MML_ERR_FORMAT,
                         "%s: truncated at byte %zu: section %s at byte %zu declares a %llu-byte payload", L,
                         len, tag, *pos, (unsigned long long)plen);
    uint32_t stored = mml__ckpt_u32(h + MML__CKPT_SEC_HDR + plen);
    uint32_t crc = mml_crc32c(mml_crc32c(0, h, MML__CKPT_SEC_HDR), h + MML__CKPT_SEC_HDR, (size_t)plen);
    if (stored != crc)
        return mml__fail(MML_ERR_FORMAT, "%s: section %s: CRC mismatch (stored 0x%08x, computed 0x%08x)", L,
                         tag, (unsigned)stored, (unsigned)crc);
    memcpy(s->tag, h, 4);
    s->kind = mml__ckpt_u32(h + 4);
    s->off = *pos + MML__CKPT_SEC_HDR;
    s->len = plen;
    s->ntensors = -1;
    if (!mml__ckpt_printable(h, 4))
        return mml__fail(MML_ERR_FORMAT, "%s: section %u: tag '%s' is not printable ASCII", L, (unsigned)i, tag);
    for (uint32_t j = 0; j < i; j++)
        if (memcmp(c->sec[j].tag, s->tag, 4) == 0)
            return mml__fail(MML_ERR_FORMAT, "%s: duplicate section %s", L, tag);
    if (s->kind != MML__CKPT_BYTES && s->kind != MML__CKPT_TENSORS)
        return mml__fail(MML_ERR_FORMAT, "%s: section %s: unknown kind %u", L, tag, (unsigned)s->kind);
    *pos += MML__CKPT_SEC_HDR + (size_t)plen + 4;
    return s->kind == MML__CKPT_TENSORS ? mml__ckpt_parse_tensors(c, b, s) : MML_OK;
}

/* Validates the whole image b[0..len) into c (offsets only, so the caller may
 * move the image afterwards). */
/* Opaque to interprocedural optimisation: given a constant buffer, GCC 12
 * would otherwise warn (-Warray-bounds) about reads on paths that the length
 * checks have already ruled out. */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((noipa))
#endif
static mml_status mml__ckpt_parse(mml__ckpt *c, const unsigned char *b, size_t len) {
    uint32_t nsec = 0;
    mml_status st = mml__ckpt_parse_header(c, b, len, &nsec);
    if (st) return st;
    c->sec = (mml__ckpt_sec *)mml__alloc((size_t)nsec * sizeof *c->sec);
    if (!c->sec) return mml__fail(MML_ERR_NOMEM, "%s: out of memory", c->label);
    c->nsec = nsec;
    size_t pos = MML__CKPT_HDR;
    for (uint32_t i = 0; i < nsec; i++)
        if ((st = mml__ckpt_parse_section(c, b, len, &pos, i)) != MML_OK) return st;
    if (pos != len)
        return mml__fail(MML_ERR_FORMAT, "%s: %zu bytes of trailing garbage after the last section (at byte %zu)",
                         c->label, len - pos, pos);
    return MML_OK;
}

static void mml__ckpt_close(mml__ckpt *c) {
    if (!c) return;
    for (uint32_t i = 0; c->sec && i < c->nsec; i++) {
        mml__free(c->sec[i].t);
        mml__free(c->sec[i].names);
    }
    mml__free(c->sec);
    mml__free(c->img);
    mml__free(c->label);
    mml__free(c);
}

static mml__ckpt *mml__ckpt_new(const char *label) {
    mml__ckpt *c = (mml__ckpt *)mml__alloc(sizeof *c);
    size_t n = strlen(label);
    if (c) c->label = (char *)mml__alloc(n + 1);
    if (!c || !c->label) {
        mml__ckpt_close(c);
        mml__fail(MML_ERR_NOMEM, "%s: out of memory", label);
        return NULL;
    }
    memcpy(c->label, label, n);
    return c;
}

/* Validates len bytes at buf (label names them in errors) and keeps a copy.
 * Parsing the caller's buffer in place keeps sanitizers' bounds exact. */
static MML__UNUSED mml_status mml__ckpt_open_mem(const void *buf, size_t len, const char *label,
                                           mml__ckpt **out) {
    if (!out) return mml__fail(MML_ERR_ARG, "checkpoint open: out is NULL");
    *out = NULL;
    if (!label) label = "(memory)";
    if (!buf && len) return mml__fail(MML_ERR_ARG, "%s: buffer is NULL", label);
    mml__ckpt *c = mml__ckpt_new(label);
    if (!c) return MML_ERR_NOMEM;
    mml_status st = mml__ckpt_parse(c, (const unsigned char *)buf, len);
    if (!st && !(c->img = (unsigned char *)mml__alloc(len)))
        st = mml__fail(MML_ERR_NOMEM, "%s: out of memory (%zu bytes)", label, len);
    if (st) {
        mml__ckpt_close(c);
        return st;
    }
    if (len) memcpy(c->img, buf, len);
    c->len = len;
    *out = c;
    return MML_OK;
}

/* Reads path into memory and validates it. */
static mml_status mml__ckpt_open(const char *path, mml__ckpt **out) {
    mml__buf b;
    if (!out) return mml__fail(MML_ERR_ARG, "checkpoint open: out is NULL");
    *out = NULL;
    if (!path) return mml__fail(MML_ERR_ARG, "checkpoint open: path is NULL");
    mml_status st = mml__read_file_st(path, "checkpoint file", &b, NULL);
    if (st) return st;
    mml__ckpt *c = mml__ckpt_new(path);
    if (!c) {
        mml__buf_free(&b);
        return MML_ERR_NOMEM;
    }
    c->img = (unsigned char *)b.p; /* mml__ckpt_close frees it */
    c->len = b.n;
    st = mml__ckpt_parse(c, c->img, c->len);
    if (st) {
        mml__ckpt_close(c);
        return st;
    }
    *out = c;
    return MML_OK;
}

/* ---- container: lookup ---- */

static const mml__ckpt_sec *mml__ckpt_find(const mml__ckpt *c, const char tag[4]) {
    for (uint32_t i = 0; i < c->nsec; i++)
        if (memcmp(c->sec[i].tag, tag, 4) == 0) return &c->sec[i];
    return NULL;
}

static const mml__ckpt_tinfo *mml__ckpt_find_tensor(const mml__ckpt_sec *s, const char *name) {
    mml__ckpt_tinfo key;
    if (s->kind != MML__CKPT_TENSORS || s->ntensors <= 0) return NULL;
    key.name = name;
    return (const mml__ckpt_tinfo *)bsearch(&key, s->t, (size_t)s->ntensors, sizeof key, mml__ckpt_tcmp);
}

/* A byte section's payload; MML_ERR_FORMAT if it is missing or holds tensors. */
static mml_status mml__ckpt_bytes(const mml__ckpt *c, const char tag[4], const void **p,
                                        uint64_t *n) {
    char t[256];
    if (!c || !tag || !p || !n) return mml__fail(MML_ERR_ARG, "checkpoint bytes: NULL argument");
    const mml__ckpt_sec *s = mml__ckpt_find(c, tag);
    mml__ckpt_san(t, tag, 4);
    if (!s) return mml__fail(MML_ERR_FORMAT, "%s: missing section %s", c->label, t);
    if (s->kind != MML__CKPT_BYTES)
        return mml__fail(MML_ERR_FORMAT, "%s: section %s holds tensors, not bytes", c->label, t);
    *p = c->img + s->off;
    *n = s->len;
    return MML_OK;
}

static int mml__ckpt_has_tensor(const mml__ckpt *c, const char tag[4], const char *name) {
    const mml__ckpt_sec *s = (c && tag && name) ? mml__ckpt_find(c, tag) : NULL;
    return s && mml__ckpt_find_tensor(s, name) != NULL;
}

/* Copies tensor name of section tag into dst (prod(shape) floats) after
 * checking that the stored ndim and shape equal the expected ones. */
static mml_status mml__ckpt_tensor_read(const mml__ckpt *c, const char tag[4], const char *name,
                                              int32_t ndim, const int64_t *shape, float *dst) {
    char t[256], nm[256], want[128], got[128];
    if (!c || !tag || !name || !shape || ndim < 1 || ndim > 4)
        return mml__fail(MML_ERR_ARG, "checkpoint tensor read: bad argument");
    const mml__ckpt_sec *s = mml__ckpt_find(c, tag);
    mml__ckpt_san(t, tag, 4);
    mml__ckpt_san(nm, name, strlen(name));
    if (!s) return mml__fail(MML_ERR_FORMAT, "%s: missing section %s", c->label, t);
    if (s->kind != MML__CKPT_TENSORS)
        return mml__fail(MML_ERR_FORMAT, "%s: section %s holds bytes, not tensors", c->label, t);
    const mml__ckpt_tinfo *ti = mml__ckpt_find_tensor(s, name);
    if (!ti) return mml__fail(MML_ERR_FORMAT, "%s: section %s: no tensor named '%s'", c->label, t, nm);
    int same = ti->ndim == ndim;
    for (int32_t k = 0; same && k < ndim; k++) same = ti->shape[k] == shape[k];
    if (!same)
        return mml__fail(MML_ERR_FORMAT, "%s: section %s: tensor '%s' has shape %s in the file, expected %s",
                         c->label, t, nm, mml__ckpt_fmt_shape(got, ti->ndim, ti->shape),
                         mml__ckpt_fmt_shape(want, ndim, shape));
    if (ti->nelem && !dst) return mml__fail(MML_ERR_ARG, "checkpoint tensor read: dst is NULL");
    if (ti->nelem) memcpy(dst, c->img + ti->data_off, (size_t)(4 * ti->nelem));
    return MML_OK;
}

/* Iteration, for tools and the fuzzer. */
static int mml__ckpt_nsections(const mml__ckpt *c) { return c ? (int)c->nsec : 0; }

/* Section i's tag (4 bytes, no NUL) and
 * its tensor count (-1 for a byte section); NULL if i is out of range. */
static const char *mml__ckpt_section_at(const mml__ckpt *c, int i, int32_t *ntensors) {
    if (!c || i < 0 || (uint32_t)i >= c->nsec) return NULL;
    if (ntensors) *ntensors = c->sec[i].ntensors;
    return c->sec[i].tag;
}

/* Tensor i (in name order) of section tag: its name, ndim and shape; NULL if
 * there is no such tensor. */
static const char *mml__ckpt_tensor_at(const mml__ckpt *c, const char tag[4], int32_t i,
                                             int32_t *ndim, int64_t shape[4]) {
    const mml__ckpt_sec *s = (c && tag) ? mml__ckpt_find(c, tag) : NULL;
    if (!s || i < 0 || i >= s->ntensors) return NULL;
    if (ndim) *ndim = s->t[i].ndim;
    if (shape) memcpy(shape, s->t[i].shape, sizeof s->t[i].shape);
    return s->t[i].name;
}

/* ---- model checkpoints ---- */

/* A model checkpoint is the container of docs/FORMAT.md with sections:
 *   CONF  the model config as "key=value" lines
 *   SCHM  the schema as "key=value" lines (mml__schema_text), only in models
 *         made with cfg.schema; such files are format version 2, the
 *         paper's layout stays version 1 (older readers load it)
 *   PARM  one tensor per parameter, named as in mml__build_arch
 *   ADAM  Adam moments "m.<name>", "v.<name>"      (training checkpoints)
 *   BEST  the early-stopping snapshot "<name>"      (training checkpoints)
 *   PROG  "key=value" lines: the phase and expert; training checkpoints add
 *         the optimizer's and the fit's progress, and, once a fit has begun
 *         (not in older files), what it runs on:
 *         fit_batch, fit_epochs, fit_patience, fit_seed and data_users,
 *         data_items, data_domains, data_train, data_val, data_test,
 *         data_hash (mml__data_hash), each group whole or absent
 * Text sections are read by mml__kv_each (meta.txt's grammar). Floats in
 * them are C99 hex floats, so they round-trip exactly. */

#define MML__TEXT_MAX 4096

/* CONF: every key of MML_CONFIG_FIELDS, each exactly once, in its order. */
static const char *const mml__conf_keys[] = {
#define MML__CFG_CKEY(type, name, def, lo, hi, flag, help) #name,
    MML_CONFIG_FIELDS(MML__CFG_CKEY)};
#define MML__CONF_NKEYS ((int)(sizeof mml__conf_keys / sizeof mml__conf_keys[0]))

/* Keys newer than the checkpoint format: written only when not their
 * default, so a model that leaves them at it writes the same bytes as
 * before, and absent on load (the default). */
static const char *const mml__conf_keys_optional[] = {"precision", "infer_precision"};

static int mml__conf_key_optional(const char *k) {
    for (size_t i = 0; i < sizeof mml__conf_keys_optional / sizeof mml__conf_keys_optional[0]; i++)
        if (!strcmp(k, mml__conf_keys_optional[i])) return 1;
    return 0;
}

/* Whether setting k of c has its default's value. */
static int mml__conf_at_default(const mml_config_t *c, const char *k) {
    mml_config_t d;
    char a[64], b[64];
    mml_config_default(&d);
    return mml_config_get(c, k, a, sizeof a) >= 0 && mml_config_get(&d, k, b, sizeof b) >= 0 && !strcmp(a, b);
}

/* One "key=value" line per setting of MML_CONFIG_FIELDS, in its order. */
static int mml__conf_text(const mml_config_t *c, char *buf, size_t cap) {
    size_t n = 0;
    for (int k = 0; k < MML__CONF_NKEYS; k++) {
        const char *key = mml__conf_keys[k];
        if (mml__conf_key_optional(key) && mml__conf_at_default(c, key)) continue;
        int w = snprintf(buf + n, cap - n, "%s=", key);
        if (w < 0 || (size_t)w >= cap - n) return -1;
        n += (size_t)w;
        w = mml_config_get(c, key, buf + n, cap - n);
        if (w < 0 || (size_t)w + 1 >= cap - n) return -1;
        n += (size_t)w;
        buf[n++] = '\n';
        buf[n] = 0;
    }
    return (int)n;
}

/* The key=value lines of text section tag, through mml__kv_each; errors
 * read "<path> (section <tag>):<line>: ...". */
static mml_status mml__ckpt_kv(const char *path, const char *tag, const void *p, uint64_t n, mml__kv_fn fn,
                               void *ctx) {
    char where[MML__PATH_MAX + 32];
    snprintf(where, sizeof where, "%s (section %s)", path, tag);
    return mml__kv_each((const char *)p, (size_t)n, where, fn, ctx);
}

typedef struct mml__confp { mml_config_t *c; uint64_t seen; } mml__confp;

static mml_status mml__conf_kv(void *ctx, const char *k, const char *v) {
    mml__confp *cp = (mml__confp *)ctx;
    int key = -1;
    for (int j = 0; j < MML__CONF_NKEYS; j++)
        if (!strcmp(k, mml__conf_keys[j])) key = j;
    if (key < 0) return mml__fail(MML_ERR_FORMAT, "unknown key \"%s\"", k);
    if (cp->seen & (1ull << key)) return mml__fail(MML_ERR_FORMAT, "key \"%s\" given twice", k);
    cp->seen |= 1ull << key;
    return mml__config_parse(cp->c, k, v, 0); /* ranges: mml__check_config, on the whole config */
}

typedef struct mml__progp { mml_model_t *m; int n_opts, n_data; } mml__progp;

/* The PROG keys of what a fit runs on: options (4) and data (7). */
static mml_status mml__prog_fit_kv(mml__progp *pp, const char *k, const char *v, int *known) {
    static const char *const opt_keys[] = {"fit_batch", "fit_epochs", "fit_patience"};
    static const char *const data_keys[] = {"data_users", "data_items", "data_domains", "data_train", "data_val",
                                            "data_test"};
    mml__fit_state *fs = &pp->m->fit;
    int32_t *const opts[] = {&fs->batch, &fs->max_epochs, &fs->patience};
    int64_t i;
    *known = 1;
    for (int j = 0; j < 3; j++)
        if (!strcmp(k, opt_keys[j])) {
            if (mml__parse_i64(v, 1, INT32_MAX, &i)) return mml__fail(MML_ERR_FORMAT, "bad %s \"%s\"", k, v);
            *opts[j] = (int32_t)i;
            pp->n_opts++;
            return MML_OK;
        }
    for (int j = 0; j < 6; j++)
        if (!strcmp(k, data_keys[j])) {
            if (mml__parse_i64(v, 0, INT64_MAX, &i)) return mml__fail(MML_ERR_FORMAT, "bad %s \"%s\"", k, v);
            fs->data_size[j] = i;
            pp->n_data++;
            return MML_OK;
        }
    *known = 0;
    return MML_OK;
}

static mml_status mml__prog_kv(void *ctx, const char *k, const char *v) {
    mml__progp *pp = (mml__progp *)ctx;
    mml_model_t *m = pp->m;
    int64_t i;
    double d;
    int known;
    mml_status st = mml__prog_fit_kv(pp, k, v, &known);
    if (st || known) return st;
    if (!strcmp(k, "best")) {
        if (mml__parse_dbl(v, &d)) return mml__fail(MML_ERR_FORMAT, "bad number %s=%s", k, v);
        m->fit.best = d;
        return MML_OK;
    }
    if (!strcmp(k, "steps") || !strcmp(k, "rng") || !strcmp(k, "fit_seed") || !strcmp(k, "data_hash")) {
        uint64_t x;
        if (mml__parse_u64(v, &x)) return mml__fail(MML_ERR_FORMAT, "bad %s \"%s\"", k, v);
        if (!strcmp(k, "steps")) m->opt.steps = x;
        else if (!strcmp(k, "rng")) m->fit.rng = x;
        else if (!strcmp(k, "fit_seed")) { m->fit.seed = x; pp->n_opts++; }
        else { m->fit.data_hash = x; pp->n_data++; }
        return MML_OK;
    }
    if (mml__parse_i64(v, -1, INT64_MAX, &i)) return mml__fail(MML_ERR_FORMAT, "bad integer %s=%s", k, v);
    if (!strcmp(k, "phase")) {
        if (i < 0 || i > MML_PHASE_GATE) return mml__fail(MML_ERR_FORMAT, "bad phase %lld", (long long)i);
        m->ph.phase = (mml_phase)i;
    } else if (!strcmp(k, "expert")) {
        if (i < -1 || i >= (m->a.n_experts ? m->a.n_experts : 1)) return mml__fail(MML_ERR_FORMAT, "bad expert %lld", (long long)i);
        m->ph.expert = (int)i;
    } else if (!strcmp(k, "adam_t")) m->opt.t = i;
    else if (!strcmp(k, "fit_active")) m->fit.active = i != 0;
    else if (!strcmp(k, "fit_done")) m->fit.done = i != 0;
    else if (!strcmp(k, "stage")) {
        if (i > m->a.n_experts + 2) return mml__fail(MML_ERR_FORMAT, "bad stage %lld", (long long)i);
        m->fit.stage = (int32_t)i;
    } else if (!strcmp(k, "epoch")) m->fit.epoch = (int32_t)(i > INT32_MAX ? INT32_MAX : i);
    else if (!strcmp(k, "bad")) m->fit.bad = (int32_t)(i > INT32_MAX ? INT32_MAX : i);
    else return mml__fail(MML_ERR_FORMAT, "unknown key \"%s\"", k);
    return MML_OK;
}

#define MML__NAME_VIEW 72 /* a tensor name with a "m." / "v." prefix */

/* What PROG says of the fit must hang together. */
static mml_status mml__prog_check(mml__progp *pp, const char *path) {
    mml__fit_state *fs = &pp->m->fit;
    if ((pp->n_opts != 0 && pp->n_opts != 4) || (pp->n_data != 0 && pp->n_data != 7))
        return mml__fail(MML_ERR_FORMAT, "%s: section PROG has only some of the fit_* or data_* keys", path);
    if (fs->active && fs->done) return mml__fail(MML_ERR_FORMAT, "%s: section PROG says the fit runs and has finished", path);
    if ((fs->active || fs->done) && fs->from_export)
        return mml__fail(MML_ERR_FORMAT, "%s: section PROG records a fit but the file has no optimizer state", path);
    fs->has_opts = pp->n_opts == 4;
    fs->has_data = pp->n_data == 7;
    return MML_OK;
}

/* Tensor views of one arena (P, M, V or best) under the parameter names. */
static void mml__tensor_views(const mml_model_t *m, const float *arena, mml__ckpt_tensor *t, char (*names)[MML__NAME_VIEW],
                              const char *prefix) {
    for (int i = 0; i < m->a.n_params; i++) {
        const mml__param *p = &m->a.t[i];
        snprintf(names[i], MML__NAME_VIEW, "%s%s", prefix, p->name);
        t[i].name = names[i];
        t[i].ndim = p->ndim;
        for (int j = 0; j < 4; j++) t[i].shape[j] = j < p->ndim ? p->shape[j] : 0;
        t[i].data = arena + p->off;
    }
}

/* The PROG section; an inference export keeps only the phase (it decides
 * which adapters predict). */
static int mml__prog_text(const mml_model_t *m, int training, char *buf, size_t cap) {
    const mml__fit_state *fs = &m->fit;
    if (!training) return snprintf(buf, cap, "phase=%d\nexpert=%d\n", (int)m->ph.phase, m->ph.expert);
    int n = snprintf(buf, cap,
                     "phase=%d\nexpert=%d\nadam_t=%lld\nsteps=%llu\nfit_active=%d\nfit_done=%d\nstage=%d\nepoch=%d\n"
                     "bad=%d\nbest=%a\nrng=%llu\n",
                     (int)m->ph.phase, m->ph.expert, (long long)m->opt.t, (unsigned long long)m->opt.steps, fs->active,
                     fs->done, fs->stage, fs->epoch, fs->bad, fs->best, (unsigned long long)fs->rng);
    if (n > 0 && (size_t)n < cap && fs->has_opts)
        n += snprintf(buf + n, cap - (size_t)n, "fit_batch=%d\nfit_epochs=%d\nfit_patience=%d\nfit_seed=%llu\n",
                      fs->batch, fs->max_epochs, fs->patience, (unsigned long long)fs->seed);
    if (n > 0 && (size_t)n < cap && fs->has_data)
        n += snprintf(buf + n, cap - (size_t)n,
                      "data_users=%lld\ndata_items=%lld\ndata_domains=%lld\ndata_train=%lld\ndata_val=%lld\n"
                      "data_test=%lld\ndata_hash=%llu\n",
                      (long long)fs->data_size[0], (long long)fs->data_size[1], (long long)fs->data_size[2],
                      (long long)fs->data_size[3], (long long)fs->data_size[4], (long long)fs->data_size[5],
                      (unsigned long long)fs->data_hash);
    return n > 0 && (size_t)n < cap ? n : -1;
}

/* ---- SCHM: the schema's key=value text (mml__schema_text) ---- */

static mml_status mml__schm_kv(void *ctx, const char *k, const char *v) {
    return mml__schema_kv((mml__schema_rd *)ctx, k, v);
}

/* Reads section SCHM into *s: every key known and given once, a schema
 * mml_schema_check accepts. */
static mml_status mml__schema_from_ckpt(const mml__ckpt *ck, const char *path, mml_schema_t *s) {
    const void *bytes;
    uint64_t n;
    mml__schema_rd rd;
    mml__schema_rd_init(&rd, s);
    mml_status st = mml__ckpt_bytes(ck, "SCHM", &bytes, &n);
    if (!st) st = mml__ckpt_kv(path, "SCHM", bytes, n, mml__schm_kv, &rd);
    if (!st && (st = mml__schema_end(&rd)) != MML_OK) st = mml__fail(st, "%s: section SCHM: %s", path, mml_last_error());
    return st;
}

static mml_status mml__model_save(const mml_model_t *m, const char *path, int training) {
    char conf[MML__TEXT_MAX], prog[MML__TEXT_MAX];
    mml__catch_up_all((mml_model_t *)m); /* deferred dense-Adam rows: same values either way */
    if (mml__conf_text(&m->cfg, conf, sizeof conf) < 0) return mml__fail(MML_ERR_ARG, "%s: config too long", path);
    int pn = mml__prog_text(m, training, prog, sizeof prog);
    if (pn < 0) return mml__fail(MML_ERR_ARG, "%s: progress too long", path);
    int np = m->a.n_params;
    mml__ckpt_tensor *t = (mml__ckpt_tensor *)mml__alloc(sizeof *t * (size_t)np * 4);
    char (*names)[MML__NAME_VIEW] = (char (*)[MML__NAME_VIEW])mml__alloc((size_t)np * 4 * MML__NAME_VIEW);
    if (!t || !names) {
        mml__free(t);
        mml__free(names);
        return mml__fail(MML_ERR_NOMEM, "%s: out of memory", path);
    }
    mml__tensor_views(m, m->P, t, names, "");
    mml__tensor_views(m, m->opt.M, t + np, names + np, "m.");
    mml__tensor_views(m, m->opt.V, t + 2 * np, names + 2 * np, "v.");
    mml__tensor_views(m, m->snapshot, t + 3 * np, names + 3 * np, "");
    /* a schema model is version 2 (a version 1 reader would take it for the
     * paper's layout); the paper's layout stays version 1 */
    char *schm = NULL;
    int64_t sn = m->a.own_schema ? mml__schema_text(m->a.schema, &schm) : 0;
    /* the ADAM section holds m.* and v.* together */
    mml__ckpt_section secs[6];
    memset(secs, 0, sizeof secs);
    int ns = 0;
    memcpy(secs[ns].tag, "CONF", 4); secs[ns].bytes = conf; secs[ns++].nbytes = strlen(conf);
    if (m->a.own_schema) { memcpy(secs[ns].tag, "SCHM", 4); secs[ns].bytes = schm; secs[ns++].nbytes = (uint64_t)sn; }
    memcpy(secs[ns].tag, "PARM", 4); secs[ns].tensors = t; secs[ns++].ntensors = np;
    memcpy(secs[ns].tag, "PROG", 4); secs[ns].bytes = prog; secs[ns++].nbytes = (uint64_t)pn;
    memcpy(secs[ns].tag, "ADAM", 4); secs[ns].tensors = t + np; secs[ns++].ntensors = 2 * np;
    memcpy(secs[ns].tag, "BEST", 4); secs[ns].tensors = t + 3 * np; secs[ns++].ntensors = np;
    mml_status st = sn < 0 ? mml__fail(MML_ERR_NOMEM, "%s: out of memory", path)
                           : mml__ckpt_save_v(path, secs, training ? ns : ns - 2, m->a.own_schema ? 2 : 1);
    mml__free(schm);
    mml__free(t);
    mml__free(names);
    return st;
}

mml_status mml_model_save(const mml_model_t *m, const char *path) { return mml__model_save(m, path, 1); }
mml_status mml_model_export(const mml_model_t *m, const char *path) { return mml__model_save(m, path, 0); }

static mml_status mml__read_arena(const mml__ckpt *ck, const char *path, const char *tag, const char *prefix,
                                  mml_model_t *m, float *arena) {
    for (int i = 0; i < m->a.n_params; i++) {
        const mml__param *p = &m->a.t[i];
        char nm[MML__NAME_VIEW];
        snprintf(nm, sizeof nm, "%s%s", prefix, p->name);
        mml_status st = mml__ckpt_tensor_read(ck, tag, nm, p->ndim, p->shape, arena + p->off);
        if (st) return st;
        /* a NaN or Inf weight would silently poison every prediction */
        for (int64_t j = 0; j < p->size; j++)
            if (!(arena[p->off + j] - arena[p->off + j] == 0.0f))
                return mml__fail(MML_ERR_FORMAT, "%s: tensor %s%s holds a non-finite value", path, prefix, p->name);
    }
    return MML_OK;
}

/* The parameter floats a config implies, without allocating anything. */
static int64_t mml__config_floats(const mml_config_t *c) {
    mml_model_t *t = (mml_model_t *)MOEMLORA_MALLOC(sizeof *t);
    if (!t) return -1;
    memset(t, 0, sizeof *t);
    int64_t n = -1;
    if (mml__build_arch(t, c) == MML_OK)
        for (int i = n = 0; i < t->a.n_params; i++) n += t->a.t[i].size;
    mml__free(t->a.schema);
    MOEMLORA_FREE(t);
    return n;
}

/* The schema of a version 2 file (*s allocated, to free), NULL for version
 * 1 (the paper's layout: it has none). */
static mml_status mml__schema_section(const mml__ckpt *ck, const char *path, mml_schema_t **s) {
    *s = NULL;
    int has = mml__ckpt_find(ck, "SCHM") != NULL;
    if (ck->version < 2)
        return has ? mml__fail(MML_ERR_FORMAT, "%s: section SCHM in a format version %u file", path, (unsigned)ck->version)
                   : MML_OK;
    if (!has) return mml__fail(MML_ERR_FORMAT, "%s: format version %u file without the schema (section SCHM)", path,
                               (unsigned)ck->version);
    if (!(*s = (mml_schema_t *)mml__alloc(sizeof **s))) return mml__fail(MML_ERR_NOMEM, "%s: out of memory", path);
    return mml__schema_from_ckpt(ck, path, *s);
}

/* Builds a model from an opened, validated container; label names it in errors. */
static mml_status mml__model_from_ckpt(const mml__ckpt *ck, const char *path, mml_model_t **out) {
    const void *bytes;
    uint64_t n;
    mml_config_t c;
    mml_config_default(&c);
    mml__confp cp = {&c, 0};
    mml_model_t *m = NULL;
    mml_schema_t *schema = NULL;
    mml_status st = mml__ckpt_bytes(ck, "CONF", &bytes, &n);
    if (!st) st = mml__ckpt_kv(path, "CONF", bytes, n, mml__conf_kv, &cp);
    for (int j = 0; !st && j < MML__CONF_NKEYS; j++)
        if (!(cp.seen & (1ull << j)) && !mml__conf_key_optional(mml__conf_keys[j]))
            st = mml__fail(MML_ERR_FORMAT, "%s: section CONF lacks the key \"%s\"", path, mml__conf_keys[j]);
    if (!st) st = mml__schema_section(ck, path, &schema);
    c.schema = schema;
    if (!st && mml__check_config(&c)) st = mml__fail(MML_ERR_ARG, "%s: %s", path, mml_last_error());
    if (!st) {
        /* the config must describe the tensors the file holds before anything
         * is allocated for it: a corrupt size cannot ask for gigabytes */
        int64_t want = mml__config_floats(&c), have = 0;
        int32_t nt = 0, nd;
        int64_t sh[4];
        for (int i = 0; i < mml__ckpt_nsections(ck); i++) {
            char tag[5] = {0};
            const char *tg = mml__ckpt_section_at(ck, i, &nt);
            if (!tg || memcmp(tg, "PARM", 4)) continue;
            memcpy(tag, tg, 4);
            for (int32_t k = 0; k < nt; k++) {
                if (!mml__ckpt_tensor_at(ck, tag, k, &nd, sh)) continue;
                int64_t e = 1;
                for (int32_t q = 0; q < nd; q++) e *= sh[q];
                have += e;
            }
        }
        if (want < 0 || have != want)
            st = mml__fail(MML_ERR_FORMAT, "%s: the config asks for %lld parameters but the file holds %lld",
                           path, (long long)want, (long long)have);
    }
    if (!st) {
        st = mml_model_create(&c, &m);
        if (st) st = mml__fail(st, "%s: %s", path, mml_last_error());
    }
    if (!st) st = mml__read_arena(ck, path, "PARM", "", m, m->P);
    if (m) m->fit.from_export = 1;
    if (!st && mml__ckpt_bytes(ck, "PROG", &bytes, &n) == MML_OK) {
        mml__progp pp = {m, 0, 0};
        st = mml__ckpt_kv(path, "PROG", bytes, n, mml__prog_kv, &pp);
        char first[MML__NAME_VIEW];
        snprintf(first, sizeof first, "m.%s", m->a.t[0].name);
        if (mml__ckpt_has_tensor(ck, "ADAM", first)) { /* a training checkpoint, not an export */
            m->fit.from_export = 0;
            if (!st) st = mml__read_arena(ck, path, "ADAM", "m.", m, m->opt.M);
            if (!st) st = mml__read_arena(ck, path, "ADAM", "v.", m, m->opt.V);
            if (!st) st = mml__read_arena(ck, path, "BEST", "", m, m->snapshot);
        }
        if (!st) st = mml__prog_check(&pp, path);
        if (!st && m->ph.phase != MML_PHASE_ALL && c.adapter != MML_ADAPTER_MOE)
            st = mml__fail(MML_ERR_FORMAT, "%s: phase %d needs the MoE adapter", path, (int)m->ph.phase);
        if (!st && m->ph.phase == MML_PHASE_EXPERT && m->ph.expert < 0)
            st = mml__fail(MML_ERR_FORMAT, "%s: expert phase without an expert", path);
        if (!st) mml__phase_flags(m, m->ph.phase, m->ph.expert);
        if (!st) mml__rows_current(m);
    }
    mml__free(schema); /* the model holds its own copy */
    if (st) {
        mml_model_free(m);
        return st;
    }
    *out = m;
    return MML_OK;
}

mml_status mml_model_load(const char *path, mml_model_t **out) {
    *out = NULL;
    mml__ckpt *ck = NULL;
    mml_status st = mml__ckpt_open(path, &ck);
    if (st) return st;
    st = mml__model_from_ckpt(ck, path, out);
    mml__ckpt_close(ck);
    return st;
}

#endif /* MOEMLORA_IMPLEMENTED */
#endif /* MOEMLORA_IMPLEMENTATION */
