/* Runs a netc-compiled model from C: reads the packed weights and an input
 * tensor (raw float32), writes the output tensor (raw float32).
 * usage: driver WEIGHTS INPUT OUTPUT THREADS */
#include <stdio.h>
#include <stdlib.h>
#include "model.h"

static void *read_file(const char *path, size_t expected) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    void *buf = malloc(expected);
    if (fread(buf, 1, expected, f) != expected) { fprintf(stderr, "%s: short read\n", path); exit(2); }
    fclose(f);
    return buf;
}

int main(int argc, char **argv) {
    if (argc != 6) { fprintf(stderr, "usage: driver WEIGHTS INPUT IN_FLOATS OUTPUT OUT_FLOATS\n"); return 2; }
    size_t in_floats = strtoul(argv[3], NULL, 10), out_floats = strtoul(argv[5], NULL, 10);
    float *weights = read_file(argv[1], model_weights_size());
    float *input = read_file(argv[2], in_floats * sizeof(float));
    float *output = calloc(out_floats, sizeof(float));
    size_t arena_bytes = (model_arena_size() + 63) / 64 * 64;
    void *arena = aligned_alloc(64, arena_bytes ? arena_bytes : 64);
    if (netc_set_threads(2) != 0) { fprintf(stderr, "threads already started\n"); return 2; }
    model_run(input, output, weights, arena);
    /* A second run must give the same result (the arena is reused). */
    model_run(input, output, weights, arena);
    FILE *f = fopen(argv[4], "wb");
    fwrite(output, sizeof(float), out_floats, f);
    fclose(f);
    return 0;
}
