// Microbenchmarks of every kernel for every ISA this CPU supports, plus the
// core's FMA peak measured in the same run (gemm results also report the
// fraction of that peak). This TU also checks that the header compiles as C++17.
//   bench_kernels --benchmark_filter=gemm
#define MOEMLORA_IMPLEMENTATION
#include "../moemlora_simd.h"

#include <benchmark/benchmark.h>

#include <cstdint>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace {

std::vector<float> randv(size_t n, float lo, float hi, uint32_t seed) {
    std::vector<float> v(n);
    uint32_t s = seed * 2654435761u + 1;
    for (auto &x : v) {
        s = s * 1664525u + 1013904223u;
        x = lo + (hi - lo) * (float)(s >> 8) * (1.0f / 16777216.0f);
    }
    return v;
}

double g_peak[MML_ISA_COUNT];  // GFLOP/s measured by BM_fma_peak

// ---- FMA peak: 12 independent accumulator chains, kept in registers --------
#if defined(__x86_64__)
#define MML_BENCH_PEAK(NAME, TGT, T, SET, FMA, W)                                         \
    __attribute__((target(TGT))) double NAME(long iters) {                                \
        T m = SET(0.999999f), c = SET(1e-7f);                                             \
        T a0 = SET(0), a1 = SET(1), a2 = SET(2), a3 = SET(3), a4 = SET(4), a5 = SET(5);   \
        T a6 = SET(6), a7 = SET(7), a8 = SET(8), a9 = SET(9), a10 = SET(10), a11 = SET(11); \
        for (long k = 0; k < iters; k++) {                                                \
            a0 = FMA(a0, m, c); a1 = FMA(a1, m, c); a2 = FMA(a2, m, c);                   \
            a3 = FMA(a3, m, c); a4 = FMA(a4, m, c); a5 = FMA(a5, m, c);                   \
            a6 = FMA(a6, m, c); a7 = FMA(a7, m, c); a8 = FMA(a8, m, c);                   \
            a9 = FMA(a9, m, c); a10 = FMA(a10, m, c); a11 = FMA(a11, m, c);               \
            __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5)); \
            __asm__ volatile("" : "+v"(a6), "+v"(a7), "+v"(a8), "+v"(a9), "+v"(a10), "+v"(a11)); \
        }                                                                                 \
        float o[16];                                                                      \
        std::memcpy(o, &a0, sizeof(float));                                               \
        return o[0] + 12.0 * W * 2.0 * (double)iters * 0.0;                                \
    }
MML_BENCH_PEAK(peak_avx512, "avx512f", __m512, _mm512_set1_ps, _mm512_fmadd_ps, 16)
MML_BENCH_PEAK(peak_avx2, "avx2,fma", __m256, _mm256_set1_ps, _mm256_fmadd_ps, 8)
#endif

void BM_fma_peak(benchmark::State &st, mml_isa isa) {
    const long iters = 1000000;
    double width = 0;
    for (auto _ : st) {
#if defined(__x86_64__)
        if (isa == MML_ISA_AVX512) benchmark::DoNotOptimize(peak_avx512(iters)), width = 16;
        else benchmark::DoNotOptimize(peak_avx2(iters)), width = 8;
#endif
    }
    const double flops = 12.0 * width * 2.0 * iters;
    st.counters["GFLOP/s"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

#ifdef MML__AMX
// The tiles' own rate: tdpbf16ps on four accumulators, state.range(0) = 0
// with no loads (the instruction alone), 1 with the two A and two B tile
// loads per four products that mml__gemm_amx_avx512's loop does (A from 32 KB, B
// from 128 KB, as its packed blocks). 2 x 16 x 16 x 32 FLOPs per product.
void BM_amx_peak(benchmark::State &st) {
    static uint32_t a[2 * 16 * 256] __attribute__((aligned(64))), b[128 * 256] __attribute__((aligned(64)));
    const long iters = 100000;
    const bool loads = st.range(0) != 0;
    mml__amx_config();
    MML__TILE_ZERO(0); MML__TILE_ZERO(1); MML__TILE_ZERO(2); MML__TILE_ZERO(3);
    MML__TILE_LOAD(4, a, 64); MML__TILE_LOAD(5, a, 64); MML__TILE_LOAD(6, b, 64); MML__TILE_LOAD(7, b, 64);
    for (auto _ : st)
        for (long i = 0; i < iters; i++) {
            if (loads) {
                const uint32_t *pa = a + (i & 15) * 256, *pb = b + ((i * 2) & 127) * 256;
                MML__TILE_LOAD(4, pa, 64); MML__TILE_LOAD(6, pb, 64);
                MML__TILE_LOAD(5, pa + 4096, 64); MML__TILE_LOAD(7, pb + 256, 64);
            }
            MML__TILE_DP(0, 4, 6); MML__TILE_DP(1, 4, 7); MML__TILE_DP(2, 5, 6); MML__TILE_DP(3, 5, 7);
        }
    mml__amx_release();
    st.counters["GFLOP/s"] = benchmark::Counter(4.0 * 2 * 16 * 16 * 32 * iters / 1e9,
                                                benchmark::Counter::kIsIterationInvariantRate);
}
#endif

// Measures the peak directly (outside Google Benchmark) so gemm can report a
// fraction even when the peak benchmark is filtered out.
double measure_peak(mml_isa isa) {
#if defined(__x86_64__)
    if (isa != MML_ISA_AVX512 && isa != MML_ISA_AVX2) return 0;
    const long iters = 10000000;
    double best = 0;
    for (int r = 0; r < 9; r++) {  // best of 9: the machine may be shared
        auto t0 = std::chrono::steady_clock::now();
        benchmark::DoNotOptimize(isa == MML_ISA_AVX512 ? peak_avx512(iters) : peak_avx2(iters));
        double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        double g = 12.0 * (isa == MML_ISA_AVX512 ? 16 : 8) * 2.0 * iters / s / 1e9;
        if (g > best) best = g;
    }
    return best;
#else
    (void)isa;
    return 0;
#endif
}

// ---- gemm -------------------------------------------------------------------
void BM_gemm(benchmark::State &st, mml_isa isa, int op, int M, int K, int N) {
    const mml_kernels_t *k = mml_simd_kernels(isa);
    auto A = randv((size_t)M * K, -1, 1, 1), B = randv((size_t)K * N, -1, 1, 2);
    std::vector<float> C((size_t)M * N);
    // ops 3-5: the bf16 variants of 0-2 (inputs rounded to bf16, fp32 sums)
    auto f = op == 0 ? k->gemm_nn : op == 1 ? k->gemm_nt : op == 2 ? k->gemm_tn
           : op == 3 ? k->gemm_nn_bf16 : op == 4 ? k->gemm_nt_bf16 : k->gemm_tn_bf16;
    const int lda = op % 3 == 2 ? M : K, ldb = op % 3 == 1 ? K : N;
    for (auto _ : st) {
        f(M, N, K, A.data(), lda, B.data(), ldb, C.data(), N, 0);
        benchmark::ClobberMemory();
    }
    const double flops = 2.0 * M * N * K;
    st.counters["GFLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate,
                                                benchmark::Counter::kIs1000);
    if (g_peak[isa] > 0)
        st.counters["of_peak"] = benchmark::Counter(flops / (g_peak[isa] * 1e9),
                                                    benchmark::Counter::kIsIterationInvariantRate);
}

// ---- elementwise / data movement ----------------------------------------------
enum Ew { RELU, SIGMOID, BCE, AXPY, DOT, ADAM, ADAMSTEPS, GATHER, SCATTER, SOFTMAX,
          BIAS, COLSUM, BLOCKSCALE, BLOCKDOT, BIASDROP, DROPBWD };

void BM_ew(benchmark::State &st, mml_isa isa, Ew which) {
    const mml_kernels_t *k = mml_simd_kernels(isa);
    const int64_t n = 1 << 16;
    auto x = randv(n, -4, 4, 3), y = randv(n, 0.1f, 4, 4), z = randv(n, -1, 1, 5);
    auto lab = randv(n, 0, 1, 6);
    std::vector<int32_t> ids(1024);
    for (size_t i = 0; i < ids.size(); i++) ids[i] = (int32_t)((i * 7919) % 4096);
    auto table = randv(4096 * 64, -1, 1, 7);
    std::vector<float> out(1024 * 64);
    mml_adam_hp hp = {1e-3f, 0.9f, 0.999f, 1e-8f, 0.1f, 0.001f, 0.0f};
    std::vector<mml_adam_hp> hps(64);
    for (int t = 0; t < 64; t++) /* replayed steps 101..164 of a row 128 floats wide */
        hps[t] = {1e-3f, 0.9f, 0.999f, 1e-8f, 1.0f - std::pow(0.9f, 101.0f + t), 1.0f - std::pow(0.999f, 101.0f + t), 0.0f};
    double bytes = 0, steps = 0;
    for (auto _ : st) {
        switch (which) {
        case RELU: k->relu_fwd(n, x.data(), z.data()); bytes = 8.0 * n; break;
        case SIGMOID: k->sigmoid(n, x.data(), z.data()); bytes = 8.0 * n; break;
        case BCE: benchmark::DoNotOptimize(k->bce_logits(n, x.data(), lab.data(), 1.0f, z.data())); bytes = 12.0 * n; break;
        case AXPY: k->axpy(n, 0.5f, x.data(), z.data()); bytes = 12.0 * n; break;
        case DOT: benchmark::DoNotOptimize(k->dot(n, x.data(), y.data())); bytes = 8.0 * n; break;
        case ADAM: k->adam_dense(n / 4, z.data(), x.data(), y.data(), lab.data(), &hp); bytes = 28.0 * n / 4; break;
        case ADAMSTEPS: k->adam_steps(128, z.data(), x.data(), y.data(), hps.data(), 64, nullptr); steps = 128.0 * 64; break;
        case GATHER: k->gather_rows(1024, ids.data(), table.data(), 64, out.data(), 64); bytes = 8.0 * 1024 * 64; break;
        case SCATTER: k->scatter_add_rows(1024, ids.data(), out.data(), 64, 64, table.data()); bytes = 12.0 * 1024 * 64; break;
        case SOFTMAX: k->softmax_rows(1024, 8, x.data(), 8, z.data(), 8); bytes = 8.0 * 1024 * 8; break;
        case BIAS: k->add_bias(256, 256, y.data(), z.data(), 256); bytes = 8.0 * n; break;
        case COLSUM: k->colsum_add(256, 256, x.data(), 256, out.data()); bytes = 4.0 * n; break;
        case BLOCKSCALE: k->block_scale(1024, 8, 8, x.data(), 64, y.data(), 8, z.data(), 64); bytes = 8.0 * n; break;
        case BLOCKDOT: k->block_dot(1024, 8, 8, x.data(), 64, y.data(), 64, out.data(), 8, 0); bytes = 8.0 * n; break;
        /* a tower layer's output, 256 x 256, dropout 0.5, no adapter: forward, backward with db */
        case BIASDROP: k->bias_dropout_relu(256, 256, y.data(), z.data(), 0.5f, 7, 0, nullptr, 1); bytes = 8.0 * n; break;
        case DROPBWD: k->dropout_relu_bwd(256, 256, x.data(), nullptr, 2.0f, z.data(), out.data()); bytes = 12.0 * n; break;
        }
        benchmark::ClobberMemory();
    }
    if (steps > 0) /* float updates per second */
        st.counters["Gupd/s"] = benchmark::Counter(steps, benchmark::Counter::kIsIterationInvariantRate,
                                                   benchmark::Counter::kIs1000);
    else
        st.counters["GB/s"] = benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1000);
}

// ---- CRC32C (checkpoints): the dispatched path and the portable one ---------
void BM_crc32c(benchmark::State &st, bool portable) {
    std::vector<unsigned char> buf(1 << 20);
    for (size_t i = 0; i < buf.size(); i++) buf[i] = (unsigned char)(i * 2654435761u >> 24);
    for (auto _ : st)
        benchmark::DoNotOptimize(portable ? mml__crc32c_sw(0, buf.data(), buf.size()) : mml_crc32c(0, buf.data(), buf.size()));
    st.counters["GB/s"] = benchmark::Counter((double)buf.size(), benchmark::Counter::kIsIterationInvariantRate,
                                             benchmark::Counter::kIs1000);
}

void register_all() {
    benchmark::RegisterBenchmark("crc32c/1MB", BM_crc32c, false);
    benchmark::RegisterBenchmark("crc32c_slice8/1MB", BM_crc32c, true);
    static const int shapes[][2] = {{24, 256}, {256, 128}, {128, 64}, {384, 256},
                                    {24, 16},  {16, 256},  {256, 16}, {16, 128}};
    static const char *ops[] = {"gemm_nn", "gemm_nt", "gemm_tn", "gemm_nn_bf16", "gemm_nt_bf16", "gemm_tn_bf16"};
    static const struct { Ew e; const char *name; } ews[] = {
        {RELU, "relu_fwd"}, {SIGMOID, "sigmoid"}, {BCE, "bce_logits"}, {AXPY, "axpy"}, {DOT, "dot"}, {ADAM, "adam_dense"}, {ADAMSTEPS, "adam_steps_128x64"},
        {GATHER, "gather_rows"}, {SCATTER, "scatter_add_rows"}, {SOFTMAX, "softmax_rows_E8"},
        {BIAS, "add_bias"}, {COLSUM, "colsum_add"}, {BLOCKSCALE, "block_scale"}, {BLOCKDOT, "block_dot"},
        {BIASDROP, "bias_dropout_relu"}, {DROPBWD, "dropout_relu_bwd"}};
    for (int i = 0; i < MML_ISA_COUNT; i++) {
        mml_isa isa = (mml_isa)i;
        if (!mml_simd_isa_supported(isa)) continue;
        std::string in = mml_isa_name(isa);
        g_peak[i] = measure_peak(isa);
        if (isa == MML_ISA_AVX2 || isa == MML_ISA_AVX512)
            benchmark::RegisterBenchmark(("fma_peak/" + in).c_str(), BM_fma_peak, isa);
#ifdef MML__AMX
        if (isa == MML_ISA_AVX512 && (mml__cpu() & MML__CPU_AMX_HW)) {
            benchmark::RegisterBenchmark("amx_peak/no_loads", BM_amx_peak)->Arg(0);
            benchmark::RegisterBenchmark("amx_peak/with_loads", BM_amx_peak)->Arg(1);
        }
#endif
        for (int op = 0; op < 6; op++)
            for (auto &s : shapes) {
                std::string name = std::string(ops[op]) + "/" + in + "/M1024_K" + std::to_string(s[0]) +
                                   "_N" + std::to_string(s[1]);
                benchmark::RegisterBenchmark(name.c_str(), BM_gemm, isa, op, 1024, s[0], s[1]);
            }
        for (auto &e : ews)
            benchmark::RegisterBenchmark((std::string(e.name) + "/" + in).c_str(), BM_ew, isa, e.e);
    }
}

}  // namespace

int main(int argc, char **argv) {
    benchmark::Initialize(&argc, argv);
    register_all();
    for (int i = 0; i < MML_ISA_COUNT; i++)
        if (g_peak[i] > 0) benchmark::AddCustomContext(std::string("fma_peak_") + mml_isa_name((mml_isa)i),
                                                       std::to_string(g_peak[i]) + " GFLOP/s");
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
