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

#define MML_MAX_HIDDEN 8

typedef struct mml_config_t {
    mml_model_kind model;
    mml_adapter adapter;
    mml_gate_kind gate;
    int32_t n_users, n_items, n_domains;  /* vocab sizes; ids 0..n-1 */
    int32_t emb_dim;                      /* k; with pretrained embeddings their dim */
    int32_t pretrained;                   /* 1: user/item embeddings are given and frozen */
    int32_t n_hidden;
    int32_t hidden[MML_MAX_HIDDEN];       /* tower units, default 256,128,64 */
    int32_t lora_reduce;                  /* rank = max(d_out / lora_reduce, 1) */
    int32_t lora_r;                       /* > 0: fixed rank instead */
    int32_t experts_per_domain;           /* MoE: E = n_domains * experts_per_domain */
    int32_t gate_dim;                     /* domain-gate embedding size (4) */
    float dropout;                        /* on the base layers' output, training only */
    float lr, beta1, beta2, eps, weight_decay;
    int32_t lazy_adam;                    /* 1: embedding rows move only when touched */
    int32_t max_batch;                    /* activations are sized for this */
    int32_t threads;                      /* worker threads for train/predict (1 = none) */
    uint64_t seed;
} mml_config_t;

/* Defaults: MLP, MoE-MLoRA, domain gate, emb 8, tower 256-128-64, lora_reduce 16,
 * 1 expert per domain, gate_dim 4, dropout 0.5, Adam 1e-3 (0.9, 0.999, 1e-7),
 * max_batch 1024, 1 thread, seed 123. Vocab sizes must be set by the caller. */
MOEMLORA_API void mml_config_default(mml_config_t *c);
MOEMLORA_API const char *mml_model_kind_name(mml_model_kind k);
MOEMLORA_API int mml_model_kind_from_name(const char *s, mml_model_kind *out);
MOEMLORA_API const char *mml_adapter_name(mml_adapter a);
MOEMLORA_API int mml_adapter_from_name(const char *s, mml_adapter *out);

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

typedef struct mml_batch_t {
    int32_t n;
    const int32_t *uid, *pid, *dom;
    const float *label;      /* training only */
} mml_batch_t;

/* One step of Adam on the mean BCE of the batch (n <= max_batch). */
MOEMLORA_API mml_status mml_train_step(mml_model_t *m, const mml_batch_t *b, float *loss);
/* Click probabilities. Ids outside the vocab use a reserved out-of-vocabulary
 * row (trained never, zero-initialised), so unknown users or items get a
 * defined prediction. Any n: batches above max_batch are processed in chunks. */
MOEMLORA_API mml_status mml_predict(mml_model_t *m, const mml_batch_t *b, float *prob);

/* Folds each domain's adapters (MLoRA, or MoE-MLoRA with the domain gate) into
 * per-domain dense layers, so inference costs what the base model costs.
 * Predictions use the folded weights until the next training step. */
MOEMLORA_API mml_status mml_model_fold(mml_model_t *m);

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
    int64_t n[64 + 1];          /* per domain (first min(n_domains,64)) */
    double auc[64 + 1], logloss[64 + 1];
    double mean_auc;            /* mean of per-domain AUCs (domains with both classes) */
    double weighted_auc;        /* sum_d n_d AUC_d / sum_d n_d */
    double logloss_all;
    int64_t n_all;
} mml_metrics_t;
#define MML_METRICS_MAX_DOMAINS 64

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
    double val_auc;          /* EPOCH_END */
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
 * stopping on validation AUC and the best parameters restored. *test receives
 * the final test metrics. A model loaded from a checkpoint written during a
 * fit continues that fit where it stopped (same data and options give the
 * same weights, bit for bit, as an uninterrupted run). */
MOEMLORA_API mml_status mml_fit(mml_model_t *m, const mml_data_t *d, const mml_fit_opts_t *o,
                                mml_metrics_t *test);

/* // >>checkpoints --------------------------------------------------------- */

/* Saves everything needed to resume training (parameters, Adam moments, the
 * early-stopping snapshot, progress) atomically: a crash never loses the
 * previous file at path. Format: docs/FORMAT.md. */
MOEMLORA_API mml_status mml_model_save(const mml_model_t *m, const char *path);
/* Saves an inference-only file (config and parameters). */
MOEMLORA_API mml_status mml_model_export(const mml_model_t *m, const char *path);
/* Loads either kind; every field is validated before use (clear errors for
 * foreign, truncated, corrupt or inconsistent files). */
MOEMLORA_API mml_status mml_model_load(const char *path, mml_model_t **out);

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
} mml_synth_config_t;

MOEMLORA_API void mml_synth_default(mml_synth_config_t *c);
/* Deterministic multi-domain data: each user belongs to one domain; the click
 * logit is a shared user-item affinity plus a domain-specific one, so a shared
 * model learns the common part and per-domain adapters the rest. */
MOEMLORA_API mml_status mml_data_synthetic(const mml_synth_config_t *c, mml_data_t *out);
