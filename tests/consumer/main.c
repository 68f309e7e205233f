/* Trains a tiny model on synthetic data through the installed header. */
#define MOEMLORA_IMPLEMENTATION
#include <moemlora.h>
#include <stdio.h>

int main(void) {
    mml_synth_config_t sc;
    mml_synth_default(&sc);
    sc.n_domains = 3; sc.n_users = 300; sc.n_items = 100; sc.n_samples = 6000;
    mml_data_t d;
    if (mml_data_synthetic(&sc, &d)) { fprintf(stderr, "%s\n", mml_last_error()); return 1; }
    mml_config_t c;
    mml_config_default(&c);
    c.n_users = d.n_users; c.n_items = d.n_items; c.n_domains = d.n_domains;
    mml_model_t *m;
    if (mml_model_create(&c, &m)) { fprintf(stderr, "%s\n", mml_last_error()); return 1; }
    mml_fit_opts_t o;
    mml_fit_opts_default(&o);
    o.max_epochs = 2;
    mml_metrics_t t;
    if (mml_fit(m, &d, &o, &t)) { fprintf(stderr, "%s\n", mml_last_error()); return 1; }
    printf("consumer: kernels %s, weighted AUC %.4f\n", mml_model_isa(m), t.weighted_auc);
    mml_model_free(m);
    mml_data_free(&d);
    return 0;
}
