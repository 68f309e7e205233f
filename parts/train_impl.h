// >>metrics ----------------------------------------------------------------

typedef struct mml__scored { float s, y; } mml__scored;

static int mml__cmp_scored(const void *a, const void *b) {
    float x = ((const mml__scored *)a)->s, y = ((const mml__scored *)b)->s;
    return (x > y) - (x < y);
}

double mml_auc(int64_t n, const float *score, const float *label) {
    if (n <= 0) return NAN;
    mml__scored *v = (mml__scored *)mml__alloc((size_t)n * sizeof *v);
    if (!v) return NAN;
    int64_t npos = 0;
    for (int64_t i = 0; i < n; i++) {
        v[i].s = score[i] != score[i] ? 0.0f : score[i]; /* NaN scores rank as 0 */
        v[i].y = label[i];
        npos += label[i] > 0.5f;
    }
    int64_t nneg = n - npos;
    if (npos == 0 || nneg == 0) { mml__free(v); return NAN; }
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
    return (rank_sum - 0.5 * (double)npos * (double)(npos + 1)) / ((double)npos * (double)nneg);
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
    int nd = mt->n_domains < MML_METRICS_MAX_DOMAINS ? mt->n_domains : MML_METRICS_MAX_DOMAINS;
    for (int d = 0; d < nd; d++) {
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
static mml_status mml__predict_rows(mml_model_t *m, const mml_split_t *s, int64_t a, int64_t b, float *prob) {
    for (int64_t i = a; i < b; i += m->cfg.max_batch) {
        int n = (int)(b - i < m->cfg.max_batch ? b - i : m->cfg.max_batch);
        mml_batch_t c = {n, s->uid + i, s->pid + i, s->dom + i, NULL};
        mml_status st = mml_predict(m, &c, prob + (i - a));
        if (st) return st;
    }
    return MML_OK;
}

mml_status mml_evaluate(mml_model_t *m, const mml_split_t *s, int32_t n_domains, mml_metrics_t *out) {
    memset(out, 0, sizeof *out);
    out->n_domains = n_domains;
    if (s->n <= 0) return mml__fail(MML_ERR_ARG, "evaluate: empty split");
    float *prob = (float *)mml__alloc((size_t)s->n * sizeof(float));
    if (!prob) return mml__fail(MML_ERR_NOMEM, "evaluate: out of memory");
    double ll = 0.0;
    for (int d = 0; d < n_domains; d++) {
        int64_t a = s->dom_start[d], b = s->dom_start[d + 1];
        double auc = NAN, l = NAN;
        if (b > a) {
            mml_status st = mml__predict_rows(m, s, a, b, prob + a);
            if (st) { mml__free(prob); return st; }
            auc = mml_auc(b - a, prob + a, s->label + a);
            l = mml_logloss(b - a, prob + a, s->label + a);
            ll += l * (double)(b - a);
        }
        if (d < MML_METRICS_MAX_DOMAINS) { out->n[d] = b - a; out->auc[d] = auc; out->logloss[d] = l; }
    }
    out->n_all = s->n;
    out->logloss_all = ll / (double)s->n;
    mml__free(prob);
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
    int64_t *perm;
    int32_t *bu, *bp, *bd;
    float *bl;
    int32_t *dorder;
} mml__fit;

static void mml__emit(const mml__fit *f, mml_progress_t *p) {
    if (f->o->progress) f->o->progress(p, f->o->user);
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
            for (int j = 0; j < bn; j++) {
                int64_t r = f->perm[i + j];
                f->bu[j] = s->uid[r]; f->bp[j] = s->pid[r]; f->bd[j] = s->dom[r]; f->bl[j] = s->label[r];
            }
            mml_batch_t b = {bn, f->bu, f->bp, f->bd, f->bl};
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

static mml_status mml__val_score(mml__fit *f, int only_domain, double *score) {
    mml_metrics_t mt;
    mml_status st;
    if (only_domain >= 0) {
        const mml_split_t *s = &f->d->split[MML_VAL];
        int64_t a = s->dom_start[only_domain], b = s->dom_start[only_domain + 1];
        if (b <= a) { *score = NAN; return MML_OK; }
        float *prob = (float *)mml__alloc((size_t)(b - a) * sizeof(float));
        if (!prob) return mml__fail(MML_ERR_NOMEM, "out of memory");
        st = mml__predict_rows(f->m, s, a, b, prob);
        *score = st ? NAN : mml_auc(b - a, prob, s->label + a);
        mml__free(prob);
        return st;
    }
    st = mml_evaluate(f->m, &f->d->split[MML_VAL], f->d->n_domains, &mt);
    *score = mt.mean_auc;
    return st;
}

/* The stages of the adapter's schedule: one phase, or MoE's backbone, one
 * stage per expert and the gate. */
static int mml__n_stages(const mml_model_t *m) {
    return m->cfg.adapter == MML_ADAPTER_MOE ? m->n_experts + 2 : 1;
}

static void mml__stage_info(const mml_model_t *m, int s, const char **name, mml_phase *ph, int *expert) {
    *expert = -1;
    if (m->cfg.adapter != MML_ADAPTER_MOE) {
        *name = m->cfg.adapter == MML_ADAPTER_NONE ? "base" : "mlora";
        *ph = MML_PHASE_ALL;
    } else if (s == 0) {
        *name = "backbone";
        *ph = MML_PHASE_BACKBONE;
    } else if (s <= m->n_experts) {
        *name = "expert";
        *ph = MML_PHASE_EXPERT;
        *expert = s - 1;
    } else {
        *name = "gate";
        *ph = MML_PHASE_GATE;
    }
}

/* Trains one stage with early stopping from wherever m->fs says it stands;
 * the best parameters are restored at its end. */
static mml_status mml__run_stage(mml__fit *f, int s) {
    mml_model_t *m = f->m;
    mml__fit_state *fs = &m->fs;
    const char *name;
    mml_phase phase;
    int expert;
    mml__stage_info(m, s, &name, &phase, &expert);
    int only_domain = expert >= 0 ? expert % f->d->n_domains : -1;
    size_t bytes = (size_t)m->n_floats * sizeof(float);
    mml_status st;
    if (fs->epoch == 0) {
        st = mml_model_set_phase(m, phase, expert);
        if (st) return st;
        mml__catch_up_all(m);
        memcpy(m->best, m->P, bytes);
        fs->best = -1.0;
        fs->bad = 0;
    } else {
        mml__phase_flags(m, phase, expert); /* resumed: keep the optimizer state */
    }
    mml_progress_t pr;
    memset(&pr, 0, sizeof pr);
    pr.phase_name = name;
    pr.expert = expert;
    while (fs->epoch < f->o->max_epochs && fs->bad < f->o->patience) {
        pr.epoch = fs->epoch + 1;
        st = mml__epoch(f, &pr, only_domain);
        if (st) return st;
        double v;
        st = mml__val_score(f, only_domain, &v);
        if (st) return st;
        pr.event = MML_EV_EPOCH_END;
        pr.val_auc = v;
        pr.improved = v == v && v > fs->best;
        if (pr.improved) {
            fs->best = v;
            fs->bad = 0;
            mml__catch_up_all(m);
            memcpy(m->best, m->P, bytes);
        } else {
            fs->bad++;
        }
        fs->epoch++;
        fs->rng = f->rng;
        mml__emit(f, &pr);
        if (f->o->checkpoint_path) {
            st = mml_model_save(m, f->o->checkpoint_path);
            if (st) return st;
        }
    }
    memcpy(m->P, m->best, bytes);
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

static mml_status mml__check_data(const mml_model_t *m, const mml_data_t *d) {
    const mml_config_t *c = &m->cfg;
    if (d->n_users > c->n_users || d->n_items > c->n_items || d->n_domains != c->n_domains)
        return mml__fail(MML_ERR_ARG, "data (users %d, items %d, domains %d) does not fit the model (%d, %d, %d)",
                         d->n_users, d->n_items, d->n_domains, c->n_users, c->n_items, c->n_domains);
    for (int k = 0; k < 3; k++)
        if (d->split[k].n <= 0)
            return mml__fail(MML_ERR_ARG, "data: the %s split is empty", k == 0 ? "train" : k == 1 ? "val" : "test");
    return MML_OK;
}

mml_status mml_fit(mml_model_t *m, const mml_data_t *d, const mml_fit_opts_t *o, mml_metrics_t *test) {
    mml_status st = mml__check_data(m, d);
    if (st) return st;
    if (o->batch < 1 || o->batch > m->cfg.max_batch)
        return mml__fail(MML_ERR_ARG, "fit: batch %d outside 1..max_batch %d", o->batch, m->cfg.max_batch);
    if (o->max_epochs < 1 || o->patience < 1) return mml__fail(MML_ERR_ARG, "fit: max_epochs and patience must be >= 1");
    if (m->cfg.pretrained) {
        if (!d->user_emb || !d->item_emb) return mml__fail(MML_ERR_ARG, "fit: pretrained model but the data has no embeddings");
        st = mml_model_set_pretrained(m, d->user_emb, d->item_emb, d->pretrained_dim);
        if (st) return st;
    }
    mml__fit f;
    memset(&f, 0, sizeof f);
    f.m = m; f.d = d; f.o = o;
    int64_t maxdom = 0;
    const mml_split_t *tr = &d->split[MML_TRAIN];
    for (int k = 0; k < d->n_domains; k++)
        if (tr->dom_start[k + 1] - tr->dom_start[k] > maxdom) maxdom = tr->dom_start[k + 1] - tr->dom_start[k];
    f.perm = (int64_t *)mml__alloc((size_t)(maxdom + 1) * sizeof(int64_t));
    f.bu = (int32_t *)mml__alloc((size_t)o->batch * 4);
    f.bp = (int32_t *)mml__alloc((size_t)o->batch * 4);
    f.bd = (int32_t *)mml__alloc((size_t)o->batch * 4);
    f.bl = (float *)mml__alloc((size_t)o->batch * 4);
    f.dorder = (int32_t *)mml__alloc((size_t)d->n_domains * 4);
    if (!f.perm || !f.bu || !f.bp || !f.bd || !f.bl || !f.dorder) {
        st = mml__fail(MML_ERR_NOMEM, "fit: out of memory");
        goto done;
    }
    if (!m->fs.active) {
        memset(&m->fs, 0, sizeof m->fs);
        m->fs.active = 1;
        m->fs.rng = o->seed ^ 0x5EEDull;
    }
    f.rng = m->fs.rng;
    for (int s = m->fs.stage; !st && s < mml__n_stages(m); s++) {
        const char *name;
        mml_phase ph;
        int expert;
        mml__stage_info(m, s, &name, &ph, &expert);
        int skip = expert >= 0 && tr->dom_start[expert % d->n_domains + 1] == tr->dom_start[expert % d->n_domains];
        if (!skip) st = mml__run_stage(&f, s); /* an expert without data stays zero */
        if (st) break;
        m->fs.stage = s + 1;
        m->fs.epoch = 0;
        if (ph != MML_PHASE_EXPERT) st = mml__phase_end(&f, name, test);
    }
    if (!st) m->fs.active = 0;
done:
    mml__free(f.perm); mml__free(f.bu); mml__free(f.bp); mml__free(f.bd); mml__free(f.bl); mml__free(f.dorder);
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

mml_status mml_data_synthetic(const mml_synth_config_t *c, mml_data_t *out) {
    memset(out, 0, sizeof *out);
    if (c->n_domains < 1 || c->n_domains > 4096 || c->n_users < c->n_domains || c->n_items < 2 ||
        c->n_samples < 10 * (int64_t)c->n_domains || c->n_samples > ((int64_t)1 << 33) ||
        !(c->ctr > 0.0f && c->ctr < 1.0f))
        return mml__fail(MML_ERR_ARG, "synthetic: bad sizes (domains %d, users %d, items %d, samples %lld, ctr %g)",
                         c->n_domains, c->n_users, c->n_items, (long long)c->n_samples, (double)c->ctr);
    const int H = MML__SYN_H;
    int nd = c->n_domains, nu = c->n_users, ni = c->n_items;
    int64_t n = c->n_samples;
    uint64_t rng = c->seed;
    float *U = (float *)mml__alloc((size_t)nu * H * 4), *V = (float *)mml__alloc((size_t)ni * H * 4);
    float *Q = (float *)mml__alloc((size_t)nd * H * H * 4), *dq = (float *)mml__alloc((size_t)nd * H * 4);
    double *pop = (double *)mml__alloc((size_t)ni * 8);
    int32_t *udom = (int32_t *)mml__alloc((size_t)nu * 4);
    int32_t *uid = (int32_t *)mml__alloc((size_t)n * 4), *pid = (int32_t *)mml__alloc((size_t)n * 4);
    int32_t *dom = (int32_t *)mml__alloc((size_t)n * 4);
    float *lab = (float *)mml__alloc((size_t)n * 4), *lg = (float *)mml__alloc((size_t)n * 4);
    mml_status st = MML_OK;
    if (!U || !V || !Q || !dq || !pop || !udom || !uid || !pid || !dom || !lab || !lg) {
        st = mml__fail(MML_ERR_NOMEM, "synthetic: out of memory");
        goto done;
    }
    {
        const float sc = 1.0f / sqrtf((float)H);
        for (int64_t i = 0; i < (int64_t)nu * H; i++) U[i] = mml__rng_normal(&rng);
        for (int64_t i = 0; i < (int64_t)ni * H; i++) V[i] = mml__rng_normal(&rng);
        for (int64_t i = 0; i < (int64_t)nd * H * H; i++) Q[i] = mml__rng_normal(&rng) * sc;
        for (int64_t i = 0; i < (int64_t)nd * H; i++) dq[i] = mml__rng_normal(&rng);
        /* users to domains with sizes ~ (d+1)^-skew */
        double wsum = 0.0;
        for (int d = 0; d < nd; d++) wsum += pow(d + 1.0, -c->domain_skew);
        for (int u = 0; u < nu; u++) {
            if (u < nd) { udom[u] = u; continue; } /* every domain has a user */
            double x = mml__rng_uniform(&rng) * wsum, acc = 0.0;
            int d = 0;
            for (; d < nd - 1; d++) { acc += pow(d + 1.0, -c->domain_skew); if (x < acc) break; }
            udom[u] = d;
        }
        /* Zipf item popularity, cumulative for sampling */
        double ps = 0.0;
        for (int i = 0; i < ni; i++) { ps += pow(i + 1.0, -c->item_zipf); pop[i] = ps; }
        for (int64_t s = 0; s < n; s++) {
            int u = (int)mml__rng_below(&rng, (uint64_t)nu);
            double x = mml__rng_uniform(&rng) * ps;
            int lo = 0, hi = ni - 1;
            while (lo < hi) { int mid = (lo + hi) / 2; if (pop[mid] < x) lo = mid + 1; else hi = mid; }
            int it = (int)(((int64_t)lo * 7919) % ni); /* popularity unrelated to item id */
            int d = udom[u];
            const float *uu = U + (int64_t)u * H, *vv = V + (int64_t)it * H, *q = Q + (int64_t)d * H * H;
            double shared = 0.0, spec = 0.0, pref = 0.0;
            for (int a = 0; a < H; a++) {
                shared += uu[a] * vv[a];
                double qv = 0.0;
                for (int b2 = 0; b2 < H; b2++) qv += q[a * H + b2] * vv[b2];
                spec += uu[a] * qv;
                pref += dq[(int64_t)d * H + a] * vv[a];
            }
            /* shared affinity + domain-specific affinity and item taste of the domain */
            double z = shared / sqrt((double)H) + c->domain_signal * (0.5 * spec / sqrt((double)H) + pref / sqrt((double)H)) +
                       c->noise * mml__rng_normal(&rng);
            uid[s] = u; pid[s] = it; dom[s] = d; lg[s] = (float)z;
        }
        /* calibrate the intercept to the target CTR, then draw labels */
        double lo = -20, hi = 20;
        for (int itn = 0; itn < 50; itn++) {
            double mid = 0.5 * (lo + hi), sum = 0.0;
            for (int64_t s = 0; s < n; s += 7) sum += 1.0 / (1.0 + exp(-(lg[s] + mid)));
            double mean = sum / (double)((n + 6) / 7);
            if (mean < c->ctr) lo = mid; else hi = mid;
        }
        double b0 = 0.5 * (lo + hi);
        for (int64_t s = 0; s < n; s++) lab[s] = mml__rng_uniform(&rng) < 1.0 / (1.0 + exp(-(lg[s] + b0))) ? 1.0f : 0.0f;
        st = mml_data_split(n, uid, pid, dom, lab, nu, ni, nd, c->seed + 1, out);
        if (!st && !out->domain_names) {
            out->domain_names = (char **)mml__alloc((size_t)nd * sizeof(char *));
            for (int d = 0; out->domain_names && d < nd; d++) {
                out->domain_names[d] = (char *)mml__alloc(16);
                if (out->domain_names[d]) snprintf(out->domain_names[d], 16, "syn%d", d);
            }
        }
    }
done:
    mml__free(U); mml__free(V); mml__free(Q); mml__free(dq); mml__free(pop); mml__free(udom);
    mml__free(uid); mml__free(pid); mml__free(dom); mml__free(lab); mml__free(lg);
    return st;
}
