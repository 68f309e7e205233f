/* libFuzzer target for the checkpoint reader: any input is either rejected
 * with an error or fully readable through the lookup functions, without an
 * out-of-bounds access (ASan) or undefined behaviour (UBSan).
 * Run: tests/run_fuzz.sh BUILD_DIR SECONDS (all fuzzers) */
#define _POSIX_C_SOURCE 200809L
#define MOEMLORA_IMPLEMENTATION
#include "../moemlora.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads every tensor of a tensor section, plus the error paths of a wrong
 * shape, a wrong kind and an unknown name. */
static void visit_tensors(const mml__ckpt *c, const char *tag, int32_t nt) {
    for (int32_t i = 0; i < nt; i++) {
        int32_t nd = 0;
        int64_t sh[4];
        const char *name = mml__ckpt_tensor_at(c, tag, i, &nd, sh);
        if (!name || !mml__ckpt_has_tensor(c, tag, name)) abort();
        uint64_t n = 1;
        for (int32_t k = 0; k < nd; k++) n *= (uint64_t)sh[k];
        /* Validation bounds the element count by the input size. */
        float *dst = (float *)malloc(n ? (size_t)n * 4 : 1);
        if (!dst) abort();
        if (mml__ckpt_tensor_read(c, tag, name, nd, sh, dst) != MML_OK) abort();
        volatile float sink = 0;
        for (uint64_t k = 0; k < n; k++) sink += dst[k];
        (void)sink;
        sh[0] += 1;
        if (mml__ckpt_tensor_read(c, tag, name, nd, sh, dst) != MML_ERR_FORMAT) abort();
        free(dst);
    }
    const void *p;
    uint64_t nb;
    if (mml__ckpt_bytes(c, tag, &p, &nb) != MML_ERR_FORMAT) abort();
    if (mml__ckpt_tensor_at(c, tag, nt, NULL, NULL)) abort();
}

static void visit_bytes(const mml__ckpt *c, const char *tag) {
    const void *p;
    uint64_t n;
    if (mml__ckpt_bytes(c, tag, &p, &n) != MML_OK) abort();
    const unsigned char *b = (const unsigned char *)p;
    volatile unsigned x = 0;
    for (uint64_t i = 0; i < n; i++) x ^= b[i];
    (void)x;
    float f;
    int64_t one = 1;
    if (mml__ckpt_tensor_read(c, tag, "x", 1, &one, &f) != MML_ERR_FORMAT) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mml__ckpt *c = NULL;
    if (mml__ckpt_open_mem(data, size, "fuzz", &c) != MML_OK) {
        if (c || !strstr(mml_last_error(), "fuzz")) abort();
        return 0;
    }
    for (int i = 0; i < mml__ckpt_nsections(c); i++) {
        int32_t nt = 0;
        char tag[5] = {0};
        memcpy(tag, mml__ckpt_section_at(c, i, &nt), 4);
        if (nt < 0) visit_bytes(c, tag);
        else visit_tensors(c, tag, nt);
    }
    int64_t one = 1;
    float f;
    if (mml__ckpt_tensor_read(c, "\x01\x02\x03\x04", "x", 1, &one, &f) != MML_ERR_FORMAT) abort();
    mml__ckpt_close(c);
    return 0;
}
