/* SGZ's full-resolution inference work on a CPU in one pass over each image row (built and called by rie_cpu.py).

   For each row it upsamples the EFE's low-resolution factor x_r bilinearly (align_corners=True, as the authors'
   nn.UpsamplingBilinear2d), writes that row of x_r, and applies the NUM_ITERATIONS steps of RIE, paper Eq. 1
   (Order 2), x <- x + x_r * (x^2 - x), written as x <- x * ((1 - x_r) + x_r * x): each pixel is read once and
   written once, and the whole recurrence stays in registers. NUM_ITERATIONS comes from model.py at build time.

   Tensors are float32, contiguous, N x C x H x W; rows are numbered over the batch, row = n * height + y. */

/* One build runs well on any x86-64 machine: the loader picks the widest vector code the CPU has. */
#if defined(__x86_64__) && defined(__linux__)
#define MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MULTIVERSION
#endif

#define ROW(base, n, c, y, channels, height, width) ((base) + ((((long)(n) * (channels) + (c)) * (height) + (y)) * (width)))

/* One row of one channel: x_r interpolated between two horizontally upsampled rows of the EFE's output, then RIE. */
static inline void enhance_row(const float *restrict x, float *restrict out, float *restrict factor,
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

/* A batch of `batch` images on `threads` OpenMP threads (one thread when built without OpenMP). First each row of
   the EFE's output `low` is upsampled horizontally into `wide` (batch x channels x low_height x width), then each
   output row interpolates two of those rows. row_* and col_* give each output row's and column's two source
   indices and the weight of the second, computed in model.py as PyTorch's bilinear kernel computes them. */
MULTIVERSION
void enhance(const float *x, float *out, float *factor, const float *low, float *wide, int batch, int channels,
             int height, int width, int low_height, int low_width, const int *row_top, const int *row_bottom,
             const float *row_lambda, const int *col_left, const int *col_right, const float *col_lambda,
             int threads)
{
#pragma omp parallel num_threads(threads)
    {
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
    }
}
