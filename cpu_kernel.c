/* EnhanceNet's inference on a CPU as plain C loops (built and called by cpu_kernel.py; the math is model.py's).

   efe():     the EFE (paper §3.1) on the downscaled image: 7 depthwise-separable 3x3 blocks, ReLU, the symmetric
              skip concatenations, tanh. Each layer is one pass with no per-operator overhead.
   enhance(): x_r upsampled bilinearly (align_corners=True, as the authors' nn.UpsamplingBilinear2d) and the
              NUM_ITERATIONS steps of RIE, paper Eq. 1 (Order 2), x <- x + x_r * (x^2 - x), written as
              x <- x * ((1 - x_r) + x_r * x), in one pass: each pixel is read once, the recurrence stays in
              registers, and the result and x_r are written once. NUM_ITERATIONS comes from model.py at build time.

   Tensors are float32, contiguous, N x C x H x W. Work is shared among `threads` OpenMP threads (one thread when
   built without OpenMP); in a process that has loaded PyTorch they are PyTorch's own OpenMP threads. */
#include <math.h>

/* One build runs well on any x86-64 machine: the loader picks the widest vector code the CPU has. */
#if defined(__x86_64__) && defined(__linux__)
#define MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MULTIVERSION
#endif

/* Arithmetic on subnormal floats (|v| < 1.2e-38) is ~100x slower on x86 CPUs, and trained EFE weights produce
   them. Each parallel region flushes them to zero, which moves no output by more than 1e-37, and restores the
   thread's mode after. */
#if defined(__SSE__)
#include <xmmintrin.h>
#define FLUSH_SUBNORMALS_BEGIN const unsigned int saved_mode = _mm_getcsr(); _mm_setcsr(saved_mode | 0x8040);
#define FLUSH_SUBNORMALS_END _mm_setcsr(saved_mode);
#else
#define FLUSH_SUBNORMALS_BEGIN
#define FLUSH_SUBNORMALS_END
#endif

#define INLINE static inline __attribute__((always_inline))
#define ROW(base, n, c, y, channels, height, width) ((base) + ((((long)(n) * (channels) + (c)) * (height) + (y)) * (width)))
#define FEATURES 32
#define PIXEL_BLOCK 64
#define OUTPUT_BLOCK 4

/* 3x3 depthwise conv with zero padding (the first half of the authors' CSDN_Tem), one output row per loop step:
   all nine taps in one pass, the rows above and below given zero weight at the image's top and bottom edges. */
INLINE void depthwise(const float *restrict in, int channels, int height, int width, const float *restrict weight,
                      const float *restrict bias, float *restrict out)
{
#pragma omp for schedule(static)
    for (long row = 0; row < (long)channels * height; row++) {
        int c = row / height, y = row % height;
        const float *k = weight + c * 9;
        const float *above = in + (y > 0 ? row - 1 : row) * width, *middle = in + row * width;
        const float *below = in + (y < height - 1 ? row + 1 : row) * width;
        float a0 = y > 0 ? k[0] : 0.0f, a1 = y > 0 ? k[1] : 0.0f, a2 = y > 0 ? k[2] : 0.0f;
        float m0 = k[3], m1 = k[4], m2 = k[5];
        float b0 = y < height - 1 ? k[6] : 0.0f, b1 = y < height - 1 ? k[7] : 0.0f, b2 = y < height - 1 ? k[8] : 0.0f;
        float *target = out + row * width;
        if (width == 1) {
            target[0] = bias[c] + a1 * above[0] + m1 * middle[0] + b1 * below[0];
            continue;
        }
        target[0] = bias[c] + a1 * above[0] + a2 * above[1] + m1 * middle[0] + m2 * middle[1]
                    + b1 * below[0] + b2 * below[1];
        for (int x = 1; x < width - 1; x++)
            target[x] = bias[c] + a0 * above[x - 1] + a1 * above[x] + a2 * above[x + 1]
                        + m0 * middle[x - 1] + m1 * middle[x] + m2 * middle[x + 1]
                        + b0 * below[x - 1] + b1 * below[x] + b2 * below[x + 1];
        target[width - 1] = bias[c] + a0 * above[width - 2] + a1 * above[width - 1] + m0 * middle[width - 2]
                            + m1 * middle[width - 1] + b0 * below[width - 2] + b1 * below[width - 1];
    }
}

/* tanh(v) = sign(v) (1 - e) / (1 + e) with e = exp(-2|v|) = 2^k exp(r), |r| <= ln(2) / 2, and exp(r) by its
   degree-7 Taylor polynomial: absolute error below 1e-7 over all floats (libm's tanhf: 6e-8). Unlike libm's tanhf, which
   took longer than the rest of the last layer, a loop of these vectorizes. */
INLINE float tanh_of(float v)
{
    const float log2_e = 1.44269504f, ln2_high = 0.693145752f, ln2_low = 1.42860677e-6f;
    float t = -2.0f * fabsf(v);
    t = t < -87.0f ? -87.0f : t; /* e stays a normal float; NaN passes through */
    float k = floorf(t * log2_e + 0.5f);
    float r = t - k * ln2_high - k * ln2_low;
    float p = 1.0f + r * (1.0f + r * (1.0f / 2 + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120
              + r * (1.0f / 720 + r * (1.0f / 5040)))))));
    union { float f; int i; } scale = {.i = ((int)k + 127) << 23};
    float e = p * scale.f;
    return copysignf((1.0f - e) / (1.0f + e), v);
}

/* `outputs` (at most OUTPUT_BLOCK) output channels x PIXEL_BLOCK pixels of a 1x1 conv, accumulated in registers,
   then ReLU, or tanh for the last layer; the first n pixels are stored. */
INLINE void pointwise_tile(const float *restrict in, int in_channels, long pixels, const float *restrict weight,
                           const float *restrict bias, int outputs, int last, int n, float *restrict out)
{
    float sum[OUTPUT_BLOCK][PIXEL_BLOCK];
    for (int o = 0; o < outputs; o++)
        for (int p = 0; p < PIXEL_BLOCK; p++)
            sum[o][p] = bias[o];
    for (int i = 0; i < in_channels; i++)
        for (int o = 0; o < outputs; o++)
            for (int p = 0; p < PIXEL_BLOCK; p++)
                sum[o][p] += weight[o * in_channels + i] * in[i * pixels + p];
    for (int o = 0; o < outputs; o++)
        for (int p = 0; p < n; p++)
            out[o * pixels + p] = last ? tanh_of(sum[o][p]) : sum[o][p] > 0.0f ? sum[o][p] : 0.0f;
}

/* 1x1 conv (the second half of CSDN_Tem) to FEATURES channels and ReLU, or for the last layer to the 3 channels
   of x_r and tanh. Reads up to PIXEL_BLOCK floats past the end of `in`, which the caller's buffer has room for. */
INLINE void pointwise(const float *restrict in, int in_channels, long pixels, const float *restrict weight,
                      const float *restrict bias, int last, float *restrict out)
{
    int output_blocks = last ? 1 : FEATURES / OUTPUT_BLOCK;
#pragma omp for schedule(static)
    for (long tile = 0; tile < (pixels + PIXEL_BLOCK - 1) / PIXEL_BLOCK * output_blocks; tile++) {
        long start = tile / output_blocks * PIXEL_BLOCK;
        int o = tile % output_blocks * OUTPUT_BLOCK, n = pixels - start < PIXEL_BLOCK ? pixels - start : PIXEL_BLOCK;
        if (last)
            pointwise_tile(in + start, in_channels, pixels, weight, bias, 3, 1, n, out + start);
        else
            pointwise_tile(in + start, in_channels, pixels, weight + o * in_channels, bias + o, OUTPUT_BLOCK, 0, n,
                           out + o * pixels + start);
    }
}

/* The EFE on `batch` 3 x height x width images. `parameters`: for each of the 7 blocks, its depthwise weight
   and bias, then its pointwise weight and bias (EnhanceNet.parameters() order). `scratch`: 8 * FEATURES floats
   per pixel and PIXEL_BLOCK more. */
MULTIVERSION
void efe(const float *image, float *factor, int batch, int height, int width, const float *const *parameters,
         float *scratch, int threads)
{
    long pixels = (long)height * width, features = FEATURES * pixels;
    /* Each of the paper's skip concatenations, x3|x4, x2|x5 and x1|x6, is one buffer, filled in two halves. */
    float *x1_x6 = scratch, *x2_x5 = x1_x6 + 2 * features, *x3_x4 = x2_x5 + 2 * features;
    float *depthwise_out = x3_x4 + 2 * features;
    const int in_channels[7] = {3, FEATURES, FEATURES, FEATURES, 2 * FEATURES, 2 * FEATURES, 2 * FEATURES};
    float *outputs[6] = {x1_x6, x2_x5, x3_x4, x3_x4 + features, x2_x5 + features, x1_x6 + features};
#pragma omp parallel num_threads(threads)
    {
        FLUSH_SUBNORMALS_BEGIN
        for (int n = 0; n < batch; n++) {
            const float *inputs[7] = {image + n * 3 * pixels, x1_x6, x2_x5, x3_x4, x3_x4, x2_x5, x1_x6};
            for (int layer = 0; layer < 7; layer++) {
                const float *const *p = parameters + 4 * layer;
                depthwise(inputs[layer], in_channels[layer], height, width, p[0], p[1], depthwise_out);
                pointwise(depthwise_out, in_channels[layer], pixels, p[2], p[3], layer == 6,
                          layer == 6 ? factor + n * 3 * pixels : outputs[layer]);
            }
        }
        FLUSH_SUBNORMALS_END
    }
}

/* One row of one channel: x_r interpolated between two horizontally upsampled rows of the EFE's output, then RIE. */
INLINE void enhance_row(const float *restrict x, float *restrict out, float *restrict factor,
                        const float *restrict top, const float *restrict bottom, float lambda, int width)
{
    for (int i = 0; i < width; i++) {
        float r = (1.0f - lambda) * top[i] + lambda * bottom[i];
        float keep = 1.0f - r, y = x[i];
        for (int k = 0; k < NUM_ITERATIONS; k++)
            y *= keep + r * y;
        factor[i] = r;
        out[i] = y;
    }
}

/* RIE on a batch with x_r upsampled from the EFE's output `low`. First each row of `low` is upsampled
   horizontally into `wide` (batch x channels x low_height x width); then each output row interpolates two of
   those rows. row_* and col_* give each output row's and column's two source indices and the weight of the
   second, computed in model.py as PyTorch's bilinear kernel computes them. */
MULTIVERSION
void enhance(const float *x, float *out, float *factor, const float *low, float *wide, int batch, int channels,
             int height, int width, int low_height, int low_width, const int *row_top, const int *row_bottom,
             const float *row_lambda, const int *col_left, const int *col_right, const float *col_lambda,
             int threads)
{
#pragma omp parallel num_threads(threads)
    {
        FLUSH_SUBNORMALS_BEGIN
#pragma omp for schedule(static)
        for (long row = 0; row < (long)batch * channels * low_height; row++) {
            const float *source = low + row * low_width;
            float *target = wide + row * width;
            for (int i = 0; i < width; i++)
                target[i] = (1.0f - col_lambda[i]) * source[col_left[i]] + col_lambda[i] * source[col_right[i]];
        }
#pragma omp for schedule(static)
        for (long row = 0; row < (long)batch * height; row++) {
            long n = row / height;
            int y = row % height;
            for (int c = 0; c < channels; c++)
                enhance_row(ROW(x, n, c, y, channels, height, width), ROW(out, n, c, y, channels, height, width),
                            ROW(factor, n, c, y, channels, height, width),
                            ROW(wide, n, c, row_top[y], channels, low_height, width),
                            ROW(wide, n, c, row_bottom[y], channels, low_height, width), row_lambda[y], width);
        }
        FLUSH_SUBNORMALS_END
    }
}
