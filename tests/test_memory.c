/* Large blocks (parameters, moments, gradients) ask Linux for transparent
 * huge pages: the mapping that holds a block of 4 MiB or more carries the
 * kernel's "hg" flag (MADV_HUGEPAGE) over its 2 MiB-aligned inside, a small
 * block does not, and the blocks stay 64-byte aligned and zeroed. The same
 * for a model's parameter and moment arrays. Skipped (77) where the system
 * has no transparent huge pages or /proc/self/smaps. */
#define MOEMLORA_IMPLEMENTATION
#include "moemlora.h"
#include "mml_test.h"

/* The VmFlags of the mapping holding address a: 1 when it has flag, 0 when
 * not, -1 when smaps cannot say. */
static int vm_flag(const void *a, const char *flag) {
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return -1;
    char line[512];
    int inside = 0, found = -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) {
            inside = (uintptr_t)a >= lo && (uintptr_t)a < hi;
            continue;
        }
        if (inside && !strncmp(line, "VmFlags:", 8)) {
            char want[8];
            snprintf(want, sizeof want, " %s", flag);
            size_t n = strlen(want);
            found = 0;
            for (const char *p = strstr(line, want); p; p = strstr(p + 1, want))
                if (p[n] == ' ' || p[n] == '\n' || p[n] == '\0') found = 1;
            break;
        }
    }
    fclose(f);
    return found;
}

/* 1 when the kernel hands out transparent huge pages on request. */
static int thp_available(void) {
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (!f) return 0;
    char s[128] = {0};
    size_t n = fread(s, 1, sizeof s - 1, f);
    fclose(f);
    return n > 0 && !strstr(s, "[never]");
}

/* The first 2 MiB boundary inside [p, p + bytes). */
static const char *inside(const void *p) {
    const uintptr_t h = (uintptr_t)2 << 20;
    return (const char *)(((uintptr_t)p + h - 1) & ~(h - 1));
}

static void check_block(size_t bytes, int want_hg) {
    unsigned char *p = (unsigned char *)mml__alloc(bytes);
    CHECK(p != NULL, "alloc %zu", bytes);
    if (!p) return;
    CHECK(((uintptr_t)p & 63) == 0, "block of %zu bytes not 64-byte aligned", bytes);
    int zero = 1;
    for (size_t i = 0; i < bytes; i += 4093) zero &= p[i] == 0;
    CHECK(zero && p[bytes - 1] == 0, "block of %zu bytes not zeroed", bytes);
    const char *probe = want_hg ? inside(p) : (const char *)p;
    int hg = vm_flag(probe, "hg");
    CHECK(hg == want_hg, "block of %zu bytes: hg flag %d, want %d", bytes, hg, want_hg);
    mml__free(p);
}

int main(void) {
#if !defined(__linux__) || !(defined(__x86_64__) || defined(__aarch64__))
    printf("skipped: huge pages are asked for on Linux (x86-64, aarch64) only\n");
    return MMLT_SKIP;
#else
    if (!thp_available()) {
        printf("skipped: this system has no transparent huge pages "
               "(/sys/kernel/mm/transparent_hugepage/enabled missing or [never])\n");
        return MMLT_SKIP;
    }
    int probe = 0;
    if (vm_flag(&probe, "hg") < 0) {
        printf("skipped: /proc/self/smaps lists no VmFlags here\n");
        return MMLT_SKIP;
    }
    mmlt_ctx = "blocks";
    check_block((size_t)64 << 20, 1);
    check_block((size_t)5 << 20, 1);
    check_block((size_t)1 << 20, 0);

    /* A model whose embedding tables pass 4 MiB: parameters and moments. */
    mmlt_ctx = "model";
    mml_config_t c;
    mmlt_config_paper(&c, 200000, 1000, 3);
    c.emb_dim = 8;
    mml_model_t *m = make_model(&c);
    CHECK(vm_flag(inside(m->P), "hg") == 1, "parameters without the hg flag");
    CHECK(vm_flag(inside(m->opt.M), "hg") == 1, "first moments without the hg flag");
    CHECK(vm_flag(inside(m->opt.V), "hg") == 1, "second moments without the hg flag");
    mml_model_free(m);
    return mmlt_finish("test_memory");
#endif
}
