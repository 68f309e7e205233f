/* libFuzzer target for the model loader (config parsing, shape checks,
 * progress keys) on top of the checkpoint container. Allocations above 64 MiB
 * fail (as they would on a small machine), which exercises the out-of-memory
 * paths instead of exhausting the fuzzer's memory limit.
 * Seed corpus: tests/corpus/fuzz_model (tiny exported and training models). */
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
        int32_t u = 0, p = 0, d = 0;
        float prob;
        mml_batch_t b = mml_batch_paper(1, &u, &p, &d, NULL);
        if (mml_predict(m, &b, &prob) != MML_OK || !(prob >= 0.0f && prob <= 1.0f)) abort();
        mml_model_free(m);
    }
    mml__ckpt_close(ck);
    return 0;
}
