/* End to end on real and Taobao-shaped data, one case per run
 * (test_e2e CASE; ctest registers each case as its own test, so a case whose
 * data is missing shows as skipped while the others pass or fail):
 *   - ml-100k: MovieLens-100K (the ml-100k folder of the real data sets):
 *     prepare by gender / age / occupation, write the split folders, load them
 *     back, train base, MLoRA and MoE-MLoRA for a few epochs; every run must
 *     beat AUC 0.6 on the test split;
 *   - ml-1m: MovieLens-1M (ml-1m, ratings without timestamps; skipped in quick
 *     mode): prepare by gender (exactly 2 domains), train MoE-MLoRA for 2
 *     epochs per phase; weighted AUC above 0.75 (the paper's runs reach about
 *     0.80);
 *   - taobao: a synthetic raw Taobao set written by the recipes' generator
 *     (examples/mml_recipes.h): prepare (pretrained embeddings), train
 *     MoE-MLoRA; the pretrained user and item embeddings must come out
 *     unchanged (frozen) and the AUC be defined.
 * Without an argument every case runs. Exit: 1 if a check failed, else 77
 * (skipped) if a case lacked its data, else 0. The real data sets are looked
 * for as mml_test.h says (MOEMLORA_DATA_DIR, else ../shared/data). */
#define MOEMLORA_IMPLEMENTATION
#include "../moemlora.h"
#include "../examples/mml_recipes.h"
#include "mml_test.h"

#include <stdlib.h>
#include <unistd.h>

static int quick;

static double fit_wauc(const mml_data_t *d, mml_adapter a, int epochs, int pretrained) {
    mml_config_t c;
    mml_config_default(&c);
    c.adapter = a;
    c.n_users = d->n_users;
    c.n_items = d->n_items;
    c.n_domains = d->n_domains;
    if (pretrained) {
        c.pretrained = 1;
        c.emb_dim = d->pretrained_dim;
    }
    if (quick) { c.hidden[0] = 32; c.hidden[1] = 16; c.hidden[2] = 8; }
    mml_model_t *m;
    mml_metrics_t t;
    memset(&t, 0, sizeof t);
    CHECK_OK(mml_model_create(&c, &m));
    if (!m) return NAN;
    mml_fit_opts_t o;
    mml_fit_opts_default(&o);
    o.max_epochs = epochs;
    CHECK_OK(mml_fit(m, d, &o, &t));
    if (pretrained) {
        const float *u = m->P + m->a.t[m->a.field[0].emb].off, *it = m->P + m->a.t[m->a.field[1].emb].off;
        CHECK(memcmp(u, d->user_emb, (size_t)d->n_users * d->pretrained_dim * sizeof(float)) == 0,
              "pretrained user embeddings changed during training");
        CHECK(memcmp(it, d->item_emb, (size_t)d->n_items * d->pretrained_dim * sizeof(float)) == 0,
              "pretrained item embeddings changed during training");
    }
    mml_model_free(m);
    return t.weighted_auc;
}

/* Each case returns 0 when it ran (its checks counted), MMLT_SKIP when its
 * data is missing. */
static int test_movielens(void) {
    char raw[1100];
    if (!mmlt_real_data("ml-100k", "u.data", "the MovieLens-100K end-to-end run", raw, sizeof raw)) return MMLT_SKIP;
    static const char *kinds[3] = {"gender", "age", "occupation"};
    static const mml_adapter ads[3] = {MML_ADAPTER_NONE, MML_ADAPTER_MLORA, MML_ADAPTER_MOE};
    for (int k = 0; k < (quick ? 1 : 3); k++) {
        mmlt_ctx = kinds[k];
        char dir[] = "/tmp/mml_e2e_XXXXXX";
        int made = mkdtemp(dir) != NULL;
        CHECK(made, "mkdtemp");
        if (!made) continue;
        mml_data_t raw_d, d;
        memset(&d, 0, sizeof d);
        CHECK_OK(mmlr_movielens_load(raw, kinds[k], 123, &raw_d));
        CHECK_OK(mml_data_save_dir(&raw_d, dir));
        CHECK_OK(mml_data_load(dir, &d));
        CHECK(d.split[0].n == raw_d.split[0].n && d.n_domains == raw_d.n_domains, "reloaded split differs");
        for (int a = quick ? 2 : 0; a < 3 && d.split[0].n > 0; a++) {
            double w = fit_wauc(&d, ads[a], quick ? 1 : 3, 0);
            printf("ml-100k %-10s %-5s weighted AUC %.4f\n", kinds[k], mml_adapter_name(ads[a]), w);
            CHECK(w > (quick ? 0.55 : 0.6), "%s: weighted AUC %.4f too low", mml_adapter_name(ads[a]), w);
        }
        mml_data_free(&raw_d);
        mml_data_free(&d);
        mmlt_rm_tree(dir);
    }
    return 0;
}

static int test_movielens_1m(void) {
    char raw[1100];
    if (!mmlt_real_data("ml-1m", "users.dat", "the MovieLens-1M end-to-end run", raw, sizeof raw)) return MMLT_SKIP;
    if (quick) {
        printf("skipped: the MovieLens-1M end-to-end run in quick mode (MOEMLORA_TEST_QUICK)\n");
        return MMLT_SKIP;
    }
    mmlt_ctx = "ml-1m gender";
    mml_data_t d;
    CHECK_OK(mmlr_movielens_load(raw, "gender", 123, &d));
    CHECK(d.n_domains == 2, "%d domains by gender, expected 2", d.n_domains);
    if (d.n_domains == 2) {
        double w = fit_wauc(&d, MML_ADAPTER_MOE, 2, 0);
        printf("ml-1m   gender     moe   weighted AUC %.4f\n", w);
        CHECK(w > 0.75, "weighted AUC %.4f too low", w);
    }
    mml_data_free(&d);
    return 0;
}

static int test_taobao(void) {
    mmlt_ctx = "taobao";
    char dir[] = "/tmp/mml_e2e_tb_XXXXXX";
    int made = mkdtemp(dir) != NULL;
    CHECK(made, "mkdtemp");
    if (!made) return 0;
    CHECK_OK(mmlr_taobao_write_synthetic(dir, 400, 300, 4, quick ? 4000 : 12000, 16, 7));
    mml_data_t d;
    CHECK_OK(mmlr_taobao_load(dir, 3, 123, &d));
    int ok = d.n_domains == 3 && d.pretrained_dim == 16 && d.user_emb && d.item_emb;
    CHECK(ok, "taobao: %d domains, dim %d", d.n_domains, d.pretrained_dim);
    if (ok) {
        double w = fit_wauc(&d, MML_ADAPTER_MOE, 2, 1);
        printf("taobao-shaped  moe   weighted AUC %.4f\n", w);
        CHECK(w == w && w > 0.0 && w < 1.0, "taobao: weighted AUC %.4f not defined", w);
    }
    mml_data_free(&d);
    mmlt_rm_tree(dir);
    return 0;
}

static const struct e2e_case { const char *name; int (*run)(void); } cases[] = {
    {"taobao", test_taobao},
    {"ml-100k", test_movielens},
    {"ml-1m", test_movielens_1m},
};
enum { N_CASES = sizeof cases / sizeof cases[0] };

int main(int argc, char **argv) {
    quick = mmlt_quick();
    int ran = 0, skipped = 0;
    for (int i = 0; i < (int)N_CASES; i++) {
        if (argc > 1 && strcmp(argv[1], cases[i].name) != 0) continue;
        ran++;
        skipped += cases[i].run() == MMLT_SKIP;
    }
    if (!ran) {
        fprintf(stderr, "usage: test_e2e [taobao|ml-100k|ml-1m]: unknown case %s\n", argv[1]);
        return 2;
    }
    int rc = mmlt_finish("test_e2e");
    return rc ? rc : skipped ? MMLT_SKIP : 0;
}
