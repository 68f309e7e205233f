// >>checkpoints ------------------------------------------------------------

/* A model checkpoint is the container of docs/FORMAT.md with sections:
 *   CONF  the model config as "key=value" lines
 *   PARM  one tensor per parameter, named as in mml__build_layout
 *   ADAM  Adam moments "m.<name>", "v.<name>"      (training checkpoints)
 *   BEST  the early-stopping snapshot "<name>"      (training checkpoints)
 *   PROG  training progress as "key=value" lines   (training checkpoints)
 * Floats in text sections are C99 hex floats, so they round-trip exactly. */

#define MML__TEXT_MAX 4096

static int mml__conf_text(const mml_config_t *c, char *buf, size_t cap) {
    int n = snprintf(buf, cap,
                     "model=%s\nadapter=%s\ngate=%s\nn_users=%d\nn_items=%d\nn_domains=%d\nemb_dim=%d\n"
                     "pretrained=%d\nlora_reduce=%d\nlora_r=%d\nexperts_per_domain=%d\ngate_dim=%d\n"
                     "dropout=%a\nlr=%a\nbeta1=%a\nbeta2=%a\neps=%a\nweight_decay=%a\nlazy_adam=%d\n"
                     "max_batch=%d\nthreads=%d\nseed=%llu\nhidden=",
                     mml_model_kind_name(c->model), mml_adapter_name(c->adapter),
                     c->gate == MML_GATE_DOMAIN ? "domain" : "input", c->n_users, c->n_items, c->n_domains,
                     c->emb_dim, c->pretrained, c->lora_reduce, c->lora_r, c->experts_per_domain, c->gate_dim,
                     (double)c->dropout, (double)c->lr, (double)c->beta1, (double)c->beta2, (double)c->eps,
                     (double)c->weight_decay, c->lazy_adam, c->max_batch, c->threads,
                     (unsigned long long)c->seed);
    for (int i = 0; i < c->n_hidden && n > 0 && (size_t)n < cap; i++)
        n += snprintf(buf + n, cap - (size_t)n, i ? ",%d" : "%d", c->hidden[i]);
    if (n > 0 && (size_t)n < cap) n += snprintf(buf + n, cap - (size_t)n, "\n");
    return n > 0 && (size_t)n < cap ? n : -1;
}

/* Calls fn(key, value) for each "key=value" line of a text section. */
static mml_status mml__kv_each(const char *path, const char *tag, const void *p, uint64_t n,
                               mml_status (*fn)(void *ctx, const char *k, const char *v), void *ctx) {
    const char *s = (const char *)p, *end = s + n;
    int line = 0;
    while (s < end) {
        const char *nl = (const char *)memchr(s, '\n', (size_t)(end - s));
        if (!nl) return mml__fail(MML_ERR_FORMAT, "%s: section %s: line %d has no newline", path, tag, line + 1);
        line++;
        char buf[256];
        size_t len = (size_t)(nl - s);
        if (len >= sizeof buf) return mml__fail(MML_ERR_FORMAT, "%s: section %s: line %d too long", path, tag, line);
        memcpy(buf, s, len);
        buf[len] = 0;
        char *eq = strchr(buf, '=');
        if (!eq) return mml__fail(MML_ERR_FORMAT, "%s: section %s: line %d is not key=value", path, tag, line);
        *eq = 0;
        mml_status st = fn(ctx, buf, eq + 1);
        if (st) return mml__fail(st, "%s: section %s: line %d: %s", path, tag, line, mml_last_error());
        s = nl + 1;
    }
    return MML_OK;
}

static int mml__parse_i64(const char *v, int64_t lo, int64_t hi, int64_t *out) {
    char *e;
    errno = 0;
    long long x = strtoll(v, &e, 10);
    if (!*v || *e || errno || x < lo || x > hi) return -1;
    *out = x;
    return 0;
}

static int mml__parse_dbl(const char *v, double *out) {
    char *e;
    double x = strtod(v, &e);
    if (!*v || *e || x != x) return -1;
    *out = x;
    return 0;
}

typedef struct mml__confp { mml_config_t *c; unsigned seen; } mml__confp;

static mml_status mml__conf_kv(void *ctx, const char *k, const char *v) {
    mml__confp *cp = (mml__confp *)ctx;
    mml_config_t *c = cp->c;
    int64_t i;
    double d;
    static const char *const ints[] = {"n_users", "n_items", "n_domains", "emb_dim", "pretrained", "lora_reduce",
                                       "lora_r", "experts_per_domain", "gate_dim", "lazy_adam", "max_batch", "threads"};
    int32_t *const dst[] = {&c->n_users, &c->n_items, &c->n_domains, &c->emb_dim, &c->pretrained, &c->lora_reduce,
                            &c->lora_r, &c->experts_per_domain, &c->gate_dim, &c->lazy_adam, &c->max_batch, &c->threads};
    for (size_t j = 0; j < sizeof ints / sizeof *ints; j++)
        if (!strcmp(k, ints[j])) {
            if (mml__parse_i64(v, INT32_MIN, INT32_MAX, &i)) return mml__fail(MML_ERR_FORMAT, "bad integer %s=%s", k, v);
            *dst[j] = (int32_t)i;
            cp->seen++;
            return MML_OK;
        }
    static const char *const flts[] = {"dropout", "lr", "beta1", "beta2", "eps", "weight_decay"};
    float *const fd[] = {&c->dropout, &c->lr, &c->beta1, &c->beta2, &c->eps, &c->weight_decay};
    for (size_t j = 0; j < sizeof flts / sizeof *flts; j++)
        if (!strcmp(k, flts[j])) {
            if (mml__parse_dbl(v, &d)) return mml__fail(MML_ERR_FORMAT, "bad number %s=%s", k, v);
            *fd[j] = (float)d;
            cp->seen++;
            return MML_OK;
        }
    cp->seen++;
    if (!strcmp(k, "model")) {
        if (mml_model_kind_from_name(v, &c->model)) return mml__fail(MML_ERR_FORMAT, "unknown model \"%s\"", v);
    } else if (!strcmp(k, "adapter")) {
        if (mml_adapter_from_name(v, &c->adapter)) return mml__fail(MML_ERR_FORMAT, "unknown adapter \"%s\"", v);
    } else if (!strcmp(k, "gate")) {
        if (!strcmp(v, "domain")) c->gate = MML_GATE_DOMAIN;
        else if (!strcmp(v, "input")) c->gate = MML_GATE_INPUT;
        else return mml__fail(MML_ERR_FORMAT, "unknown gate \"%s\"", v);
    } else if (!strcmp(k, "seed")) {
        char *e;
        errno = 0;
        unsigned long long x = strtoull(v, &e, 10);
        if (!*v || *e || errno) return mml__fail(MML_ERR_FORMAT, "bad seed \"%s\"", v);
        c->seed = x;
    } else if (!strcmp(k, "hidden")) {
        int n = 0;
        const char *p = v;
        while (*p) {
            char *e;
            long x = strtol(p, &e, 10);
            if (e == p || n >= MML_MAX_HIDDEN || x < 1 || x > 8192) return mml__fail(MML_ERR_FORMAT, "bad hidden \"%s\"", v);
            c->hidden[n++] = (int32_t)x;
            p = *e == ',' ? e + 1 : e;
            if (*e && *e != ',') return mml__fail(MML_ERR_FORMAT, "bad hidden \"%s\"", v);
        }
        c->n_hidden = n;
    } else {
        return mml__fail(MML_ERR_FORMAT, "unknown key \"%s\"", k);
    }
    return MML_OK;
}

typedef struct mml__progp { mml_model_t *m; } mml__progp;

static mml_status mml__prog_kv(void *ctx, const char *k, const char *v) {
    mml_model_t *m = ((mml__progp *)ctx)->m;
    int64_t i;
    double d;
    if (!strcmp(k, "best")) {
        if (mml__parse_dbl(v, &d)) return mml__fail(MML_ERR_FORMAT, "bad number %s=%s", k, v);
        m->fs.best = d;
        return MML_OK;
    }
    if (!strcmp(k, "steps") || !strcmp(k, "rng")) {
        char *e;
        errno = 0;
        unsigned long long x = strtoull(v, &e, 10);
        if (!*v || *e || errno) return mml__fail(MML_ERR_FORMAT, "bad %s \"%s\"", k, v);
        if (k[0] == 's') m->steps = x; else m->fs.rng = x;
        return MML_OK;
    }
    if (mml__parse_i64(v, -1, INT64_MAX, &i)) return mml__fail(MML_ERR_FORMAT, "bad integer %s=%s", k, v);
    if (!strcmp(k, "phase")) {
        if (i < 0 || i > MML_PHASE_GATE) return mml__fail(MML_ERR_FORMAT, "bad phase %lld", (long long)i);
        m->phase = (mml_phase)i;
    } else if (!strcmp(k, "expert")) {
        if (i < -1 || i >= (m->n_experts ? m->n_experts : 1)) return mml__fail(MML_ERR_FORMAT, "bad expert %lld", (long long)i);
        m->expert = (int)i;
    } else if (!strcmp(k, "adam_t")) m->adam_t = i;
    else if (!strcmp(k, "fit_active")) m->fs.active = i != 0;
    else if (!strcmp(k, "stage")) {
        if (i > m->n_experts + 2) return mml__fail(MML_ERR_FORMAT, "bad stage %lld", (long long)i);
        m->fs.stage = (int32_t)i;
    } else if (!strcmp(k, "epoch")) m->fs.epoch = (int32_t)(i > INT32_MAX ? INT32_MAX : i);
    else if (!strcmp(k, "bad")) m->fs.bad = (int32_t)(i > INT32_MAX ? INT32_MAX : i);
    else return mml__fail(MML_ERR_FORMAT, "unknown key \"%s\"", k);
    return MML_OK;
}

/* Tensor views of one arena (P, M, V or best) under the parameter names. */
static void mml__tensor_views(const mml_model_t *m, const float *arena, mml__ckpt_tensor *t, char (*names)[56],
                              const char *prefix) {
    for (int i = 0; i < m->n_params; i++) {
        const mml__param *p = &m->params[i];
        snprintf(names[i], 56, "%s%s", prefix, p->name);
        t[i].name = names[i];
        t[i].ndim = p->ndim;
        for (int j = 0; j < 4; j++) t[i].shape[j] = j < p->ndim ? p->shape[j] : 0;
        t[i].data = arena + p->off;
    }
}

static mml_status mml__model_save(const mml_model_t *m, const char *path, int training) {
    char conf[MML__TEXT_MAX], prog[1024];
    mml__catch_up_all((mml_model_t *)m); /* deferred dense-Adam rows: same values either way */
    if (mml__conf_text(&m->cfg, conf, sizeof conf) < 0) return mml__fail(MML_ERR_ARG, "%s: config too long", path);
    int pn = snprintf(prog, sizeof prog,
                      "phase=%d\nexpert=%d\nadam_t=%lld\nsteps=%llu\nfit_active=%d\nstage=%d\nepoch=%d\nbad=%d\n"
                      "best=%a\nrng=%llu\n",
                      (int)m->phase, m->expert, (long long)m->adam_t, (unsigned long long)m->steps, m->fs.active,
                      m->fs.stage, m->fs.epoch, m->fs.bad, m->fs.best, (unsigned long long)m->fs.rng);
    int np = m->n_params;
    mml__ckpt_tensor *t = (mml__ckpt_tensor *)mml__alloc(sizeof *t * (size_t)np * 4);
    char (*names)[56] = (char (*)[56])mml__alloc((size_t)np * 4 * 56);
    if (!t || !names) {
        mml__free(t);
        mml__free(names);
        return mml__fail(MML_ERR_NOMEM, "%s: out of memory", path);
    }
    mml__tensor_views(m, m->P, t, names, "");
    mml__tensor_views(m, m->M, t + np, names + np, "m.");
    mml__tensor_views(m, m->V, t + 2 * np, names + 2 * np, "v.");
    mml__tensor_views(m, m->best, t + 3 * np, names + 3 * np, "");
    /* the ADAM section holds m.* and v.* together */
    mml__ckpt_section secs[5];
    memset(secs, 0, sizeof secs);
    memcpy(secs[0].tag, "CONF", 4); secs[0].bytes = conf; secs[0].nbytes = strlen(conf);
    memcpy(secs[1].tag, "PARM", 4); secs[1].tensors = t; secs[1].ntensors = np;
    memcpy(secs[2].tag, "PROG", 4); secs[2].bytes = prog; secs[2].nbytes = (uint64_t)pn;
    memcpy(secs[3].tag, "ADAM", 4); secs[3].tensors = t + np; secs[3].ntensors = 2 * np;
    memcpy(secs[4].tag, "BEST", 4); secs[4].tensors = t + 3 * np; secs[4].ntensors = np;
    mml_status st = mml__ckpt_save(path, secs, training ? 5 : 2);
    mml__free(t);
    mml__free(names);
    return st;
}

mml_status mml_model_save(const mml_model_t *m, const char *path) { return mml__model_save(m, path, 1); }
mml_status mml_model_export(const mml_model_t *m, const char *path) { return mml__model_save(m, path, 0); }

static mml_status mml__read_arena(const mml__ckpt *ck, const char *path, const char *tag, const char *prefix,
                                  mml_model_t *m, float *arena) {
    for (int i = 0; i < m->n_params; i++) {
        const mml__param *p = &m->params[i];
        char nm[64];
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

mml_status mml_model_load(const char *path, mml_model_t **out) {
    *out = NULL;
    mml__ckpt *ck = NULL;
    mml_status st = mml__ckpt_open(path, &ck);
    if (st) return st;
    const void *bytes;
    uint64_t n;
    mml_config_t c;
    mml_config_default(&c);
    mml__confp cp = {&c, 0};
    mml_model_t *m = NULL;
    st = mml__ckpt_bytes(ck, "CONF", &bytes, &n);
    if (!st) st = mml__kv_each(path, "CONF", bytes, n, mml__conf_kv, &cp);
    if (!st && cp.seen < 23) st = mml__fail(MML_ERR_FORMAT, "%s: section CONF lacks keys (%u of 23)", path, cp.seen);
    if (!st) {
        st = mml_model_create(&c, &m);
        if (st) st = mml__fail(st, "%s: %s", path, mml_last_error());
    }
    if (!st) st = mml__read_arena(ck, path, "PARM", "", m, m->P);
    if (!st && mml__ckpt_bytes(ck, "PROG", &bytes, &n) == MML_OK) {
        mml__progp pp = {m};
        st = mml__kv_each(path, "PROG", bytes, n, mml__prog_kv, &pp);
        if (!st) st = mml__read_arena(ck, path, "ADAM", "m.", m, m->M);
        if (!st) st = mml__read_arena(ck, path, "ADAM", "v.", m, m->V);
        if (!st) st = mml__read_arena(ck, path, "BEST", "", m, m->best);
        if (!st && m->phase != MML_PHASE_ALL && c.adapter != MML_ADAPTER_MOE)
            st = mml__fail(MML_ERR_FORMAT, "%s: phase %d needs the MoE adapter", path, (int)m->phase);
        if (!st && m->phase == MML_PHASE_EXPERT && m->expert < 0)
            st = mml__fail(MML_ERR_FORMAT, "%s: expert phase without an expert", path);
        if (!st) mml__phase_flags(m, m->phase, m->expert);
        if (!st) mml__rows_current(m);
    }
    mml__ckpt_close(ck);
    if (st) {
        mml_model_free(m);
        return st;
    }
    *out = m;
    return MML_OK;
}
