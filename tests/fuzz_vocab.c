/* libFuzzer target: vocab.txt on arbitrary bytes, for a fixed schema of
 * every kind (a domain, a re-indexed and a hashed categorical field, a
 * list, a number). A load that succeeds must map any cell to ids inside
 * the field's range (0..vocab, the OOV id included; -1 only as list
 * padding); a rejected input must leave an error message. */
#define MOEMLORA_IMPLEMENTATION
#include "../moemlora.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void schema(mml_schema_t *s) {
    memset(s, 0, sizeof *s);
    s->n_fields = 5;
    s->domain = 0;
    s->field[0] = (mml_field_t){.name = "site", .kind = MML_FIELD_CATEGORICAL, .vocab = 2};
    s->field[1] = (mml_field_t){.name = "user", .kind = MML_FIELD_CATEGORICAL, .vocab = 3};
    s->field[2] = (mml_field_t){.name = "city", .kind = MML_FIELD_CATEGORICAL, .vocab = 7, .hash_buckets = 7};
    s->field[3] = (mml_field_t){.name = "tags", .kind = MML_FIELD_MULTI_HOT, .vocab = 2, .max_len = 3};
    s->field[4] = (mml_field_t){.name = "price", .kind = MML_FIELD_NUMERIC, .scale = 1};
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static mml_schema_t s;
    static const char *cells[] = {"", "a", "a|b|", "||x", "web", "\"q\"", "1e3", "zz|zz|zz"};
    mml_vocab_t *v = NULL;
    char *buf = (char *)malloc(size + 1);
    if (!buf) return 0;
    if (!s.n_fields) schema(&s);
    memcpy(buf, data, size);
    buf[size] = 0;
    if (mml__vocab_load_mem(buf, size, "vocab.txt", &s, &v) != MML_OK) {
        if (!mml_last_error()[0] || v) __builtin_trap();
        free(buf);
        return 0;
    }
    for (int f = 0; f < s.n_fields; f++)
        for (size_t c = 0; c < sizeof cells / sizeof *cells; c++) {
            int32_t ids[3];
            float x;
            if (mml_vocab_map(v, f, cells[c], strlen(cells[c]), ids, &x) != MML_OK) continue;
            int w = s.field[f].kind == MML_FIELD_MULTI_HOT ? 3 : s.field[f].kind == MML_FIELD_CATEGORICAL;
            for (int q = 0; q < w; q++)
                if (ids[q] < (s.field[f].kind == MML_FIELD_MULTI_HOT ? -1 : 0) || ids[q] > s.field[f].vocab)
                    __builtin_trap();
        }
    mml_vocab_free(v);
    free(buf);
    return 0;
}
