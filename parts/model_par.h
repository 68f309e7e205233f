// >>threads ----------------------------------------------------------------

/* Data parallelism inside one step: the batch is cut into contiguous row
 * ranges, each worker runs forward and backward on its range in a view of the
 * model (shared parameters, own activations and gradients), the gradients are
 * summed in a fixed order and one Adam step follows. Results depend on the
 * thread count only through that summation order, so a fixed thread count is
 * deterministic. */

#include <pthread.h>

typedef struct mml__pool_arg { struct mml__pool *p; int idx; } mml__pool_arg;

typedef struct mml__pool {
    int n;                   /* worker threads (the caller is worker 0) */
    mml__pool_arg args[255];
    pthread_t th[255];
    pthread_mutex_t mu;
    pthread_cond_t start, done;
    uint64_t gen;
    int pending, stop;
    void (*fn)(void *arg, int worker);
    void *arg;
} mml__pool;


static void *mml__pool_main(void *a) {
    mml__pool_arg *pa = (mml__pool_arg *)a;
    mml__pool *p = pa->p;
    uint64_t seen = 0;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (p->gen == seen && !p->stop) pthread_cond_wait(&p->start, &p->mu);
        if (p->stop) { pthread_mutex_unlock(&p->mu); return NULL; }
        seen = p->gen;
        pthread_mutex_unlock(&p->mu);
        p->fn(p->arg, pa->idx);
        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0) pthread_cond_signal(&p->done);
        pthread_mutex_unlock(&p->mu);
    }
}

/* Runs fn(arg, i) for i = 0..n (0 on the calling thread) and waits for all. */
static void mml__pool_run(mml__pool *p, void (*fn)(void *, int), void *arg) {
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->arg = arg;
    p->pending = p->n;
    p->gen++;
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mu);
    fn(arg, 0);
    pthread_mutex_lock(&p->mu);
    while (p->pending > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

static void mml__pool_free(mml__pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
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
        p->args[i].p = p;
        p->args[i].idx = i + 1;
        if (pthread_create(&p->th[i], NULL, mml__pool_main, &p->args[i]) != 0) break;
        p->n++;
    }
    if (p->n != workers) {
        mml__pool_free(p);
        return NULL;
    }
    return p;
}

/* A view shares everything read-only with its parent and owns activations
 * (and, for training workers, a gradient arena). */
static void mml__view_free(mml_model_t *v) {
    mml__free(v->act_block);
    for (int f = 0; f < 3; f++) { mml__free(v->ids[f]); mml__free(v->touched[f]); mml__free(v->mark[f]); }
    mml__free(v->G);
}

static mml_status mml__view_init(mml_model_t *v, const mml_model_t *m, int with_grads) {
    memcpy(v, m, sizeof *v);
    v->act_block = NULL;
    v->G = NULL;
    v->pool = NULL;
    v->views = NULL;
    v->fold = NULL;
    v->fold_ok = 0;
    for (int f = 0; f < 3; f++) v->ids[f] = v->touched[f] = NULL, v->mark[f] = NULL, v->n_touched[f] = 0;
    mml_status st = mml__alloc_acts(v);
    if (!st && with_grads) {
        v->G = (float *)mml__alloc((size_t)m->n_floats * sizeof(float));
        if (!v->G) st = mml__fail(MML_ERR_NOMEM, "cannot allocate worker gradients");
    }
    if (st) mml__view_free(v);
    return st;
}

/* The state a pass depends on, copied from the parent before each use. */
static void mml__view_sync(mml_model_t *v, const mml_model_t *m) {
    v->phase = m->phase;
    v->expert = m->expert;
    memcpy(v->trainable, m->trainable, sizeof v->trainable);
    v->steps = m->steps;
    v->force_mix = m->force_mix;
    v->fold = m->fold;
    v->fold_ok = m->fold_ok;
}

static void mml__threads_free(mml_model_t *m) {
    mml__pool_free(m->pool);
    if (m->views) {
        for (int i = 0; i < m->cfg.threads - 1; i++) mml__view_free(&m->views[i]);
        MOEMLORA_FREE(m->views);
    }
    m->pool = NULL;
    m->views = NULL;
}

static mml_status mml__threads_init(mml_model_t *m) {
    int w = m->cfg.threads - 1;
    if (w <= 0) return MML_OK;
    m->views = (mml_model_t *)MOEMLORA_MALLOC(sizeof(mml_model_t) * (size_t)w);
    if (!m->views) return mml__fail(MML_ERR_NOMEM, "cannot allocate thread views");
    for (int i = 0; i < w; i++) {
        mml_status st = mml__view_init(&m->views[i], m, 1);
        if (st) {
            for (int j = 0; j < i; j++) mml__view_free(&m->views[j]);
            MOEMLORA_FREE(m->views);
            m->views = NULL;
            return st;
        }
    }
    m->pool = mml__pool_new(w);
    if (!m->pool) {
        mml__threads_free(m);
        return mml__fail(MML_ERR_NOMEM, "cannot start %d worker threads", w);
    }
    return MML_OK;
}

typedef struct mml__job {
    mml_model_t *m;
    const mml_batch_t *b;
    float *prob;             /* predict */
    int train;
    double loss[256];
} mml__job;

static mml_model_t *mml__worker_model(mml_model_t *m, int i) { return i == 0 ? m : &m->views[i - 1]; }

/* Rows [lo, hi) of worker i out of t: equal contiguous shares. */
static void mml__share(int n, int t, int i, int *lo, int *hi) {
    *lo = (int)((int64_t)n * i / t);
    *hi = (int)((int64_t)n * (i + 1) / t);
}

static void mml__job_run(void *arg, int i) {
    mml__job *j = (mml__job *)arg;
    mml_model_t *m = j->m, *w = mml__worker_model(m, i);
    int lo, hi;
    mml__share(j->b->n, m->cfg.threads, i, &lo, &hi);
    j->loss[i] = 0.0;
    if (hi <= lo) return;
    if (w != m) mml__view_sync(w, m);
    w->row0 = lo;
    mml_batch_t c = {hi - lo, j->b->uid + lo, j->b->pid + lo, j->b->dom + lo, j->b->label ? j->b->label + lo : NULL};
    mml__forward(w, c.n, &c, j->train);
    if (j->train) j->loss[i] = mml__backward_scaled(w, c.n, c.label, 1.0f / (float)j->b->n);
    else memcpy(j->prob + lo, w->prob, (size_t)c.n * sizeof(float));
    w->row0 = 0;
}

/* Adds a worker's gradients into the parent's and clears the worker's. */
static void mml__reduce_grads(mml_model_t *m, mml_model_t *w) {
    const mml_kernels_t *K = m->K;
    for (int i = 0; i < m->n_params; i++) {
        mml__param *p = &m->params[i];
        if (p->row_table && p->group == MML__G_EMB) continue;
        if (!mml__param_trainable(m, i)) continue;
        K->axpy(p->size, 1.0f, w->G + p->off, m->G + p->off);
        memset(w->G + p->off, 0, (size_t)p->size * sizeof(float));
    }
    for (int f = 0; f < 3; f++) {
        mml__param *p = &m->params[m->p_emb[f]];
        int64_t d = p->shape[1];
        for (int j = 0; j < w->n_touched[f]; j++) {
            int32_t id = w->touched[f][j];
            K->axpy(d, 1.0f, w->G + p->off + id * d, m->G + p->off + id * d);
            memset(w->G + p->off + id * d, 0, (size_t)d * sizeof(float));
            w->mark[f][id] = 0;
            if (!m->mark[f][id]) { m->mark[f][id] = 1; m->touched[f][m->n_touched[f]++] = id; }
        }
        w->n_touched[f] = 0;
    }
}

/* MLoRA: a batch that mixes domains must use the mixed path on every worker,
 * even where a worker's rows happen to share one domain. */
static int mml__batch_mixed(const mml_batch_t *b) {
    for (int i = 1; i < b->n; i++)
        if (b->dom[i] != b->dom[0]) return 1;
    return 0;
}

static double mml__parallel_train(mml_model_t *m, const mml_batch_t *b) {
    mml__job j;
    j.m = m;
    j.b = b;
    j.prob = NULL;
    j.train = 1;
    m->force_mix = m->cfg.adapter == MML_ADAPTER_MLORA && mml__batch_mixed(b);
    mml__pool_run(m->pool, mml__job_run, &j);
    double loss = 0.0;
    for (int i = 0; i < m->cfg.threads; i++) loss += j.loss[i];
    for (int i = 1; i < m->cfg.threads; i++) mml__reduce_grads(m, &m->views[i - 1]);
    m->force_mix = 0;
    return loss;
}

static void mml__parallel_predict(mml_model_t *m, const mml_batch_t *b, float *prob) {
    mml__job j;
    j.m = m;
    j.b = b;
    j.prob = prob;
    j.train = 0;
    m->force_mix = m->cfg.adapter == MML_ADAPTER_MLORA && mml__batch_mixed(b);
    mml__pool_run(m->pool, mml__job_run, &j);
    m->force_mix = 0;
}

// >>sessions ---------------------------------------------------------------

struct mml_session_t {
    mml_model_t view;
    const mml_model_t *parent;
};

mml_status mml_session_create(const mml_model_t *m, mml_session_t **out) {
    *out = NULL;
    mml_session_t *s = (mml_session_t *)MOEMLORA_MALLOC(sizeof *s);
    if (!s) return mml__fail(MML_ERR_NOMEM, "cannot allocate a session");
    mml__catch_up_all((mml_model_t *)m); /* sessions only read the parameters */
    mml_status st = mml__view_init(&s->view, m, 0);
    if (st) { MOEMLORA_FREE(s); return st; }
    s->view.cfg.threads = 1;
    s->parent = m;
    *out = s;
    return MML_OK;
}

void mml_session_free(mml_session_t *s) {
    if (!s) return;
    mml__view_free(&s->view);
    MOEMLORA_FREE(s);
}

mml_status mml_session_predict(mml_session_t *s, const mml_batch_t *b, float *prob) {
    mml_status st = mml__check_batch(&s->view, b, 0);
    if (st) return st;
    mml__view_sync(&s->view, s->parent);
    mml_model_t *v = &s->view;
    for (int i = 0; i < b->n; i += v->cfg.max_batch) {
        int n = b->n - i < v->cfg.max_batch ? b->n - i : v->cfg.max_batch;
        mml_batch_t c = {n, b->uid + i, b->pid + i, b->dom + i, NULL};
        v->force_mix = v->cfg.adapter == MML_ADAPTER_MLORA && mml__batch_mixed(&c);
        mml__forward(v, n, &c, 0);
        memcpy(prob + i, v->prob, (size_t)n * sizeof(float));
    }
    v->force_mix = 0;
    return MML_OK;
}
