/* EnhanceNet's inference on a CPU as plain C loops (built and called by inference.py; the math is model.py's).

   efe():     the EFE (paper §3.1) on the downscaled image: 7 depthwise-separable 3x3 blocks, ReLU, the symmetric
              skip concatenations, tanh. Each layer is one pass with no per-operator overhead.
   enhance(): x_r upsampled bilinearly (align_corners=True, as the authors' nn.UpsamplingBilinear2d) and the
              NUM_ITERATIONS steps of RIE, paper Eq. 1 (Order 2), x <- x + x_r * (x^2 - x), written as
              x <- x * ((1 - x_r) + x_r * x), in one pass: each pixel is read once, the recurrence stays in
              registers, and the result and x_r are written once. NUM_ITERATIONS and FEATURES (the EFE's width)
              come from model.py at build time (inference.py passes them as -D flags).
   rgb_to_yuv(): an enhanced 8-bit RGB video frame into the Y'CbCr planes the H.264 encoder takes (video.py), as
              FFmpeg's swscale converts it, in a third of swscale's time.

   Tensors are float32, contiguous, N x C x H x W, or 8-bit interleaved RGB, N x H x W x pixel_bytes, where the u8
   pointers are given: RGB (3 bytes a pixel, what decoders give and encoders take) or RGBX (4, PIL's own memory),
   so no float copy of the image is made. Work is shared among `threads` OpenMP threads (one thread when built
   without OpenMP); in a process that has loaded PyTorch they are PyTorch's own OpenMP threads. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

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
/* Row y of channel c of image n in an N x channels x height x width tensor. */
#define ROW(base, n, c, y, channels, height, width) \
    ((base) + ((((long)(n) * (channels) + (c)) * (height) + (y)) * (width)))
/* The vectors of the EFE's 1x1 convs, read and written at any float's address: GCC's and clang's vector extensions,
   which each target compiles to its own instructions. inference.py builds for the CPU it runs on (-march=native):
   with AVX-512, 16 floats, one register, and 32 registers for a tile's sums (pointwise_tile); else 8 floats, one
   AVX2 register (two with SSE2 or NEON), and AVX2's 16 registers. On a CPU with two 512-bit FMA units the wide
   tiles take 20% less time for the EFE than AVX2's (1200x900, one core of a Xeon); the sums are the same. */
#if defined(__AVX512F__)
#define LANES 16
#define OUTPUT_BLOCK 8
#else
#define LANES 8
#define OUTPUT_BLOCK 4
#endif
typedef float vector __attribute__((vector_size(4 * LANES), aligned(4)));
typedef int mask __attribute__((vector_size(4 * LANES), aligned(4)));
typedef unsigned int words __attribute__((vector_size(4 * LANES), aligned(4))); /* LANES RGBX pixels */
#define TILE_VECTORS 3
#define LAYERS 7 /* the EFE's depthwise-separable blocks */
_Static_assert(FEATURES % OUTPUT_BLOCK == 0, "a layer's outputs are whole blocks of OUTPUT_BLOCK");
#define PIXEL_BLOCK (LANES * TILE_VECTORS)

/* One row of a 3x3 depthwise conv with zero padding (the first half of the authors' CSDN_Tem): row y of one
   channel's plane, all nine taps in one pass, the rows outside the image given zero weight. */
INLINE void depthwise_row(const float *restrict plane, int height, int width, int y, const float *restrict k,
                          float bias, float *restrict out)
{
    const float *middle = plane + (long)y * width;
    const float *above = y > 0 ? middle - width : middle, *below = y < height - 1 ? middle + width : middle;
    float a0 = y > 0 ? k[0] : 0.0f, a1 = y > 0 ? k[1] : 0.0f, a2 = y > 0 ? k[2] : 0.0f;
    float b0 = y < height - 1 ? k[6] : 0.0f, b1 = y < height - 1 ? k[7] : 0.0f, b2 = y < height - 1 ? k[8] : 0.0f;
    if (width == 1) {
        out[0] = bias + a1 * above[0] + k[4] * middle[0] + b1 * below[0];
        return;
    }
    out[0] = bias + a1 * above[0] + a2 * above[1] + k[4] * middle[0] + k[5] * middle[1] + b1 * below[0]
             + b2 * below[1];
    for (int x = 1; x < width - 1; x++)
        out[x] = bias + a0 * above[x - 1] + a1 * above[x] + a2 * above[x + 1]
                 + k[3] * middle[x - 1] + k[4] * middle[x] + k[5] * middle[x + 1]
                 + b0 * below[x - 1] + b1 * below[x] + b2 * below[x + 1];
    out[width - 1] = bias + a0 * above[width - 2] + a1 * above[width - 1] + k[3] * middle[width - 2]
                     + k[4] * middle[width - 1] + b0 * below[width - 2] + b1 * below[width - 1];
}

/* tanh(v) = sign(v) (1 - e) / (1 + e) with e = exp(-2|v|) = 2^k exp(r), |r| <= ln(2) / 2, and exp(r) by its
   degree-7 Taylor polynomial: absolute error below 1e-7 over all floats (libm's tanhf: 6e-8). A loop of these
   vectorizes; libm's tanhf, called per pixel, took longer than the rest of the last layer. */
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

/* `outputs` (at most OUTPUT_BLOCK) output channels x PIXEL_BLOCK pixels of a 1x1 conv (the second half of
   CSDN_Tem) on in_channels rows `in_stride` floats apart, then ReLU, or tanh for the last layer; the first n pixels
   of each output channel are stored, `out_stride` floats apart. The sums are accumulated in vector registers, in
   the order of the input channels: OUTPUT_BLOCK x TILE_VECTORS of them, which with the tile's 3 input vectors and a
   broadcast weight fill the registers: 12 + 4 of AVX2's 16 (8 sums, 4 x 2, left the two FMA units' 4-cycle latency
   no slack), 24 + 4 of AVX-512's 32. */
INLINE void pointwise_tile(const float *restrict in, long in_stride, int in_channels, const float *restrict weight,
                           const float *restrict bias, int outputs, int last, int n, float *restrict out,
                           long out_stride)
{
    vector sum[OUTPUT_BLOCK][TILE_VECTORS];
    for (int o = 0; o < outputs; o++)
        for (int v = 0; v < TILE_VECTORS; v++)
            sum[o][v] = (vector){0} + bias[o];
    for (int i = 0; i < in_channels; i++) {
        vector x[TILE_VECTORS];
        for (int v = 0; v < TILE_VECTORS; v++)
            x[v] = *(const vector *)(in + i * in_stride + v * LANES);
        for (int o = 0; o < outputs; o++)
            for (int v = 0; v < TILE_VECTORS; v++)
                sum[o][v] += weight[o * in_channels + i] * x[v];
    }
    if (n == PIXEL_BLOCK && !last) { /* a whole tile: ReLU in the registers, stored straight */
        for (int o = 0; o < outputs; o++)
            for (int v = 0; v < TILE_VECTORS; v++) {
                mask positive = sum[o][v] > 0.0f; /* false for NaN and -0: both give +0, as below */
                *(vector *)(out + o * out_stride + v * LANES) = (vector)((mask)sum[o][v] & positive);
            }
        return;
    }
    float tile[OUTPUT_BLOCK][PIXEL_BLOCK];
    for (int o = 0; o < outputs; o++)
        for (int v = 0; v < TILE_VECTORS; v++)
            *(vector *)(tile[o] + v * LANES) = sum[o][v];
    for (int o = 0; o < outputs; o++)
        for (int p = 0; p < n; p++)
            out[o * out_stride + p] = last ? tanh_of(tile[o][p]) : tile[o][p] > 0.0f ? tile[o][p] : 0.0f;
}

/* Rows per band in separable_block: at least 256 pixels, so that a band's pointwise tiles are mostly full. */
INLINE int band_rows(int width)
{
    return width >= 256 ? 1 : (256 + width - 1) / width;
}

/* One depthwise-separable block, a band of rows at a time: the depthwise conv of all input channels into `band`
   (2 * FEATURES rows of band_stride floats, which stays in cache), then the 1x1 conv to FEATURES channels and ReLU,
   or for the last layer to the 3 channels of x_r and tanh. `parameters`: depthwise weight and bias, pointwise
   weight and bias. */
INLINE void separable_block(const float *restrict in, int in_channels, int height, int width,
                            const float *const *parameters, int last, float *restrict out, float *restrict band,
                            long band_stride)
{
    long pixels = (long)height * width;
    int rows = band_rows(width);
#pragma omp for schedule(static)
    for (int top = 0; top < height; top += rows) {
        int bottom = top + rows < height ? top + rows : height;
        long first = (long)top * width, n = (long)(bottom - top) * width;
        for (int c = 0; c < in_channels; c++)
            for (int y = top; y < bottom; y++)
                depthwise_row(in + c * pixels, height, width, y, parameters[0] + 9 * c, parameters[1][c],
                              band + c * band_stride + (long)(y - top) * width);
        for (long start = 0; start < n; start += PIXEL_BLOCK) {
            int count = n - start < PIXEL_BLOCK ? n - start : PIXEL_BLOCK;
            if (last)
                pointwise_tile(band + start, band_stride, in_channels, parameters[2], parameters[3], 3, 1, count,
                               out + first + start, pixels);
            else
                for (int o = 0; o < FEATURES; o += OUTPUT_BLOCK)
                    pointwise_tile(band + start, band_stride, in_channels, parameters[2] + o * in_channels,
                                   parameters[3] + o, OUTPUT_BLOCK, 0, count, out + o * pixels + first + start,
                                   pixels);
        }
    }
}

/* Channel c of the pixels of one row of interleaved 8-bit pixels (pixel_bytes apart) that the EFE's downscaling
   reads, columns col_left[x] and col_right[x] for each small column x, as floats in [0, 1] at their own index in
   `out`: v / 255 as the float32 readers compute it. The other columns are not read. */
INLINE void sampled_columns_to_float(const unsigned char *restrict rgb, int c, int pixel_bytes,
                                     const int *restrict col_left, const int *restrict col_right, int width,
                                     float *restrict out)
{
    for (int x = 0; x < width; x++) {
        out[col_left[x]] = rgb[(long)pixel_bytes * col_left[x] + c] / 255.0f;
        out[col_right[x]] = rgb[(long)pixel_bytes * col_right[x] + c] / 255.0f;
    }
}

/* Linear interpolation: a weighted 1 - lambda, b weighted lambda; floats, or vectors of them with a float lambda. */
#define BETWEEN(a, b, lambda) ((1.0f - (lambda)) * (a) + (lambda) * (b))

/* Bilinear resampling of one row: `above` and `below` are the two source rows, weighted 1 - lambda and lambda. */
INLINE void resample_row(const float *restrict above, const float *restrict below, float lambda,
                         const int *restrict col_left, const int *restrict col_right, const float *restrict col_lambda,
                         int width, float *restrict target)
{
    for (int x = 0; x < width; x++) {
        float w = col_lambda[x];
        target[x] = BETWEEN(BETWEEN(above[col_left[x]], above[col_right[x]], w),
                            BETWEEN(below[col_left[x]], below[col_right[x]], w), lambda);
    }
}

/* The EFE on a batch of 3 x image_height x image_width images, each first resized bilinearly to height x width.
   The images are float32 planes in `image`, or, where `image_u8` is not NULL, interleaved 8-bit RGB
   (N x H x W x pixel_bytes) read as v / 255. row_* and col_* give each small row's and column's two source
   indices and the weight of the second.
   `parameters`: for each of the 7 blocks, its depthwise weight and bias, then its pointwise weight and bias
   (EnhanceNet.parameters() order).
   The small image is done in strips of `strip_rows` rows, each with the LAYERS rows above and below it that the
   3x3 convs reach (done again by the strips beside it), so that `scratch` holds one strip: 6 + 6 * FEATURES floats
   per pixel of a strip with its margins. A margin's far edge is taken as the image's (zero padding) and comes out
   wrong, but each layer moves the error only one row further in, so after LAYERS layers a strip's own rows equal
   the whole image's, bit for bit.
   Returns 0, or -1 when a thread's band buffer could not be allocated. */
int efe(const float *image, const unsigned char *image_u8, float *factor, int batch, int image_height,
        int image_width, int height, int width, const int *row_top, const int *row_bottom, const float *row_lambda,
        const int *col_left, const int *col_right, const float *col_lambda, const float *const *parameters,
        float *scratch, int strip_rows, int pixel_bytes, int threads)
{
    long row_bytes = (long)image_width * pixel_bytes;
    const int in_channels[7] = {3, FEATURES, FEATURES, FEATURES, 2 * FEATURES, 2 * FEATURES, 2 * FEATURES};
    /* A band's rows of each channel, padded to whole pointwise tiles (what a tile reads past the band's
       pixels is never stored). */
    long band_stride = ((long)band_rows(width) * width + PIXEL_BLOCK - 1) / PIXEL_BLOCK * PIXEL_BLOCK;
    int failed = 0;
#pragma omp parallel num_threads(threads)
    {
        float *band = calloc(2 * FEATURES * band_stride, sizeof(float));
        float *rows = image_u8 ? malloc(2 * (size_t)image_width * sizeof(float)) : NULL;
        if (band == NULL || (image_u8 && rows == NULL)) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp barrier
        if (!failed) {
            FLUSH_SUBNORMALS_BEGIN
            for (int n = 0; n < batch; n++)
                for (int top = 0; top < height; top += strip_rows) {
                    int bottom = top + strip_rows < height ? top + strip_rows : height;
                    int first = top > LAYERS ? top - LAYERS : 0;
                    int last = bottom + LAYERS < height ? bottom + LAYERS : height;
                    int strip_height = last - first, own = bottom - top;
                    long pixels = (long)strip_height * width, features = FEATURES * pixels;
                    float *small = scratch, *x_r = small + 3 * pixels;
                    /* Each of the paper's skip concatenations, x3|x4, x2|x5 and x1|x6, is one buffer, filled in two
                       halves. */
                    float *x1_x6 = x_r + 3 * pixels, *x2_x5 = x1_x6 + 2 * features, *x3_x4 = x2_x5 + 2 * features;
                    const float *inputs[7] = {small, x1_x6, x2_x5, x3_x4, x3_x4, x2_x5, x1_x6};
                    float *outputs[7] = {x1_x6, x2_x5, x3_x4, x3_x4 + features, x2_x5 + features, x1_x6 + features,
                                         x_r};
#pragma omp for schedule(static)
                    for (long row = 0; row < 3L * strip_height; row++) {
                        int c = row / strip_height, y = first + row % strip_height;
                        const float *above, *below;
                        if (image_u8) {
                            const unsigned char *start = image_u8 + n * image_height * row_bytes;
                            sampled_columns_to_float(start + row_top[y] * row_bytes, c, pixel_bytes, col_left,
                                                     col_right, width, rows);
                            sampled_columns_to_float(start + row_bottom[y] * row_bytes, c, pixel_bytes, col_left,
                                                     col_right, width, rows + image_width);
                            above = rows, below = rows + image_width;
                        } else {
                            above = ROW(image, n, c, row_top[y], 3, image_height, image_width);
                            below = ROW(image, n, c, row_bottom[y], 3, image_height, image_width);
                        }
                        resample_row(above, below, row_lambda[y], col_left, col_right, col_lambda, width,
                                     small + row * width);
                    }
                    for (int layer = 0; layer < LAYERS; layer++)
                        separable_block(inputs[layer], in_channels[layer], strip_height, width,
                                        parameters + 4 * layer, layer == LAYERS - 1, outputs[layer], band,
                                        band_stride);
#pragma omp for schedule(static)
                    for (long row = 0; row < 3L * own; row++) {
                        int c = row / own, y = top + row % own;
                        memcpy(ROW(factor, n, c, y, 3, height, width),
                               x_r + ((long)c * strip_height + y - first) * width, width * sizeof(float));
                    }
                }
            FLUSH_SUBNORMALS_END
        }
        free(band);
        free(rows);
    }
    return failed ? -1 : 0;
}

/* One row of x_r's upsampling along x: column x of the output row, at target[x * stride], interpolates two
   columns of the EFE's output row `source`. */
INLINE void widen_row(const float *restrict source, const int *restrict col_left, const int *restrict col_right,
                      const float *restrict col_lambda, int width, int stride, float *restrict target)
{
    for (int x = 0; x < width; x++)
        target[(long)x * stride] = BETWEEN(source[col_left[x]], source[col_right[x]], col_lambda[x]);
}

/* One step of RIE, paper Eq. 1, y + r (y^2 - y), as y (keep + r y) with keep = 1 - r; floats or vectors. */
#define RIE_STEP(y, keep, r) ((y) * ((keep) + (r) * (y)))

/* The NUM_ITERATIONS steps of RIE on one value y with its x_r, r. */
INLINE float refined(float y, float r)
{
    float keep = 1.0f - r;
    for (int k = 0; k < NUM_ITERATIONS; k++)
        y = RIE_STEP(y, keep, r);
    return y;
}

/* One row of `values` floats: x_r interpolated between two rows of x_r upsampled along x, then RIE. */
INLINE void enhance_row(const float *restrict x, float *restrict out, float *restrict factor,
                        const float *restrict top, const float *restrict bottom, float lambda, int values)
{
    for (int i = 0; i < values; i++) {
        float r = BETWEEN(top[i], bottom[i], lambda);
        factor[i] = r;
        out[i] = refined(x[i], r);
    }
}

/* `values` floats, each y * 255 of an RIE result, rounded in place as files.to_uint8 does: clamp(y * 255 + 0.5,
   0, 255), to be truncated. The product was rounded to float before, in its own loop: the compiler cannot fuse it
   with the addition into one rounding (a fused multiply-add moves some values by one level). NaN gives 0. */
INLINE void clamped_half_up(float *restrict scaled, long values)
{
    for (long i = 0; i < values; i++) {
        float v = scaled[i] + 0.5f;
        v = v > 0.0f ? v : 0.0f; /* NaN fails the test */
        scaled[i] = v < 255.0f ? v : 255.0f;
    }
}

/* clamp(t + 0.5, 0, 255) on each lane, as clamped_half_up: NaN gives 0. t is compared as well as added to, so
   the compiler keeps the product that made it rounded on its own: GCC fuses a product into an addition only where
   each of its uses is one, clang only within one expression. */
INLINE vector lanes_half_up(vector t)
{
    mask above = t > -0.5f; /* t + 0.5 > 0, exactly: where t > -0.5 the sum is exact or above 0.5 */
    vector v = (vector)((mask)(t + 0.5f) & above);
    mask below = v < 255.0f;
    return (vector)(((mask)v & below) | ((mask)((vector){0} + 255.0f) & ~below));
}

/* RIE on three vectors of 8-bit values, y[i] holding them as v / 255 and r[i] their x_r, then scaled and rounded as
   files.to_uint8 (clamp(y * 255 + 0.5, 0, 255), to be truncated): refined() on each lane, the three chains of
   dependent steps interleaved, all in registers. */
INLINE void refine_to_bytes(vector y[3], const vector r[3])
{
    vector keep[3];
    for (int i = 0; i < 3; i++)
        keep[i] = 1.0f - r[i];
    for (int k = 0; k < NUM_ITERATIONS; k++)
        for (int i = 0; i < 3; i++)
            y[i] = RIE_STEP(y[i], keep[i], r[i]);
    for (int i = 0; i < 3; i++)
        y[i] = lanes_half_up(y[i] * 255.0f);
}

/* One row of interleaved 8-bit RGB, `values` bytes, as enhance_row with the x_r rows interleaved alike: each value
   v read as v / 255, and the result rounded by clamped_half_up and truncated. Each step is its own loop over
   `scaled` (`values` floats): the clamp and the conversion to bytes vectorize better apart (together: 15%
   slower). In registers, as the RGBX row is, it took 60% longer (GCC 12, AVX-512). */
INLINE void enhance_rgb_row(const unsigned char *restrict rgb, unsigned char *restrict out,
                            const float *restrict top, const float *restrict bottom, float lambda, int values,
                            float *restrict scaled)
{
    for (int i = 0; i < values; i++)
        scaled[i] = refined(rgb[i] / 255.0f, BETWEEN(top[i], bottom[i], lambda)) * 255.0f;
    clamped_half_up(scaled, values);
    for (int i = 0; i < values; i++)
        out[i] = (unsigned char)(int)scaled[i];
}

/* Where channel c of an RGBX pixel lies in its 4 bytes read as one unsigned int. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define CHANNEL_SHIFT(c) (24 - 8 * (c))
#else
#define CHANNEL_SHIFT(c) (8 * (c))
#endif

/* One row of `width` RGBX pixels (PIL's own layout) as enhance_rgb_row, X kept: LANES pixels at a time in
   registers (no passes over a float buffer), each read and written as one 4-byte word, its channels taken apart
   and put back with shifts (no work on X), with x_r from three planes (channel c's row at c * plane floats from
   `top` and `bottom`), so every stream is contiguous. The last width % LANES pixels go through `scaled` (3 floats)
   and clamped_half_up. */
INLINE void enhance_rgbx_row(const unsigned char *restrict rgbx, unsigned char *restrict out,
                             const float *restrict top, const float *restrict bottom, long plane, float lambda,
                             int width, float *restrict scaled)
{
    int x = 0;
    for (; x + LANES <= width; x += LANES) {
        words pixels = *(const words *)(rgbx + 4L * x), result = pixels & (255u << CHANNEL_SHIFT(3));
        vector y[3], r[3];
        for (int c = 0; c < 3; c++) {
            y[c] = __builtin_convertvector((pixels >> CHANNEL_SHIFT(c)) & 255u, vector) / 255.0f;
            r[c] = BETWEEN(*(const vector *)(top + c * plane + x), *(const vector *)(bottom + c * plane + x),
                           lambda);
        }
        refine_to_bytes(y, r);
        for (int c = 0; c < 3; c++)
            result |= (words)__builtin_convertvector(y[c], mask) << CHANNEL_SHIFT(c);
        *(words *)(out + 4L * x) = result;
    }
    for (; x < width; x++) {
        unsigned int pixel;
        memcpy(&pixel, rgbx + 4L * x, 4);
        for (int c = 0; c < 3; c++)
            scaled[c] = refined(((pixel >> CHANNEL_SHIFT(c)) & 255u) / 255.0f,
                                BETWEEN(top[c * plane + x], bottom[c * plane + x], lambda)) * 255.0f;
        clamped_half_up(scaled, 3);
        pixel &= 255u << CHANNEL_SHIFT(3);
        for (int c = 0; c < 3; c++)
            pixel |= (unsigned int)(int)scaled[c] << CHANNEL_SHIFT(c);
        memcpy(out + 4L * x, &pixel, 4);
    }
}

/* RIE on a batch with x_r upsampled from the EFE's output `low` (batch x channels x low_height x low_width). First
   each row of `low` is upsampled along x into `wide`; then each output row interpolates two of those rows. row_*
   and col_* give each output row's and column's two source indices and the weight of the second. Float32 planes
   x -> out with x_r into `factor`; or, where `x_u8` is not NULL, interleaved 8-bit pixels x_u8 -> out_u8
   (N x H x W x pixel_bytes: 3, RGB, or 4, RGBX with its X kept; rounded as files.to_uint8), x_r not kept;
   pixel_bytes is only read then. `wide` holds each channel's rows apart (batch x channels x low_height x width),
   or for RGB interleaved as the pixels are (batch x low_height x width x channels). Returns 0, or -1 when a
   thread's row buffer could not be allocated. */
int enhance(const float *x, float *out, float *factor, const unsigned char *x_u8, unsigned char *out_u8,
            const float *low, float *wide, int batch, int channels, int height, int width, int low_height,
            int low_width, const int *row_top, const int *row_bottom, const float *row_lambda, const int *col_left,
            const int *col_right, const float *col_lambda, int pixel_bytes, int threads)
{
    int failed = 0;
    int interleaved = x_u8 && pixel_bytes == channels; /* else planes, as the float path */
    long values = (long)pixel_bytes * width; /* of one interleaved row */
    long plane = (long)low_height * width; /* of one channel of `wide`, held as planes */
#pragma omp parallel num_threads(threads)
    {
        float *scaled = x_u8 ? malloc(values * sizeof(float)) : NULL;
        if (x_u8 && scaled == NULL) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp barrier
        FLUSH_SUBNORMALS_BEGIN
#pragma omp for schedule(static)
        for (long row = 0; row < (long)batch * channels * low_height; row++) {
            long n = row / (channels * low_height);
            int c = row / low_height % channels, y = row % low_height;
            float *target = interleaved ? wide + (n * low_height + y) * values + c : wide + row * width;
            if (interleaved)
                widen_row(low + row * low_width, col_left, col_right, col_lambda, width, channels, target);
            else /* a stride known to be 1: contiguous vector stores, not one store a value */
                widen_row(low + row * low_width, col_left, col_right, col_lambda, width, 1, target);
        }
#pragma omp for schedule(static)
        for (long row = 0; row < (long)batch * height; row++) {
            if (failed)
                continue;
            long n = row / height;
            int y = row % height;
            if (interleaved)
                enhance_rgb_row(x_u8 + row * values, out_u8 + row * values,
                                wide + (n * low_height + row_top[y]) * values,
                                wide + (n * low_height + row_bottom[y]) * values, row_lambda[y], values, scaled);
            else if (x_u8)
                enhance_rgbx_row(x_u8 + row * values, out_u8 + row * values,
                                 ROW(wide, n, 0, row_top[y], channels, low_height, width),
                                 ROW(wide, n, 0, row_bottom[y], channels, low_height, width), plane, row_lambda[y],
                                 width, scaled);
            else
                for (int c = 0; c < channels; c++)
                    enhance_row(ROW(x, n, c, y, channels, height, width), ROW(out, n, c, y, channels, height, width),
                                ROW(factor, n, c, y, channels, height, width),
                                ROW(wide, n, c, row_top[y], channels, low_height, width),
                                ROW(wide, n, c, row_bottom[y], channels, low_height, width), row_lambda[y], width);
        }
        FLUSH_SUBNORMALS_END
        free(scaled);
    }
    return failed ? -1 : 0;
}

/* One row of `width` 8-bit RGB pixels for rgb_to_yuv: its luma, Y' = 16 + 219/255 L with L = kr R + kg G + kb B,
   rounded half up into `luma`, and each pixel's B - L and R - L into `blue` and `red`, or where `pairs` is set
   (4:2:0, `width` even) the sums over each two pixels side by side, at half width. `differences` holds 2 * width
   floats. */
INLINE void luma_and_differences(const unsigned char *restrict rgb, int width, float kr, float kb, int pairs,
                                 unsigned char *restrict luma, float *restrict blue, float *restrict red,
                                 float *restrict differences)
{
    float kg = 1.0f - kr - kb;
    float *restrict blue_minus = pairs ? differences : blue, *restrict red_minus = pairs ? differences + width : red;
    for (int x = 0; x < width; x++) {
        float r = rgb[3 * x], g = rgb[3 * x + 1], b = rgb[3 * x + 2];
        float l = kr * r + kg * g + kb * b;
        luma[x] = (unsigned char)(int)(16.5f + 219.0f / 255.0f * l); /* in [16.5, 235.5]: no clamp needed */
        blue_minus[x] = b - l;
        red_minus[x] = r - l;
    }
    if (pairs)
        for (int x = 0; x < width / 2; x++) {
            blue[x] = blue_minus[2 * x] + blue_minus[2 * x + 1];
            red[x] = red_minus[2 * x] + red_minus[2 * x + 1];
        }
}

/* 8-bit RGB, rows `rgb_stride` bytes apart, into limited-range 8-bit Y'CbCr planes, what swscale gives from its
   exact rounding (FFmpeg's ACCURATE_RND; its default dithers) to within one level on about 1% of values: the colour
   matrix's kr and kb (BT.601: 0.299, 0.114; BT.709: 0.2126, 0.0722), Cb = 128 + 224/255 (B - L) / (2 (1 - kb)) and
   Cr = 128 + 224/255 (R - L) / (2 (1 - kr)), rounded half up. `subsampled` (4:2:0, even height and width): each
   chroma sample from two columns side by side and rows 2i-1, 2i, 2i+1, 2i+2 (the edge row repeated) weighted 1, 3,
   3, 1, swscale's bilinear filter for halving; else 4:4:4. One thread: video.py's encoder thread runs it beside the
   network. Returns 0, or -1 when its row buffers could not be allocated. */
int rgb_to_yuv(const unsigned char *rgb, long rgb_stride, int height, int width, float kr, float kb, int subsampled,
               unsigned char *y, long y_stride, unsigned char *u, long u_stride, unsigned char *v, long v_stride)
{
    int chroma_width = subsampled ? width / 2 : width, chroma_height = subsampled ? height / 2 : height;
    int taps = subsampled ? 4 : 1;
    const float weights[4] = {1.0f, 3.0f, 3.0f, 1.0f};
    /* each luma row's blue and red differences, kept for the chroma rows that read it: 4 rows in a ring */
    float *buffers = malloc((8L * chroma_width + 2L * width) * sizeof(float));
    if (buffers == NULL)
        return -1;
    float *blue[4], *red[4], *differences = buffers + 8L * chroma_width;
    int held[4] = {-1, -1, -1, -1};
    for (int k = 0; k < 4; k++)
        blue[k] = buffers + 2L * k * chroma_width, red[k] = blue[k] + chroma_width;
    float sum = subsampled ? 16.0f : 1.0f; /* of the weights: 2 columns x (1 + 3 + 3 + 1) */
    float blue_scale = 224.0f / 255.0f / (2.0f * (1.0f - kb)) / sum;
    float red_scale = 224.0f / 255.0f / (2.0f * (1.0f - kr)) / sum;
    for (int i = 0; i < chroma_height; i++) {
        const float *b[4], *r[4];
        for (int k = 0; k < taps; k++) {
            int row = subsampled ? 2 * i - 1 + k : i;
            row = row < 0 ? 0 : row < height ? row : height - 1;
            if (held[row % 4] != row) { /* each row once: rows 2i+1 and 2i+2 are read again for chroma row i+1 */
                luma_and_differences(rgb + row * rgb_stride, width, kr, kb, subsampled, y + row * y_stride,
                                     blue[row % 4], red[row % 4], differences);
                held[row % 4] = row;
            }
            b[k] = blue[row % 4], r[k] = red[row % 4];
        }
        unsigned char *u_row = u + i * u_stride, *v_row = v + i * v_stride;
        if (subsampled)
            for (int x = 0; x < chroma_width; x++) {
                float blue_sum = weights[0] * b[0][x] + weights[1] * b[1][x] + weights[2] * b[2][x]
                                 + weights[3] * b[3][x];
                float red_sum = weights[0] * r[0][x] + weights[1] * r[1][x] + weights[2] * r[2][x]
                                + weights[3] * r[3][x];
                u_row[x] = (unsigned char)(int)(128.5f + blue_scale * blue_sum); /* in [16.5, 240.5] */
                v_row[x] = (unsigned char)(int)(128.5f + red_scale * red_sum);
            }
        else
            for (int x = 0; x < chroma_width; x++) {
                u_row[x] = (unsigned char)(int)(128.5f + blue_scale * b[0][x]);
                v_row[x] = (unsigned char)(int)(128.5f + red_scale * r[0][x]);
            }
    }
    free(buffers);
    return 0;
}
