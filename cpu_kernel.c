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

/* 3x3 depthwise conv with zero padding (the first half of the authors' CSDN_Tem), one row per loop step. */
INLINE void depthwise(const float *restrict in, int channels, int height, int width, const float *restrict weight,
                      const float *restrict bias, float *restrict out)
{
#pragma omp for schedule(static)
    for (long row = 0; row < (long)channels * height; row++) {
        int c = row / height, y = row % height;
        float *target = out + row * width;
        for (int x = 0; x < width; x++)
            target[x] = bias[c];
        for (int dy = -1; dy <= 1; dy++) {
            if (y + dy < 0 || y + dy >= height)
                continue;
            const float *source = in + (row + dy) * width, *k = weight + c * 9 + (dy + 1) * 3;
            if (width == 1) {
                target[0] += k[1] * source[0];
                continue;
            }
            target[0] += k[1] * source[0] + k[2] * source[1];
            for (int x = 1; x < width - 1; x++)
                target[x] += k[0] * source[x - 1] + k[1] * source[x] + k[2] * source[x + 1];
            target[width - 1] += k[0] * source[width - 2] + k[1] * source[width - 1];
        }
    }
}

/* OUTPUT_BLOCK output channels x PIXEL_BLOCK pixels of a 1x1 conv + ReLU, accumulated in registers. */
INLINE void pointwise_tile(const float *restrict in, int in_channels, long pixels, const float *restrict weight,
                           const float *restrict bias, float *restrict out)
{
    float sum[OUTPUT_BLOCK][PIXEL_BLOCK];
    for (int o = 0; o < OUTPUT_BLOCK; o++)
        for (int p = 0; p < PIXEL_BLOCK; p++)
            sum[o][p] = bias[o];
    for (int i = 0; i < in_channels; i++)
        for (int o = 0; o < OUTPUT_BLOCK; o++)
            for (int p = 0; p < PIXEL_BLOCK; p++)
                sum[o][p] += weight[o * in_channels + i] * in[i * pixels + p];
    for (int o = 0; o < OUTPUT_BLOCK; o++)
        for (int p = 0; p < PIXEL_BLOCK; p++)
            out[o * pixels + p] = sum[o][p] > 0.0f ? sum[o][p] : 0.0f;
}

/* 1x1 conv (the second half of CSDN_Tem), then ReLU, or tanh for the last layer. */
INLINE void pointwise(const float *restrict in, int in_channels, long pixels, const float *restrict weight,
                      const float *restrict bias, int out_channels, int last, float *restrict out)
{
    long tiled = out_channels % OUTPUT_BLOCK || last ? 0 : pixels / PIXEL_BLOCK * PIXEL_BLOCK;
    int output_blocks = out_channels / OUTPUT_BLOCK;
#pragma omp for schedule(static) nowait
    for (long tile = 0; tile < tiled / PIXEL_BLOCK * output_blocks; tile++) {
        long start = tile / output_blocks * PIXEL_BLOCK;
        int o = tile % output_blocks * OUTPUT_BLOCK;
        pointwise_tile(in + start, in_channels, pixels, weight + o * in_channels, bias + o,
                       out + o * pixels + start);
    }
#pragma omp for schedule(static)
    for (long start = tiled; start < pixels; start += PIXEL_BLOCK) {
        int n = pixels - start < PIXEL_BLOCK ? pixels - start : PIXEL_BLOCK;
        for (int o = 0; o < out_channels; o++) {
            float sum[PIXEL_BLOCK];
            for (int p = 0; p < n; p++)
                sum[p] = bias[o];
            for (int i = 0; i < in_channels; i++)
                for (int p = 0; p < n; p++)
                    sum[p] += weight[o * in_channels + i] * in[i * pixels + start + p];
            float *target = out + o * pixels + start;
            for (int p = 0; p < n; p++)
                target[p] = last ? tanhf(sum[p]) : sum[p] > 0.0f ? sum[p] : 0.0f;
        }
    }
}

/* The EFE on `batch` 3 x height x width images. `parameters`: for each of the 7 blocks, its depthwise weight
   and bias, then its pointwise weight and bias (EnhanceNet.parameters() order). `scratch`: 8 * FEATURES floats
   per pixel. */
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
                pointwise(depthwise_out, in_channels[layer], pixels, p[2], p[3], layer == 6 ? 3 : FEATURES,
                          layer == 6, layer == 6 ? factor + n * 3 * pixels : outputs[layer]);
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
