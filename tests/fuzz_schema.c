/* libFuzzer target: schema files and the CSV loader of the recipes on
 * arbitrary bytes. First byte even: the bytes are a schema file; a parse that
 * succeeds must give a schema the loader can use (a label, one categorical
 * domain field, valid names, max_len for lists). Odd: the bytes are a CSV
 * read with a fixed schema of every kind; a load that succeeds must pass
 * mml_schema_check, with ids in range (the out-of-vocabulary id = vocab,
 * -1 only as list padding) and labels 0 or 1. A rejected input must leave
 * an error message. */
#define MOEMLORA_IMPLEMENTATION
#include "../moemlora.h"
#include "../examples/mml_recipes.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *fixed = "label y >= 1\n"
                           "field u categorical\n"
                           "field d categorical domain\n"
                           "field h categorical hash=5\n"
                           "field t multi_hot max_len=3 sep=|\n"
                           "field n numeric norm=zscore missing=0\n";

static void check_schema(const mmlr_csv_schema *sc) {
    if (!sc->label[0] || sc->s.n_fields < 1 || sc->s.n_fields > MML_MAX_FIELDS) __builtin_trap();
    if (sc->s.domain < 0 || sc->s.domain >= sc->s.n_fields) __builtin_trap();
    if (sc->s.field[sc->s.domain].kind != MML_FIELD_CATEGORICAL) __builtin_trap();
    for (int f = 0; f < sc->s.n_fields; f++) {
        const mml_field_t *fd = &sc->s.field[f];
        if (!mml__name_ok(fd->name) || !sc->col[f].column[0]) __builtin_trap();
        if (fd->kind == MML_FIELD_MULTI_HOT && (fd->max_len < 1 || fd->max_len > 4096)) __builtin_trap();
        if (fd->hash_buckets < 0 || fd->hash_buckets > (1 << 30)) __builtin_trap();
    }
}

static void check_data(const mml_data_t *d) {
    const mml_schema_t *s = d->schema;
    if (!s || mml_schema_check(s)) __builtin_trap();
    for (int k = 0; k < 3; k++) {
        const mml_split_t *sp = &d->split[k];
        if (sp->dom_start[0] != 0 || sp->dom_start[d->n_domains] != sp->n) __builtin_trap();
        for (int64_t i = 0; i < sp->n; i++) {
            if (sp->label[i] != 0.0f && sp->label[i] != 1.0f) __builtin_trap();
            if (sp->dom[i] < 0 || sp->dom[i] >= d->n_domains) __builtin_trap();
        }
        for (int f = 0; f < s->n_fields; f++) {
            const mml_field_t *fd = &s->field[f];
            if (fd->kind == MML_FIELD_NUMERIC) continue;
            int64_t len = fd->kind == MML_FIELD_MULTI_HOT ? fd->max_len : 1;
            for (int64_t i = 0; i < sp->n * len; i++) {
                int32_t id = sp->ids[f][i];
                if (id > fd->vocab || id < (len > 1 ? -1 : 0)) __builtin_trap();
            }
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static mmlr_csv_schema sc;
    mml_status st;
    if (size < 1) return 0;
    const char *buf = (const char *)data + 1;
    size--;
    if (!(data[0] & 1)) {
        st = mmlr_schema_parse(buf, size, "fuzz/schema.txt", &sc);
        if (!st) check_schema(&sc);
    } else {
        mml_data_t d;
        mmlr_csv_opts o;
        mmlr_csv_opts_default(&o);
        if (mmlr_schema_parse(fixed, strlen(fixed), "fixed", &sc)) __builtin_trap();
        /* the loader unquotes cells in place: an exactly sized heap copy */
        char *p = (char *)malloc(size ? size : 1);
        memcpy(p, buf, size);
        const char *name = "fuzz/data.csv";
        st = mmlr_csv_load_bufs(1, &p, &size, &name, &sc, &o, &d);
        if (!st) check_data(&d);
        mml_data_free(&d);
        free(p);
    }
    if (st && !mml_last_error()[0]) __builtin_trap();
    return 0;
}
