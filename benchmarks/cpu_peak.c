/* Peak rates of one core: fp32 FMA (what an fp32 GEMM can reach) against int8 VNNI dot products (what an
 * int8 GEMM such as torch._int_mm can reach). Their ratio caps how much faster an int8 model can be than
 * an fp32 one whose time is in GEMMs (benchmarks/README.md, integer-only rows).
 *
 *     gcc -O2 -march=native benchmarks/cpu_peak.c -o /tmp/cpu_peak && /tmp/cpu_peak
 *
 * Needs AVX-512 F and VNNI. Twelve independent accumulators per loop, so the loop is bound by the
 * instructions' throughput, not their latency.
 */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

#define ITERATIONS 400000000L
#define UNROLL(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11)

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
    volatile float seed_f = 1.0000001f;  /* volatile: the compiler cannot fold the loops away */
    volatile int seed_i = 3;
    __m512 x = _mm512_set1_ps(seed_f);
    __m512i u = _mm512_set1_epi8(seed_i), s = _mm512_set1_epi8(-seed_i);
#define DECLARE(i) __m512 f##i = _mm512_set1_ps(seed_f * i); __m512i a##i = _mm512_set1_epi32(seed_i * i);
    UNROLL(DECLARE)

    double t0 = now();
    for (long n = 0; n < ITERATIONS / 12; n++) {
#define FMA(i) f##i = _mm512_fmadd_ps(x, x, f##i);
        UNROLL(FMA)
    }
    double t1 = now();
    for (long n = 0; n < ITERATIONS / 12; n++) {
#define DOT(i) a##i = _mm512_dpbusd_epi32(a##i, u, s);
        UNROLL(DOT)
    }
    double t2 = now();

    float f_sum = 0;
    int a_sum = 0;
#define SUM(i) f_sum += f##i[0]; a_sum += a##i[0];
    UNROLL(SUM)
    /* vfmadd231ps zmm: 16 multiply-adds = 32 flops; vpdpbusd zmm: 64 u8 x s8 multiply-adds = 128 ops */
    double fp32 = ITERATIONS / (t1 - t0) * 32, int8 = ITERATIONS / (t2 - t1) * 128;
    printf("fp32 FMA     %6.1f GFLOP/s per core\n", fp32 / 1e9);
    printf("int8 VNNI    %6.1f GOP/s per core\n", int8 / 1e9);
    printf("int8 / fp32  %6.2f   (checksums %g %d)\n", int8 / fp32, f_sum, a_sum);
    return 0;
}
