/* libFuzzer target: the prepared-layout readers on arbitrary bytes.
 * First byte picks the reader: 0 = domain_<k>/<split>.csv rows, 1 = meta.txt,
 * 2 = data.mmlc cache decoder, 3 = the rows of a set with a schema (user,
 * tags multi-hot of 3, x numeric, d the domain). Any crash, leak or
 * out-of-bounds is a bug; a rejected input must leave an error message. */
#define MOEMLORA_IMPLEMENTATION
#include "../moemlora.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *buf;
    mml_status st;
    if (size < 1) return 0;
    buf = (const char *)data + 1;
    size--;
    switch (data[0] % 4) {
    case 0: {
        mml_split_t sp;
        int64_t mu = -1, mp = -1, cap = mml__count_lines(buf, size);
        if (mml__split_alloc(&sp, cap, 2)) return 0;
        sp.n = 0;
        st = mml__parse_split_csv(buf, size, "fuzz/domain_1/train.csv", 1, (data[0] & 4) ? -1 : 50,
                                  (data[0] & 8) ? -1 : 70, &sp, &mu, &mp);
        if (!st && sp.n > cap) __builtin_trap();
        if (st && !mml_last_error()[0]) __builtin_trap();
        mml__split_free(&sp);
        break;
    }
    case 1: {
        mml__meta m;
        mml_data_t names;
        memset(&names, 0, sizeof names);
        st = mml__parse_meta(buf, size, "fuzz/meta.txt", &m, &names);
        if (st && !mml_last_error()[0]) __builtin_trap();
        mml__meta_free(&m);
        mml_data_free(&names);
        break;
    }
    case 3: {
        static const char *const names[4] = {"user", "tags", "x", "d"};
        mml_schema_t sc;
        mml_split_t sp;
        char header[1024];
        int64_t cap = mml__count_lines(buf, size);
        memset(&sc, 0, sizeof sc);
        sc.n_fields = 4;
        sc.domain = 3;
        for (int f = 0; f < 4; f++) {
            strcpy(sc.field[f].name, names[f]);
            sc.field[f].vocab = f == 3 ? 2 : 20;
        }
        sc.field[1].kind = MML_FIELD_MULTI_HOT;
        sc.field[1].max_len = 3;
        sc.field[2].kind = MML_FIELD_NUMERIC;
        mml__cols_header(&sc, header);
        if (mml__split_alloc_cols(&sp, cap, 2, &sc)) return 0;
        sp.n = 0;
        st = mml__parse_split_cols(buf, size, "fuzz/domain_1/val.csv", 1, (data[0] & 4) ? MML_VAL : MML_TRAIN, &sc,
                                   header, &sp);
        if (!st && sp.n > cap) __builtin_trap();
        if (st && !mml_last_error()[0]) __builtin_trap();
        mml__split_free_cols(&sp, 4);
        mml__split_free(&sp);
        break;
    }
    default: {
        mml_data_t d;
        /* copy so that the decoder sees an exactly sized heap buffer */
        unsigned char *p = (unsigned char *)malloc(size ? size : 1);
        memcpy(p, buf, size);
        st = mml__cache_decode(p, size, "fuzz/data.mmlc", &d);
        if (!st && mml__data_check(&d, "fuzz")) __builtin_trap();
        mml_data_free(&d);
        free(p);
        break;
    }
    }
    return 0;
}
