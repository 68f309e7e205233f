/* libFuzzer target for the model loader (config parsing, shape checks,
 * progress keys) on top of the checkpoint container. Allocations above 64 MiB
 * fail (as they would on a small machine), which exercises the out-of-memory
 * paths instead of exhausting the fuzzer's memory limit.
 * Seed corpus: tests/corpus/fuzz_model (tiny exported and training models:
 * version 1 files of the paper's layout, version 2 files with a schema,
 * written by test_schema_ckpt --write-corpus). */
#include <stddef.h>
#include <stdlib.h>
static void *mmlf_malloc(size_t n) { return n > ((size_t)64 << 20) ? NULL : malloc(n); }
#define MOEMLORA_MALLOC(sz) mmlf_malloc(sz)
#define MOEMLORA_FREE(p) free(p)
#define MOEMLORA_IMPLEMENTATION
#include "../moemlora.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    mml__ckpt *ck = NULL;
    if (mml__ckpt_open_mem(data, size, "fuzz.mml", &ck) != MML_OK) return 0;
    mml_model_t *m = NULL;
    if (mml__model_from_ckpt(ck, "fuzz.mml", &m) == MML_OK) {
        /* one row of zeros in the model's schema (the paper's layout: 0,0,0) */
        static int32_t zeros[4096];
        static float zero;
        const mml_schema_t *s = mml_model_config(m)->schema;
        const int32_t *ids[MML_MAX_FIELDS];
        const float *values[MML_MAX_FIELDS];
        for (int f = 0; f < s->n_fields; f++) {
            ids[f] = s->field[f].kind == MML_FIELD_NUMERIC ? NULL : zeros;
            values[f] = s->field[f].kind == MML_FIELD_NUMERIC ? &zero : NULL;
        }
        float prob;
        mml_batch_t b = {1, NULL, NULL, NULL, NULL, ids, values};
        if (mml_predict(m, &b, &prob) != MML_OK || !(prob >= 0.0f && prob <= 1.0f)) abort();
        mml_model_free(m);
    }
    mml__ckpt_close(ck);
    return 0;
}
