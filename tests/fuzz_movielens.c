/* libFuzzer target: the MovieLens raw parsers on arbitrary bytes.
 * First byte: bit 0 = ML-1M ("::") vs ML-100K ('|' / tab), bit 1 = users vs
 * ratings file, bits 2-3 = domain kind. Ratings are checked against a fixed
 * users table. */
#define MOEMLORA_IMPLEMENTATION
#include "../moemlora.h"
#include "../examples/mml_recipes.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *occ = "administrator\nartist\nwriter\n";
static const char *users1m = "1::F::1::10::48067\n2::M::56::16::70072\n7::M::25::15::55117\n";
static const char *users100k = "1|24|M|writer|85711\n2|53|F|artist|94043\n7|17|M|administrator|3\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *buf;
    int is_1m, kind;
    mmlr__ml_users *u;
    mml_status st;
    if (size < 1) return 0;
    buf = (const char *)data + 1;
    is_1m = data[0] & 1;
    kind = ((data[0] >> 2) & 3) % 3;
    size--;
    u = (mmlr__ml_users *)mml__alloc(sizeof *u);
    if (mmlr__ml_parse_occ(occ, strlen(occ), "u.occupation", u)) __builtin_trap();
    if (data[0] & 2) {
        st = mmlr__ml_parse_users(buf, size, "fuzz/users", is_1m, kind, u);
        if (!st && u->n < 1) __builtin_trap();
    } else {
        const char *us = is_1m ? users1m : users100k;
        mmlr__raw r;
        memset(&r, 0, sizeof r);
        if (mmlr__ml_parse_users(us, strlen(us), "users", is_1m, kind, u)) __builtin_trap();
        st = mmlr__ml_parse_ratings(buf, size, "fuzz/ratings", is_1m, u, &r);
        if (!st) {
            mml_data_t d;
            int64_t n = r.n;
            if (mmlr__finish_raw(&r, u->n_domains, 123, &d)) __builtin_trap();
            if (d.split[0].n + d.split[1].n + d.split[2].n != n) __builtin_trap();
            mml_data_free(&d);
        }
        mmlr__raw_free(&r);
    }
    if (st && !mml_last_error()[0]) __builtin_trap();
    mmlr__imap_free(&u->map);
    mml__free(u->dom);
    mml__free(u);
    return 0;
}
