/* libFuzzer target: the Taobao raw parsers on arbitrary bytes.
 * First byte even: an embedding CSV; odd: a click log checked against fixed
 * user/item embedding tables. */
#define MOEMLORA_IMPLEMENTATION
#include "../moemlora.h"
#include "../examples/mml_recipes.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *uemb = "user_id,e\n10,0.5,1\n20,1.5,2\n30,0,0\n";
static const char *iemb = "item_id,e\n7,1,2\n8,3,4\n9,5,6\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *buf;
    mml_status st;
    mmlr__emb ue, ie;
    if (size < 1) return 0;
    buf = (const char *)data + 1;
    size--;
    if (!(data[0] & 1)) {
        st = mmlr__parse_emb_csv(buf, size, "fuzz/user_embedding.csv", &ue);
        if (!st && (ue.dim < 1 || ue.rows < 1 || (uint64_t)ue.rows != ue.map.n)) __builtin_trap();
        mmlr__emb_free(&ue);
    } else {
        mmlr__clicks c;
        if (mmlr__parse_emb_csv(uemb, strlen(uemb), "u", &ue) || mmlr__parse_emb_csv(iemb, strlen(iemb), "i", &ie))
            __builtin_trap();
        st = mmlr__parse_clicks(buf, size, "fuzz/theme_click_log.csv", &ue, &ie, &c);
        if (!st) {
            int64_t i;
            for (i = 0; i < c.n; i++)
                if (c.urow[i] < 0 || c.urow[i] >= 3 || c.irow[i] < 0 || c.irow[i] >= 3) __builtin_trap();
        }
        mmlr__clicks_free(&c);
        mmlr__emb_free(&ue);
        mmlr__emb_free(&ie);
    }
    if (st && !mml_last_error()[0]) __builtin_trap();
    return 0;
}
