/* Gradient-check helpers shared by test_model.c and test_models.c: finite
 * differences of the mean BCE against the model's backward pass, with kink
 * retries, and exact-zero checks for frozen parameters. Include after
 * moemlora.h (implementation) and mml_test.h.
 *
 * The kink retries accept twice the tolerance, so a gradient a little off
 * everywhere would pass as "all kinks". A real kink is a ReLU input near zero,
 * which moves away when the parameters move: entries taken as kinks are
 * checked again at nearby points, and those still on a kink at every point
 * may be at most 1% of the entries differenced in a configuration. */
#ifndef MML_GRADCHECK_H
#define MML_GRADCHECK_H

static uint64_t trng = 0x7E57C0DEull;
static uint64_t tnext(void) {
    uint64_t z = (trng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double turand(void) { return (double)(tnext() >> 11) * 0x1.0p-53; }
static float tfrand(float a) { return (float)((2.0 * turand() - 1.0) * a); }

static double now_s(void) {
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* Embeddings to O(1) values, adapters' B and c and all biases off zero, so
 * every gradient path carries signal. Glorot-initialised tensors stay. */
static void randomize_params(mml_model_t *m) {
    for (int i = 0; i < m->a.n_params; i++) {
        const mml__param *p = &m->a.t[i];
        float *w = m->P + p->off, a = 0.0f;
        int64_t n = p->size;
        if (p->row_table) {
            a = strncmp(p->name, "linear.", 7) == 0 ? 0.2f : 0.5f;
            n = (p->shape[0] - 1) * p->shape[1]; /* the OOV row stays as it is */
        } else if (strstr(p->name, "lora_B") || strstr(p->name, "lora_c")) {
            a = 0.3f;
        } else if (ends_with(p->name, ".b")) {
            a = 0.1f;
        }
        if (a > 0.0f)
            for (int64_t j = 0; j < n; j++) w[j] = tfrand(a);
    }
}

static void clear_marks(mml_model_t *m) {
    for (int f = 0; f < m->a.F; f++) {
        memset(m->grads.mark[f], 0, (size_t)m->a.t[m->a.field[f].emb].shape[0]);
        m->grads.n_touched[f] = 0;
    }
}
static void zero_grads_all(mml_model_t *m) {
    memset(m->grads.G, 0, (size_t)m->a.n_floats * sizeof(float));
    clear_marks(m);
}

/* Mean BCE of a training-mode forward (same dropout masks as backward). */
static double loss_at(mml_model_t *m, const mml_batch_t *b) {
    mml__pass *ps = mml__train_forward(m, b);
    return m->K->bce_logits(b->n, ps->logit, b->label, 1.0f, NULL) / b->n;
}

static double central(mml_model_t *m, const mml_batch_t *b, float *p, float h) {
    float x = *p, xp = x + h, xm = x - h;
    *p = xp;
    double lp = loss_at(m, b);
    *p = xm;
    double lm = loss_at(m, b);
    *p = x;
    return (lp - lm) / ((double)xp - (double)xm);
}

static int grad_close(double fd, double g) { return fabs(fd - g) <= 1e-2 * fmax(fabs(fd), fabs(g)) + 1e-4; }

/* One-sided difference (dir +1 or -1) over step h. */
static double one_sided(mml_model_t *m, const mml_batch_t *b, float *p, float h, int dir) {
    float x = *p, x1 = dir > 0 ? x + h : x - h;
    double l0 = loss_at(m, b);
    *p = x1;
    double l1 = loss_at(m, b);
    *p = x;
    return (l1 - l0) / ((double)x1 - (double)x);
}

/* Finite difference of entry p against analytic g: central with h, then h/10;
 * an entry that still misses sits on a ReLU kink inside +-h (a pre-activation
 * within h * sensitivity of zero): then the analytic value must be one of the
 * two one-sided derivatives (the loss is smooth on each side of the kink),
 * within twice the tolerance (one-sided differences are first order).
 * Returns 0 (central), 1 (central h/10), 2 (kink: central h/40 or one-sided)
 * or -1 (mismatch). */
static int fd_entry(mml_model_t *m, const mml_batch_t *b, float *p, double g, float h, double *fd) {
    *fd = central(m, b, p, h);
    if (grad_close(*fd, g)) return 0;
    double f2 = central(m, b, p, h / 10);
    if (grad_close(f2, g)) { *fd = f2; return 1; }
    /* xDeepFM's CIN puts hundreds of ReLUs behind one embedding entry: kinks
     * can be denser than h/10, so a last, smaller central step (float noise
     * ~1e-7 / h makes its tolerance twice as wide) */
    double f3 = central(m, b, p, h / 40);
    if (fabs(f3 - g) <= 2e-2 * fmax(fabs(f3), fabs(g)) + 2e-4) { *fd = f3; return 2; }
    for (int k = 0; k < 2; k++) {
        float hs = k ? h : h / 10;
        for (int dir = -1; dir <= 1; dir += 2) {
            double f = one_sided(m, b, p, hs, dir);
            if (fabs(f - g) <= 2e-2 * fmax(fabs(f), fabs(g)) + 2e-4) { *fd = f; return 2; }
        }
    }
    return -1;
}

/* Which expert block entry j of an expert tensor belongs to. */
static int64_t expert_block_of(const mml__param *p, int64_t j) {
    if (p->xlayout == MML__XL_COLS) return (j % p->shape[1]) / p->xblock;
    return j / p->xblock;
}

/* Adapter use the test expects (derived from the config, not from the model). */
typedef struct exp_use { int mode, expert; } exp_use;

static exp_use expected_use(const mml_model_t *m, const mml_batch_t *b) {
    exp_use u = {MML__AD_OFF, -1};
    if (m->cfg.adapter == MML_ADAPTER_MLORA) {
        const int32_t *dom = b->ids ? b->ids[m->a.schema->domain] : b->dom;
        int same = 1;
        for (int i = 1; i < b->n; i++) same &= dom[i] == dom[0];
        u.mode = same ? MML__AD_SINGLE : MML__AD_MIX;
        u.expert = same ? dom[0] : -1;
    } else if (m->cfg.adapter == MML_ADAPTER_MOE) {
        if (m->ph.phase == MML_PHASE_EXPERT) { u.mode = MML__AD_SINGLE; u.expert = m->ph.expert; }
        else if (m->ph.phase != MML_PHASE_BACKBONE) u.mode = MML__AD_MIX;
    }
    return u;
}

/* Can entry j of parameter pi have a nonzero gradient in this pass? */
static int entry_active(const mml_model_t *m, int pi, int64_t j, exp_use u) {
    const mml__param *p = &m->a.t[pi];
    if (!mml__param_trainable(m, pi)) return 0;
    if (p->group == MML__G_EXPERT) {
        if (u.mode == MML__AD_OFF) return 0;
        if (u.mode == MML__AD_SINGLE) return expert_block_of(p, j) == u.expert;
        return 1;
    }
    if (p->group == MML__G_GATE) return u.mode == MML__AD_MIX && m->cfg.adapter == MML_ADAPTER_MOE;
    return 1;
}

/* Embedded field of a row table (embeddings, linear weights, the gate's domain table). */
static int row_field(const mml_model_t *m, int pi) {
    for (int f = 0; f < m->a.F; f++)
        if (pi == m->a.field[f].emb || (m->a.kind->linear && pi == m->a.field[f].lin)) return f;
    return m->a.dom_field; /* gate.emb */
}
/* The table row row i of a one-id field f reads. */
static MML__UNUSED int32_t batch_row(const mml_model_t *m, const mml_batch_t *b, int f, int i) {
    const mml__field *fd = &m->a.field[f];
    int32_t id = mml__batch_ids(b, fd->src)[i];
    return id >= 0 && id < fd->vocab ? id : fd->vocab;
}

/* Segments of a packed tensor, sampled separately so that a small part (CIN's
 * biases, its output weights) is not drowned by a big one. bounds[0..n]. */
static int tensor_segments(const mml_model_t *m, int pi, int64_t *bounds) {
    int n = 0;
    bounds[n++] = 0;
    if (pi == m->a.part[0]) {
        int F = m->a.F, L = MML__CIN_LAYERS;
        for (int h = 0; h < L; h++) {
            mml__cin_layer g = mml__cin_geom(1, F, 1, L, mml__cin_sizes, 1, h);
            if (g.w_off) bounds[n++] = g.w_off;
            bounds[n++] = g.b_off;
        }
        bounds[n++] = (int64_t)mml__cin_param_offset(F, L, mml__cin_sizes, 1, L);
    }
    bounds[n] = m->a.t[pi].size;
    return n;
}

typedef struct gc_stats {
    long fd_checked, fd_failed, zero_checked, zero_failed, retried, kinks, kinks_kept;
} gc_stats;
static gc_stats gc_total;

/* An entry taken as a kink: parameter pi, entry j. */
typedef struct gc_kink { int pi; int64_t j; } gc_kink;

/* Points where the kink entries are looked at again, and the share of the
 * differenced entries that may stay on a kink at all of them. */
#define GC_KINK_LOOKS 2
#define GC_KINK_MAX_SHARE 0.01

/* Analytic gradients of the mean BCE at the current parameters into g. */
static void analytic_grads(mml_model_t *m, const mml_batch_t *b, float *g) {
    zero_grads_all(m);
    mml__train_forward(m, b);
    mml__backward(m, &m->pass, 1.0f / (float)b->n);
    clear_marks(m);
    memcpy(g, m->grads.G, (size_t)m->a.n_floats * sizeof(float));
}

/* Every parameter times 1 + U(-0.1, 0.1): the ReLU inputs move by ~10% of
 * their size, far past a finite-difference step, so a kink that came from one
 * input near zero is gone; a wrong gradient is as wrong here as before. Its
 * own random stream, so the points the callers draw do not depend on how
 * many kinks came before. */
static void nudge_params(mml_model_t *m) {
    static uint64_t nrng = 0x4E0D6E5EEDull;
    for (int64_t i = 0; i < m->a.n_floats; i++) {
        uint64_t z = (nrng += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        m->P[i] *= 1.0f + (float)(0.2 * ((double)((z ^ (z >> 31)) >> 11) * 0x1.0p-53) - 0.1);
    }
}

/* Differences the kink entries k[0..n) again at GC_KINK_LOOKS nudged points
 * (parameters restored afterwards) and keeps in k those on a kink at every
 * point; returns how many. An entry off its finite difference at a nudged
 * point fails as it would at the first. */
static long recheck_kinks(mml_model_t *m, const mml_batch_t *b, gc_kink *k, long n, float h, float *g) {
    float *P0 = (float *)malloc((size_t)m->a.n_floats * sizeof(float));
    if (!P0) abort();
    memcpy(P0, m->P, (size_t)m->a.n_floats * sizeof(float));
    for (int look = 1; look <= GC_KINK_LOOKS && n > 0; look++) {
        nudge_params(m);
        analytic_grads(m, b, g);
        long kept = 0;
        for (long i = 0; i < n; i++) {
            const mml__param *p = &m->a.t[k[i].pi];
            int64_t j = p->off + k[i].j;
            double fd;
            int how = fd_entry(m, b, m->P + j, g[j], h, &fd);
            CHECK(how >= 0, "%s[%lld] at nudged point %d: analytic %.7g, finite difference %.7g", p->name,
                  (long long)k[i].j, look, (double)g[j], fd);
            if (how == 2) k[kept++] = k[i];
        }
        n = kept;
        memcpy(m->P, P0, (size_t)m->a.n_floats * sizeof(float));
    }
    free(P0);
    return n;
}

/* The whole-model gradient check of one configuration. */
static void check_gradients(mml_model_t *m, const mml_batch_t *b, const char *tag, float h) {
    const char *oldctx = mmlt_ctx;
    mmlt_ctx = tag;
    exp_use u = expected_use(m, b);
    zero_grads_all(m);
    mml__train_forward(m, b); /* the pass keeps the batch's ids (used below) */
    CHECK(m->pass.plan.ad_mode == u.mode, "adapter mode %d, expected %d", m->pass.plan.ad_mode, u.mode);
    if (u.mode == MML__AD_SINGLE) CHECK(m->pass.plan.ad_expert == u.expert, "expert %d, expected %d", m->pass.plan.ad_expert, u.expert);
    double lsum = mml__backward(m, &m->pass, 1.0f / (float)b->n);
    clear_marks(m);
    double l0 = loss_at(m, b);
    CHECK(mmlt_close(lsum / b->n, l0, 1e-6, 1e-7), "backward loss %.9g vs forward %.9g", lsum / b->n, l0);
    float *g = (float *)malloc((size_t)m->a.n_floats * sizeof(float));
    int64_t *cand = (int64_t *)malloc((size_t)m->a.n_floats * sizeof(int64_t));
    gc_kink *kinks = (gc_kink *)malloc((size_t)m->a.n_floats * sizeof(gc_kink));
    if (!g || !cand || !kinks) abort();
    memcpy(g, m->grads.G, (size_t)m->a.n_floats * sizeof(float));
    gc_stats st = {0, 0, 0, 0, 0, 0, 0};
    for (int pi = 0; pi < m->a.n_params; pi++) {
        const mml__param *p = &m->a.t[pi];
        const float *gp = g + p->off;
        float *w = m->P + p->off;
        int64_t nc = 0, nzbad = 0, nz = 0;
        unsigned char present[4200];
        if (p->row_table) { /* the rows the batch reads (its ids as the pass loaded them) */
            int f = row_field(m, pi);
            const int32_t *ids = m->pass.loaded.ids[f];
            memset(present, 0, sizeof present);
            for (int64_t i = 0; i < (int64_t)b->n * m->a.field[f].len; i++)
                if (ids[i] >= 0) present[ids[i]] = 1;
        }
        for (int64_t j = 0; j < p->size; j++) {
            int act = entry_active(m, pi, j, u);
            if (act && p->row_table) act = present[j / p->shape[1]];
            if (act) cand[nc++] = j;
            else { nz++; nzbad += gp[j] != 0.0f; }
        }
        CHECK(nzbad == 0, "%s: %lld of %lld entries that must have zero gradient are nonzero", p->name,
              (long long)nzbad, (long long)nz);
        st.zero_checked += nz;
        st.zero_failed += nzbad;
        /* entries to difference: all if few, else per segment random ones +
         * the largest |g| */
        int64_t sel[192], ns = 0;
        int64_t *list = cand, nl = nc;
        if (nc > 256 && !p->row_table) {
            int64_t bounds[16];
            int nseg = tensor_segments(m, pi, bounds);
            int nrand = nseg > 1 ? 16 : 24, ntop = nseg > 1 ? 6 : 8;
            int64_t c0 = 0;
            for (int sg = 0; sg < nseg; sg++) {
                int64_t c1 = c0;
                while (c1 < nc && cand[c1] < bounds[sg + 1]) c1++;
                int64_t cn = c1 - c0;
                if (cn <= nrand + ntop) {
                    for (int64_t c = c0; c < c1; c++) sel[ns++] = cand[c];
                } else {
                    int64_t s0 = ns;
                    for (int s = 0; s < nrand; s++) sel[ns++] = cand[c0 + (int64_t)(tnext() % (uint64_t)cn)];
                    for (int t = 0; t < ntop; t++) {
                        int64_t best = -1;
                        for (int64_t c = c0; c < c1; c++) {
                            int64_t j = cand[c], dup = 0;
                            for (int64_t q = s0; q < ns; q++) dup |= sel[q] == j;
                            if (!dup && (best < 0 || fabsf(gp[j]) > fabsf(gp[best]))) best = j;
                        }
                        if (best >= 0) sel[ns++] = best;
                    }
                }
                c0 = c1;
            }
            list = sel;
            nl = ns;
        }
        int bad = 0;
        for (int64_t c = 0; c < nl; c++) {
            int64_t j = list[c];
            double fd;
            int how = fd_entry(m, b, w + j, gp[j], h, &fd), ok = how >= 0;
            st.retried += how == 1;
            if (how == 2) kinks[st.kinks++] = (gc_kink){pi, j};
            if (!ok) {
                bad++;
                if (bad <= 3)
                    fprintf(stderr, "  [%s] %s[%lld]: analytic %.7g, finite difference %.7g\n", tag, p->name,
                            (long long)j, (double)gp[j], fd);
            }
        }
        st.fd_checked += nl;
        st.fd_failed += bad;
        CHECK(bad == 0, "%s: %d of %lld entries off the finite difference", p->name, bad, (long long)nl);
    }
    st.kinks_kept = recheck_kinks(m, b, kinks, st.kinks, h, g);
    int kinks_ok = st.kinks_kept <= GC_KINK_MAX_SHARE * st.fd_checked;
    for (long i = 0; !kinks_ok && i < st.kinks_kept && i < 3; i++)
        fprintf(stderr, "  [%s] %s[%lld]: on a kink at every point\n", tag, m->a.t[kinks[i].pi].name,
                (long long)kinks[i].j);
    CHECK(kinks_ok,
          "%ld of %ld entries differenced are on a kink at all of %d points (at most %g%%)", st.kinks_kept,
          st.fd_checked, GC_KINK_LOOKS + 1, 100 * GC_KINK_MAX_SHARE);
    printf("  %-26s %5ld differenced (%3ld at h/10, %2ld on kinks, %ld at every point, %ld failed), %5ld exact zeros "
           "(%ld failed)\n",
           tag, st.fd_checked, st.retried, st.kinks, st.kinks_kept, st.fd_failed, st.zero_checked, st.zero_failed);
    gc_total.fd_checked += st.fd_checked;
    gc_total.fd_failed += st.fd_failed;
    gc_total.zero_checked += st.zero_checked;
    gc_total.zero_failed += st.zero_failed;
    gc_total.retried += st.retried;
    gc_total.kinks += st.kinks;
    gc_total.kinks_kept += st.kinks_kept;
    free(g);
    free(cand);
    free(kinks);
    zero_grads_all(m);
    mmlt_ctx = oldctx;
}

/* The line that sums every check_gradients call since the start, t0. */
static void gc_print_total(double t0) {
    printf("  total: %ld entries differenced (%ld at h/10, %ld on kinks, %ld at every point), %ld failed; "
           "%ld exact zeros, %ld failed (%.2f s)\n",
           gc_total.fd_checked, gc_total.retried, gc_total.kinks, gc_total.kinks_kept, gc_total.fd_failed,
           gc_total.zero_checked, gc_total.zero_failed, now_s() - t0);
}

#endif
